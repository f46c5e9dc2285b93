//! Typed errors of the host modules, and their conversion into catchable Rhai errors.
//!
//! Inside Rust, host code returns [`HostError`]. At the Rhai boundary it becomes an
//! `ErrorRuntime` whose value is a map `#{kind, message, hint}`, so scripts can write
//! `try { ... } catch (e) { if e.kind == "not_found" { ... } }`.

use std::fmt;

use rhai::{Dynamic, EvalAltResult, Map, Position};

/// What went wrong, in a form scripts can branch on (`e.kind`) and the CLI maps to an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The customer config is missing a key, has a wrong type, or an unknown key.
    Config,
    /// An argument given by the script is invalid (wrong shape, malformed YAML, bad template).
    Input,
    /// A remote API (AWS, Kubernetes, Helm, HTTP) answered with an error or could not be reached.
    Api,
    /// The object asked for does not exist.
    NotFound,
    /// Somebody else changed or holds the object (409, a held lock).
    Conflict,
    /// A wait ran out of time.
    Timeout,
    /// Credentials are missing, expired or refused.
    Auth,
    /// A local file or process could not be read, written or run.
    Io,
    /// The script asked for something the sandbox does not allow.
    Denied,
    /// A requirement checked by preflight is not met.
    Precondition,
    /// `collate-run check` stops at the first remote call: not an error for the user.
    CheckStop,
    /// The run was interrupted (SIGINT) before this call.
    Interrupted,
}

impl ErrorKind {
    /// The name scripts see in `e.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Input => "input",
            ErrorKind::Api => "api",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Auth => "auth",
            ErrorKind::Io => "io",
            ErrorKind::Denied => "denied",
            ErrorKind::Precondition => "precondition",
            ErrorKind::CheckStop => "check_stop",
            ErrorKind::Interrupted => "interrupted",
        }
    }

    /// The inverse of [`ErrorKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "config" => ErrorKind::Config,
            "input" => ErrorKind::Input,
            "api" => ErrorKind::Api,
            "not_found" => ErrorKind::NotFound,
            "conflict" => ErrorKind::Conflict,
            "timeout" => ErrorKind::Timeout,
            "auth" => ErrorKind::Auth,
            "io" => ErrorKind::Io,
            "denied" => ErrorKind::Denied,
            "precondition" => ErrorKind::Precondition,
            "check_stop" => ErrorKind::CheckStop,
            "interrupted" => ErrorKind::Interrupted,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error raised by a host function. Messages are lowercase, name things in backticks,
/// and never contain a secret value (they pass through [`crate::secret_value::mask_text`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct HostError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl HostError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HostError {
            kind,
            message: crate::secret_value::mask_text(&message.into()),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(crate::secret_value::mask_text(&hint.into()));
        self
    }

    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Input, message)
    }
    pub fn api(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Api, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// The map scripts see in `catch (e)`.
    pub fn to_map(&self) -> Map {
        let mut m = Map::new();
        m.insert("kind".into(), self.kind.as_str().into());
        m.insert("message".into(), self.message.clone().into());
        m.insert(
            "hint".into(),
            self.hint
                .clone()
                .map(Dynamic::from)
                .unwrap_or(Dynamic::UNIT),
        );
        m
    }

    /// Reads a `HostError` back out of a Rhai error value (used by the CLI to render it).
    pub fn from_dynamic(value: &Dynamic) -> Option<HostError> {
        let map = value.read_lock::<Map>()?;
        let kind = ErrorKind::parse(&map.get("kind")?.to_string())?;
        let message = map.get("message")?.to_string();
        let hint = map
            .get("hint")
            .filter(|h| !h.is_unit())
            .map(|h| h.to_string());
        Some(HostError {
            kind,
            message,
            hint,
        })
    }
}

impl From<HostError> for Box<EvalAltResult> {
    fn from(e: HostError) -> Self {
        Box::new(EvalAltResult::ErrorRuntime(
            e.to_map().into(),
            Position::NONE,
        ))
    }
}

/// The result type of host functions at the Rhai boundary.
pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// An error and then its sources, innermost last.
pub(crate) fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// An error and its sources, `: `-joined without repeats ("error sending request: connection
/// refused"); never the `Debug` form.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    for s in causes(e).skip(1) {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The innermost cause of an error as one line, without the OS error number
/// (`Connection refused`).
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let cause = causes(e).last().unwrap_or(e).to_string();
    let line = cause.lines().next().unwrap_or_default();
    line.split(" (os error ")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
}

/// Shorthand for `Err(HostError::input(..).into())`.
pub fn input_err<T>(message: impl Into<String>) -> RhaiResult<T> {
    Err(HostError::input(message).into())
}

#[cfg(test)]
mod tests {
    use super::{error_chain, root_cause};

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("dispatch failure")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_and_root_causes_are_one_line_without_debug_or_os_codes() {
        let e = Outer(std::io::Error::from_raw_os_error(111));
        assert_eq!(root_cause(&e), "Connection refused");
        assert!(error_chain(&e).starts_with("dispatch failure: Connection refused"));
        assert!(!error_chain(&e).contains("Outer"));
    }
}
