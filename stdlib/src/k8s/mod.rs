//! The `k8s` namespace: Kubernetes through kube-rs. Converge calls (`ensure_*`, `apply`) use
//! server-side apply with the field manager `collate-run`, predicted by a server-side dry-run in
//! plan mode; reads resolve kinds through discovery; `wait` watches; `lock` is a Lease.

mod apply;
pub(crate) mod client;
pub(crate) mod converge;
mod job;
mod lock;
pub(crate) mod portforward;
mod wait;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rhai::plugin::*;
use rhai::{Array, Map};
use serde_json::{Value, json};

use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::secret_value::Secret;
use crate::value::{FromScript, Secrets, check_keys, opt, to_json};
use client::{Kube, Res};
use converge::{Desired, converge, read_live, to_script};

pub use lock::release_all as release_locks;

/// Takes the run lock of the config: the runtime hands this to [`Host::set_run_lock`].
pub fn take_run_lock(host: &Arc<Host>, l: &crate::host::RunLock) -> Result<(), HostError> {
    let kube = client::kube(host)?;
    lock::lock(host, &kube, &l.namespace, &l.name, l.ttl, l.wait).map(|_| ())
}

/// Waits `d` inside the runtime (the timer is created there, so no reactor is needed outside).
pub(crate) fn pause(host: &Host, d: Duration) {
    host.block_on(async move { tokio::time::sleep(d).await });
}

fn setup(ctx: &NativeCallContext) -> RhaiResult<(Arc<Host>, Arc<Kube>)> {
    let host = Host::of(ctx)?;
    let kube = client::kube(&host)?;
    Ok((host, kube))
}

fn resolve(host: &Host, kube: &Arc<Kube>, kind: &str) -> Result<Res, HostError> {
    host.read(&format!("k8s: resolve kind {kind}"), kube.resolve(kind))
}

/// `metadata` with name, namespace and the optional labels/annotations of `opts`.
fn metadata(ns: &str, name: &str, opts: &Map) -> Result<Value, HostError> {
    let mut m = json!({"name": name});
    if !ns.is_empty() {
        m["namespace"] = json!(ns);
    }
    for key in ["labels", "annotations"] {
        if let Some(v) = opt::<Value>(opts, key)? {
            m[key] = v;
        }
    }
    Ok(m)
}

fn well_known(kind: &str) -> Res {
    client::well_known(kind, None).expect("a well-known kind")
}

/// Converges one object and returns `#{changed, object, diff}`.
fn ensure(
    host: &Host,
    kube: &Arc<Kube>,
    res: Res,
    ns: &str,
    name: &str,
    body: Value,
) -> RhaiResult<Map> {
    let c = ensure_object(host, kube, res, ns, name, body)?;
    Ok(c.change.outcome(to_script(c.object)))
}

/// [`ensure`], with the object as JSON.
fn ensure_object(
    host: &Host,
    kube: &Arc<Kube>,
    res: Res,
    ns: &str,
    name: &str,
    body: Value,
) -> Result<crate::converge::Converged<Value>, HostError> {
    if name.is_empty() {
        return Err(HostError::input(format!("a {} needs a name", res.ar.kind)));
    }
    let d = Desired {
        res,
        namespace: ns.to_string(),
        name: name.to_string(),
        body,
    };
    converge(host, kube, &d, true)
}

/// Secret `data` from a map of strings or Secrets: base64 of each value (registered for masking).
fn secret_data(
    ns: &str,
    name: &str,
    data: &Map,
    field: &str,
    out: &mut serde_json::Map<String, Value>,
) -> Result<(), HostError> {
    for (k, v) in data {
        let text = if let Some(s) = v.read_lock::<Secret>() {
            s.expose().to_string()
        } else if v.is_string() {
            let t = v.to_string();
            // Registered so the value is masked in any text that leaves the process.
            Secret::new(t.clone(), format!("k8s secret {ns}/{name} key {k}"));
            t
        } else if v.is_blob() {
            let b = v.clone().into_blob().unwrap_or_default();
            out.insert(
                k.to_string(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
            );
            continue;
        } else {
            return Err(HostError::input(format!(
                "`{field}.{k}` of secret `{ns}/{name}` must be a string or a Secret, not `{}`",
                v.type_name()
            )));
        };
        out.insert(
            k.to_string(),
            Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
    Ok(())
}

/// Input of `apply`: YAML text (one or many documents), a map, or an array of maps.
fn documents(input: &Dynamic) -> Result<Vec<Value>, HostError> {
    if input.is_string() {
        return crate::yaml::parse_many(&input.to_string(), "the manifests");
    }
    if let Some(s) = input.read_lock::<Secret>() {
        return crate::yaml::parse_many(s.expose(), "the manifests");
    }
    match to_json(input, Secrets::Reveal)? {
        Value::Array(a) => Ok(a),
        v @ Value::Object(_) => Ok(vec![v]),
        _ => Err(HostError::input(format!(
            "`k8s::apply` takes YAML text, a map or an array of maps, not `{}`",
            input.type_name()
        ))),
    }
}

fn apply_impl(ctx: &NativeCallContext, input: Dynamic, opts: &Map) -> RhaiResult<Dynamic> {
    check_keys("k8s::apply", opts, &["namespace", "force"])?;
    let (host, kube) = setup(ctx)?;
    let ns = crate::value::opt::<String>(opts, "namespace")?;
    let force = opt::<bool>(opts, "force")?.unwrap_or(true);
    let single = input.is_map();
    let docs = documents(&input)?;
    // The script still holds its manifests: this copy of them is not needed any more.
    drop(input);
    let results = apply::apply_all(&host, &kube, docs, ns.as_deref(), force)?;
    let mut objects = results.into_iter().map(|c| to_script(c.value()));
    if single {
        return Ok(objects.next().unwrap_or(Dynamic::UNIT));
    }
    Ok(objects.collect::<Array>().into())
}

#[export_module]
pub mod k8s_module {
    use super::*;

    /// The kubeconfig context of the run (`--context`, `kube.context`, or the current one):
    /// `#{name, cluster, server, namespace}`; `cluster` is the kubeconfig's name of the cluster
    /// (`aws eks update-kubeconfig` names it by its ARN, `arn:aws:eks:REGION:ACCOUNT:cluster/NAME`),
    /// `()` in a pod (in-cluster config). Reads the kubeconfig only: no call to the cluster.
    ///
    /// ```rhai
    /// let c = k8s::context();
    /// print(`deploying to ${c.name} (${c.server})`);
    /// ```
    #[rhai_fn(name = "context", return_raw)]
    pub fn current_context(ctx: NativeCallContext) -> RhaiResult<Map> {
        let (_, kube) = setup(&ctx)?;
        let cluster = kube::config::Kubeconfig::read()
            .ok()
            .and_then(|k| k.contexts.into_iter().find(|c| c.name == kube.context))
            .and_then(|c| c.context)
            .map(|c| Dynamic::from(c.cluster))
            .unwrap_or(Dynamic::UNIT);
        let mut m = Map::new();
        m.insert("name".into(), kube.context.clone().into());
        m.insert("cluster".into(), cluster);
        m.insert("server".into(), kube.server.clone().into());
        m.insert("namespace".into(), kube.default_namespace.clone().into());
        Ok(m)
    }

    /// The version of the cluster's API server: `#{major, minor, git_version, platform}`.
    /// A cluster that cannot be reached fails with one error naming the context and the server.
    ///
    /// ```rhai
    /// let v = k8s::server_version();
    /// print(`cluster runs ${v.git_version}`);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn server_version(ctx: NativeCallContext) -> RhaiResult<Map> {
        let (host, kube) = setup(&ctx)?;
        let k = kube.clone();
        let info = host.read("k8s: get /version", async move {
            k.client
                .apiserver_version()
                .await
                .map_err(|e| k.err("get the server version", e))
        })?;
        let mut m = Map::new();
        m.insert("major".into(), info.major.into());
        m.insert("minor".into(), info.minor.into());
        m.insert("git_version".into(), info.git_version.into());
        m.insert("platform".into(), info.platform.into());
        m.insert("context".into(), kube.context.clone().into());
        m.insert("server".into(), kube.server.clone().into());
        Ok(m)
    }

    /// Creates the namespace unless it exists. Returns `#{changed, object, diff}`.
    ///
    /// ```rhai
    /// k8s::ensure_namespace("collate");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_namespace(ctx: NativeCallContext, name: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        ensure_namespace_with(ctx, name, Map::new())
    }

    /// Creates the namespace unless it exists, with `#{labels, annotations}` kept as given.
    ///
    /// ```rhai
    /// k8s::ensure_namespace("collate", #{labels: #{team: "data"}});
    /// ```
    #[rhai_fn(name = "ensure_namespace", return_raw)]
    pub fn ensure_namespace_with(ctx: NativeCallContext, name: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys("k8s::ensure_namespace", &opts, &["labels", "annotations"])?;
        let (host, kube) = setup(&ctx)?;
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata("", name, &opts)?});
        ensure(&host, &kube, well_known("Namespace"), "", name, body)
    }

    /// Creates or updates a Secret in place: `#{type, data, string_data, labels, annotations}`.
    /// `data` values are strings or Secrets (not base64: encoding is done here); the journal
    /// names the keys that change, never their values. Keys this call set before and no longer
    /// sets are removed (server-side apply); keys set by others are kept.
    ///
    /// ```rhai
    /// k8s::ensure_secret("collate", "db-credentials", #{
    ///     type: "Opaque",
    ///     data: #{ password: secret::env("DB_PASSWORD") },
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_secret(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys(
            "k8s::ensure_secret",
            &opts,
            &["type", "data", "string_data", "labels", "annotations"],
        )?;
        let (host, kube) = setup(&ctx)?;
        let mut data = serde_json::Map::new();
        for field in ["data", "string_data"] {
            if let Some(m) = opt::<Map>(&opts, field)? {
                secret_data(namespace, name, &m, field, &mut data)?;
            }
        }
        let kind = crate::value::opt::<String>(&opts, "type")?.unwrap_or_else(|| "Opaque".into());
        let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": metadata(namespace, name, &opts)?,
            "type": kind, "data": data});
        ensure(&host, &kube, well_known("Secret"), namespace, name, body)
    }

    /// Creates or updates (in place, never delete-then-create) an image pull secret of type
    /// `kubernetes.io/dockerconfigjson`. `docker_config` is the `.dockerconfigjson` document: a
    /// Secret (as from `aws::ecr::docker_config`), JSON text, or a map.
    ///
    /// ```rhai
    /// let cfg = aws::ecr::docker_config("123456789012.dkr.ecr.us-east-1.amazonaws.com");
    /// k8s::ensure_docker_registry_secret("collate", "ecr-registry-creds", cfg);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_docker_registry_secret(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        docker_config: Dynamic,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        let text: Dynamic = if docker_config.is::<Secret>() || docker_config.is_string() {
            docker_config
        } else if docker_config.is_map() {
            Dynamic::from(Secret::new(
                to_json(&docker_config, Secrets::Reveal)?.to_string(),
                "docker config",
            ))
        } else {
            return Err(HostError::input(format!(
                "`docker_config` must be a Secret, JSON text or a map, not `{}`",
                docker_config.type_name()
            ))
            .into());
        };
        let mut data = Map::new();
        data.insert(".dockerconfigjson".into(), text);
        let mut opts = Map::new();
        opts.insert("type".into(), "kubernetes.io/dockerconfigjson".into());
        opts.insert("data".into(), data.into());
        ensure_secret(ctx, namespace, name, opts)
    }

    /// Creates a ServiceAccount or sets the given `#{annotations, labels}` on an existing one,
    /// keeping annotations and labels set by others (like `kubectl annotate`).
    ///
    /// ```rhai
    /// k8s::ensure_service_account("collate", "om-role", #{
    ///     annotations: #{ "eks.amazonaws.com/role-arn": role.arn },
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_service_account(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys(
            "k8s::ensure_service_account",
            &opts,
            &["labels", "annotations"],
        )?;
        let (host, kube) = setup(&ctx)?;
        let body = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(namespace, name, &opts)?});
        ensure(
            &host,
            &kube,
            well_known("ServiceAccount"),
            namespace,
            name,
            body,
        )
    }

    /// Creates a long-lived token Secret (`kubernetes.io/service-account-token`) for the
    /// ServiceAccount `service_account`, and waits up to 30s for the token to be filled in.
    /// `object.data.token` is a Secret.
    ///
    /// ```rhai
    /// let t = k8s::ensure_sa_token_secret("collate", "om-role.service-account-token", "om-role");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_sa_token_secret(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        service_account: &str,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        ensure_sa_token_secret_with(ctx, namespace, name, service_account, Map::new())
    }

    /// Like `ensure_sa_token_secret(ns, name, sa)`, with `#{wait: bool, timeout: seconds}`
    /// (`wait: false` returns without waiting for the token).
    ///
    /// ```rhai
    /// k8s::ensure_sa_token_secret("collate", "om-role.service-account-token", "om-role", #{wait: false});
    /// ```
    #[rhai_fn(name = "ensure_sa_token_secret", return_raw)]
    pub fn ensure_sa_token_secret_with(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        service_account: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys("k8s::ensure_sa_token_secret", &opts, &["wait", "timeout"])?;
        let (host, kube) = setup(&ctx)?;
        let body = json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": name, "namespace": namespace,
                "annotations": {"kubernetes.io/service-account.name": service_account}}});
        let res = well_known("Secret");
        let converged = ensure_object(&host, &kube, res.clone(), namespace, name, body)?;
        let mut out = converged
            .change
            .outcome(to_script(converged.object.clone()));
        let wait = opt::<bool>(&opts, "wait")?.unwrap_or(true);
        if !wait || host.is_plan() {
            return Ok(out);
        }
        let timeout = match opts.get("timeout") {
            Some(t) if !t.is_unit() => Duration::from_script(t, "`timeout`")?,
            _ => Duration::from_secs(30),
        };
        let filled = |l: &Value| {
            l.pointer("/data/token")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty())
        };
        // The converged object already holds its token (a secret issued before): no read.
        if filled(&converged.object) {
            return Ok(out);
        }
        let started = std::time::Instant::now();
        // The token controller fills the secret within milliseconds on a healthy cluster: poll
        // every 25 ms for the first half second, then back off (doubling to 1 s).
        let mut delay = Duration::from_millis(25);
        loop {
            let live = read_live(&host, &kube, &res, namespace, name)?;
            if let Some(l) = live.as_ref().filter(|l| filled(l)) {
                out.insert("object".into(), to_script(l.clone()));
                return Ok(out);
            }
            if started.elapsed() >= timeout {
                return Err(HostError::new(crate::ErrorKind::Timeout, format!(
                    "the token of secret `{namespace}/{name}` was not filled in within {}s",
                    timeout.as_secs()))
                    .with_hint(format!("does the service account `{namespace}/{service_account}` exist? create it first with `k8s::ensure_service_account`"))
                    .into());
            }
            host.progress(&format!(
                "waiting for the token of secret {namespace}/{name}"
            ));
            pause(&host, delay);
            if started.elapsed() >= Duration::from_millis(500) {
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Server-side applies manifests (field manager `collate-run`, conflicts forced: the recipe
    /// is the source of truth, like `kubectl apply --server-side --force-conflicts`). Takes YAML
    /// text (many documents), a map, or an array of maps; CustomResourceDefinitions and Namespaces
    /// go first. Each object is journaled with its diff; a field this tool applied before and no
    /// longer sets is removed. Returns the live objects (an array; one object for a map input).
    ///
    /// ```rhai
    /// let objs = k8s::apply(template::render_file("templates/om-argo-role.yaml.j2", #{ns: "collate"}));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn apply(ctx: NativeCallContext, manifests: Dynamic) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        apply_impl(&ctx, manifests, &Map::new())
    }

    /// `apply` with `#{namespace, force}`: `namespace` for objects that name none (like
    /// `kubectl apply -n`), `force: false` to fail on conflicts with other field managers.
    ///
    /// ```rhai
    /// k8s::apply(yaml_text, #{namespace: "collate"});
    /// ```
    #[rhai_fn(name = "apply", return_raw)]
    pub fn apply_with(
        ctx: NativeCallContext,
        manifests: Dynamic,
        opts: Map,
    ) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        apply_impl(&ctx, manifests, &opts)
    }

    /// Reads one object; `()` when absent. `kind` is a kind or resource name, optionally with
    /// its group: `Secret`, `secret`, `deployments.apps`, `Workflow`. Use `""` as namespace for
    /// cluster-scoped kinds. A Secret's `data` values come back as Secrets (decoded).
    ///
    /// ```rhai
    /// let s = k8s::get("Secret", "collate", "db-credentials");
    /// if s != () { print(s.data.password); }   // ***
    /// ```
    #[rhai_fn(return_raw)]
    pub fn get(
        ctx: NativeCallContext,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> RhaiResult<Dynamic> {
        let (host, kube) = setup(&ctx)?;
        let res = resolve(&host, &kube, kind)?;
        Ok(read_live(&host, &kube, &res, namespace, name)?
            .map(to_script)
            .unwrap_or(Dynamic::UNIT))
    }

    /// Lists objects of a kind in a namespace (`""`: all namespaces).
    ///
    /// ```rhai
    /// for p in k8s::list("pods", "collate") { print(p.metadata.name); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn list(ctx: NativeCallContext, kind: &str, namespace: &str) -> RhaiResult<Array> {
        crate::host::track(&ctx);
        list_with(ctx, kind, namespace, Map::new())
    }

    /// Lists with `#{labels, fields}`: `labels` a map (all must match) or a selector string,
    /// `fields` a field selector string.
    ///
    /// ```rhai
    /// let pods = k8s::list("Pod", "collate", #{labels: #{"app.kubernetes.io/name": "openmetadata"}});
    /// ```
    #[rhai_fn(name = "list", return_raw)]
    pub fn list_with(
        ctx: NativeCallContext,
        kind: &str,
        namespace: &str,
        opts: Map,
    ) -> RhaiResult<Array> {
        crate::host::track(&ctx);
        check_keys("k8s::list", &opts, &["labels", "fields"])?;
        let (host, kube) = setup(&ctx)?;
        let res = resolve(&host, &kube, kind)?;
        let mut lp = kube::api::ListParams::default();
        match opts.get("labels") {
            None => {}
            Some(l) if l.is_unit() => {}
            Some(l) if l.is_string() => lp = lp.labels(&l.to_string()),
            Some(l) => {
                let m = l.read_lock::<Map>().ok_or_else(|| {
                    HostError::input("option `labels` must be a map or a selector string")
                })?;
                let sel: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                lp = lp.labels(&sel.join(","));
            }
        }
        if let Some(f) = crate::value::opt::<String>(&opts, "fields")? {
            lp = lp.fields(&f);
        }
        let api = if namespace.is_empty() || !res.namespaced {
            kube.api_all(&res)
        } else {
            kube.api(&res, namespace)?
        };
        let what = format!(
            "list {} in {}",
            res.describe(),
            if namespace.is_empty() {
                "all namespaces"
            } else {
                namespace
            }
        );
        let k = kube.clone();
        let items = host.read(&format!("k8s: {what}"), async move {
            api.list(&lp).await.map_err(|e| k.err(&what, e))
        })?;
        Ok(items
            .items
            .into_iter()
            .map(|o| to_script(serde_json::to_value(o).unwrap_or(Value::Null)))
            .collect())
    }

    /// Deletes an object; nothing happens when it is already gone. Returns `#{changed, object, diff}`
    /// (`changed` is `"deleted"` or `"unchanged"`). Does not wait for finalizers; use
    /// `k8s::wait(kind, ns, name, "deleted", timeout)` for that.
    ///
    /// ```rhai
    /// k8s::delete("Job", "collate", "reindex-once");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn delete(
        ctx: NativeCallContext,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> RhaiResult<Map> {
        let (host, kube) = setup(&ctx)?;
        let res = resolve(&host, &kube, kind)?;
        let c = converge::delete(&host, &kube, &res, namespace, name)?;
        let object = if c.object.is_null() {
            Dynamic::UNIT
        } else {
            to_script(c.object)
        };
        Ok(c.change.outcome(object))
    }

    /// Watches an object until `condition` holds or `timeout` (seconds, or `"5m"`) runs out.
    /// Conditions: `"exists"`, `"deleted"`, a condition type (`"Available"`, `"Ready"`,
    /// `"Complete"`, `"Established"`; for Deployments and StatefulSets `Available`/`Ready` also
    /// need the rollout complete), `"Ready=False"`, or a field `"status.phase=Succeeded"`.
    /// Progress is shown every 5s; a timeout error says what was last seen; a failed Job fails at
    /// once. Returns the object (`()` after `"deleted"`). In plan mode it does not wait: it returns
    /// the object if the condition already holds, else `()`.
    ///
    /// ```rhai
    /// k8s::wait("deployments.apps", "collate", "openmetadata", "Available", "10m");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn wait(
        ctx: NativeCallContext,
        kind: &str,
        namespace: &str,
        name: &str,
        condition: &str,
        timeout: Dynamic,
    ) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        let cond = wait::Condition::parse(condition)?;
        let timeout = Duration::from_script(&timeout, "the wait timeout")?;
        let (host, kube) = setup(&ctx)?;
        let res = resolve(&host, &kube, kind)?;
        if host.is_plan() {
            let live = read_live(&host, &kube, &res, namespace, name)?;
            return Ok(match wait::satisfied(live.as_ref(), &cond) {
                Ok(true) => live.map(to_script).unwrap_or(Dynamic::UNIT),
                _ => Dynamic::UNIT,
            });
        }
        let obj = wait::wait(&host, &kube, &res, namespace, name, &cond, timeout)?;
        Ok(obj.map(to_script).unwrap_or(Dynamic::UNIT))
    }

    /// Runs a short-lived Job and removes it: applies the manifests (exactly one `batch/v1`
    /// Job, plus what it needs — its ServiceAccount, ConfigMap), waits for the Job to complete or
    /// fail (progress every 5s), reads its pod's log, and deletes every object it applied, also
    /// when the Job fails, a wait times out or the run is interrupted (Ctrl-C). The objects are journaled as transient: shown,
    /// not counted as changes. Options: `namespace` (for manifests that name none), `timeout`
    /// (default `"10m"`), `start_timeout` (a pod still `Pending` after it — an image the nodes
    /// cannot pull, no node to run on — fails naming the pod and why; default `"2m"`),
    /// `in_plan` (run it in plan mode too; default `false`: a plan returns `()`). Returns
    /// `#{job, pod, succeeded, status, log, elapsed_ms}`; a failed Job is `succeeded: false`, not
    /// an error.
    ///
    /// ```rhai
    /// let r = k8s::run_job(yaml::parse_all(template::render_file("templates/check-job.yaml.j2", #{})),
    ///     #{ namespace: "collate", timeout: "5m", start_timeout: "90s" });
    /// if r != () && !r.succeeded { print(r.log); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn run_job(ctx: NativeCallContext, manifests: Dynamic, opts: Map) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        check_keys(
            "k8s::run_job",
            &opts,
            &["namespace", "timeout", "start_timeout", "in_plan"],
        )?;
        let ns = opt::<String>(&opts, "namespace")?;
        let timeout = opt::<Duration>(&opts, "timeout")?.unwrap_or(Duration::from_secs(600));
        let start = opt::<Duration>(&opts, "start_timeout")?.unwrap_or(Duration::from_secs(120));
        let in_plan = opt::<bool>(&opts, "in_plan")?.unwrap_or(false);
        let docs = documents(&manifests)?;
        let (host, kube) = setup(&ctx)?;
        if host.is_plan() && !in_plan {
            return Ok(Dynamic::UNIT);
        }
        let limits = job::Limits { timeout, start };
        let f = host.transient(in_plan, || {
            job::run(&host, &kube, docs, ns.as_deref(), &limits)
        })?;
        let mut m = Map::new();
        m.insert("job".into(), f.job.into());
        m.insert(
            "pod".into(),
            f.pod.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
        );
        m.insert("succeeded".into(), f.succeeded.into());
        m.insert("status".into(), f.status.into());
        m.insert("log".into(), f.log.into());
        m.insert("elapsed_ms".into(), (f.elapsed.as_millis() as i64).into());
        Ok(m.into())
    }

    /// A pod's log (`kubectl logs`): stdout and stderr of its container.
    ///
    /// ```rhai
    /// print(k8s::logs("collate", "collate-run-preflight-x2k9p"));
    /// ```
    #[rhai_fn(return_raw)]
    pub fn logs(ctx: NativeCallContext, namespace: &str, pod: &str) -> RhaiResult<String> {
        crate::host::track(&ctx);
        logs_with(ctx, namespace, pod, Map::new())
    }

    /// `logs` with `#{container, tail_lines}`: one container of the pod, its last lines.
    ///
    /// ```rhai
    /// let tail = k8s::logs("collate", "openmetadata-0", #{ container: "openmetadata", tail_lines: 50 });
    /// ```
    #[rhai_fn(name = "logs", return_raw)]
    pub fn logs_with(
        ctx: NativeCallContext,
        namespace: &str,
        pod: &str,
        opts: Map,
    ) -> RhaiResult<String> {
        crate::host::track(&ctx);
        check_keys("k8s::logs", &opts, &["container", "tail_lines"])?;
        let container = opt::<String>(&opts, "container")?;
        let tail_lines = opt::<i64>(&opts, "tail_lines")?;
        let (host, kube) = setup(&ctx)?;
        Ok(job::logs(
            &host, &kube, namespace, pod, container, tail_lines,
        )?)
    }

    /// Takes the run lock `namespace/name`, a Lease held by `user@host:pid` for `ttl` seconds and
    /// renewed in the background until `k8s::unlock` or the end of the run. Fails at once, naming
    /// the holder, when another live run holds it; an expired lease is taken over. In plan mode it
    /// only reads (and warns when another run holds it). Returns `#{held, holder, expires}`.
    ///
    /// ```rhai
    /// k8s::lock("collate", "collate-run", 300);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn lock(ctx: NativeCallContext, namespace: &str, name: &str, ttl: i64) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        lock_with(ctx, namespace, name, ttl, Map::new())
    }

    /// `lock` that waits up to `#{wait: seconds}` (or `"10m"`) for another holder to release.
    ///
    /// ```rhai
    /// k8s::lock("collate", "collate-run", 300, #{wait: "10m"});
    /// ```
    #[rhai_fn(name = "lock", return_raw)]
    pub fn lock_with(
        ctx: NativeCallContext,
        namespace: &str,
        name: &str,
        ttl: i64,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys("k8s::lock", &opts, &["wait"])?;
        let wait = match opts.get("wait") {
            Some(w) if !w.is_unit() => Duration::from_script(w, "`wait`")?,
            _ => Duration::ZERO,
        };
        let (host, kube) = setup(&ctx)?;
        let o = lock::lock(&host, &kube, namespace, name, ttl, wait)?;
        let mut m = Map::new();
        m.insert("held".into(), o.held.into());
        m.insert(
            "holder".into(),
            o.holder.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
        );
        m.insert(
            "expires".into(),
            o.expires
                .map(|e| Dynamic::from(e.to_string()))
                .unwrap_or(Dynamic::UNIT),
        );
        Ok(m)
    }

    /// Releases the run lock if this run holds it; `true` when released.
    ///
    /// ```rhai
    /// k8s::unlock("collate", "collate-run");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn unlock(ctx: NativeCallContext, namespace: &str, name: &str) -> RhaiResult<bool> {
        let (host, kube) = setup(&ctx)?;
        Ok(lock::unlock(&host, &kube, namespace, name)?)
    }
}
