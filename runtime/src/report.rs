//! Rendering of the journal as it happens: human lines (`+ create`, `~ update`, `= unchanged`)
//! with a spinner on long steps when stdout is a terminal, or JSON lines for CI
//! (`--output json`). Secrets arrive here already masked.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use collate_stdlib::journal::{Action, Change, Level, Reporter};
use serde_json::{Value, json};

/// The output format chosen with `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Writes a line to stdout, ignoring a closed pipe. Every line that leaves the process passes
/// through the secret mask: the last guard, behind the structural masking in the journal.
pub fn out(line: &str) {
    let line = collate_stdlib::secret_value::mask_text(line);
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Writes a line to stderr, masked like [`out`].
pub fn err(line: &str) {
    let line = collate_stdlib::secret_value::mask_text(line);
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

/// Human-readable output.
pub struct Human {
    verbosity: u8,
    tty: bool,
    spinner: Mutex<Option<Spinner>>,
    depth: Mutex<usize>,
    /// The step that ended last without a line of its own since, and its depth: a step of the
    /// same name starting next continues under its header (full.rhai's parts run in two halves).
    just_ended: Mutex<Option<(String, usize)>>,
}

struct Spinner {
    stop: Arc<AtomicBool>,
    message: Arc<Mutex<String>>,
    handle: std::thread::JoinHandle<()>,
}

impl Human {
    pub fn new(verbosity: u8) -> Human {
        Human {
            verbosity,
            tty: std::io::stdout().is_terminal(),
            spinner: Mutex::new(None),
            depth: Mutex::new(0),
            just_ended: Mutex::new(None),
        }
    }

    fn indent(&self) -> String {
        "  ".repeat(*self.depth.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Prints a line, clearing the spinner's line first.
    fn line(&self, text: &str) {
        *self.just_ended.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if self.tty && self.spinner.lock().map(|s| s.is_some()).unwrap_or(false) {
            let mut o = std::io::stdout().lock();
            let _ = write!(o, "\r\x1b[2K");
        }
        out(text);
    }

    fn start_spinner(&self, name: &str) {
        if !self.tty {
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let message = Arc::new(Mutex::new(String::new()));
        let (s2, m2, name) = (stop.clone(), message.clone(), name.to_string());
        let started = Instant::now();
        let handle = std::thread::spawn(move || {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut i = 0;
            // Only long steps get a spinner: nothing is drawn in the first half second.
            std::thread::sleep(Duration::from_millis(500));
            while !s2.load(Ordering::Relaxed) {
                let msg = m2.lock().map(|m| m.clone()).unwrap_or_default();
                let mut o = std::io::stdout().lock();
                let _ = write!(
                    o,
                    "\r\x1b[2K{} {name} ({:.1}s){}{}",
                    FRAMES[i % FRAMES.len()],
                    started.elapsed().as_secs_f64(),
                    if msg.is_empty() { "" } else { " " },
                    msg
                );
                let _ = o.flush();
                drop(o);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            let mut o = std::io::stdout().lock();
            let _ = write!(o, "\r\x1b[2K");
            let _ = o.flush();
        });
        *self.spinner.lock().unwrap_or_else(|e| e.into_inner()) = Some(Spinner {
            stop,
            message,
            handle,
        });
    }

    fn stop_spinner(&self) {
        if let Some(s) = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            s.stop.store(true, Ordering::Relaxed);
            let _ = s.handle.join();
        }
    }
}

/// Renders a JSON value compactly for a diff line.
fn short(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

impl Reporter for Human {
    fn change(&self, c: &Change) {
        let indent = self.indent();
        let verb = match (c.action, c.planned) {
            (Action::Create, true) => "will be created",
            (Action::Update, true) => "will be updated",
            (Action::Delete, true) => "will be deleted",
            (Action::Create, false) => "created",
            (Action::Update, false) => "updated",
            (Action::Delete, false) => "deleted",
            (Action::Unchanged, _) => "unchanged",
        };
        let note = c
            .note
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        self.line(&format!(
            "{indent}{} {} {}  {verb}{note}",
            c.action.sign(),
            c.kind,
            c.name
        ));
        if c.action == Action::Unchanged {
            return;
        }
        for f in &c.fields {
            let text = match (&f.before, &f.after) {
                (None, after) => format!("{}: {}", f.path, short(after)),
                (before, None) => format!("{}: {} → (removed)", f.path, short(before)),
                (before, after) => format!("{}: {} → {}", f.path, short(before), short(after)),
            };
            self.line(&format!("{indent}    {text}"));
        }
    }

    fn step_start(&self, name: &str) {
        self.stop_spinner();
        let depth = *self.depth.lock().unwrap_or_else(|e| e.into_inner());
        let ended = self
            .just_ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if ended.is_none_or(|(n, d)| n != name || d != depth) {
            self.line(&format!("{}▸ {name}", self.indent()));
        }
        *self.depth.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.start_spinner(name);
    }

    fn step_end(&self, name: &str, elapsed: Duration, ok: bool) {
        self.stop_spinner();
        let mut depth = self.depth.lock().unwrap_or_else(|e| e.into_inner());
        *depth = depth.saturating_sub(1);
        let level = *depth;
        let indent = "  ".repeat(level);
        drop(depth);
        if self.verbosity > 0 || !ok || elapsed > Duration::from_secs(2) {
            let mark = if ok { "✓" } else { "✗" };
            self.line(&format!(
                "{indent}{mark} {name} ({:.1}s)",
                elapsed.as_secs_f64()
            ));
        } else {
            *self.just_ended.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((name.to_string(), level));
        }
    }

    fn log(&self, level: Level, message: &str) {
        let shown = match level {
            Level::Debug if self.verbosity == 0 => return,
            Level::Debug => format!("debug: {message}"),
            Level::Info => message.to_string(),
            Level::Warn => format!("warning: {message}"),
            Level::Error => format!("error: {message}"),
        };
        if level >= Level::Warn {
            err(&format!("{}{shown}", self.indent()));
        } else {
            self.line(&format!("{}{shown}", self.indent()));
        }
    }

    fn progress(&self, message: &str) {
        if let Some(s) = self
            .spinner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if let Ok(mut m) = s.message.lock() {
                *m = message.to_string();
            }
            return;
        }
        if !self.tty || self.verbosity > 0 {
            self.line(&format!("{}… {message}", self.indent()));
        }
    }
}

/// JSON lines on stdout, one object per event.
pub struct Json;

impl Json {
    pub fn emit(v: Value) {
        out(&v.to_string());
    }
}

impl Reporter for Json {
    fn change(&self, c: &Change) {
        let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
        if let Value::Object(o) = &mut v {
            o.insert("type".into(), "change".into());
        }
        Json::emit(v);
    }
    fn step_start(&self, name: &str) {
        Json::emit(json!({"type": "step_start", "name": name}));
    }
    fn step_end(&self, name: &str, elapsed: Duration, ok: bool) {
        Json::emit(
            json!({"type": "step_end", "name": name, "ok": ok, "elapsed_ms": elapsed.as_millis() as u64}),
        );
    }
    fn log(&self, level: Level, message: &str) {
        Json::emit(json!({"type": "log", "level": level, "message": message}));
    }
    fn progress(&self, message: &str) {
        Json::emit(json!({"type": "progress", "message": message}));
    }
    fn report(&self, name: &str, data: &Value, _: &str) {
        Json::emit(json!({"type": "report", "name": name, "data": data}));
    }
}

/// The closing summary.
pub fn summary(
    format: Format,
    planned: bool,
    counts: (usize, usize, usize, usize),
    elapsed: Duration,
    exit_code: i32,
) {
    let (c, u, n, d) = counts;
    match format {
        Format::Json => Json::emit(json!({
            "type": "summary", "mode": if planned { "plan" } else { "apply" },
            "create": c, "update": u, "unchanged": n, "delete": d,
            "elapsed_ms": elapsed.as_millis() as u64, "exit_code": exit_code,
        })),
        Format::Human => {
            if c + u + n + d == 0 {
                return;
            }
            let head = if planned { "Plan" } else { "Applied" };
            let changes = c + u + d;
            let verb = if planned { "to " } else { "" };
            let (cw, uw, dw) = if planned {
                ("create", "update", "delete")
            } else {
                ("created", "updated", "deleted")
            };
            out(&format!(
                "\n{head}: {c} {verb}{cw}, {u} {verb}{uw}, {d} {verb}{dw}, {n} unchanged ({:.1}s).{}",
                elapsed.as_secs_f64(),
                if planned && changes == 0 {
                    " Nothing to change."
                } else if planned {
                    " Nothing was changed."
                } else {
                    ""
                }
            ));
        }
    }
}
