//! The [`Secret`] value and the mask registry: a string that displays as `***` everywhere
//! (print, debug, interpolation, journal, errors, JSON output) and is unwrapped only where it is
//! sent to an API. Every secret value is registered so any text leaving the process (helm's
//! stderr, an API error body) can be masked with [`mask_text`]. A leaf of the crate: it imports
//! nothing from it, so the error type and the journal can mask without depending on a namespace.
//!
//! The registry is process-wide on purpose: whatever the process prints (a diagnostic after the
//! run's host is gone, a panic message) must be masked, not only what one run prints.

use std::fmt;
use std::sync::{Arc, RwLock};

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

/// A JSON value with every string in it passed through [`mask_text`].
pub fn mask_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(mask_text(&s)),
        Value::Array(a) => Value::Array(a.into_iter().map(mask_json).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, mask_json(v))).collect()),
        other => other,
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
