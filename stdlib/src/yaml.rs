//! The `yaml` namespace: parse (single and multi-document) and serialize YAML, with errors that
//! carry line and column. Also the key-position index the runtime uses to name `file:line:col`
//! for config keys.

use std::collections::HashMap;

use rhai::plugin::*;
use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use crate::error::{HostError, RhaiResult};
use crate::value::{Secrets, from_json, join_path, to_json_with_secret_paths};

/// A 1-based line and column in a text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

fn error(e: serde_saphyr::Error, origin: &str) -> HostError {
    let text = e.to_string();
    let first = text
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    let err = match e.location() {
        Some(loc) => HostError::input(format!(
            "invalid YAML in {origin} at line {}, column {}: {first}",
            loc.line(),
            loc.column()
        )),
        None => HostError::input(format!("invalid YAML in {origin}: {first}")),
    };
    err.with_source(e)
}

/// Parses one YAML document. `origin` names the text in errors (a file name, "the YAML text").
pub fn parse_one(text: &str, origin: &str) -> Result<Value, HostError> {
    let mut docs = parse_many(text, origin)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.remove(0)),
        n => Err(HostError::input(format!(
            "{origin} holds {n} YAML documents where one was expected"
        ))
        .with_hint("use `yaml::parse_all` for multi-document YAML")),
    }
}

/// Parses every document of a multi-document YAML text (empty documents are dropped).
pub fn parse_many(text: &str, origin: &str) -> Result<Vec<Value>, HostError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| error(e, origin))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Serializes a JSON value as YAML.
pub fn to_yaml(v: &Value) -> Result<String, HostError> {
    serde_saphyr::to_string(v).map_err(|e| HostError::input(format!("cannot write YAML: {e}")))
}

/// Positions of every mapping key (and sequence item) of the first document, by path
/// (`db.host`, `images[0].tag`, `annotations["a/b"]`). Empty when the text does not parse.
pub fn key_positions(text: &str) -> HashMap<String, Pos> {
    enum Frame {
        Map { path: String, key: Option<String> },
        Seq { path: String, index: usize },
    }
    let mut out = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    // The path a value starting now will have, and records its position.
    fn value_path(stack: &mut [Frame]) -> Option<String> {
        match stack.last_mut()? {
            Frame::Map { path, key } => key.take().map(|k| join_path(path, &k)),
            Frame::Seq { path, index } => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
        }
    }
    for ev in Parser::new_from_str(text) {
        let Ok((ev, span)) = ev else { break };
        let pos = Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        match ev {
            Event::DocumentEnd => break,
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = match stack.last() {
                    None => String::new(),
                    Some(_) => match value_path(&mut stack) {
                        Some(p) => p,
                        None => return out,
                    },
                };
                stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Scalar(v, ..) => match stack.last_mut() {
                Some(Frame::Map { path, key }) if key.is_none() => {
                    let k = v.to_string();
                    out.insert(join_path(path, &k), pos);
                    *key = Some(k);
                }
                Some(Frame::Seq { path, index }) => {
                    out.entry(format!("{path}[{index}]")).or_insert(pos);
                    *index += 1;
                }
                Some(Frame::Map { key, .. }) => *key = None,
                None => {}
            },
            Event::Alias(..) => {
                value_path(&mut stack);
            }
            _ => {}
        }
    }
    out
}

/// Serializes a Rhai value; the result is a Secret when the value held one.
pub fn to_string_secret_aware(
    value: &Dynamic,
    ser: impl Fn(&Value) -> Result<String, HostError>,
) -> RhaiResult<Dynamic> {
    let (json, paths) = to_json_with_secret_paths(value, Secrets::Reveal)?;
    let text = ser(&json)?;
    if paths.is_empty() {
        Ok(text.into())
    } else {
        Ok(Dynamic::from(crate::secret_value::Secret::new(
            text,
            "serialized value",
        )))
    }
}

/// The `yaml` namespace.
#[export_module]
pub mod yaml_module {
    use super::*;

    /// Parses a YAML document into a map, array or scalar.
    ///
    /// ```rhai
    /// let v = yaml::parse("a: 1\nb: [x, y]");
    /// v.b[1]   // "y"
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parse(ctx: NativeCallContext, text: &str) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        Ok(from_json(&parse_one(text, "the YAML text")?))
    }

    /// Parses a multi-document YAML text (`---` separated) into an array of documents.
    ///
    /// ```rhai
    /// let docs = yaml::parse_all("kind: A\n---\nkind: B\n");
    /// docs.len()   // 2
    /// ```
    #[rhai_fn(return_raw)]
    pub fn parse_all(ctx: NativeCallContext, text: &str) -> RhaiResult<rhai::Array> {
        crate::host::track(&ctx);
        Ok(parse_many(text, "the YAML text")?
            .iter()
            .map(from_json)
            .collect())
    }

    /// Serializes a value as YAML. When the value holds a Secret, the result is a Secret.
    ///
    /// ```rhai
    /// yaml::to_string(#{a: 1})   // "a: 1\n"
    /// ```
    #[rhai_fn(return_raw)]
    pub fn to_string(ctx: NativeCallContext, value: Dynamic) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        to_string_secret_aware(&value, to_yaml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_keys() {
        let text = "db:\n  host: x\n  port: 5432\nlist:\n  - a\n  - {k: v}\n";
        let p = key_positions(text);
        assert_eq!(p["db"], Pos { line: 1, col: 1 });
        assert_eq!(p["db.port"], Pos { line: 3, col: 3 });
        assert_eq!(p["list[1].k"].line, 6);
    }

    #[test]
    fn errors_have_positions() {
        let e = parse_one("a: 1\n b: 2\n", "x.yaml").unwrap_err();
        assert!(e.message.contains("x.yaml at line"), "{}", e.message);
    }

    #[test]
    fn multi_document() {
        assert_eq!(parse_many("a: 1\n---\nb: 2\n---\n", "t").unwrap().len(), 2);
        assert!(parse_one("a: 1\n---\nb: 2\n", "t").is_err());
    }
}

/// Property tests: the position index and the parser never panic on arbitrary text.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn never_panics(text in "[a-z:\\- \\n\\[\\]{}'\"#&*!|>,0-9]{0,120}") {
            let _ = key_positions(&text);
            let _ = parse_many(&text, "t");
        }

        #[test]
        fn every_top_level_key_has_a_position(keys in proptest::collection::btree_set("[a-z]{1,6}", 1..6)) {
            let text: String = keys.iter().map(|k| format!("{k}: 1\n")).collect();
            let pos = key_positions(&text);
            for (i, k) in keys.iter().enumerate() {
                prop_assert_eq!(pos.get(k.as_str()).map(|p| p.line), Some(i + 1));
            }
        }
    }
}
