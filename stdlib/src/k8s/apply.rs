//! `k8s::apply`: server-side apply of arbitrary manifests (YAML text, a map, or an array),
//! CustomResourceDefinitions and Namespaces first, discovery refreshed once new CRDs are served.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::{Kube, Res};
use super::converge::{Desired, NotServedYet, converge, read_live};
use crate::converge::{self, Converged};
use crate::error::HostError;
use crate::host::Host;

/// Splits the input into manifests: `List` kinds are flattened, empty documents dropped.
pub(crate) fn manifests(docs: Vec<Value>) -> Result<Vec<Value>, HostError> {
    let mut out = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        match doc {
            Value::Null => {}
            Value::Array(items) => out.extend(manifests(items)?),
            Value::Object(ref o)
                if o.get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k.ends_with("List"))
                    && o.contains_key("items") =>
            {
                let items = o
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                out.extend(manifests(items)?);
            }
            Value::Object(ref o) => {
                for key in ["apiVersion", "kind"] {
                    if !o.get(key).is_some_and(Value::is_string) {
                        return Err(HostError::input(format!(
                            "manifest #{} has no `{key}`",
                            i + 1
                        )));
                    }
                }
                if o.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(HostError::input(format!(
                        "manifest #{} (`{}`) has no `metadata.name`",
                        i + 1,
                        o["kind"].as_str().unwrap_or_default()
                    ))
                    .with_hint(
                        "`generateName` is not supported: applied objects need a stable name",
                    ));
                }
                out.push(doc);
            }
            other => {
                return Err(HostError::input(format!(
                    "manifest #{} is not a map but `{}`",
                    i + 1,
                    match other {
                        Value::String(_) => "string",
                        Value::Number(_) => "number",
                        Value::Bool(_) => "bool",
                        _ => "value",
                    }
                )));
            }
        }
    }
    Ok(out)
}

fn rank(m: &Value) -> u8 {
    match m["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// Applies the manifests; returns the live (or, in plan mode, predicted) objects in input order.
pub(crate) fn apply_all(
    host: &Host,
    kube: &Arc<Kube>,
    docs: Vec<Value>,
    default_ns: Option<&str>,
    force: bool,
) -> Result<Vec<Converged<Value>>, HostError> {
    let ms = manifests(docs)?;
    let indexed: Vec<(usize, Value)> = {
        let mut v: Vec<(usize, Value)> = ms.into_iter().enumerate().collect();
        v.sort_by_key(|(_, m)| rank(m));
        v
    };
    let planned_crds: Vec<(String, String)> = indexed
        .iter()
        .filter(|(_, m)| m["kind"] == "CustomResourceDefinition")
        .map(|(_, m)| {
            (
                m.pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                m.pointer("/spec/names/kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let mut results: Vec<(usize, Converged<Value>)> = Vec::new();
    let mut crds_applied = false;
    for (i, mut m) in indexed {
        let api_version = m["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = m["kind"].as_str().unwrap_or_default().to_string();
        if rank(&m) > 0 && crds_applied {
            // New kinds are served only once their CRDs are established.
            host.read("k8s: refresh discovery", kube.discovery(true))?;
            crds_applied = false;
        }
        let res = host.read(
            &format!("k8s: resolve {api_version} {kind}"),
            kube.resolve_gvk(&api_version, &kind),
        )?;
        let name = m["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let Some(res) = res else {
            let group = api_version.split('/').next().unwrap_or_default();
            if host.is_plan() && planned_crds.iter().any(|(g, k)| g == group && *k == kind) {
                let ns = m
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .or(default_ns)
                    .unwrap_or("");
                let shown = if ns.is_empty() {
                    name.clone()
                } else {
                    format!("{ns}/{name}")
                };
                let r = NotServedYet {
                    kind: &kind,
                    shown,
                    manifest: &m,
                };
                results.push((i, converge::ensure(host, &r)?));
                continue;
            }
            return Err(HostError::not_found(format!(
                "the cluster `{}` does not serve `{kind}` in `{api_version}` (manifest `{name}`)",
                kube.context
            ))
            .with_hint("is its CustomResourceDefinition installed? apply it in the same call, before its resources"));
        };
        let namespace = if res.namespaced {
            let ns = m
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| default_ns.map(str::to_string))
                .unwrap_or_else(|| kube.default_namespace.clone());
            m["metadata"]["namespace"] = Value::String(ns.clone());
            ns
        } else {
            if let Some(meta) = m["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            String::new()
        };
        let d = Desired {
            res: res.clone(),
            namespace,
            name,
            body: m,
        };
        let c = converge(host, kube, &d, force)?;
        if kind == "CustomResourceDefinition" && !host.is_plan() && c.change.action.is_change() {
            wait_established(host, kube, &res, &d.name)?;
            crds_applied = true;
        }
        results.push((i, c));
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, c)| c).collect())
}

/// Waits (up to a minute) until a CRD reports `Established`.
fn wait_established(host: &Host, kube: &Arc<Kube>, res: &Res, name: &str) -> Result<(), HostError> {
    for _ in 0..120 {
        let crd = read_live(host, kube, res, "", name)?;
        let established = crd
            .as_ref()
            .and_then(|c| c.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Established" && c["status"] == "True")
            });
        if established {
            return Ok(());
        }
        host.progress(&format!(
            "waiting for customresourcedefinition/{name} to be established"
        ));
        super::pause(host, Duration::from_millis(500));
    }
    Err(HostError::new(
        crate::error::ErrorKind::Timeout,
        format!("customresourcedefinition `{name}` was not established within 60s"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crds_and_namespaces_go_first_and_lists_flatten() {
        let docs = vec![
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"}}),
            json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}]}),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "c"}}),
            Value::Null,
        ];
        let mut ms = manifests(docs).unwrap();
        ms.sort_by_key(rank);
        let kinds: Vec<&str> = ms.iter().map(|m| m["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["CustomResourceDefinition", "Namespace", "Workflow"]);
    }

    #[test]
    fn manifests_need_kind_and_name() {
        let e = manifests(vec![
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {}}),
        ])
        .unwrap_err();
        assert!(e.message.contains("metadata.name"), "{}", e.message);
        assert!(manifests(vec![json!({"kind": "Secret"})]).is_err());
    }
}
