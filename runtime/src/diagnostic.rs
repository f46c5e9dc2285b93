//! User-facing errors: `error: message`, then `--> file:line:col`, the source line and a caret,
//! the call chain through imported scripts and functions, a hint, and the exit code. Built from
//! Rhai's nested errors and the host's typed errors, rendered as text or as one JSON object.

use std::path::{Path, PathBuf};

use collate_stdlib::{ErrorKind, HostError, suggest};
use rhai::{EvalAltResult, ParseError, Position};
use serde_json::json;

use crate::exit;

/// A place in a script.
#[derive(Debug, Clone)]
pub struct Frame {
    pub file: Option<String>,
    pub line: usize,
    pub col: usize,
    pub label: Option<String>,
}

/// A rendered error.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub kind: String,
    pub at: Option<Frame>,
    /// Outer frames, innermost first: "in call to `run` at recipes/full.rhai:8:3".
    pub chain: Vec<Frame>,
    pub hint: Option<String>,
    /// The error's causes, outermost first (masked, one line each): `caused by: ...`.
    pub causes: Vec<String>,
    pub exit_code: i32,
}

impl Diagnostic {
    pub fn new(kind: &str, message: impl Into<String>, exit_code: i32) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            kind: kind.into(),
            at: None,
            chain: Vec::new(),
            hint: None,
            causes: Vec::new(),
            exit_code,
        }
    }

    pub fn from_host(e: &HostError) -> Diagnostic {
        let mut d = Diagnostic::new(e.kind.as_str(), e.message.clone(), exit::for_kind(e.kind));
        d.hint = e.hint.clone();
        d.causes = e.causes();
        d
    }

    /// From the value a script threw: a host error (caught and re-thrown, or built with
    /// `error(kind, message)`), a map `#{kind, message, hint}` naming a known kind (how scripts
    /// wrote their errors before the `error` type), or anything else (a script error).
    fn from_thrown(value: &rhai::Dynamic) -> Diagnostic {
        if let Some(h) = HostError::from_rhai(value) {
            return Diagnostic::from_host(&h);
        }
        let from_map = value.read_lock::<rhai::Map>().and_then(|m| {
            let kind = ErrorKind::named(&m.get("kind")?.clone().into_string().ok()?)?;
            let message = m.get("message")?.to_string();
            let hint = m
                .get("hint")
                .filter(|h| !h.is_unit())
                .map(|h| h.to_string());
            let mut e = HostError::new(kind, message);
            if let Some(hint) = hint {
                e = e.with_hint(hint);
            }
            Some(Diagnostic::from_host(&e))
        });
        from_map.unwrap_or_else(|| {
            Diagnostic::new("script", format!("script error: {value}"), exit::SCRIPT)
        })
    }

    /// From a syntax error while compiling `file`.
    pub fn from_parse(e: &ParseError, file: &str) -> Diagnostic {
        let mut d = Diagnostic::new(
            "syntax",
            format!("syntax error: {}", e.err_type()),
            exit::SCRIPT,
        );
        d.at = frame(Some(file), e.position(), None);
        d
    }

    /// From an error raised while running. `main` is the main script's path; `known_fns` are
    /// the names scripts can call (for "did you mean").
    pub fn from_eval(
        err: &EvalAltResult,
        main: &str,
        lib_dirs: &[PathBuf],
        known_fns: &[String],
    ) -> Diagnostic {
        let mut chain = Vec::new();
        let mut src: String = main.to_string();
        // The source name Rhai gives the innermost frame's script (an import path such as
        // `lib/buckets`), which `src` resolved to a file.
        let mut src_id = String::new();
        let mut e = err;
        loop {
            match e {
                EvalAltResult::ErrorInFunctionCall(name, source, inner, pos) => {
                    let label = if name.starts_with("anon$") {
                        "in a closure".to_string()
                    } else {
                        format!("in call to `{name}`")
                    };
                    if let Some(f) = frame(Some(&src), *pos, Some(label)) {
                        chain.push(f);
                    }
                    if !source.is_empty() {
                        src = if Path::new(source.as_str()).is_file() {
                            source.to_string()
                        } else {
                            resolve_module(&src, source, lib_dirs)
                        };
                        src_id = source.to_string();
                    }
                    e = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, pos) => {
                    if let Some(f) = frame(Some(&src), *pos, Some(format!("in module `{path}`"))) {
                        chain.push(f);
                    }
                    src = resolve_module(&src, path, lib_dirs);
                    src_id = path.to_string();
                    e = inner;
                }
                _ => break,
            }
        }
        chain.reverse();
        let pos = e.position();
        let mut d = match e {
            EvalAltResult::ErrorRuntime(value, _) => Diagnostic::from_thrown(value),
            EvalAltResult::ErrorParsing(p, _) => {
                Diagnostic::new("syntax", format!("syntax error: {p}"), exit::SCRIPT)
            }
            EvalAltResult::ErrorFunctionNotFound(sig, _) => {
                let name = sig
                    .split(['(', ' '])
                    .next()
                    .unwrap_or(sig)
                    .trim()
                    .to_string();
                let mut d =
                    Diagnostic::new("script", format!("unknown function `{sig}`"), exit::SCRIPT);
                if let Some(s) = suggest::closest(&name, known_fns.iter().map(String::as_str)) {
                    if s != name {
                        d.hint = Some(format!("did you mean `{s}`?"));
                    } else {
                        d.hint = Some(format!(
                            "`{s}` exists, but not for these argument types; see `collate-run docs`"
                        ));
                    }
                }
                d
            }
            EvalAltResult::ErrorVariableNotFound(name, _) => {
                let mut d = Diagnostic::new(
                    "script",
                    format!("undefined variable `{name}`"),
                    exit::SCRIPT,
                );
                if name == "config" {
                    d.hint = Some("functions and imported modules do not see `config`: pass it as an argument".into());
                }
                d
            }
            EvalAltResult::ErrorModuleNotFound(name, _) => {
                let mut d = Diagnostic::new(
                    "script",
                    format!("cannot find module `{name}`"),
                    exit::SCRIPT,
                );
                d.hint = Some(format!(
                    "modules are looked up next to the importing script, then in {}",
                    lib_dirs
                        .iter()
                        .map(|p| format!("`{}`", p.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                d
            }
            EvalAltResult::ErrorTooManyOperations(_) => {
                let mut d = Diagnostic::new(
                    "script",
                    "the script ran too many operations and was stopped",
                    exit::SCRIPT,
                );
                d.hint = Some(
                    "a loop that never ends? the limit is set in the engine constructor".into(),
                );
                d
            }
            EvalAltResult::ErrorStackOverflow(_) | EvalAltResult::ErrorTooManyModules(_) => {
                Diagnostic::new("script", format!("{e}"), exit::SCRIPT)
            }
            EvalAltResult::ErrorTerminated(_, _) => {
                Diagnostic::new("interrupted", "interrupted", exit::INTERRUPTED)
            }
            other => Diagnostic::new("script", lower_first(&other.to_string()), exit::SCRIPT),
        };
        d.at = frame(Some(&src), pos, None);
        if d.at.is_none() && matches!(e, EvalAltResult::ErrorRuntime(..)) {
            // Errors of namespaced host functions carry no position: use the recorded call site.
            if let Some((source, pos)) = collate_stdlib::host::last_call_site() {
                let file = if source.is_empty() {
                    main.to_string()
                } else if source == src_id {
                    src.clone()
                } else if Path::new(&source).is_file() {
                    source
                } else {
                    resolve_module(&src, &source, lib_dirs)
                };
                d.at = frame(Some(&file), pos, None);
            }
        }
        d.chain = chain;
        d
    }

    /// The human rendering, as printed on stderr.
    pub fn render(&self) -> String {
        let mut s = format!("error: {}\n", self.message);
        for c in &self.causes {
            s.push_str(&format!("caused by: {c}\n"));
        }
        if let Some(at) = &self.at {
            render_frame(&mut s, at, "-->");
        }
        for f in &self.chain {
            let file = f.file.as_deref().unwrap_or("<script>");
            s.push_str(&format!(
                "   = {} at {file}:{}:{}\n",
                f.label.as_deref().unwrap_or("called"),
                f.line,
                f.col
            ));
        }
        if let Some(h) = &self.hint {
            s.push_str(&format!("   = hint: {h}\n"));
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        let frame =
            |f: &Frame| json!({"file": f.file, "line": f.line, "col": f.col, "label": f.label});
        json!({
            "type": "error",
            "kind": self.kind,
            "message": self.message,
            "at": self.at.as_ref().map(frame),
            "chain": self.chain.iter().map(frame).collect::<Vec<_>>(),
            "hint": self.hint,
            "causes": self.causes,
            "exit_code": self.exit_code,
        })
    }

    /// `true` for the check-mode stop (not an error).
    pub fn is_check_stop(&self) -> bool {
        self.kind == ErrorKind::CheckStop.as_str()
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn frame(file: Option<&str>, pos: Position, label: Option<String>) -> Option<Frame> {
    Some(Frame {
        file: file.map(|f| collate_stdlib::host::display_path(Path::new(f))),
        line: pos.line()?,
        col: pos.position().unwrap_or(1),
        label,
    })
}

fn render_frame(s: &mut String, f: &Frame, arrow: &str) {
    let file = f.file.as_deref().unwrap_or("<script>");
    s.push_str(&format!("  {arrow} {file}:{}:{}\n", f.line, f.col));
    let text = f
        .file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok());
    if let Some(line) = text.as_deref().and_then(|t| t.lines().nth(f.line - 1)) {
        let num = f.line.to_string();
        let pad = " ".repeat(num.len());
        s.push_str(&format!(
            "{pad} |\n{num} | {line}\n{pad} | {}^\n",
            " ".repeat(f.col.saturating_sub(1))
        ));
    }
}

/// The file an `import "path"` in `importer` resolved to (same rules as the engine's resolver).
fn resolve_module(importer: &str, path: &str, lib_dirs: &[PathBuf]) -> String {
    let with_ext = if path.ends_with(".rhai") {
        path.to_string()
    } else {
        format!("{path}.rhai")
    };
    let dir = Path::new(importer).parent().unwrap_or(Path::new("."));
    let candidates =
        std::iter::once(dir.join(&with_ext)).chain(lib_dirs.iter().map(|d| d.join(&with_ext)));
    for c in candidates {
        if c.is_file() {
            return c.display().to_string();
        }
    }
    with_ext
}
