//! HTTP routing and the API verbs: discovery, get/list/watch, create, update, patch (merge, strategic, JSON,
//! server-side apply), delete and deletecollection, with dry-run, selectors and Kubernetes `Status` errors.

use crate::discovery;
use crate::fields;
use crate::patch;
use crate::resources::{self, ResourceType};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::{RequestRecord, State, Watcher};
use crate::util::{self, ApiError, now_rfc3339};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Everything the request handlers share.
pub struct Shared {
    pub state: Mutex<State>,
    /// `major.minor.patch`, e.g. `1.35.0`.
    pub version: String,
    pub port: u16,
    /// How long the simulated controllers wait before marking workloads ready.
    pub controller_delay: Duration,
    /// Loopback backends reached through `pods/portforward` (see `portforward.rs`).
    pub backends: Mutex<Vec<crate::portforward::Backend>>,
    /// With tokens, every request must carry `Authorization: Bearer <one of them>` (else 401).
    pub tokens: Vec<String>,
    /// Serve only the legacy discovery documents at `/api` and `/apis` (no aggregated discovery).
    pub legacy_discovery_only: bool,
    /// How long each request waits before it is handled (a network in between).
    pub latency: Duration,
    /// Requests being handled now, and the most handled at once so far.
    pub in_flight: AtomicUsize,
    pub peak_in_flight: AtomicUsize,
}

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One request being handled: counted in [`Shared::in_flight`] (and its peak) until dropped.
pub struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    pub fn enter(shared: &'a Shared) -> InFlight<'a> {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A parsed request.
pub struct Ctx {
    pub method: String,
    pub path: String,
    pub uri: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub accept: String,
    /// `If-None-Match` (aggregated discovery answers 304 when it is the current `ETag`).
    pub if_none_match: String,
    pub user_agent: String,
    pub body: Bytes,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun").is_some_and(|v| v == "All")
    }

    fn flag(&self, k: &str) -> bool {
        self.q(k).is_some_and(|v| v == "true" || v == "1")
    }

    /// The field manager: the `fieldManager` parameter, else the user agent's program name.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or("unknown");
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.to_string()
        }
    }
}

/// What a handler produces.
pub enum Reply {
    Json(u16, Value),
    Text(u16, &'static str, String),
    /// A status, headers (the content type among them) and a body as is (empty for a 304).
    Raw(u16, Vec<(&'static str, String)>, Vec<u8>),
    Stream(mpsc::UnboundedReceiver<Bytes>),
}

/// Decodes `application/x-www-form-urlencoded`-style percent escapes.
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (url_decode(k), url_decode(v))
        })
        .collect()
}

/// The Namespace object created for `name`, as the real server stores it.
pub fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": util::new_uid(),
            "creationTimestamp": now_rfc3339(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// Routes one request.
pub fn route(shared: &Arc<Shared>, ctx: &Ctx) -> Result<Reply, ApiError> {
    let segs: Vec<&str> = ctx
        .path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segs.as_slice() {
        ["version"] => Ok(Reply::Json(200, version_info(&shared.version))),
        ["healthz" | "readyz" | "livez", ..] => Ok(Reply::Text(200, "text/plain", "ok".into())),
        ["api"] => discovery::root(shared, ctx, discovery::Root::Api),
        ["apis"] => discovery::root(shared, ctx, discovery::Root::Apis),
        ["api", "v1"] => resource_list(&shared.lock(), "", "v1"),
        ["apis", group] => {
            let list = discovery::group_list(&shared.lock());
            let g = list["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|g| g["name"] == *group)
                .cloned()
                .ok_or_else(ApiError::unknown_resource)?;
            let mut g = g;
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            Ok(Reply::Json(200, g))
        }
        ["apis", group, version] => resource_list(&shared.lock(), group, version),
        ["openapi", "v3"] => Ok(Reply::Json(200, openapi_root(&shared.lock()))),
        ["openapi", "v3", "api", "v1"] => openapi_group_version(&shared.lock(), "", "v1"),
        ["openapi", "v3", "apis", group, version] => {
            openapi_group_version(&shared.lock(), group, version)
        }
        ["api", "v1", rest @ ..] => resource_request(shared, ctx, "", "v1", rest),
        ["apis", group, version, rest @ ..] => resource_request(shared, ctx, group, version, rest),
        _ => Err(ApiError::unknown_resource()),
    }
}

fn version_info(version: &str) -> Value {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("1");
    let minor = parts.next().unwrap_or("35");
    json!({
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": format!("v{version}"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resource_list(state: &State, group: &str, version: &str) -> Result<Reply, ApiError> {
    let resources: Vec<Value> = state
        .types
        .iter()
        .filter(|t| t.group == group && t.versions.iter().any(|v| v == version))
        .flat_map(ResourceType::discovery_entries)
        .collect();
    if resources.is_empty() {
        return Err(ApiError::unknown_resource());
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(Reply::Json(
        200,
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    ))
}

/// `/openapi/v3`: one entry per served group-version.
fn openapi_root(state: &State) -> Value {
    let mut paths = serde_json::Map::new();
    for t in &state.types {
        for v in &t.versions {
            let key = if t.group.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{}/{v}", t.group)
            };
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash=kube-testserver")}),
            );
        }
    }
    json!({"paths": paths})
}

/// A minimal OpenAPI v3 document for one group-version: no schemas, only the PATCH operations with their
/// `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, which is what kubectl and helm look for
/// to decide that the server validates fields itself (so they skip client-side schema validation).
fn openapi_group_version(state: &State, group: &str, version: &str) -> Result<Reply, ApiError> {
    let mut paths = serde_json::Map::new();
    for t in state.types.iter().filter(|t| {
        t.group == group && t.versions.iter().any(|v| v == version) && !t.virtual_create
    }) {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}},
        ]);
        let gvk = json!({"group": group, "version": version, "kind": t.kind});
        paths.insert(path, json!({"patch": {"operationId": format!("patch{}", t.kind), "parameters": params, "responses": {"200": {"description": "OK"}}, "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk}}));
    }
    if paths.is_empty() {
        return Err(ApiError::unknown_resource());
    }
    Ok(Reply::Json(
        200,
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "kube-testserver"}, "paths": paths, "components": {"schemas": {}}}),
    ))
}

/// A resolved resource path.
struct Target {
    rt: ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn api_version(&self) -> String {
        self.rt.api_version(&self.version)
    }
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// `NotFound` for the object `name` of this resource.
    fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.rt.group, &self.rt.plural, name)
    }

    /// The stored object `name` of this resource (in its namespace), or `NotFound`.
    fn stored<'a>(&self, state: &'a State, name: &str) -> Result<&'a Value, ApiError> {
        state
            .get(&self.rt, self.ns(), name)
            .ok_or_else(|| self.not_found(name))
    }

    /// `Conflict` when `sent` carries a resourceVersion other than the stored object's.
    fn check_resource_version(
        &self,
        name: &str,
        sent: &Value,
        old: &Value,
    ) -> Result<(), ApiError> {
        if let Some(rv) = meta_str(sent, "resourceVersion").filter(|rv| !rv.is_empty())
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(&self.rt.group, &self.rt.plural, name));
        }
        Ok(())
    }
}

fn resolve(state: &State, group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, more @ ..]
            if state
                .find_served(group, version, plural)
                .is_some_and(|t| t.namespaced) =>
        {
            (Some(ns.to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(more);
                v
            })
        }
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(n.to_string()), None),
        [p, n, s] => (*p, Some(n.to_string()), Some(s.to_string())),
        _ => return Err(ApiError::unknown_resource()),
    };
    let rt = state
        .find_served(group, version, plural)
        .ok_or_else(ApiError::unknown_resource)?;
    if let Some(s) = &sub
        && !rt.subresources.contains(s)
    {
        return Err(ApiError::unknown_resource());
    }
    if namespace.is_some() && !rt.namespaced {
        return Err(ApiError::unknown_resource());
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        namespace,
        name,
        sub,
    })
}

fn resource_request(
    shared: &Arc<Shared>,
    ctx: &Ctx,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Reply, ApiError> {
    let mut state = shared.lock();
    let t = resolve(&state, group, version, rest)?;
    if t.rt.virtual_create {
        return match ctx.method.as_str() {
            "POST" => review(&t, ctx),
            _ => Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            )),
        };
    }
    match (ctx.method.as_str(), &t.name) {
        ("GET", None) if ctx.flag("watch") => watch(shared, &mut state, &t, ctx),
        ("GET", None) => list(&state, &t, ctx),
        ("GET", Some(name)) => get(&state, &t, name, ctx),
        ("POST", None) => create(&mut state, &t, ctx),
        ("POST", Some(name)) if t.sub.as_deref() == Some("token") => {
            token_request(&mut state, &t, name, ctx)
        }
        ("PUT", Some(name)) => update(&mut state, &t, name, ctx),
        ("PATCH", Some(name)) => patch_object(&mut state, &t, name, ctx),
        ("DELETE", Some(name)) => delete(&mut state, &t, name, ctx),
        ("DELETE", None) => delete_collection(&mut state, &t, ctx),
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn with_version(obj: &Value, api_version: &str) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(api_version);
    o
}

fn get(state: &State, t: &Target, name: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let obj = t.stored(state, name)?;
    if t.sub.as_deref() == Some("log") {
        return crate::kubelet::log(state, obj, &ctx.query)
            .map(|text| Reply::Text(200, "text/plain", text))
            .map_err(ApiError::bad_request);
    }
    if t.sub.as_deref() == Some("scale") {
        return Ok(Reply::Json(200, scale_of(obj, &t.rt)));
    }
    let obj = with_version(obj, &t.api_version());
    if wants_table(ctx) {
        return Ok(Reply::Json(200, table(&[obj], state.rv)));
    }
    Ok(Reply::Json(200, obj))
}

fn scale_of(obj: &Value, rt: &ResourceType) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"], "creationTimestamp": obj["metadata"]["creationTimestamp"]},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": rt.kind.clone()},
    })
}

fn wants_table(ctx: &Ctx) -> bool {
    ctx.accept.contains("as=Table")
}

/// A `meta.k8s.io/v1` Table with the default columns (name, creation time).
fn table(objs: &[Value], rv: u64) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut partial = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].clone()});
            if let Some(m) = partial["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
            json!({"cells": [o["metadata"]["name"], o["metadata"]["creationTimestamp"]], "object": partial})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": [
            {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
            {"name": "Created At", "type": "date", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
        ],
        "rows": rows,
    })
}

fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn list(state: &State, t: &Target, ctx: &Ctx) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(ctx)?;
    let av = t.api_version();
    let items: Vec<Value> = state
        .list(&t.rt, t.namespace.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| with_version(o, &av))
        .collect();
    if wants_table(ctx) {
        return Ok(Reply::Json(200, table(&items, state.rv)));
    }
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": av, "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    ))
}

fn watch(
    shared: &Arc<Shared>,
    state: &mut State,
    t: &Target,
    ctx: &Ctx,
) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(ctx)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let id = state.next_watcher;
    state.next_watcher += 1;
    let w = Watcher {
        id,
        group: t.rt.group.clone(),
        plural: t.rt.plural.clone(),
        namespace: t.namespace.clone(),
        labels,
        fields,
        api_version: t.api_version(),
        tx,
    };
    let rv = ctx.q("resourceVersion").unwrap_or_default();
    let initial = ctx.flag("sendInitialEvents") || rv.is_empty() || rv == "0";
    if initial {
        for obj in state.list(&t.rt, t.namespace.as_deref()) {
            if w.labels.matches(obj) && w.fields.matches(obj) {
                w.send("ADDED", obj);
            }
        }
    } else {
        let since: u64 = rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion \"{rv}\"")))?;
        if state.history.front().is_some_and(|e| e.rv > since + 1) {
            return Err(ApiError::new(
                410,
                "Expired",
                format!(
                    "too old resource version: {since} ({})",
                    state.history.front().map(|e| e.rv).unwrap_or(0)
                ),
            ));
        }
        for e in state.history.iter().filter(|e| e.rv > since) {
            if e.group == w.group
                && e.plural == w.plural
                && w.namespace.as_deref().is_none_or(|n| n == e.namespace)
                && w.labels.matches(&e.object)
                && w.fields.matches(&e.object)
            {
                w.send(e.kind, &e.object);
            }
        }
    }
    state.watchers.push(w);
    let bookmarks = ctx.flag("allowWatchBookmarks");
    if ctx.flag("sendInitialEvents") {
        state.bookmark(id, true);
    }
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1800);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let period = Duration::from_millis(if bookmarks { 1000 } else { 250 });
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    let mut st = shared.lock();
                    let alive = match st.watchers.iter().find(|w| w.id == id) {
                        None => false,
                        Some(w) if w.tx.is_closed() => false,
                        Some(_) => !bookmarks || st.bookmark(id, false),
                    };
                    if !alive { break; }
                }
            }
        }
        shared.lock().watchers.retain(|w| w.id != id);
    });
    Ok(Reply::Stream(rx))
}

/// Parses a request body: JSON, YAML or Kubernetes protobuf.
fn decode_body(ctx: &Ctx) -> Result<Value, ApiError> {
    if ctx
        .content_type
        .starts_with("application/vnd.kubernetes.protobuf")
    {
        return crate::protobuf::decode(&ctx.body).map_err(|e| {
            ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {e}"),
            )
        });
    }
    if ctx.body.is_empty() {
        return Ok(Value::Null);
    }
    if let Ok(v) = serde_json::from_slice::<Value>(&ctx.body) {
        return Ok(v);
    }
    let text = std::str::from_utf8(&ctx.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
}

/// Checks the namespace exists (for namespaced types).
fn require_namespace(state: &State, t: &Target) -> Result<(), ApiError> {
    if t.rt.namespaced && !state.namespace_exists(t.ns()) {
        return Err(ApiError::not_found("", "namespaces", t.ns()));
    }
    Ok(())
}

/// Validation shared by create and update: kind, apiVersion, name, namespace, type-specific checks.
fn validate(t: &Target, obj: &mut Value, name_from_path: Option<&str>) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be an object",
        ));
    }
    let av = t.api_version();
    match obj.get("kind").and_then(Value::as_str) {
        None | Some("") => obj["kind"] = json!(t.rt.kind),
        Some(k) if k != t.rt.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                t.rt.kind
            )));
        }
        _ => {}
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => obj["apiVersion"] = json!(av),
        Some(v) if v != av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"
            )));
        }
        _ => {}
    }
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    if t.rt.namespaced {
        match meta_str(obj, "namespace") {
            Some(ns) if !ns.is_empty() && ns != t.ns() => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = json!(t.ns()),
        }
    } else if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    if let (Some(path_name), Some(body_name)) = (name_from_path, meta_str(obj, "name"))
        && path_name != body_name
    {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    let name = meta_str(obj, "name").unwrap_or_default().to_string();
    let mut causes = Vec::new();
    let check = if matches!(t.rt.plural.as_str(), "namespaces" | "services") {
        util::check_dns_label(&name)
    } else {
        util::check_dns_subdomain(&name)
    };
    if let Some(problem) = check {
        causes.push(("metadata.name".to_string(), problem));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if !v.is_string() {
                causes.push((
                    format!("metadata.labels.{k}"),
                    "Invalid value: label values must be strings".to_string(),
                ));
            }
        }
    }
    type_checks(t, obj, &mut causes)?;
    if !causes.is_empty() {
        return Err(ApiError::invalid(&t.rt.group, &t.rt.kind, &name, &causes));
    }
    Ok(())
}

fn type_checks(
    t: &Target,
    obj: &mut Value,
    causes: &mut Vec<(String, String)>,
) -> Result<(), ApiError> {
    use base64::Engine as _;
    match (t.rt.group.as_str(), t.rt.kind.as_str()) {
        ("", "Secret") => {
            if let Some(data) = obj.get("data").and_then(Value::as_object) {
                for (k, v) in data {
                    let ok = v.as_str().is_some_and(|s| {
                        base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                    });
                    if !ok && !v.is_null() {
                        return Err(ApiError::bad_request(format!(
                            "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data.{k}"
                        )));
                    }
                }
            }
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                for (k, v) in sd {
                    let enc = base64::engine::general_purpose::STANDARD
                        .encode(v.as_str().unwrap_or_default());
                    if !obj.get("data").is_some_and(Value::is_object) {
                        obj["data"] = json!({});
                    }
                    obj["data"][k] = json!(enc);
                }
            }
            if obj
                .get("type")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                obj["type"] = json!("Opaque");
            }
            let ty = obj["type"].as_str().unwrap_or_default().to_string();
            if ty == "kubernetes.io/service-account-token"
                && obj
                    .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                    .is_none()
            {
                causes.push((
                    "metadata.annotations[kubernetes.io/service-account.name]".into(),
                    "Required value".into(),
                ));
            }
            if ty == "kubernetes.io/dockerconfigjson"
                && obj.pointer("/data/.dockerconfigjson").is_none()
            {
                causes.push(("data[.dockerconfigjson]".into(), "Required value".into()));
            }
        }
        ("", "ConfigMap") => {
            for field in ["data", "binaryData"] {
                if let Some(data) = obj.get(field).and_then(Value::as_object)
                    && let Some((k, _)) = data.iter().find(|(_, v)| !v.is_string())
                {
                    return Err(ApiError::bad_request(format!(
                        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal non-string into Go struct field ConfigMap.{field} of type string (key {k})"
                    )));
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            if obj
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty) =>
        {
            causes.push(("roleRef.name".into(), "Required value".into()));
        }
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            if obj.pointer("/spec/selector").is_none() {
                causes.push(("spec.selector".into(), "Required value".into()));
            }
            if obj
                .pointer("/spec/template/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty)
            {
                causes.push((
                    "spec.template.spec.containers".into(),
                    "Required value".into(),
                ));
            }
            if let (Some(sel), Some(labels)) = (
                obj.pointer("/spec/selector"),
                obj.pointer("/spec/template/metadata/labels"),
            ) && !LabelSelector::from_object(sel)
                .matches(&json!({"metadata": {"labels": labels}}))
            {
                causes.push((
                    "spec.template.metadata.labels".into(),
                    "Invalid value: `selector` does not match template `labels`".into(),
                ));
            }
        }
        ("", "Pod")
            if obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty) =>
        {
            causes.push(("spec.containers".into(), "Required value".into()));
        }
        _ => {}
    }
    Ok(())
}

/// Server-populated fields set at creation (defaults the real API server fills synchronously).
fn defaults_on_create(state: &mut State, t: &Target, obj: &mut Value) {
    crate::defaults::apply(&t.rt.group, &t.rt.kind, obj);
    match (t.rt.group.as_str(), t.rt.kind.as_str()) {
        ("", "Namespace") => {
            let name = obj["metadata"]["name"].clone();
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if obj.pointer("/spec/finalizers").is_none() {
                obj["spec"] = json!({"finalizers": ["kubernetes"]});
            }
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "Service") => {
            if obj.get("spec").is_none() {
                obj["spec"] = json!({});
            }
            let spec = &mut obj["spec"];
            if spec.get("type").is_none() {
                spec["type"] = json!("ClusterIP");
            }
            if spec["type"] != "ExternalName"
                && spec
                    .get("clusterIP")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
            {
                state.next_ip += 1;
                let ip = format!("10.96.{}.{}", state.next_ip / 250, state.next_ip % 250 + 1);
                spec["clusterIP"] = json!(ip);
            }
            if let Some(ip) = spec.get("clusterIP").cloned() {
                spec["clusterIPs"] = json!([ip]);
            }
            if spec.get("sessionAffinity").is_none() {
                spec["sessionAffinity"] = json!("None");
            }
            spec["ipFamilies"] = json!(["IPv4"]);
            spec["ipFamilyPolicy"] = json!("SingleStack");
            if spec.get("internalTrafficPolicy").is_none() {
                spec["internalTrafficPolicy"] = json!("Cluster");
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            crd_status(obj);
        }
        ("batch", "Job") if obj.pointer("/spec/manualSelector") != Some(&json!(true)) => {
            // kubernetes `pkg/registry/batch/job/strategy.go` `generateSelector`: the pod
            // template gets the job's labels and the selector matches its uid.
            let labels =
                crate::kubelet::job_labels(&obj["metadata"]["name"], &obj["metadata"]["uid"]);
            let template = &mut obj["spec"]["template"];
            if !template["metadata"]["labels"].is_object() {
                template["metadata"]["labels"] = json!({});
            }
            for (k, v) in labels.as_object().into_iter().flatten() {
                template["metadata"]["labels"][k] = v.clone();
            }
            obj["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": obj["metadata"]["uid"]}});
        }
        ("", "Pod") => crate::kubelet::admit_pod(state, obj),
        _ => {}
    }
}

fn crd_status(obj: &mut Value) {
    let now = now_rfc3339();
    let names = obj.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == true)
        .map(|v| v["name"].clone())
        .collect();
    obj["status"] = json!({
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    });
}

/// What changes `metadata.generation`: anything outside metadata and status.
fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    };
    strip(old) != strip(new)
}

/// Fills the server-owned metadata of a new object and stores it (unless dry-run).
fn finish_create(
    state: &mut State,
    t: &Target,
    mut obj: Value,
    manager: &str,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if state.get(&t.rt, t.ns(), &name).is_some() {
        return Err(ApiError::already_exists(&t.rt.group, &t.rt.plural, &name));
    }
    let meta = obj["metadata"].as_object_mut().expect("metadata object");
    for f in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(f);
    }
    meta.insert("uid".into(), json!(util::new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if t.rt.has_generation {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    defaults_on_create(state, t, &mut obj);
    if t.rt.has_status()
        && !matches!(
            t.rt.kind.as_str(),
            "Namespace" | "Service" | "CustomResourceDefinition"
        )
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("status");
    }
    if obj["metadata"].get("managedFields").is_none() || obj["metadata"]["managedFields"].is_null()
    {
        fields::record_update(
            None,
            &mut obj,
            manager,
            &t.api_version(),
            t.rt.custom,
            t.rt.has_status(),
        );
    }
    if dry_run {
        obj["metadata"]["resourceVersion"] = json!("");
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        return Ok(obj);
    }
    after_write(state, t, &obj, false);
    let stored = state.commit(&t.rt, obj, "ADDED");
    if t.rt.kind == "Namespace" {
        state.seed_namespace(meta_str(&stored, "name").unwrap_or_default());
    }
    Ok(stored)
}

/// Side effects of writes on the type registry (CRDs) and of deletes on dependants.
fn after_write(state: &mut State, t: &Target, obj: &Value, deleted: bool) {
    if t.rt.group == "apiextensions.k8s.io" && t.rt.plural == "customresourcedefinitions" {
        let Some(new_type) = resources::from_crd(obj) else {
            return;
        };
        state
            .types
            .retain(|r| !(r.group == new_type.group && r.plural == new_type.plural && r.custom));
        if deleted {
            let keys: Vec<_> = state
                .objects
                .keys()
                .filter(|(g, p, _, _)| *g == new_type.group && *p == new_type.plural)
                .cloned()
                .collect();
            for k in keys {
                if let Some(o) = state.objects.get(&k).cloned() {
                    state.commit(&new_type, o, "DELETED");
                }
            }
        } else {
            state.types.push(new_type);
        }
    }
}

fn create(state: &mut State, t: &Target, ctx: &Ctx) -> Result<Reply, ApiError> {
    let mut obj = decode_body(ctx)?;
    if t.rt.namespaced && t.namespace.is_none() {
        return Err(ApiError::method_not_allowed(format!(
            "POST on cluster-wide {} is not allowed; use a namespace",
            t.rt.plural
        )));
    }
    if obj.is_object() && meta_str(&obj, "name").is_none_or(str::is_empty) {
        if let Some(prefix) = meta_str(&obj, "generateName").filter(|p| !p.is_empty()) {
            let name = format!("{prefix}{}", util::random_suffix(5));
            obj["metadata"]["name"] = json!(name);
        } else {
            let name = String::new();
            validate(t, &mut obj, None).ok();
            return Err(ApiError::invalid(
                &t.rt.group,
                &t.rt.kind,
                &name,
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        }
    }
    validate(t, &mut obj, None)?;
    require_namespace(state, t)?;
    let created = finish_create(state, t, obj, &ctx.manager(), ctx.dry_run())?;
    Ok(Reply::Json(201, with_version(&created, &t.api_version())))
}

/// Stores `new` as the next version of `old` (same uid etc.), bumping generation on spec changes and keeping
/// status when the write is not to the status subresource. No-op writes keep the resourceVersion.
fn finish_update(
    state: &mut State,
    t: &Target,
    old: &Value,
    mut new: Value,
    manager: Option<&str>,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let status_write = t.sub.as_deref() == Some("status");
    for f in [
        "uid",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
    ] {
        match old["metadata"].get(f) {
            Some(v) => new["metadata"][f] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if t.rt.has_status() {
        if status_write {
            let status = new.get("status").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            new = merged;
        } else {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }
    if t.rt.kind == "Service"
        && new.pointer("/spec/clusterIP").is_none()
        && let Some(ip) = old.pointer("/spec/clusterIP").cloned()
    {
        new["spec"]["clusterIP"] = ip;
    }
    if t.rt.group == "batch"
        && t.rt.kind == "Job"
        && old.pointer("/spec/selector").is_some()
        && old.pointer("/spec/manualSelector") != Some(&json!(true))
        && new.get("spec").is_some_and(Value::is_object)
    {
        // The generated selector and template labels are immutable: a write without them keeps them.
        new["spec"]["selector"] = old["spec"]["selector"].clone();
        let labels = crate::kubelet::job_labels(&old["metadata"]["name"], &old["metadata"]["uid"]);
        let template = &mut new["spec"]["template"];
        if template.is_object() && !template["metadata"]["labels"].is_object() {
            template["metadata"]["labels"] = json!({});
        }
        for (k, v) in labels.as_object().into_iter().flatten() {
            if template.is_object() {
                template["metadata"]["labels"][k] = v.clone();
            }
        }
    }
    if t.rt.kind == "Service" {
        defaults_on_create(state, t, &mut new);
    } else {
        crate::defaults::apply(&t.rt.group, &t.rt.kind, &mut new);
    }
    if t.rt.kind == "Namespace" {
        new["status"] = old["status"].clone();
    }
    if t.rt.kind == "CustomResourceDefinition" {
        crd_status(&mut new);
    }
    if t.rt.has_generation && spec_changed(old, &new) {
        let g = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if let Some(manager) = manager {
        fields::record_update(
            Some(old),
            &mut new,
            manager,
            &t.api_version(),
            t.rt.custom,
            t.rt.has_status(),
        );
    }
    new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
    if new == *old || dry_run {
        return Ok(new);
    }
    after_write(state, t, &new, false);
    Ok(state.commit(&t.rt, new, "MODIFIED"))
}

fn update(state: &mut State, t: &Target, name: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let mut obj = decode_body(ctx)?;
    validate(t, &mut obj, Some(name))?;
    require_namespace(state, t)?;
    let old = t.stored(state, name)?.clone();
    t.check_resource_version(name, &obj, &old)?;
    if obj["metadata"].get("managedFields").is_some() {
        // Clients echo managedFields back; the server keeps its own record.
        obj["metadata"]["managedFields"] = old["metadata"]
            .get("managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        if obj["metadata"]["managedFields"].is_null()
            && let Some(m) = obj["metadata"].as_object_mut()
        {
            m.remove("managedFields");
        }
    } else if let Some(mf) = old["metadata"].get("managedFields") {
        obj["metadata"]["managedFields"] = mf.clone();
    }
    let updated = finish_update(state, t, &old, obj, Some(&ctx.manager()), ctx.dry_run())?;
    Ok(Reply::Json(200, with_version(&updated, &t.api_version())))
}

fn patch_object(state: &mut State, t: &Target, name: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim();
    let body = decode_body(ctx)?;
    let existing = state.get(&t.rt, t.ns(), name).cloned();
    if ct == "application/apply-patch+yaml" {
        return server_side_apply(state, t, name, ctx, existing, body);
    }
    let old = existing.ok_or_else(|| t.not_found(name))?;
    let mut new = old.clone();
    match ct {
        "application/merge-patch+json" => patch::merge_patch(&mut new, &body),
        "application/strategic-merge-patch+json" => {
            if t.rt.custom {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            patch::strategic_merge_patch(&mut new, &body);
        }
        "application/json-patch+json" => {
            patch::json_patch(&mut new, &body).map_err(|e| ApiError::new(422, "Invalid", e))?
        }
        other => {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"
                ),
            ));
        }
    }
    t.check_resource_version(name, &body, &old)?;
    validate(t, &mut new, Some(name))?;
    let updated = finish_update(state, t, &old, new, Some(&ctx.manager()), ctx.dry_run())?;
    Ok(Reply::Json(200, with_version(&updated, &t.api_version())))
}

fn server_side_apply(
    state: &mut State,
    t: &Target,
    name: &str,
    ctx: &Ctx,
    existing: Option<Value>,
    mut applied: Value,
) -> Result<Reply, ApiError> {
    let manager = ctx
        .q("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::bad_request("PATCH /apply requires fieldManager to be set"))?
        .to_string();
    if applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        || applied
            .get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(
            "invalid object type: apiVersion and kind must be set in an applied configuration",
        ));
    }
    if !applied.get("metadata").is_some_and(Value::is_object) {
        applied["metadata"] = json!({});
    }
    if meta_str(&applied, "name").is_none() {
        applied["metadata"]["name"] = json!(name);
    }
    // Like the real server, an applied configuration is validated once merged with the live
    // object (a partial config — only an annotation — is fine for an existing object); here it is
    // only normalised (stringData folded, defaults) before the merge.
    let _ = validate(t, &mut applied, Some(name));
    require_namespace(state, t)?;
    if let Some(m) = applied["metadata"].as_object_mut() {
        for f in ["uid", "creationTimestamp", "generation", "managedFields"] {
            m.remove(f);
        }
    }
    let force = ctx.flag("force");
    let skip_status = t.rt.has_status() && t.sub.as_deref() != Some("status");
    match existing {
        None => {
            let mut skeleton = json!({"apiVersion": t.api_version(), "kind": t.rt.kind, "metadata": {"name": name}});
            if t.rt.namespaced {
                skeleton["metadata"]["namespace"] = json!(t.ns());
            }
            let mut merged = fields::apply(
                &skeleton,
                &applied,
                &manager,
                force,
                t.rt.custom,
                skip_status,
            )?;
            validate(t, &mut merged, Some(name))?;
            let created = finish_create(state, t, merged, &manager, ctx.dry_run())?;
            Ok(Reply::Json(201, with_version(&created, &t.api_version())))
        }
        Some(old) => {
            t.check_resource_version(name, &applied, &old)?;
            let merged = fields::apply(&old, &applied, &manager, force, t.rt.custom, skip_status)?;
            let mut merged = merged;
            validate(t, &mut merged, Some(name))?;
            let updated = finish_update(state, t, &old, merged, None, ctx.dry_run())?;
            Ok(Reply::Json(200, with_version(&updated, &t.api_version())))
        }
    }
}

/// `dryRun` may also arrive in a DeleteOptions body (kube-rs sends it there).
fn delete_dry_run(ctx: &Ctx) -> bool {
    if ctx.dry_run() {
        return true;
    }
    serde_json::from_slice::<Value>(&ctx.body)
        .ok()
        .and_then(|b| b.get("dryRun").cloned())
        .and_then(|d| d.as_array().cloned())
        .is_some_and(|d| d.iter().any(|v| v == "All"))
}

/// Removes an object and, like the garbage collector (but at once), everything it owns; deleting a namespace
/// removes everything in it.
fn remove_object(state: &mut State, rt: &ResourceType, obj: &Value) -> Value {
    let mut gone = obj.clone();
    if rt.kind == "Namespace" {
        let ns = meta_str(obj, "name").unwrap_or_default().to_string();
        let keys: Vec<_> = state
            .objects
            .keys()
            .filter(|(_, _, n, _)| *n == ns)
            .cloned()
            .collect();
        for (g, p, _, name) in keys {
            if let (Some(t), Some(o)) = (
                state.find_type(&g, &p),
                state
                    .objects
                    .get(&(g.clone(), p.clone(), ns.clone(), name.clone()))
                    .cloned(),
            ) {
                state.commit(&t, o, "DELETED");
            }
        }
        gone["status"]["phase"] = json!("Terminating");
    }
    gone["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
    let uid = meta_str(obj, "uid").unwrap_or_default().to_string();
    let deleted = state.commit(rt, gone, "DELETED");
    let dependants: Vec<(ResourceType, Value)> = state
        .objects
        .iter()
        .filter(|(_, o)| {
            o.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid.as_str()))
        })
        .filter_map(|((g, p, _, _), o)| state.find_type(g, p).map(|t| (t, o.clone())))
        .collect();
    for (t, o) in dependants {
        if state
            .get(
                &t,
                meta_str(&o, "namespace").unwrap_or_default(),
                meta_str(&o, "name").unwrap_or_default(),
            )
            .is_some()
        {
            remove_object(state, &t, &o);
        }
    }
    deleted
}

fn delete(state: &mut State, t: &Target, name: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    let obj = t.stored(state, name)?.clone();
    if t.rt.kind == "Namespace" && matches!(name, "default" | "kube-system" | "kube-public") {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
        ));
    }
    let dry_run = delete_dry_run(ctx);
    let deleted = if dry_run {
        obj.clone()
    } else {
        after_write(state, t, &obj, true);
        remove_object(state, &t.rt, &obj)
    };
    // Like the real server: some types answer with the object, the others with a Success Status.
    if t.rt.custom
        || matches!(
            t.rt.kind.as_str(),
            "Namespace" | "Pod" | "CustomResourceDefinition"
        )
    {
        let mut o = with_version(&deleted, &t.api_version());
        if t.rt.kind == "Namespace" {
            o["status"]["phase"] = json!("Terminating");
        }
        return Ok(Reply::Json(200, o));
    }
    let mut details = json!({"name": name, "kind": t.rt.plural, "uid": obj["metadata"]["uid"]});
    if !t.rt.group.is_empty() {
        details["group"] = json!(t.rt.group);
    }
    Ok(Reply::Json(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    ))
}

fn delete_collection(state: &mut State, t: &Target, ctx: &Ctx) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(ctx)?;
    let victims: Vec<Value> = state
        .list(&t.rt, t.namespace.as_deref())
        .into_iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
        .cloned()
        .collect();
    let dry_run = delete_dry_run(ctx);
    let mut items = Vec::new();
    for v in victims {
        if t.rt.kind == "Namespace"
            && matches!(
                meta_str(&v, "name"),
                Some("default" | "kube-system" | "kube-public")
            )
        {
            continue;
        }
        if dry_run {
            items.push(v);
        } else {
            after_write(state, t, &v, true);
            items.push(remove_object(state, &t.rt, &v));
        }
    }
    let av = t.api_version();
    let items: Vec<Value> = items.iter().map(|o| with_version(o, &av)).collect();
    Ok(Reply::Json(
        200,
        json!({"kind": format!("{}List", t.rt.kind), "apiVersion": av, "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
    ))
}

/// `serviceaccounts/<name>/token` (TokenRequest): returns an opaque token.
fn token_request(state: &mut State, t: &Target, name: &str, ctx: &Ctx) -> Result<Reply, ApiError> {
    t.stored(state, name)?; // the ServiceAccount
    let mut req = decode_body(ctx)?;
    if !req.is_object() {
        req = json!({});
    }
    let secs = req
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] = json!({"name": name, "namespace": t.ns(), "creationTimestamp": null});
    req["status"] = json!({"token": state.issue_token(t.ns(), name), "expirationTimestamp": util::rfc3339(now + secs, None)});
    Ok(Reply::Json(201, req))
}

/// A JWT-shaped (unsigned) token naming the service account.
pub fn service_account_token(ns: &str, sa: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        b64(json!({"alg": "none", "kid": "kube-testserver"})),
        b64(
            json!({"iss": "kube-testserver", "sub": format!("system:serviceaccount:{ns}:{sa}"), "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa}}})
        ),
        util::random_suffix(16)
    )
}

/// Access reviews and token reviews: everything is allowed.
fn review(t: &Target, ctx: &Ctx) -> Result<Reply, ApiError> {
    let mut obj = decode_body(ctx)?;
    if !obj.is_object() {
        obj = json!({});
    }
    obj["apiVersion"] = json!(t.api_version());
    obj["kind"] = json!(t.rt.kind);
    obj["status"] = match t.rt.kind.as_str() {
        "SelfSubjectAccessReview" => {
            json!({"allowed": true, "reason": "kube-testserver allows everything"})
        }
        "SelfSubjectRulesReview" => {
            json!({"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}], "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": false})
        }
        "TokenReview" => json!({"authenticated": true, "user": {"username": "kube-testserver"}}),
        _ => {
            json!({"userInfo": {"username": "kube-testserver", "groups": ["system:masters", "system:authenticated"]}})
        }
    };
    Ok(Reply::Json(201, obj))
}

/// Builds the request record for the log.
pub fn record(ctx: &Ctx, status: u16) -> RequestRecord {
    let write = matches!(ctx.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
    let resource = ctx.path.starts_with("/api/") || ctx.path.starts_with("/apis/");
    let review = ctx.path.contains("review") || ctx.path.ends_with("/token");
    RequestRecord {
        method: ctx.method.clone(),
        uri: ctx.uri.clone(),
        status,
        accept: ctx.accept.clone(),
        mutating: write
            && resource
            && !review
            && !ctx.dry_run()
            && !(ctx.method == "DELETE" && delete_dry_run(ctx)),
        user_agent: ctx.user_agent.clone(),
    }
}
