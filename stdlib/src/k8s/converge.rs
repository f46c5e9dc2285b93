//! Kubernetes objects as converge resources (see [`crate::converge`]): server-side apply, shared
//! by every `ensure_*` and by `apply` — the live object and the server's prediction (a dry-run
//! apply; locally when the namespace does not exist yet) are read and diffed, and the object is
//! applied only when something differs — and delete.

use std::sync::Arc;

use base64::Engine as _;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rhai::Dynamic;
use serde_json::{Map as JsonMap, Value};

use super::client::{Kube, Res};
use crate::converge::{self, Applied, Call, Converged, Planned, Resource};
use crate::diff;
use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::journal::{Action, FieldChange};
use crate::secret_value::Secret;

/// The field manager of everything collate-run applies.
pub(crate) const FIELD_MANAGER: &str = "collate-run";

/// One object to converge: its kind, place and the full applied configuration (secrets revealed).
pub(crate) struct Desired {
    pub res: Res,
    pub namespace: String,
    pub name: String,
    pub body: Value,
}

impl Desired {
    /// `collate/db-credentials`, or `collate` for cluster-scoped objects.
    pub fn display_name(&self) -> String {
        if self.res.namespaced {
            format!("{}/{}", self.namespace, self.name)
        } else {
            self.name.clone()
        }
    }
    pub fn journal_kind(&self) -> String {
        format!("k8s.{}", self.res.ar.kind)
    }
    fn is_secret(&self) -> bool {
        self.res.ar.kind == "Secret" && self.res.ar.group.is_empty()
    }
}

/// Fields the server owns that never count as a difference.
pub(crate) fn clean(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "resourceVersion",
                "managedFields",
                "generation",
                "creationTimestamp",
                "uid",
                "selfLink",
            ] {
                m.remove(k);
            }
        }
    }
    v
}

/// Lists of named items (`containers`, `env`, `ports`) become maps keyed by name, other lists of
/// objects maps keyed by index, so a diff names `spec.template.spec.containers.app.image`.
pub(crate) fn index_lists(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), index_lists(v))).collect())
        }
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_object) => {
            let names: Vec<Option<&str>> = a
                .iter()
                .map(|i| i.get("name").and_then(Value::as_str))
                .collect();
            let mut unique: Vec<&str> = names.iter().flatten().copied().collect();
            unique.sort_unstable();
            unique.dedup();
            let by_name = unique.len() == a.len();
            Value::Object(
                a.iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let key = match (by_name, names[i]) {
                            (true, Some(n)) => n.to_string(),
                            _ => i.to_string(),
                        };
                        (key, index_lists(item))
                    })
                    .collect::<JsonMap<String, Value>>(),
            )
        }
        other => other.clone(),
    }
}

/// The fields that differ between `live` and `predicted` (both full objects from the server),
/// including fields the apply removes.
pub(crate) fn object_diff(live: &Value, predicted: &Value, secret: bool) -> Vec<FieldChange> {
    let l = index_lists(&clean(live.clone()));
    let p = index_lists(&clean(predicted.clone()));
    let is_secret =
        |path: &str| secret && (path.starts_with("data") || path.starts_with("stringData"));
    let mut fields = diff::diff(&p, Some(&l), &is_secret);
    for f in diff::diff(&l, Some(&p), &is_secret) {
        if f.before.is_none() {
            fields.push(FieldChange {
                path: f.path,
                before: f.after,
                after: None,
            });
        }
    }
    fields
}

/// The fields of an object about to be created (what the script set).
pub(crate) fn creation_diff(desired: &Value, secret: bool) -> Vec<FieldChange> {
    let d = index_lists(&clean(desired.clone()));
    let is_secret =
        |path: &str| secret && (path.starts_with("data") || path.starts_with("stringData"));
    diff::diff(&d, None, &is_secret)
}

/// Reads one object; `None` when absent.
pub(crate) fn read_live(
    host: &Host,
    kube: &Arc<Kube>,
    res: &Res,
    ns: &str,
    name: &str,
) -> Result<Option<Value>, HostError> {
    let api = kube.api(res, ns)?;
    let what = format!("get {} {}", res.describe(), place(res, ns, name));
    host.read(&format!("k8s: {what}"), get(&api, kube, name, &what))
}

/// GETs one object as JSON; `None` when absent. `what` names the call in errors.
async fn get(
    api: &Api<DynamicObject>,
    kube: &Kube,
    name: &str,
    what: &str,
) -> Result<Option<Value>, HostError> {
    let obj = api.get_opt(name).await.map_err(|e| kube.err(what, e))?;
    Ok(obj.map(lean))
}

/// An object as JSON without its `managedFields` (often the larger half of it, never read
/// here): what is kept of every object read or applied.
fn lean(o: DynamicObject) -> Value {
    let mut o = o;
    o.metadata.managed_fields = None;
    serde_json::to_value(o).unwrap_or(Value::Null)
}

/// Server-side applies `body` with `params` (a dry-run or the real one); the resulting object.
async fn apply(
    api: &Api<DynamicObject>,
    kube: &Kube,
    d: &Desired,
    params: &PatchParams,
    what: &str,
) -> Result<Value, HostError> {
    api.patch(&d.name, params, &Patch::Apply(&d.body))
        .await
        .map(lean)
        .map_err(|e| kube.err(what, e))
}

/// `ns/name` or `name`.
pub(crate) fn place(res: &Res, ns: &str, name: &str) -> String {
    if res.namespaced {
        format!("{ns}/{name}")
    } else {
        name.to_string()
    }
}

/// `true` when namespace `ns` exists.
pub(crate) fn namespace_exists(host: &Host, kube: &Arc<Kube>, ns: &str) -> Result<bool, HostError> {
    let res = super::client::well_known("Namespace", None).expect("namespaces are well known");
    Ok(read_live(host, kube, &res, "", ns)?.is_some())
}

/// One object to server-side apply, as a converge [`Resource`]: the live object and the
/// server's prediction (a dry-run apply) are read side by side; the diff is between the two.
pub(crate) struct Applying<'a> {
    pub kube: &'a Arc<Kube>,
    pub d: &'a Desired,
    /// Take over fields owned by another manager (`force` in server-side apply).
    pub force: bool,
}

/// What [`Applying`] reads: the live object, and the dry-run's result.
pub(crate) struct Observed {
    live: Option<Value>,
    predicted: Result<Value, HostError>,
}

impl Applying<'_> {
    fn params(&self) -> PatchParams {
        let mut params = PatchParams::apply(FIELD_MANAGER);
        params.force = self.force;
        params
    }
    fn what(&self) -> String {
        format!("apply {} {}", self.d.res.describe(), self.d.display_name())
    }
    /// The read: the live object and the dry-run apply, side by side (one round trip).
    fn observe(&self) -> Call<'_, Observed> {
        let (d, kube) = (self.d, self.kube);
        let what = self.what();
        let get_what = format!("get {} {}", d.res.describe(), d.display_name());
        let dry_what = format!("dry-run {what}");
        let dry_params = self.params().dry_run();
        Call::new(format!("k8s: get + dry-run {what}"), async move {
            let api = kube.api(&d.res, &d.namespace)?;
            let (live, predicted) = futures::join!(
                get(&api, kube, &d.name, &get_what),
                apply(&api, kube, d, &dry_params, &dry_what)
            );
            Ok(Observed {
                live: live?,
                predicted,
            })
        })
    }
    /// The real server-side apply.
    fn apply(&self) -> Call<'_, Applied<Value>> {
        let (d, kube) = (self.d, self.kube);
        let what = self.what();
        let params = self.params();
        Call::new(format!("k8s: {what}"), async move {
            let api = kube.api(&d.res, &d.namespace)?;
            apply(&api, kube, d, &params, &what)
                .await
                .map(Applied::Done)
        })
    }
}

impl Resource for Applying<'_> {
    type State = Observed;
    type Object = Value;

    fn kind(&self) -> String {
        self.d.journal_kind()
    }
    fn name(&self) -> String {
        self.d.display_name()
    }
    fn read(&self, host: &Host) -> Result<Observed, HostError> {
        self.observe().read(host)
    }
    fn read_call<'a>(&'a self, _: &'a Host) -> Option<Call<'a, Observed>> {
        Some(self.observe())
    }
    fn write_call<'a>(&'a self, _: Action, _: &'a Observed) -> Option<Call<'a, Applied<Value>>> {
        Some(self.apply())
    }
    fn exists(&self, s: &Observed) -> bool {
        s.live.is_some()
    }
    /// The body and the force flag: the same again in one run is answered from the record.
    fn desired(&self) -> Option<String> {
        Some(format!("{} {}", self.force, self.d.body))
    }
    fn diff(&self, host: &Host, s: &Observed) -> Result<Planned, HostError> {
        let d = self.d;
        let secret = d.is_secret();
        match (&s.live, &s.predicted) {
            (Some(live), Ok(predicted)) => {
                Ok(Planned::fields(object_diff(live, predicted, secret)))
            }
            (None, Ok(_)) => Ok(Planned::fields(creation_diff(&d.body, secret))),
            (None, Err(e))
                if e.kind == ErrorKind::NotFound
                    && d.res.namespaced
                    && !namespace_exists(host, self.kube, &d.namespace)? =>
            {
                if !host.is_plan() {
                    return Err(HostError::not_found(format!(
                        "cannot create {} `{}`: namespace `{}` does not exist",
                        d.res.ar.kind,
                        d.display_name(),
                        d.namespace
                    ))
                    .with_hint(format!(
                        "create it first with `k8s::ensure_namespace(\"{}\")`",
                        d.namespace
                    )));
                }
                Ok(
                    Planned::fields(creation_diff(&d.body, secret)).with_note(format!(
                        "namespace `{}` does not exist yet: will be created",
                        d.namespace
                    )),
                )
            }
            (_, Err(e)) => Err(e.clone()),
        }
    }
    fn current(&self, s: &Observed) -> Value {
        match (&s.predicted, &s.live) {
            (Ok(p), _) => p.clone(),
            (Err(_), Some(l)) => l.clone(),
            (Err(_), None) => self.d.body.clone(),
        }
    }
    /// The real server-side apply, which creates and updates alike (`update` is this too).
    fn create(
        &self,
        host: &Host,
        _: &Observed,
        _: &mut Planned,
    ) -> Result<Applied<Value>, HostError> {
        self.apply().mutate(host)
    }
}

/// Server-side applies `d` (dry-run first), journals the change and returns the object.
pub(crate) fn converge(
    host: &Host,
    kube: &Arc<Kube>,
    d: &Desired,
    force: bool,
) -> Result<Converged<Value>, HostError> {
    converge::ensure(host, &Applying { kube, d, force })
}

/// [`converge`] of many objects side by side ([`converge::ensure_all`]): the journal and the
/// objects in input order.
pub(crate) fn converge_all<'a>(
    host: &Host,
    kube: &Arc<Kube>,
    ds: impl IntoIterator<Item = &'a Desired>,
    force: bool,
) -> Result<Vec<Converged<Value>>, HostError> {
    let rs: Vec<Applying> = ds
        .into_iter()
        .map(|d| Applying { kube, d, force })
        .collect();
    converge::ensure_all(host, &rs)
}

/// One object to delete, as a converge [`Resource`].
pub(crate) struct Deleting<'a> {
    pub kube: &'a Arc<Kube>,
    pub res: &'a Res,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Resource for Deleting<'_> {
    type State = Option<Value>;
    type Object = Value;

    fn kind(&self) -> String {
        format!("k8s.{}", self.res.ar.kind)
    }
    fn name(&self) -> String {
        place(self.res, self.namespace, self.name)
    }
    fn read(&self, host: &Host) -> Result<Option<Value>, HostError> {
        read_live(host, self.kube, self.res, self.namespace, self.name)
    }
    fn exists(&self, s: &Option<Value>) -> bool {
        s.is_some()
    }
    fn current(&self, s: &Option<Value>) -> Value {
        s.clone().unwrap_or(Value::Null)
    }
    fn delete(&self, host: &Host, _: &Option<Value>) -> Result<(), HostError> {
        let api = self.kube.api(self.res, self.namespace)?;
        let what = format!("delete {} {}", self.res.describe(), self.name());
        let (k, n) = (self.kube.clone(), self.name.to_string());
        host.mutate(&format!("k8s: {what}"), async move {
            match api.delete(&n, &kube::api::DeleteParams::background()).await {
                Ok(_) => Ok(()),
                // Gone since our read: what a delete wants.
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(k.err(&what, e)),
            }
        })
    }
}

/// Deletes one object when it exists; journals the change.
pub(crate) fn delete(
    host: &Host,
    kube: &Arc<Kube>,
    res: &Res,
    namespace: &str,
    name: &str,
) -> Result<Converged<Value>, HostError> {
    let r = Deleting {
        kube,
        res,
        namespace,
        name,
    };
    converge::remove(host, &r, Value::Null)
}

/// A manifest of a kind that a CustomResourceDefinition applied earlier in the same plan
/// defines: the cluster cannot dry-run it yet, so the plan shows it as created from the
/// manifest (plans only: an apply waits for the CRD and applies it for real).
pub(crate) struct NotServedYet<'a> {
    pub kind: &'a str,
    pub shown: String,
    pub manifest: &'a Value,
}

impl Resource for NotServedYet<'_> {
    type State = ();
    type Object = Value;

    fn kind(&self) -> String {
        format!("k8s.{}", self.kind)
    }
    fn name(&self) -> String {
        self.shown.clone()
    }
    fn read(&self, _: &Host) -> Result<(), HostError> {
        Ok(())
    }
    fn exists(&self, _: &()) -> bool {
        false
    }
    fn diff(&self, _: &Host, _: &()) -> Result<Planned, HostError> {
        Ok(
            Planned::fields(creation_diff(self.manifest, false)).with_note(format!(
                "`{}` is defined by a CustomResourceDefinition applied in this run",
                self.kind
            )),
        )
    }
    fn current(&self, _: &()) -> Value {
        self.manifest.clone()
    }
    fn create(&self, _: &Host, _: &(), _: &mut Planned) -> Result<Applied<Value>, HostError> {
        Err(HostError::input(format!(
            "internal: `{}` is not served yet; only a plan can show it",
            self.kind
        )))
    }
}

/// An object as scripts see it: no managed fields; a Secret's `data` decoded into Secret values.
pub(crate) fn to_script(mut v: Value) -> Dynamic {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let is_secret = v.get("kind").and_then(Value::as_str) == Some("Secret")
        && v.get("apiVersion").and_then(Value::as_str) == Some("v1");
    let data = if is_secret {
        v.as_object_mut().and_then(|o| o.remove("data"))
    } else {
        None
    };
    let dynamic = crate::value::from_json(&v);
    let Some(Value::Object(data)) = data else {
        return dynamic;
    };
    let ns = v
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut decoded = rhai::Map::new();
    for (k, val) in data {
        let text = val
            .as_str()
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        decoded.insert(
            k.as_str().into(),
            Dynamic::from(Secret::new(text, format!("k8s secret {ns}/{name} key {k}"))),
        );
    }
    let mut map = dynamic.try_cast::<rhai::Map>().unwrap_or_default();
    map.insert("data".into(), decoded.into());
    map.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_are_indexed_by_name() {
        let v = json!({"containers": [{"name": "app", "image": "a:1"}], "args": ["x"], "ports": [{"port": 1}]});
        let i = index_lists(&v);
        assert_eq!(i["containers"]["app"]["image"], "a:1");
        assert_eq!(i["args"], json!(["x"]));
        assert_eq!(i["ports"]["0"]["port"], 1);
    }

    #[test]
    fn object_diff_names_changed_and_removed_fields_and_masks_secret_data() {
        let live = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "1", "labels": {"a": "1", "b": "2"}},
            "data": {"password": "b2xk", "user": "dQ=="}});
        let pred = json!({"kind": "Secret", "metadata": {"name": "s", "resourceVersion": "2", "labels": {"a": "1"}},
            "data": {"password": "bmV3", "user": "dQ=="}});
        let f = object_diff(&live, &pred, true);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].path, "data.password");
        assert_eq!(f[0].after, Some(json!("***")));
        assert_eq!(f[0].before, Some(json!("***")));
        assert_eq!(f[1].path, "metadata.labels.b");
        assert_eq!(
            (f[1].before.clone(), f[1].after.clone()),
            (Some(json!("2")), None)
        );
        assert!(object_diff(&live, &live, true).is_empty());
    }
}
