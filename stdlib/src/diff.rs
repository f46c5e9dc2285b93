//! Per-field comparison of desired and live objects, the heart of every `ensure_*`.
//!
//! Only the fields the script sets are compared (a live object has many more). Numbers compare
//! by value (`1` equals `1.0`), and paths whose value is secret are shown as `***`.

use serde_json::Value;

use crate::journal::FieldChange;
use crate::secret_value::MASK;
use crate::value::join_path;

/// The fields of `desired` that `live` lacks or holds differently. With `live = None` every
/// leaf of `desired` is listed (a creation). `is_secret(path)` masks values at that path.
pub fn diff(
    desired: &Value,
    live: Option<&Value>,
    is_secret: &dyn Fn(&str) -> bool,
) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(desired, live, "", is_secret, &mut out);
    out
}

/// `true` when `live` holds every field of `desired` with an equal value.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    diff(desired, Some(live), &|_| false).is_empty()
}

fn masked(v: Option<&Value>, secret: bool) -> Option<Value> {
    v.map(|v| {
        if secret {
            Value::String(MASK.into())
        } else {
            v.clone()
        }
    })
}

fn walk(
    desired: &Value,
    live: Option<&Value>,
    path: &str,
    is_secret: &dyn Fn(&str) -> bool,
    out: &mut Vec<FieldChange>,
) {
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, dv) in d {
                walk(dv, l.get(k), &join_path(path, k), is_secret, out);
            }
        }
        (Value::Object(d), None) if !d.is_empty() => {
            for (k, dv) in d {
                walk(dv, None, &join_path(path, k), is_secret, out);
            }
        }
        (Value::Null, None) => {}
        (d, l) => {
            if l.is_some_and(|l| equal(d, l)) {
                return;
            }
            let secret = is_secret(path);
            out.push(FieldChange {
                path: path.to_string(),
                before: masked(l, secret),
                after: if d.is_null() {
                    None
                } else {
                    masked(Some(d), secret)
                },
            });
        }
    }
}

/// JSON equality with numbers compared by value.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compares_only_desired_fields() {
        let live = json!({"a": 1, "b": {"c": "x", "d": "y"}, "e": [1, 2]});
        assert!(diff(&json!({"b": {"c": "x"}, "a": 1.0}), Some(&live), &|_| false).is_empty());
        let d = diff(&json!({"b": {"c": "z"}, "e": [1]}), Some(&live), &|_| false);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].path, "b.c");
        assert_eq!(d[0].before, Some(json!("x")));
        assert_eq!(d[0].after, Some(json!("z")));
    }

    #[test]
    fn creation_lists_leaves_and_masks_secrets() {
        let d = diff(
            &json!({"data": {"password": "hunter22"}, "type": "Opaque"}),
            None,
            &|p| p.starts_with("data"),
        );
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].after, Some(json!("***")));
        assert_eq!(d[1].after, Some(json!("Opaque")));
    }
}

/// Property tests: diffing is reflexive and JSON conversion round-trips.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i32>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn an_object_does_not_differ_from_itself(v in json()) {
            prop_assert!(diff(&v, Some(&v), &|_| false).is_empty());
        }

        #[test]
        fn rhai_round_trip(v in json()) {
            let back = crate::value::to_json(&crate::value::from_json(&v), crate::value::Secrets::Mask).unwrap();
            prop_assert!(equal(&v, &back));
        }
    }
}
