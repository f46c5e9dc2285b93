//! IAM policy documents compared as JSON, not as text: IAM returns them URL-encoded, with keys
//! reordered and whitespace changed, and single values may come back as one-element lists.
//! [`normalize`] gives the canonical form both sides are compared in.

use serde_json::{Map, Value};

use crate::error::HostError;
use crate::journal::FieldChange;
use crate::value::join_path;

/// Parses a policy document as IAM returns it (URL-encoded JSON) or as written (plain JSON).
pub fn parse_document(text: &str) -> Result<Value, HostError> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let decoded = percent_decode(text, false);
    serde_json::from_str(&decoded)
        .or_else(|_| serde_json::from_str(&percent_decode(text, true)))
        .map_err(|e| {
            HostError::api(format!(
                "IAM returned a policy document that is not JSON: {e}"
            ))
        })
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set, for form encoding).
fn percent_decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical form of a policy document: `Statement` always a list, statements and string
/// lists sorted, one-element lists as their element, condition values as strings.
pub fn normalize(doc: &Value) -> Value {
    norm(doc, None, false)
}

fn norm(v: &Value, key: Option<&str>, in_condition: bool) -> Value {
    match v {
        Value::Object(o) => {
            // Keys in sorted order, so a statement's text (its sort key below) does not depend
            // on the order IAM returned its keys in.
            let mut keys: Vec<(&String, &Value)> = o.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            let mut out = Map::new();
            for (k, v) in keys {
                let in_cond = in_condition || k == "Condition";
                let mut nv = norm(v, Some(k), in_cond);
                if k == "Statement" && nv.is_object() {
                    nv = Value::Array(vec![nv]);
                }
                out.insert(k.clone(), nv);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(|i| norm(i, None, in_condition)).collect();
            if key == Some("Statement") {
                items.sort_by_key(|s| s.to_string());
                return Value::Array(items);
            }
            if items.iter().all(Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                items.dedup();
            }
            if items.len() == 1 {
                return items.pop().unwrap_or(Value::Null);
            }
            Value::Array(items)
        }
        Value::Bool(b) if in_condition => Value::String(b.to_string()),
        Value::Number(n) if in_condition => Value::String(n.to_string()),
        other => other.clone(),
    }
}

/// `true` when two documents mean the same.
pub fn same(a: &Value, b: &Value) -> bool {
    crate::diff::equal(&normalize(a), &normalize(b))
}

/// A normalized document shaped for a per-field diff: lists of objects (statements) become
/// maps keyed by index, so a changed condition shows as `Statement.0.Condition...`.
pub fn for_diff(doc: &Value) -> Value {
    indexed(&normalize(doc))
}

fn indexed(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), indexed(v))).collect()),
        Value::Array(a) if a.iter().any(Value::is_object) => Value::Object(
            a.iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), indexed(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The fields `live` has below `path` that `desired` lacks (the other half of a strict diff,
/// since [`crate::diff::diff`] only looks at the fields the script sets).
pub fn removed(desired: &Value, live: &Value, path: &str, out: &mut Vec<FieldChange>) {
    if let (Value::Object(d), Value::Object(l)) = (desired, live) {
        for (k, lv) in l {
            let p = join_path(path, k);
            match d.get(k) {
                Some(dv) => removed(dv, lv, &p, out),
                None => out.push(FieldChange {
                    path: p,
                    before: Some(lv.clone()),
                    after: None,
                }),
            }
        }
    }
}

/// The full difference of two documents (fields changed, added and removed), as journal fields
/// below `path`.
pub fn doc_diff(desired: &Value, live: Option<&Value>, path: &str) -> Vec<FieldChange> {
    let d = for_diff(desired);
    let l = live.map(for_diff);
    let mut out = crate::diff::diff(&d, l.as_ref(), &|_| false);
    if let Some(l) = &l {
        removed(&d, l, "", &mut out);
    }
    for f in &mut out {
        f.path = if f.path.is_empty() {
            path.to_string()
        } else {
            format!("{path}.{}", f.path)
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn trust() -> Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    "oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub": "system:serviceaccount:collate:openmetadata",
                    "oidc.eks.eu-west-1.amazonaws.com/id/ABC:aud": "sts.amazonaws.com"
                }}
            }]
        })
    }

    #[test]
    fn url_encoded_and_reordered_documents_are_the_same() {
        // What IAM returns: URL-encoded, keys in another order, no whitespace, lists for scalars.
        let iam = "%7B%22Statement%22%3A%5B%7B%22Condition%22%3A%7B%22StringEquals%22%3A%7B%22oidc.eks.eu-west-1.amazonaws.com%2Fid%2FABC%3Aaud%22%3A%22sts.amazonaws.com%22%2C%22oidc.eks.eu-west-1.amazonaws.com%2Fid%2FABC%3Asub%22%3A%22system%3Aserviceaccount%3Acollate%3Aopenmetadata%22%7D%7D%2C%22Action%22%3A%5B%22sts%3AAssumeRoleWithWebIdentity%22%5D%2C%22Principal%22%3A%7B%22Federated%22%3A%22arn%3Aaws%3Aiam%3A%3A123456789012%3Aoidc-provider%2Foidc.eks.eu-west-1.amazonaws.com%2Fid%2FABC%22%7D%2C%22Effect%22%3A%22Allow%22%7D%5D%2C%22Version%22%3A%222012-10-17%22%7D";
        let live = parse_document(iam).unwrap();
        assert!(same(&trust(), &live));
        assert!(doc_diff(&trust(), Some(&live), "trust").is_empty());
        // Form encoding (`+` for spaces) and a statement given as an object also compare equal.
        let mut one = trust();
        one["Statement"] = one["Statement"][0].clone();
        let text = serde_json::to_string_pretty(&one).unwrap();
        let form: String = text
            .chars()
            .map(|c| match c {
                ' ' => "+".to_string(),
                '{' => "%7B".into(),
                '}' => "%7D".into(),
                ':' => "%3A".into(),
                '\n' => "%0A".into(),
                c => c.to_string(),
            })
            .collect();
        assert!(same(&trust(), &parse_document(&form).unwrap()));
    }

    #[test]
    fn a_changed_condition_is_one_field() {
        let mut other = trust();
        other["Statement"][0]["Condition"]["StringEquals"]["oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub"] =
            json!("system:serviceaccount:collate:om-role");
        assert!(!same(&trust(), &other));
        let d = doc_diff(&other, Some(&trust()), "trust");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].path,
            "trust.Statement.0.Condition.StringEquals[\"oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub\"]"
        );
        assert_eq!(
            d[0].before,
            Some(json!("system:serviceaccount:collate:openmetadata"))
        );
    }

    #[test]
    fn an_extra_live_condition_is_a_difference() {
        let mut live = trust();
        live["Statement"][0]["Condition"]["StringLike"] = json!({"x": "y"});
        assert!(!same(&trust(), &live));
        let d = doc_diff(&trust(), Some(&live), "trust");
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].path, "trust.Statement.0.Condition.StringLike");
        assert_eq!(d[0].after, None);
    }

    #[test]
    fn condition_scalars_and_action_lists_normalize() {
        let a = json!({"Statement": [{"Action": ["s3:Get*", "s3:List*", "s3:Get*"],
            "Condition": {"Bool": {"aws:SecureTransport": false}}}]});
        let b = json!({"Statement": {"Action": ["s3:List*", "s3:Get*"],
            "Condition": {"Bool": {"aws:SecureTransport": ["false"]}}}});
        assert!(same(&a, &b));
    }
}

/// Property tests (bounded fuzzing) of the trust-policy comparison: the forms IAM hands back
/// (URL-encoded, keys and statements reordered, one-element lists as scalars) compare equal, a
/// changed `sub` condition never does, and no input text makes the parser panic.
#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn url_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn trust(issuer: &str, subs: &[String], extra: bool) -> Value {
        let mut statements: Vec<Value> = subs
            .iter()
            .map(|sub| {
                json!({
                    "Effect": "Allow",
                    "Principal": {"Federated": format!("arn:aws:iam::123456789012:oidc-provider/{issuer}")},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {"StringEquals": {
                        format!("{issuer}:sub"): sub,
                        format!("{issuer}:aud"): "sts.amazonaws.com",
                    }},
                })
            })
            .collect();
        if extra {
            statements.push(
                json!({"Effect": "Deny", "Principal": {"AWS": "*"}, "Action": ["sts:AssumeRole"]}),
            );
        }
        json!({"Version": "2012-10-17", "Statement": statements})
    }

    /// The same document as IAM may return it: statements reversed, keys in reverse order,
    /// one-element lists for scalars, URL-encoded.
    fn as_iam_returns_it(doc: &Value) -> String {
        fn reshape(v: &Value, key: Option<&str>) -> Value {
            match v {
                Value::Object(o) => {
                    let mut m = Map::new();
                    for (k, v) in o.iter().rev() {
                        m.insert(k.clone(), reshape(v, Some(k)));
                    }
                    Value::Object(m)
                }
                Value::Array(a) => Value::Array(a.iter().rev().map(|i| reshape(i, None)).collect()),
                Value::String(s) if key == Some("Action") => json!([s]),
                other => other.clone(),
            }
        }
        url_encode(&reshape(doc, None).to_string())
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9-]{0,20}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn what_iam_returns_is_the_same_document(
            id in "[A-Z0-9]{8,32}",
            subs in proptest::collection::vec((name(), name()), 1..4),
            extra in any::<bool>(),
        ) {
            let issuer = format!("oidc.eks.eu-west-1.amazonaws.com/id/{id}");
            let subs: Vec<String> = subs.iter().map(|(ns, sa)| format!("system:serviceaccount:{ns}:{sa}")).collect();
            let want = trust(&issuer, &subs, extra);
            let live = parse_document(&as_iam_returns_it(&want)).expect("parses");
            prop_assert!(same(&want, &live), "{want}\nvs\n{live}");
            prop_assert!(same(&live, &want));
            prop_assert!(same(&want, &want));
        }

        #[test]
        fn another_service_account_is_a_difference(
            id in "[A-Z0-9]{8,32}",
            ns in name(), sa in name(), other in name(),
        ) {
            prop_assume!(sa != other);
            let issuer = format!("oidc.eks.eu-west-1.amazonaws.com/id/{id}");
            let a = trust(&issuer, &[format!("system:serviceaccount:{ns}:{sa}")], false);
            let b = trust(&issuer, &[format!("system:serviceaccount:{ns}:{other}")], false);
            prop_assert!(!same(&a, &b));
            let live = parse_document(&as_iam_returns_it(&b)).expect("parses");
            prop_assert!(!same(&a, &live));
        }

        #[test]
        fn no_text_makes_the_parser_panic(text in ".{0,200}") {
            if let Ok(v) = parse_document(&text) {
                let _ = same(&v, &v);
                let _ = for_diff(&v);
            }
        }
    }
}
