//! Conversions between Rhai values and JSON, the lingua franca of every API we talk to.
//!
//! A [`crate::secret_value::Secret`] inside a Rhai value is revealed only when converting for an API
//! call ([`Secrets::Reveal`]); for the journal, output and errors it becomes `***`.

use std::time::Duration;

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

/// A type an option (or an argument) can be read as: the one reader of the standard library.
/// `what` names the value in errors ("option `timeout`").
pub trait FromScript: Sized {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError>;
}

/// The error for a value of the wrong type: "option `x` must be a string, not `i64`".
fn wrong_type(what: &str, expected: &str, v: &Dynamic) -> HostError {
    HostError::input(format!(
        "{what} must be {expected}, not `{}`",
        v.type_name()
    ))
}

/// Reads option `key` of an options map as a `T`; absent or `()` is `None`.
///
/// `opt::<String>`, `opt::<bool>`, `opt::<i64>`, `opt::<Vec<String>>`, `opt::<Map>`,
/// `opt::<Value>` (JSON, secrets revealed: it is sent to an API), `opt::<Duration>` (seconds or
/// `"90s"`, `"5m"`, `"1h30m"`), `opt::<Tags>`.
pub fn opt<T: FromScript>(opts: &Map, key: &str) -> Result<Option<T>, HostError> {
    match opts.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => T::from_script(v, &format!("option `{key}`")).map(Some),
    }
}

impl FromScript for String {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        if v.is_string() {
            Ok(v.to_string())
        } else {
            Err(wrong_type(what, "a string", v))
        }
    }
}

impl FromScript for bool {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        v.as_bool().map_err(|_| wrong_type(what, "a bool", v))
    }
}

impl FromScript for i64 {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        v.as_int().map_err(|_| wrong_type(what, "an integer", v))
    }
}

impl FromScript for Map {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        v.read_lock::<Map>()
            .map(|m| m.clone())
            .ok_or_else(|| wrong_type(what, "a map", v))
    }
}

/// A map as JSON, secrets revealed (it is sent to an API).
impl FromScript for Value {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        if v.is_map() {
            to_json(v, Secrets::Reveal)
        } else {
            Err(wrong_type(what, "a map", v))
        }
    }
}

impl FromScript for Vec<String> {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        let arr = v
            .read_lock::<rhai::Array>()
            .ok_or_else(|| wrong_type(what, "a list of strings", v))?;
        arr.iter()
            .map(|i| {
                if i.is_string() {
                    Ok(i.to_string())
                } else {
                    Err(HostError::input(format!(
                        "{what} must be a list of strings; it holds a `{}`",
                        i.type_name()
                    )))
                }
            })
            .collect()
    }
}

/// Seconds (an integer), or text: `"90"`, `"90s"`, `"5m"`, `"1h30m"`.
impl FromScript for Duration {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        if let Ok(i) = v.as_int() {
            return u64::try_from(i)
                .map(Duration::from_secs)
                .map_err(|_| HostError::input(format!("{what} must not be negative")));
        }
        if v.is_string() {
            return parse_duration(&v.to_string());
        }
        Err(wrong_type(what, "seconds or a string like \"5m\"", v))
    }
}

/// Parses a duration: seconds as a number, or `"90s"`, `"5m"`, `"1h"`, `"1h30m"`.
pub fn parse_duration(text: &str) -> Result<Duration, HostError> {
    let invalid = || {
        HostError::input(format!("invalid duration `{text}`"))
            .with_hint("e.g. 300, \"90s\", \"5m\", \"1h30m\"")
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut secs = 0u64;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit] {
            "" if rest.is_empty() && secs == 0 => 1,
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(invalid()),
        };
        secs = n
            .checked_mul(scale)
            .and_then(|n| secs.checked_add(n))
            .ok_or_else(invalid)?;
        rest = &rest[unit..];
    }
    Ok(Duration::from_secs(secs))
}

/// Resource tags: a map of string (or number, bool) values. An empty map is the same as none
/// (nothing to manage): `opt::<Tags>` gives `None` for it through [`Tags::non_empty`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tags(pub Vec<(String, String)>);

impl Tags {
    /// `None` for no tags.
    pub fn non_empty(t: Option<Tags>) -> Option<Vec<(String, String)>> {
        t.map(|t| t.0).filter(|t| !t.is_empty())
    }
}

impl FromScript for Tags {
    fn from_script(v: &Dynamic, what: &str) -> Result<Self, HostError> {
        let map = v
            .read_lock::<Map>()
            .ok_or_else(|| wrong_type(what, "a map", v))?;
        map.iter()
            .map(|(k, v)| {
                if v.is_string() || v.is_int() || v.is_bool() || v.is_float() {
                    Ok((k.to_string(), v.to_string()))
                } else {
                    Err(HostError::input(format!(
                        "tag `{k}` must be a string, not `{}`",
                        v.type_name()
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Tags)
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
    fn one_reader_for_every_option_type() {
        let mut m = Map::new();
        m.insert("s".into(), "x".into());
        m.insert("n".into(), Dynamic::from(3_i64));
        m.insert("t".into(), "1h30m".into());
        m.insert("u".into(), Dynamic::UNIT);
        assert_eq!(opt::<String>(&m, "s").unwrap().as_deref(), Some("x"));
        assert_eq!(opt::<i64>(&m, "n").unwrap(), Some(3));
        assert_eq!(
            opt::<Duration>(&m, "n").unwrap(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            opt::<Duration>(&m, "t").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(opt::<bool>(&m, "u").unwrap(), None);
        assert_eq!(opt::<bool>(&m, "missing").unwrap(), None);
        let e = opt::<bool>(&m, "s").unwrap_err();
        assert_eq!(e.message, "option `s` must be a bool, not `string`");
        let e = opt::<Vec<String>>(&m, "n").unwrap_err();
        assert_eq!(e.message, "option `n` must be a list of strings, not `i64`");
        for bad in ["", "5 minutes", "m", "5x", "1h30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("2m30s").unwrap().as_secs(), 150);
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
