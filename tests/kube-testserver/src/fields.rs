//! Field ownership (`metadata.managedFields`, FieldsV1 format) and server-side apply.
//!
//! A field set is a FieldsV1 tree: `{"f:spec": {"f:replicas": {}, "f:containers": {"k:{\"name\":\"a\"}": {".": {}, ...}}}}`.
//! Lists with a merge key (see [`crate::patch::merge_key`]) are granular (`k:` items); every other list is atomic
//! (owned as one leaf). `status` is not tracked for types with a status subresource.

use crate::patch::merge_key;
use crate::util::{ApiError, now_rfc3339};
use serde_json::{Map, Value, json};

/// One path element of a field set: `f:name`, `k:{...}` or `.`.
pub type Path = Vec<String>;

/// The field set covered by an object (what a manager owns when it sets all of it).
pub fn fieldset(obj: &Value, custom: bool, skip_status: bool) -> Value {
    let mut out = Map::new();
    let Some(m) = obj.as_object() else {
        return Value::Object(out);
    };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if skip_status => {}
            "metadata" => {
                let mut meta = Map::new();
                for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
                    if let Some(fv) = v.get(f) {
                        if f == "ownerReferences" {
                            meta.insert(format!("f:{f}"), list_items(fv, "uid", custom));
                        } else {
                            meta.insert(format!("f:{f}"), fields_of(f, fv, custom));
                        }
                    }
                }
                if !meta.is_empty() {
                    out.insert("f:metadata".into(), Value::Object(meta));
                }
            }
            _ => {
                out.insert(format!("f:{k}"), fields_of(k, v, custom));
            }
        }
    }
    Value::Object(out)
}

fn fields_of(name: &str, v: &Value, custom: bool) -> Value {
    match v {
        Value::Object(m) if !m.is_empty() => {
            let mut out = Map::new();
            for (k, cv) in m {
                out.insert(format!("f:{k}"), fields_of(k, cv, custom));
            }
            Value::Object(out)
        }
        Value::Array(items) => match merge_key(name, items, custom) {
            Some(key) if !items.is_empty() => list_items(v, key, custom),
            _ => json!({}),
        },
        _ => json!({}),
    }
}

fn item_key(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

fn list_items(v: &Value, key: &str, custom: bool) -> Value {
    let mut out = Map::new();
    for item in v.as_array().into_iter().flatten() {
        let mut fields = fields_of("", item, custom);
        if let Value::Object(f) = &mut fields {
            f.insert(".".into(), json!({}));
        }
        out.insert(item_key(item, key), fields);
    }
    Value::Object(out)
}

/// All leaf paths of a field set (leaves are empty objects, including `.` item markers).
pub fn leaves(set: &Value) -> Vec<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut Vec<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    let mut out = Vec::new();
    if set.as_object().is_some_and(|m| !m.is_empty()) {
        walk(set, &mut Vec::new(), &mut out);
    }
    out
}

/// Builds a field set from leaf paths.
pub fn from_leaves(paths: &[Path]) -> Value {
    let mut root = Value::Object(Map::new());
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .as_object_mut()
                .expect("object")
                .entry(seg.clone())
                .or_insert_with(|| json!({}));
        }
    }
    root
}

fn contains(set: &Value, path: &Path) -> bool {
    let mut cur = set;
    for seg in path {
        match cur.get(seg) {
            Some(n) => cur = n,
            None => return false,
        }
    }
    true
}

/// Navigates an object along a field path (`.` elements are ignored).
pub fn value_at<'a>(obj: &'a Value, path: &Path) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if seg == "." {
            continue;
        }
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = seg.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).ok()?;
        cur.as_array()?.iter().find(|item| {
            key.as_object()
                .is_some_and(|km| km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
        })
    } else {
        None
    }
}

/// Removes the field (or the list item, for a path ending in `.`) at `path`.
fn remove_at(obj: &mut Value, path: &Path) {
    let segs: Vec<&String> = path.iter().filter(|s| *s != ".").collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            cur.as_array_mut().and_then(|a| {
                a.iter_mut().find(|item| {
                    key.as_object()
                        .is_some_and(|km| km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
                })
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
        if let Some(a) = cur.as_array_mut() {
            a.retain(|item| {
                !key.as_object()
                    .is_some_and(|km| km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            });
        }
    }
}

fn entries(obj: &Value) -> Vec<Value> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn set_entries(obj: &mut Value, list: Vec<Value>) {
    let meta = obj
        .as_object_mut()
        .and_then(|o| o.get_mut("metadata"))
        .and_then(Value::as_object_mut);
    if let Some(meta) = meta {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn entry_matches(e: &Value, manager: &str, operation: &str) -> bool {
    e.get("manager").and_then(Value::as_str) == Some(manager)
        && e.get("operation").and_then(Value::as_str) == Some(operation)
}

fn path_string(p: &Path) -> String {
    p.iter()
        .filter(|s| *s != ".")
        .map(|s| {
            if let Some(f) = s.strip_prefix("f:") {
                format!(".{f}")
            } else {
                format!("[{}]", &s[2..])
            }
        })
        .collect()
}

/// Records ownership after a non-apply write (create, update, patch) by `manager`: it gains every field it
/// changed; other managers lose those; sets are pruned to fields that still exist.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    custom: bool,
    skip_status: bool,
) {
    let new_set = fieldset(new, custom, skip_status);
    let changed: Vec<Path> = leaves(&new_set)
        .into_iter()
        .filter(|p| match old {
            None => true,
            Some(o) => value_at(o, p) != value_at(new, p),
        })
        .collect();
    let mut list = entries(old.unwrap_or(new));
    for e in &mut list {
        if let Some(f) = e.get("fieldsV1") {
            let kept: Vec<Path> = leaves(f)
                .into_iter()
                .filter(|p| !changed.contains(p))
                .collect();
            e["fieldsV1"] = from_leaves(&kept);
        }
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|e| entry_matches(e, manager, "Update"))
        {
            Some(e) => {
                let mut all = leaves(&e["fieldsV1"]);
                all.extend(changed.iter().cloned());
                e["fieldsV1"] = from_leaves(&all);
                e["time"] = json!(now_rfc3339());
            }
            None => list.push(entry(manager, "Update", api_version, from_leaves(&changed))),
        }
    }
    finish(new, list, &new_set);
}

fn entry(manager: &str, operation: &str, api_version: &str, set: Value) -> Value {
    json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": now_rfc3339(), "fieldsType": "FieldsV1", "fieldsV1": set})
}

/// Prunes every entry to fields that exist and drops empty entries.
fn finish(obj: &mut Value, mut list: Vec<Value>, obj_set: &Value) {
    for e in &mut list {
        let kept: Vec<Path> = leaves(&e["fieldsV1"])
            .into_iter()
            .filter(|p| contains(obj_set, p))
            .collect();
        e["fieldsV1"] = from_leaves(&kept);
    }
    list.retain(|e| e["fieldsV1"].as_object().is_some_and(|m| !m.is_empty()));
    set_entries(obj, list);
}

/// Server-side apply of `applied` (the manager's whole intent) onto `live` (an existing object or a skeleton for
/// a new one). Returns the new object or a 409 Conflict naming the conflicting fields.
pub fn apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    custom: bool,
    skip_status: bool,
) -> Result<Value, ApiError> {
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut applied = applied.clone();
    if skip_status && let Some(m) = applied.as_object_mut() {
        m.remove("status");
    }
    let applied_set = fieldset(&applied, custom, skip_status);
    let applied_leaves: Vec<Path> = leaves(&applied_set)
        .into_iter()
        .filter(|p| p.last().is_some_and(|s| s != "."))
        .collect();
    let mut list = entries(live);

    // Conflicts: fields another manager owns, set here to a different value.
    let mut conflicts: Vec<(String, Path)> = Vec::new();
    for e in &list {
        if entry_matches(e, manager, "Apply") {
            continue;
        }
        let other = e.get("manager").and_then(Value::as_str).unwrap_or_default();
        for p in &applied_leaves {
            if contains(&e["fieldsV1"], p) && value_at(live, p) != value_at(&applied, p) {
                conflicts.push((other.to_string(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": path_string(p)}))
            .collect();
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("- {m}: {}", path_string(p)))
            .collect();
        let n = conflicts.len();
        let mut e = ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {n} conflict{}: {}",
                if n == 1 { "" } else { "s" },
                conflicts
                    .iter()
                    .map(|(m, p)| format!("conflict with \"{m}\": {}", path_string(p)))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        );
        let _ = lines;
        e.details = json!({"causes": causes});
        return Err(e);
    }
    if force {
        for e in &mut list {
            if entry_matches(e, manager, "Apply") {
                continue;
            }
            let kept: Vec<Path> = leaves(&e["fieldsV1"])
                .into_iter()
                .filter(|p| !conflicts.iter().any(|(_, c)| c == p))
                .collect();
            e["fieldsV1"] = from_leaves(&kept);
        }
    }

    // Merge the applied intent into the live object.
    let mut result = live.clone();
    merge_applied(&mut result, &applied, "", custom);

    // Fields this manager applied before, no longer applies, and nobody else owns: removed.
    let mut previous = list
        .iter()
        .find(|e| entry_matches(e, manager, "Apply"))
        .map(|e| leaves(&e["fieldsV1"]))
        .unwrap_or_default();
    // Whole list items first: their key fields must still be there to find them.
    previous.sort_by_key(|p| p.last().is_none_or(|s| s != "."));
    let others: Vec<Value> = list
        .iter()
        .filter(|e| !entry_matches(e, manager, "Apply"))
        .map(|e| e["fieldsV1"].clone())
        .collect();
    for p in previous {
        if contains(&applied_set, &p) || others.iter().any(|o| contains(o, &p)) {
            continue;
        }
        if p.last().is_some_and(|s| s == ".") {
            let item: Path = p[..p.len() - 1].to_vec();
            if others.iter().any(|o| contains(o, &item)) {
                continue;
            }
            remove_at(&mut result, &item);
        } else {
            remove_at(&mut result, &p);
        }
    }

    // Ownership: this manager's apply entry is exactly its applied set.
    let old_apply = list
        .iter()
        .find(|e| entry_matches(e, manager, "Apply"))
        .cloned();
    list.retain(|e| !entry_matches(e, manager, "Apply"));
    let mut new_entry = entry(manager, "Apply", &api_version, applied_set);
    if let Some(old) = old_apply
        && old["fieldsV1"] == new_entry["fieldsV1"]
    {
        new_entry["time"] = old["time"].clone();
    }
    list.push(new_entry);
    let result_set = fieldset(&result, custom, skip_status);
    finish(&mut result, list, &result_set);
    Ok(result)
}

fn merge_applied(target: &mut Value, applied: &Value, name: &str, custom: bool) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) => merge_applied(existing, v, k, custom),
                    None => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => match merge_key(name, a, custom) {
            Some(key) if !a.is_empty() => {
                for item in a {
                    match t.iter_mut().find(|l| l.get(key) == item.get(key)) {
                        Some(l) => merge_applied(l, item, "", custom),
                        None => t.push(item.clone()),
                    }
                }
            }
            _ => *t = a.clone(),
        },
        (t, a) => *t = a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "d"}, "data": data})
    }

    #[test]
    fn apply_removes_dropped_fields() {
        let live = cm(json!({}));
        let first = apply(
            &live,
            &cm(json!({"a": "1", "b": "2"})),
            "m",
            false,
            false,
            true,
        )
        .unwrap();
        let second = apply(&first, &cm(json!({"a": "1"})), "m", false, false, true).unwrap();
        assert_eq!(second["data"], json!({"a": "1"}));
    }

    #[test]
    fn apply_conflicts_with_other_manager() {
        let live = apply(
            &cm(json!({})),
            &cm(json!({"a": "1"})),
            "one",
            false,
            false,
            true,
        )
        .unwrap();
        let err = apply(&live, &cm(json!({"a": "2"})), "two", false, false, true).unwrap_err();
        assert_eq!(err.code, 409);
        let forced = apply(&live, &cm(json!({"a": "2"})), "two", true, false, true).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        // Same value: shared ownership, no conflict.
        assert!(apply(&live, &cm(json!({"a": "1"})), "two", false, false, true).is_ok());
    }

    #[test]
    fn containers_are_granular() {
        let d = |c: Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": c}}}});
        let live = apply(
            &d(json!([])),
            &d(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}])),
            "m",
            false,
            false,
            true,
        )
        .unwrap();
        let after = apply(
            &live,
            &d(json!([{"name": "a", "image": "1"}])),
            "m",
            false,
            false,
            true,
        )
        .unwrap();
        assert_eq!(
            after["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "1"}])
        );
    }
}
