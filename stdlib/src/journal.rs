//! The change journal: one entry per converge call (kind, name, action, per-field diff with
//! secrets masked), grouped by `step`, streamed to a [`Reporter`] as it happens.
//!
//! Host modules record with [`Journal::record`] and hand the script the map from
//! [`Change::outcome`]: `#{changed: "created"|"updated"|"unchanged"|"deleted", object, diff}`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Map};
use serde::Serialize;
use serde_json::Value;

/// What a converge call did (or, in plan mode, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Unchanged,
    Delete,
}

impl Action {
    /// The sign shown in human output.
    pub fn sign(self) -> char {
        match self {
            Action::Create => '+',
            Action::Update => '~',
            Action::Unchanged => '=',
            Action::Delete => '-',
        }
    }
    /// The word scripts see in `result.changed`.
    pub fn past(self) -> &'static str {
        match self {
            Action::Create => "created",
            Action::Update => "updated",
            Action::Unchanged => "unchanged",
            Action::Delete => "deleted",
        }
    }
    pub fn is_change(self) -> bool {
        self != Action::Unchanged
    }
}

/// One field that differs. Secret values are already `***` here.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// One journal entry.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// e.g. `aws.iam.role`, `k8s.Secret`, `helm.release`.
    pub kind: String,
    /// e.g. `collate-server-role`, `collate/db-credentials`.
    pub name: String,
    pub action: Action,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// `true` when recorded in plan mode (nothing was changed).
    pub planned: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `true` for an object made for a moment and removed again in the same call (a check's
    /// Job, see `Host::transient`): shown, never counted as a change.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub transient: bool,
}

impl Change {
    pub fn new(kind: impl Into<String>, name: impl Into<String>, action: Action) -> Change {
        Change {
            kind: kind.into(),
            name: name.into(),
            action,
            fields: Vec::new(),
            step: None,
            planned: false,
            note: None,
            transient: false,
        }
    }

    pub fn with_fields(mut self, fields: Vec<FieldChange>) -> Change {
        self.fields = fields;
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Change {
        self.note = Some(crate::secret_value::mask_text(&note.into()));
        self
    }

    /// The map a converge call returns to the script: `changed`, `object`, and `diff`, the
    /// paths of the fields that differ (their before/after values, secrets masked, are in the
    /// journal: `--output json`). Paths, not maps: a `parallel` over thousands of objects keeps
    /// every result, and a map per field would triple its memory.
    pub fn outcome(&self, object: Dynamic) -> Map {
        let mut m = Map::new();
        m.insert("changed".into(), self.action.past().into());
        m.insert("object".into(), object);
        let diff: Array = self
            .fields
            .iter()
            .map(|f| Dynamic::from(f.path.clone()))
            .collect();
        m.insert("diff".into(), diff.into());
        m
    }
}

/// Log levels for `log::*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Where journal events go: the runtime renders them as human lines or JSON lines.
pub trait Reporter: Send + Sync {
    fn change(&self, change: &Change);
    fn step_start(&self, name: &str);
    fn step_end(&self, name: &str, elapsed: Duration, ok: bool);
    fn log(&self, level: Level, message: &str);
    /// A long wait is still going: `message` says what is awaited.
    fn progress(&self, message: &str);
    /// A script's structured result (`report(name, data, text)`): `data` for `--output json`,
    /// `text` for people. Both already masked.
    fn report(&self, name: &str, data: &Value, text: &str) {
        let _ = (name, data);
        self.log(Level::Info, text);
    }
}

/// A reporter that keeps nothing (for unit tests and `docs`).
pub struct Silent;

impl Reporter for Silent {
    fn change(&self, _: &Change) {}
    fn step_start(&self, _: &str) {}
    fn step_end(&self, _: &str, _: Duration, _: bool) {}
    fn log(&self, _: Level, _: &str) {}
    fn progress(&self, _: &str) {}
}

/// A change or log line held back while a `parallel` job runs.
#[derive(Debug)]
pub(crate) enum Held {
    Change(Change),
    Log(Level, String),
    StepStart(String),
    StepEnd(String, Duration, bool),
}

/// The events of one `parallel` job. The first job not yet passed on (the head) streams live;
/// a later job's events are held until the jobs before it are done, so that the output and the
/// journal list them in job order, as a sequential run would, whatever order the jobs finish in.
/// (Progress messages are not held: they are about now.)
pub(crate) type Hold = Arc<Mutex<HoldState>>;

#[derive(Default)]
pub(crate) struct HoldState {
    events: Vec<Held>,
    /// Streaming: events go on at once (to `parent`, or out).
    live: bool,
    /// The hold of the job that runs this `parallel` (nested), if any.
    parent: Option<Hold>,
}

/// A new hold under `parent`.
pub(crate) fn new_hold(parent: Option<Hold>) -> Hold {
    Arc::new(Mutex::new(HoldState {
        parent,
        ..HoldState::default()
    }))
}

thread_local! {
    static HOLD: std::cell::RefCell<Option<Hold>> = const { std::cell::RefCell::new(None) };
    /// The steps this thread runs in (`parallel` workers start with their caller's).
    static STEPS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The steps the current thread runs in, outermost first.
pub(crate) fn current_steps() -> Vec<String> {
    STEPS.with(|s| s.borrow().clone())
}

/// Sets the steps of this thread (a `parallel` worker takes its caller's).
pub(crate) fn set_steps(steps: Vec<String>) {
    STEPS.with(|s| *s.borrow_mut() = steps);
}

/// The hold of the job running on this thread, if any.
pub(crate) fn current_hold() -> Option<Hold> {
    HOLD.with(|h| h.borrow().clone())
}

/// Runs `f` with this thread's journal events going to `hold`.
pub(crate) fn with_hold<T>(hold: Hold, f: impl FnOnce() -> T) -> T {
    let before = HOLD.with(|h| h.replace(Some(hold)));
    let out = f();
    HOLD.with(|h| *h.borrow_mut() = before);
    out
}

/// The run's journal.
pub struct Journal {
    reporter: Arc<dyn Reporter>,
    entries: Mutex<Vec<Change>>,
    planned: std::sync::atomic::AtomicBool,
}

impl Journal {
    pub fn new(reporter: Arc<dyn Reporter>) -> Journal {
        Journal {
            reporter,
            entries: Mutex::new(Vec::new()),
            planned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks entries recorded from now on as planned (set by the runtime in plan mode).
    pub fn set_planned(&self, planned: bool) {
        self.planned
            .store(planned, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records one converge call and streams it to the reporter (inside a `parallel` job: once
    /// the jobs before it are done, see [`Hold`]).
    pub fn record(&self, mut change: Change) -> Change {
        change.step = self.current_step();
        // A transient change says itself whether it was made (a plan may make it).
        if !change.transient {
            change.planned = self.planned.load(std::sync::atomic::Ordering::Relaxed);
        }
        self.emit(Held::Change(change.clone()));
        change
    }

    fn emit(&self, event: Held) {
        match current_hold() {
            Some(hold) => self.emit_into(&hold, event),
            None => self.publish(event),
        }
    }

    /// Into a job's hold: held, or (the head job) passed on at once. Passed on under the hold's
    /// lock, so an event cannot overtake the held ones being passed on by [`Journal::stream`].
    fn emit_into(&self, hold: &Hold, event: Held) {
        let mut h = hold.lock().unwrap_or_else(|e| e.into_inner());
        if h.live {
            self.forward(h.parent.as_ref(), event);
        } else {
            h.events.push(event);
        }
    }

    fn publish(&self, event: Held) {
        match event {
            Held::Change(c) => {
                self.reporter.change(&c);
                self.entries
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(c);
            }
            Held::Log(level, message) => self.reporter.log(level, &message),
            Held::StepStart(name) => self.reporter.step_start(&name),
            Held::StepEnd(name, elapsed, ok) => self.reporter.step_end(&name, elapsed, ok),
        }
    }

    /// Makes a job the head: what it held is passed on, and what comes next streams.
    pub(crate) fn stream(&self, hold: &Hold) {
        let mut h = hold.lock().unwrap_or_else(|e| e.into_inner());
        if h.live {
            return;
        }
        h.live = true;
        for event in std::mem::take(&mut h.events) {
            self.forward(h.parent.as_ref(), event);
        }
    }

    /// On from a streaming job: into the enclosing job's hold, or out.
    fn forward(&self, parent: Option<&Hold>, event: Held) {
        match parent {
            Some(p) => self.emit_into(p, event),
            None => self.publish(event),
        }
    }

    pub fn entries(&self) -> Vec<Change> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `(created, updated, unchanged, deleted)`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let n = |a| {
            entries
                .iter()
                .filter(|c| c.action == a && (!c.transient || a == Action::Unchanged))
                .count()
        };
        (
            n(Action::Create),
            n(Action::Update),
            n(Action::Unchanged),
            n(Action::Delete),
        )
    }

    pub fn has_changes(&self) -> bool {
        let (c, u, _, d) = self.counts();
        c + u + d > 0
    }

    fn current_step(&self) -> Option<String> {
        let steps = current_steps();
        (!steps.is_empty()).then(|| steps.join(" / "))
    }

    /// Runs `f` as the named step (steps may run side by side in `parallel` jobs: each thread
    /// knows its own).
    pub fn step<T>(&self, name: &str, f: impl FnOnce() -> T, ok: impl Fn(&T) -> bool) -> T {
        STEPS.with(|s| s.borrow_mut().push(name.to_string()));
        self.emit(Held::StepStart(name.to_string()));
        let started = Instant::now();
        let out = f();
        self.emit(Held::StepEnd(name.to_string(), started.elapsed(), ok(&out)));
        STEPS.with(|s| s.borrow_mut().pop());
        out
    }

    pub fn log(&self, level: Level, message: &str) {
        self.emit(Held::Log(level, crate::secret_value::mask_text(message)));
    }

    /// A script's structured result, masked, straight to the reporter.
    pub fn report(&self, name: &str, data: &Value, text: &str) {
        let data = crate::secret_value::mask_json(data.clone());
        self.reporter
            .report(name, &data, &crate::secret_value::mask_text(text));
    }

    /// A long wait is still going. Not shown from a `parallel` job whose output is held (it
    /// would land in another job's section); its wait shows once it is the first unfinished job.
    pub fn progress(&self, message: &str) {
        // Shown when every enclosing job streams.
        let mut hold = current_hold();
        while let Some(h) = hold {
            let state = h.lock().unwrap_or_else(|e| e.into_inner());
            if !state.live {
                return;
            }
            hold = state.parent.clone();
        }
        self.reporter
            .progress(&crate::secret_value::mask_text(message));
    }
}
