//! The `secret` namespace and the [`Secret`] type: a value that displays as `***` everywhere
//! (print, debug, interpolation, journal, errors, JSON output) and is unwrapped only where it is
//! sent to an API. Every secret value is also registered so any text leaving the process
//! (helm's stderr, an API error body) can be masked with [`mask_text`].

use std::fmt;
use std::sync::{Arc, RwLock};

use rhai::plugin::*;

use crate::error::{HostError, RhaiResult};

/// What a masked value is shown as.
pub const MASK: &str = "***";

/// A secret string. Cloning is cheap; the value is never displayed.
#[derive(Clone)]
pub struct Secret {
    value: Arc<str>,
    /// Where it came from, e.g. `env DB_PASSWORD`; safe to display.
    source: Arc<str>,
}

impl Secret {
    /// Wraps `value` and registers it for masking.
    pub fn new(value: impl Into<String>, source: impl Into<String>) -> Secret {
        let value: Arc<str> = Arc::from(value.into());
        register(&value);
        Secret {
            value,
            source: Arc::from(source.into()),
        }
    }

    /// The plain value, for sending to an API. Never print it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where the value came from (safe to display).
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({MASK} from {})", self.source)
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(MASK)
    }
}

/// Values shorter than this are not masked in free text: a Kubernetes Secret read back holds
/// user names like `argo`, and masking every `argo` in every line would make output useless.
/// Shorter secrets are still masked wherever they are shown as values (journal, print, JSON).
const MIN_MASK_LEN: usize = 8;

static REGISTRY: RwLock<Vec<Arc<str>>> = RwLock::new(Vec::new());

fn register(value: &Arc<str>) {
    if value.len() < MIN_MASK_LEN {
        return;
    }
    let mut reg = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    if !reg.iter().any(|v| v == value) {
        reg.push(value.clone());
        // Longest first, so a secret containing another is masked whole.
        reg.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// Replaces every known secret value (and its base64 form) in `text` with `***`.
pub fn mask_text(text: &str) -> String {
    let reg = REGISTRY.read().unwrap_or_else(|e| e.into_inner());
    if reg.is_empty() {
        return text.to_string();
    }
    let mut out = text.to_string();
    for v in reg.iter() {
        if out.contains(&**v) {
            out = out.replace(&**v, MASK);
        }
        let b64 = base64_of(v);
        if out.contains(&b64) {
            out = out.replace(&b64, MASK);
        }
    }
    out
}

fn base64_of(v: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(v.as_bytes())
}

/// Reads a secret from an environment variable.
pub fn from_env(name: &str) -> Result<Secret, HostError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(Secret::new(v, format!("env {name}"))),
        Ok(_) => Err(
            HostError::config(format!("environment variable `{name}` is empty"))
                .with_hint(format!("export {name}=... before running")),
        ),
        Err(_) => Err(
            HostError::config(format!("environment variable `{name}` is not set"))
                .with_hint(format!("export {name}=... before running")),
        ),
    }
}

/// Reads a secret from a file (trailing newlines are dropped).
pub fn from_file(path: &std::path::Path) -> Result<Secret, HostError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| HostError::io(format!("cannot read secret file `{}`: {e}", path.display())))?;
    Ok(Secret::new(
        text.trim_end_matches(['\n', '\r']).to_string(),
        format!("file {}", path.display()),
    ))
}

/// The `secret` namespace.
#[export_module]
pub mod secret_module {
    use super::*;

    /// A secret value, shown as `***`.
    pub type Secret = super::Secret;

    /// Reads a secret from the environment variable `name`.
    ///
    /// ```rhai
    /// let pw = secret::env("DB_PASSWORD");
    /// print(pw);   // ***
    /// ```
    #[rhai_fn(return_raw)]
    pub fn env(ctx: NativeCallContext, name: &str) -> RhaiResult<Secret> {
        crate::host::track(&ctx);
        Ok(from_env(name)?)
    }

    /// Reads a secret from a file; a trailing newline is dropped.
    ///
    /// ```rhai
    /// let token = secret::file("/run/secrets/om-admin-token");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn file(ctx: NativeCallContext, path: &str) -> RhaiResult<Secret> {
        let host = crate::host::Host::of(&ctx)?;
        let full = host.check_read(&host.resolve_from(&ctx, path))?;
        Ok(from_file(&full)?)
    }

    /// Marks a plain string as secret (for values computed in a script).
    ///
    /// ```rhai
    /// let s = secret::from("hunter2");
    /// print(`${s}`);   // ***
    /// ```
    #[rhai_fn(name = "from")]
    pub fn from_string(value: &str) -> Secret {
        super::Secret::new(value, "script")
    }

    /// `true` when the value is a Secret.
    ///
    /// ```rhai
    /// secret::is_secret(secret::from("x"))   // true
    /// ```
    pub fn is_secret(value: Dynamic) -> bool {
        value.is::<Secret>()
    }

    /// Where the secret came from (`env DB_PASSWORD`, `file ...`, `config db.password`).
    ///
    /// ```rhai
    /// secret::env("DB_PASSWORD").source   // "env DB_PASSWORD"
    /// ```
    #[rhai_fn(get = "source", pure)]
    pub fn get_source(s: &mut Secret) -> String {
        s.source().to_string()
    }

    /// The length of the secret value (the value itself is never shown).
    #[rhai_fn(get = "len", pure)]
    pub fn get_len(s: &mut Secret) -> i64 {
        s.expose().chars().count() as i64
    }

    /// Secrets print as `***`.
    ///
    /// ```rhai
    /// print(secret::env("DB_PASSWORD"));        // ***
    /// let line = `password: ${secret::env("DB_PASSWORD")}`;   // "password: ***"
    /// ```
    #[rhai_fn(global, name = "to_string", pure)]
    pub fn to_string(_s: &mut Secret) -> String {
        MASK.to_string()
    }

    /// Secrets debug-print as `Secret(*** from SOURCE)`.
    ///
    /// ```rhai
    /// debug(secret::env("DB_PASSWORD"));        // Secret(*** from env DB_PASSWORD)
    /// ```
    #[rhai_fn(global, name = "to_debug", pure)]
    pub fn to_debug(s: &mut Secret) -> String {
        format!("{s:?}")
    }

    /// Two secrets are equal when their values are.
    #[rhai_fn(global, name = "==", pure)]
    pub fn eq(a: &mut Secret, b: Secret) -> bool {
        *a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_masked_and_masks_text() {
        let s = Secret::new("canary-7f3a9", "test");
        assert_eq!(s.to_string(), "***");
        assert!(!format!("{s:?}").contains("canary"));
        assert_eq!(mask_text("pw=canary-7f3a9!"), "pw=***!");
        assert_eq!(
            mask_text(&format!("b64={}", base64_of("canary-7f3a9"))),
            "b64=***"
        );
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
    }
}
