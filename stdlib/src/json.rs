//! The `json` namespace: parse and serialize JSON; errors carry line and column.

use rhai::plugin::*;
use serde_json::Value;

use crate::error::{HostError, RhaiResult};
use crate::value::from_json;
use crate::yaml::to_string_secret_aware;

/// Parses JSON text; `origin` names it in errors.
pub fn parse_text(text: &str, origin: &str) -> Result<Value, HostError> {
    serde_json::from_str(text).map_err(|e| {
        HostError::input(format!(
            "invalid JSON in {origin} at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// The `json` namespace.
#[export_module]
pub mod json_module {
    use super::*;

    /// Parses JSON text.
    ///
    /// ```rhai
    /// json::parse(`{"a": [1, 2]}`).a[1]   // 2
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parse(ctx: NativeCallContext, text: &str) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        Ok(from_json(&parse_text(text, "the JSON text")?))
    }

    /// Serializes a value as compact JSON. When the value holds a Secret, the result is a Secret.
    ///
    /// ```rhai
    /// json::to_string(#{a: 1})   // `{"a":1}`
    /// ```
    #[rhai_fn(return_raw)]
    pub fn to_string(ctx: NativeCallContext, value: Dynamic) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        to_string_secret_aware(&value, |v| Ok(v.to_string()))
    }

    /// Serializes a value as indented JSON.
    ///
    /// ```rhai
    /// print(json::to_string_pretty(#{a: 1}));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn to_string_pretty(ctx: NativeCallContext, value: Dynamic) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        to_string_secret_aware(&value, |v| {
            serde_json::to_string_pretty(v).map_err(|e| HostError::input(e.to_string()))
        })
    }
}
