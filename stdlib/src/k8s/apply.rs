//! `k8s::apply`: server-side apply of arbitrary manifests (YAML text, a map, or an array),
//! CustomResourceDefinitions and Namespaces first, discovery refreshed once new CRDs are served.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::client::{Kube, Res};
use super::converge::{Desired, NotServedYet, converge_all, read_live};
use crate::converge;
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

/// The dependency level of a manifest: CustomResourceDefinitions, then Namespaces, then
/// everything else. A level is converged once the one before it is done.
fn rank(m: &Value) -> u8 {
    match m["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    }
}

/// A manifest placed on the cluster, or (plans only) of a kind that a CRD of the same call
/// defines: `(kind, namespace/name, manifest)`.
type Placed = Result<Desired, (String, String, Value)>;

/// A converged object kept as its JSON text until the caller takes it: a few times smaller than
/// the parsed value, so a call converging thousands of objects holds their text, not their trees.
pub(crate) struct Compact(String);

impl Compact {
    fn of(v: &Value) -> Compact {
        Compact(v.to_string())
    }
    /// The object (parsed again).
    pub(crate) fn value(self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// Applies the manifests; returns the live (or, in plan mode, predicted) objects in input order.
/// Level by level (see `rank`), the objects of a level side by side
/// ([`converge::ensure_all`]: at most 32 objects, 64 requests in flight), journaled in the
/// order of the input.
pub(crate) fn apply_all(
    host: &Host,
    kube: &Arc<Kube>,
    docs: Vec<Value>,
    default_ns: Option<&str>,
    force: bool,
) -> Result<Vec<Compact>, HostError> {
    let mut ranked: Vec<(usize, Value)> = manifests(docs)?.into_iter().enumerate().collect();
    ranked.sort_by_key(|(_, m)| rank(m));
    let planned_crds: Vec<(String, String)> = ranked
        .iter()
        .filter(|(_, m)| m["kind"] == "CustomResourceDefinition")
        .map(|(_, m)| {
            let at = |p: &str| m.pointer(p).and_then(Value::as_str).unwrap_or_default();
            (
                at("/spec/group").to_string(),
                at("/spec/names/kind").to_string(),
            )
        })
        .collect();
    let mut results: Vec<(usize, Compact)> = Vec::with_capacity(ranked.len());
    // Which objects of level 0 (CRDs) changed: they must be established before the next level.
    let mut changed_crds: Vec<usize> = Vec::new();
    let mut kinds = Kinds::default();
    let mut ranked = ranked.into_iter().peekable();
    while let Some(level) = ranked.peek().map(|(_, m)| rank(m)) {
        let mut placed: Vec<(usize, Placed)> = Vec::new();
        while let Some((i, m)) = ranked.next_if(|(_, m)| rank(m) == level) {
            placed.push((i, kinds.place(host, kube, m, default_ns, &planned_crds)?));
        }
        // Runs of objects the cluster serves go side by side; the others (plans) one by one.
        for run in placed.chunk_by(|a, b| a.1.is_ok() == b.1.is_ok()) {
            let at = run.iter().map(|(i, _)| *i);
            let done = match &run[0].1 {
                Ok(_) => {
                    let ds = run.iter().filter_map(|(_, p)| p.as_ref().ok());
                    converge_all(host, kube, ds, force)?
                }
                Err(_) => run
                    .iter()
                    .filter_map(|(_, p)| p.as_ref().err())
                    .map(|(kind, shown, manifest)| {
                        let r = NotServedYet {
                            kind,
                            shown: shown.clone(),
                            manifest,
                        };
                        converge::ensure(host, &r)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            for (i, c) in at.zip(done) {
                if level == 0 && c.change.action.is_change() {
                    changed_crds.push(i);
                }
                results.push((i, Compact::of(&c.object)));
            }
        }
        if level == 0 && !host.is_plan() {
            // New kinds are served only once their CRDs are established.
            let changed: Vec<&Desired> = placed
                .iter()
                .filter(|(i, _)| changed_crds.contains(i))
                .filter_map(|(_, p)| p.as_ref().ok())
                .collect();
            for d in &changed {
                wait_established(host, kube, &d.res, &d.name)?;
            }
            if !changed.is_empty() {
                kinds.refresh(host, kube)?;
            }
        }
    }
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, c)| c).collect())
}

/// The kinds of one call's manifests, resolved once per `apiVersion` and `kind`.
#[derive(Default)]
struct Kinds(HashMap<(String, String), Option<Res>>);

impl Kinds {
    /// Forgets what was resolved and runs discovery again (CRDs were established).
    fn refresh(&mut self, host: &Host, kube: &Arc<Kube>) -> Result<(), HostError> {
        self.0.clear();
        host.read("k8s: refresh discovery", kube.discovery(true))
            .map(|_| ())
    }

    /// Where manifest `m` goes: its kind resolved, its namespace set (the manifest's, else
    /// `default_ns`, else the context's) or removed (cluster-scoped kinds). A kind the cluster
    /// does not serve is an error, unless a plan applies its CRD in the same call.
    fn place(
        &mut self,
        host: &Host,
        kube: &Arc<Kube>,
        mut m: Value,
        default_ns: Option<&str>,
        planned_crds: &[(String, String)],
    ) -> Result<Placed, HostError> {
        let api_version = m["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = m["kind"].as_str().unwrap_or_default().to_string();
        let key = (api_version, kind);
        let res = match self.0.get(&key) {
            Some(res) => res.clone(),
            None => {
                let (api_version, kind) = &key;
                let res = host.read(
                    &format!("k8s: resolve {api_version} {kind}"),
                    kube.resolve_gvk(api_version, kind),
                )?;
                self.0.entry(key.clone()).or_insert(res).clone()
            }
        };
        let (api_version, kind) = key;
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
                    name
                } else {
                    format!("{ns}/{name}")
                };
                return Ok(Err((kind, shown, m)));
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
        Ok(Ok(Desired {
            res,
            namespace,
            name,
            body: m,
        }))
    }
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
