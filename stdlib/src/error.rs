//! Typed errors of the host modules, and their conversion into catchable Rhai errors.
//!
//! Inside Rust, host code returns [`HostError`], which keeps the library error it came from as
//! its `source`. At the Rhai boundary it is thrown as itself: a value of the registered type
//! `error` with `kind`, `message`, `hint` and `causes`, so scripts can write
//! `try { ... } catch (e) { if e.kind == "not_found" { ... } }`, and the CLI gets the typed error
//! back by downcasting.

use std::fmt;
use std::sync::Arc;

use rhai::plugin::*;
use rhai::{Array, EvalAltResult, Position};

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
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::Config,
        ErrorKind::Input,
        ErrorKind::Api,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Timeout,
        ErrorKind::Auth,
        ErrorKind::Io,
        ErrorKind::Denied,
        ErrorKind::Precondition,
        ErrorKind::CheckStop,
        ErrorKind::Interrupted,
    ];

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

    /// The kind a script names (`error("conflict", ..)`, or `kind` in a map a script throws).
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The library error a [`HostError`] was built from. An `Arc` keeps `HostError` `Clone` (Rhai
/// values are cloned).
pub type Source = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An error raised by a host function. Messages are lowercase, name things in backticks,
/// and never contain a secret value (they pass through [`crate::secret_value::mask_text`]);
/// the texts of the source chain are masked when they are shown ([`HostError::causes`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    /// The library error this one was built from (an SDK, HTTP, Kubernetes, driver or parse
    /// error), shown as `caused by:` lines. `Error::source` returns the error itself, not the
    /// `Arc` around it, so callers can downcast it.
    pub source: Option<Source>,
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HostError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl HostError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        HostError {
            kind,
            message: crate::secret_value::mask_text(&message.into()),
            hint: None,
            source: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(crate::secret_value::mask_text(&hint.into()));
        self
    }

    /// Keeps `source` as the cause of this error (its text is masked when shown).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// [`HostError::with_source`] for a source that is already shared.
    pub fn with_shared_source(mut self, source: Source) -> Self {
        self.source = Some(source);
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

    /// The source chain as one line each, outermost first, masked: no `Debug` forms, no
    /// `(os error N)` suffixes, and no text twice (a cause an earlier cause already says, as
    /// tokio-postgres' "error connecting to server: Connection refused" says its io error, or
    /// that is the whole message, is left out).
    pub fn causes(&self) -> Vec<String> {
        let Some(source) = self.source.as_deref() else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::new();
        for cause in causes(source) {
            let text = crate::secret_value::mask_text(&one_line(&cause.to_string()));
            if text.is_empty() || text == self.message || out.iter().any(|c| c.contains(&text)) {
                continue;
            }
            out.push(text);
        }
        out
    }

    /// The typed error a Rhai error carries: a host error, possibly re-thrown by a script
    /// (`throw e`), or the error a script built with `error(kind, message)`.
    pub fn from_rhai(value: &Dynamic) -> Option<HostError> {
        value.read_lock::<HostError>().map(|e| e.clone())
    }
}

impl From<HostError> for Box<EvalAltResult> {
    fn from(e: HostError) -> Self {
        Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(e),
            Position::NONE,
        ))
    }
}

/// The result type of host functions at the Rhai boundary.
pub type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// An error and then its sources, innermost last. An `io::Error` wrapping another error is
/// followed into that error (`io::Error::source` skips it: it returns the inner error's source).
pub(crate) fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| {
        match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        }
    })
}

/// The first error of type `T` in an error's source chain: the typed value a decision is made
/// on (an `io::Error`'s kind, an HTTP status), wherever the library wrapped it.
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    causes(e).find_map(|c| c.downcast_ref::<T>())
}

/// The first line of an error's text, without the OS error number (`Connection refused`).
fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.split(" (os error ")
        .next()
        .unwrap_or(line)
        .trim()
        .to_string()
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
    one_line(&causes(e).last().unwrap_or(e).to_string())
}

/// Shorthand for `Err(HostError::input(..).into())`.
pub fn input_err<T>(message: impl Into<String>) -> RhaiResult<T> {
    Err(HostError::input(message).into())
}

/// The Rhai API of the `error` type: what `catch (e)` gives for a host error, and the
/// constructor scripts throw their own errors with.
#[export_module]
pub mod error_api {
    use super::*;

    /// An error of the given `kind` (`"config"`, `"input"`, `"api"`, `"not_found"`,
    /// `"conflict"`, `"timeout"`, `"auth"`, `"io"`, `"denied"`, `"precondition"`) for a script
    /// to `throw`: it is caught like a host error and reported with the exit code of its kind.
    ///
    /// What `catch (e)` gives for a host error is a value of this type `error`: `e.kind`,
    /// `e.message`, `e.hint` (or `()`), `e.causes` (an array of strings, outermost first, down
    /// to the root cause), also as `e["kind"]` and `"kind" in e`; `${e}` is its message.
    ///
    /// ```rhai
    /// throw error("config", "`reindex.auth` needs `token` or `basic`");
    /// ```
    #[rhai_fn(name = "error", return_raw)]
    pub fn new_error(kind: &str, message: &str) -> RhaiResult<HostError> {
        match ErrorKind::named(kind) {
            Some(k) => Ok(HostError::new(k, message)),
            None => Err(HostError::input(format!(
                "unknown error kind `{kind}`; one of {}",
                ErrorKind::ALL
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()),
        }
    }

    /// `error(kind, message)` with a hint, shown after the message (`= hint: ...`).
    ///
    /// ```rhai
    /// throw error("conflict", "a re-index is already running", "wait for it to finish");
    /// ```
    #[rhai_fn(name = "error", return_raw)]
    pub fn new_error_with_hint(kind: &str, message: &str, hint: &str) -> RhaiResult<HostError> {
        Ok(new_error(kind, message)?.with_hint(hint))
    }

    /// What went wrong, to branch on: `"not_found"`, `"auth"`, `"timeout"`, ...
    ///
    /// ```rhai
    /// try { k8s::get("Namespace", "", "collate"); } catch (e) { if e.kind == "auth" { throw e; } }
    /// ```
    #[rhai_fn(get = "kind", pure)]
    pub fn kind(e: &mut HostError) -> String {
        e.kind.as_str().to_string()
    }

    /// The error's message (lowercase, secrets masked).
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { log::warn(e.message); }
    /// ```
    #[rhai_fn(get = "message", pure)]
    pub fn message(e: &mut HostError) -> String {
        e.message.clone()
    }

    /// What to do about it, or `()`.
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { if e.hint != () { log::info(e.hint); } }
    /// ```
    #[rhai_fn(get = "hint", pure)]
    pub fn hint(e: &mut HostError) -> Dynamic {
        e.hint.clone().map(Dynamic::from).unwrap_or(Dynamic::UNIT)
    }

    /// The error's causes, outermost first, one line each (secrets masked): what the library
    /// below said, down to the root cause (`"Connection refused"`).
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { for c in e.causes { log::info(`caused by: ${c}`); } }
    /// ```
    #[rhai_fn(get = "causes", pure)]
    pub fn causes(e: &mut HostError) -> Array {
        e.causes().into_iter().map(Dynamic::from).collect()
    }

    /// A field by name, as on a map: `e["kind"]`, `e["message"]`, `e["hint"]`, `e["causes"]`.
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { print(e["kind"]); }
    /// ```
    #[rhai_fn(index_get, return_raw, pure)]
    pub fn field(e: &mut HostError, name: &str) -> RhaiResult<Dynamic> {
        Ok(match name {
            "kind" => kind(e).into(),
            "message" => message(e).into(),
            "hint" => hint(e),
            "causes" => causes(e).into(),
            other => {
                return Err(HostError::input(format!(
                    "an error has `kind`, `message`, `hint` and `causes`, not `{other}`"
                ))
                .into());
            }
        })
    }

    /// `true` for the fields an error has, so `"hint" in e` works as on a map.
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { if "kind" in e { print(e.kind); } }
    /// ```
    #[rhai_fn(name = "contains", pure)]
    pub fn has_field(e: &mut HostError, name: &str) -> bool {
        field(e, name).is_ok()
    }

    /// The message, as `${e}` shows it.
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { print(`failed: ${e}`); }
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(e: &mut HostError) -> String {
        e.message.clone()
    }

    /// `error(kind: message)`, as `debug(e)` shows it.
    ///
    /// ```rhai
    /// try { aws::account_id(); } catch (e) { debug(e); }
    /// ```
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(e: &mut HostError) -> String {
        format!("error({}: {})", e.kind, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::{HostError, error_chain, root_cause};

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

    #[test]
    fn causes_are_distinct_lines_without_os_numbers_and_masked() {
        let e = HostError::api("cannot reach `db`")
            .with_source(Outer(std::io::Error::from_raw_os_error(111)));
        assert_eq!(e.causes(), ["dispatch failure", "Connection refused"]);
        // A cause an earlier one already says is not repeated.
        let e = HostError::api("cannot reach `db`").with_source(std::io::Error::other(Outer(
            std::io::Error::from_raw_os_error(111),
        )));
        assert_eq!(e.causes(), ["dispatch failure", "Connection refused"]);
        // A registered secret in a library's text is masked in the chain.
        let _s = crate::secret_value::Secret::new("cause-canary-7f3", "test");
        let e = HostError::new(super::ErrorKind::Auth, "authentication failed").with_source(
            std::io::Error::other("password authentication failed: cause-canary-7f3"),
        );
        let causes = e.causes();
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert!(!causes[0].contains("cause-canary-7f3"), "{causes:?}");
        assert!(causes[0].contains("***"), "{causes:?}");
    }

    #[test]
    fn the_source_is_the_library_error_itself() {
        let e = HostError::io("cannot read")
            .with_source(std::io::Error::from(std::io::ErrorKind::NotFound));
        let io = super::find_cause::<std::io::Error>(&e).expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
