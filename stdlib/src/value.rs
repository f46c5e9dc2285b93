//! Conversions between Rhai values and JSON, the lingua franca of every API we talk to.
//!
//! A [`crate::secret_value::Secret`] inside a Rhai value is revealed only when converting for an API
//! call ([`Secrets::Reveal`]); for the journal, output and errors it becomes `***`.

use rhai::{Array, Dynamic, Map};
use serde_json::Value;

use crate::error::HostError;
use crate::secret_value::{MASK, Secret};

/// What to do with Secret values while converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// The plain value: only for the body of an API call or a child process's stdin.
    Reveal,
    /// `***`.
    Mask,
}

/// Converts a Rhai value to JSON.
pub fn to_json(d: &Dynamic, secrets: Secrets) -> Result<Value, HostError> {
    let mut paths = Vec::new();
    to_json_at(d, secrets, "", &mut paths)
}

/// Converts to JSON and also returns the paths (`a.b[0].c`) where Secrets were found.
pub fn to_json_with_secret_paths(
    d: &Dynamic,
    secrets: Secrets,
) -> Result<(Value, Vec<String>), HostError> {
    let mut paths = Vec::new();
    let v = to_json_at(d, secrets, "", &mut paths)?;
    Ok((v, paths))
}

/// Appends a map key to a path, quoting keys that are not plain identifiers.
pub fn join_path(base: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    match (base.is_empty(), plain) {
        (true, true) => key.to_string(),
        (false, true) => format!("{base}.{key}"),
        (_, false) => format!("{base}[{key:?}]"),
    }
}

fn to_json_at(
    d: &Dynamic,
    secrets: Secrets,
    path: &str,
    paths: &mut Vec<String>,
) -> Result<Value, HostError> {
    if d.is_unit() {
        return Ok(Value::Null);
    }
    if let Some(s) = d.read_lock::<Secret>() {
        paths.push(path.to_string());
        return Ok(Value::String(match secrets {
            Secrets::Reveal => s.expose().to_string(),
            Secrets::Mask => MASK.to_string(),
        }));
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = d.as_float() {
        return Ok(serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null));
    }
    if let Ok(c) = d.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if d.is_string() {
        return Ok(Value::String(d.clone().into_string().unwrap_or_default()));
    }
    if let Some(arr) = d.read_lock::<Array>() {
        let mut out = Vec::with_capacity(arr.len());
        for (i, item) in arr.iter().enumerate() {
            out.push(to_json_at(item, secrets, &format!("{path}[{i}]"), paths)?);
        }
        return Ok(Value::Array(out));
    }
    if let Some(map) = d.read_lock::<Map>() {
        let mut out = serde_json::Map::new();
        for (k, v) in map.iter() {
            out.insert(
                k.to_string(),
                to_json_at(v, secrets, &join_path(path, k), paths)?,
            );
        }
        return Ok(Value::Object(out));
    }
    if d.is_blob() {
        use base64::Engine as _;
        let blob = d.clone().into_blob().unwrap_or_default();
        return Ok(Value::String(
            base64::engine::general_purpose::STANDARD.encode(blob),
        ));
    }
    Err(HostError::input(format!(
        "a value of type `{}` cannot be turned into JSON (at `{}`)",
        d.type_name(),
        if path.is_empty() { "." } else { path }
    )))
}

/// Converts JSON to a Rhai value (objects become maps, numbers ints where exact).
pub fn from_json(v: &Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        Value::String(s) => s.clone().into(),
        Value::Array(a) => a.iter().map(from_json).collect::<Array>().into(),
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| (k.as_str().into(), from_json(v)))
            .collect::<Map>()
            .into(),
    }
}

/// A value as text for messages: strings as they are, Secrets as `***`, others as Rhai shows them.
pub fn display(d: &Dynamic) -> String {
    if d.is::<Secret>() {
        MASK.to_string()
    } else {
        d.to_string()
    }
}

/// Reads an optional string option from an options map.
pub fn opt_str(opts: &Map, key: &str) -> Result<Option<String>, HostError> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_string() => Ok(Some(v.to_string())),
        Some(v) => Err(HostError::input(format!(
            "option `{key}` must be a string, not `{}`",
            v.type_name()
        ))),
    }
}

/// Reads an optional bool option from an options map.
pub fn opt_bool(opts: &Map, key: &str) -> Result<Option<bool>, HostError> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .as_bool()
            .map(Some)
            .map_err(|t| HostError::input(format!("option `{key}` must be a bool, not `{t}`"))),
    }
}

/// Reads an optional integer option from an options map.
pub fn opt_int(opts: &Map, key: &str) -> Result<Option<i64>, HostError> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .map_err(|t| HostError::input(format!("option `{key}` must be an integer, not `{t}`"))),
    }
}

/// Fails when `opts` holds a key not in `known`, suggesting the closest known key.
pub fn check_keys(what: &str, opts: &Map, known: &[&str]) -> Result<(), HostError> {
    for k in opts.keys() {
        if !known.contains(&k.as_str()) {
            let mut e = HostError::input(format!("unknown option `{k}` for `{what}`"));
            if let Some(s) = crate::suggest::closest(k, known.iter().copied()) {
                e = e.with_hint(format!("did you mean `{s}`?"));
            } else {
                e = e.with_hint(format!("known options: {}", known.join(", ")));
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_or_revealed() {
        let mut m = Map::new();
        m.insert("user".into(), "admin".into());
        m.insert(
            "password".into(),
            Dynamic::from(Secret::new("s3cr3t-value", "t")),
        );
        let d: Dynamic = m.into();
        let (masked, paths) = to_json_with_secret_paths(&d, Secrets::Mask).unwrap();
        assert_eq!(masked["password"], "***");
        assert_eq!(paths, vec!["password"]);
        assert_eq!(
            to_json(&d, Secrets::Reveal).unwrap()["password"],
            "s3cr3t-value"
        );
    }

    #[test]
    fn json_round_trip() {
        let v: Value = serde_json::json!({"a": [1, 2.5, "x", null, true], "b": {"c": "d"}});
        assert_eq!(to_json(&from_json(&v), Secrets::Mask).unwrap(), v);
    }

    #[test]
    fn paths_quote_odd_keys() {
        assert_eq!(
            join_path("metadata.annotations", "eks.amazonaws.com/role-arn"),
            "metadata.annotations[\"eks.amazonaws.com/role-arn\"]"
        );
        assert_eq!(join_path("", "a"), "a");
    }
}
