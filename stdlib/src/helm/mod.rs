//! The `helm` namespace: Helm releases through the real `helm` binary (3 or 4). Values go to
//! helm's stdin (`-f -`), never to argv or a file. A release is read from helm's own release
//! records through the Kubernetes API (one call; see `storage`), or with `helm get metadata` and
//! `helm get values` side by side when `HELM_DRIVER` names another storage; a plan compares the
//! release's chart and values with the desired ones and installs nothing; an unchanged release is
//! not upgraded again.

mod chart;
mod cli;
mod storage;

use std::path::PathBuf;
use std::sync::Arc;

use rhai::Map;
use rhai::plugin::*;
use serde_json::{Value, json};

use crate::diff;
use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::host::Host;
use crate::journal::{Action, Change, FieldChange};
use crate::secret_value::{Secret, mask_text};
use crate::value::{Secrets, check_keys, opt_bool, opt_str, to_json_with_secret_paths};
use cli::Helm;

/// A deployed release: what `helm get metadata` describes.
/// Helm repositories a plan would add (name → URL), a [`Host::slot`]: charts from them are
/// read with `--repo`.
#[derive(Default)]
struct PlannedRepos(std::sync::Mutex<std::collections::HashMap<String, String>>);

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Release {
    pub name: String,
    pub namespace: String,
    pub revision: i64,
    pub status: String,
    pub chart: String,
    pub version: String,
    pub app_version: String,
    /// When this revision was deployed (epoch milliseconds), where helm recorded it.
    pub deployed_at: Option<i64>,
}

impl Release {
    /// From `helm get metadata -o json`.
    fn from_metadata(v: &Value) -> Release {
        Release::at(
            v,
            [
                "/name",
                "/namespace",
                "/revision",
                "/status",
                "/chart",
                "/version",
                "/appVersion",
                "/deployedAt",
            ],
        )
    }

    /// From the release document `helm upgrade -o json` prints and helm's release records hold.
    fn from_release(v: &Value) -> Release {
        Release::at(
            v,
            [
                "/name",
                "/namespace",
                "/version",
                "/info/status",
                "/chart/metadata/name",
                "/chart/metadata/version",
                "/chart/metadata/appVersion",
                "/info/last_deployed",
            ],
        )
    }

    /// The fields at these JSON pointers: name, namespace, revision, status, chart, version,
    /// app version, deployment time (RFC 3339).
    fn at(v: &Value, p: [&str; 8]) -> Release {
        let s = |p: &str| {
            v.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Release {
            name: s(p[0]),
            namespace: s(p[1]),
            revision: v.pointer(p[2]).and_then(Value::as_i64).unwrap_or(0),
            status: s(p[3]),
            chart: s(p[4]),
            version: s(p[5]),
            app_version: s(p[6]),
            deployed_at: s(p[7])
                .parse::<k8s_openapi::jiff::Timestamp>()
                .ok()
                // Whole seconds: `helm get metadata` prints no fraction.
                .map(|t| t.as_second() * 1000),
        }
    }

    fn to_map(&self) -> Map {
        let mut m = Map::new();
        m.insert("name".into(), self.name.clone().into());
        m.insert("namespace".into(), self.namespace.clone().into());
        m.insert("revision".into(), self.revision.into());
        m.insert("status".into(), self.status.clone().into());
        m.insert("chart".into(), self.chart.clone().into());
        m.insert("version".into(), self.version.clone().into());
        m.insert("app_version".into(), self.app_version.clone().into());
        m.insert(
            "deployed_at".into(),
            self.deployed_at.map(Dynamic::from).unwrap_or(Dynamic::UNIT),
        );
        m
    }
}

/// The options shared by `upgrade_install` and `template`.
struct Opts {
    namespace: String,
    version: Option<String>,
    /// Values with secrets revealed (for helm's stdin), masked (for display), and secret paths.
    values: Value,
    values_masked: Value,
    secret_paths: Vec<String>,
}

fn parse_opts(what: &str, opts: &Map, known: &[&str]) -> Result<Opts, HostError> {
    check_keys(what, opts, known)?;
    let values = opts
        .get("values")
        .cloned()
        .unwrap_or_else(|| Map::new().into());
    if !values.is_map() && !values.is_unit() {
        return Err(HostError::input(format!(
            "option `values` must be a map, not `{}`",
            values.type_name()
        )));
    }
    let (revealed, secret_paths) = to_json_with_secret_paths(&values, Secrets::Reveal)?;
    let (masked, _) = to_json_with_secret_paths(&values, Secrets::Mask)?;
    let norm = |v: Value| if v.is_null() { json!({}) } else { v };
    Ok(Opts {
        namespace: opt_str(opts, "namespace")?.unwrap_or_else(|| "default".into()),
        version: opt_str(opts, "version")?,
        values: norm(revealed),
        values_masked: norm(masked),
        secret_paths,
    })
}

/// The values as helm reads them from stdin (`-f -`).
fn values_input(values: &Value) -> Option<Vec<u8>> {
    Some(values.to_string().into_bytes())
}

fn s(v: impl Into<String>) -> String {
    v.into()
}

/// A chart as helm is given it: a local folder or `.tgz` (resolved against the calling script),
/// a `repo/chart` reference or an `oci://` reference.
struct ChartRef {
    /// The reference as helm is given it (a local path made absolute).
    arg: String,
    local: Option<PathBuf>,
}

impl ChartRef {
    fn resolve(host: &Host, ctx: &NativeCallContext, chart: &str) -> Result<ChartRef, HostError> {
        let local = (!chart.contains("://"))
            .then(|| host.resolve_from(ctx, chart))
            .filter(|p| chart.starts_with('.') || chart.starts_with('/') || p.exists());
        if let Some(p) = local.as_ref().filter(|p| !p.exists()) {
            return Err(HostError::input(format!(
                "chart `{}` does not exist",
                host.display_path(p)
            )));
        }
        Ok(ChartRef {
            arg: local
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| chart.to_string()),
            local,
        })
    }

    /// The configured repository of a `repo/chart` reference.
    fn repo(&self) -> Option<&str> {
        self.local
            .is_none()
            .then(|| chart::repo_of(&self.arg))
            .flatten()
    }

    /// helm's arguments naming the chart (and its version): the reference, or for a repository
    /// this plan only would add, the chart name with `--repo URL`. Also the configured
    /// repository whose index may need a refresh.
    fn helm_args(&self, host: &Host, version: Option<&str>) -> (Vec<String>, Option<String>) {
        let planned = self.repo().and_then(|r| {
            host.slot::<PlannedRepos>()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(r)
                .cloned()
        });
        let (mut args, repo) = match planned {
            Some(url) => (vec![chart::name_of(&self.arg), s("--repo"), url], None),
            None => (vec![self.arg.clone()], self.repo().map(str::to_string)),
        };
        if let Some(v) = version.filter(|_| self.local.is_none()) {
            args.extend([s("--version"), v.to_string()]);
        }
        (args, repo)
    }
}

/// The chart name and version the release will run (`None` where unknown before install): a
/// local chart's own Chart.yaml (never its file name), a pinned version of a remote chart, or
/// what `helm show chart` resolves a version constraint (or none) to.
fn desired_chart(
    host: &Host,
    helm: &Helm,
    chart: &ChartRef,
    version: Option<&str>,
) -> Result<chart::Meta, HostError> {
    if let Some(p) = &chart.local {
        let shown = host.display_path(p);
        let meta = chart::local_meta(p, &shown)?;
        let wanted = version.map(|v| chart::exact_version(v).unwrap_or(v));
        if let (Some(want), Some(have)) = (wanted, meta.version.as_deref())
            && want != have
        {
            return Err(HostError::input(format!(
                "chart `{shown}` is version {have}, not the `version` {want} asked for"
            ))
            .with_hint("helm installs a local chart as it is: point `chart` at the archive of that version, or change `version`"));
        }
        return Ok(meta);
    }
    if let Some(v) = version.and_then(chart::exact_version) {
        return Ok(chart::Meta {
            name: chart::name_of(&chart.arg),
            version: Some(v.to_string()),
        });
    }
    // A version constraint, or none: ask helm which version it would install.
    let (chart_args, repo) = chart.helm_args(host, version);
    let mut args = vec![s("show"), s("chart")];
    args.extend(chart_args);
    let h = helm.clone();
    match host.read(&format!("helm show chart {}", chart.arg), async move {
        h.run_fresh(args, false, None, repo.as_deref()).await
    }) {
        Ok(out) => chart::Meta::parse(&out.stdout, "the chart metadata"),
        // In plan mode the repository may be unreachable yet: the version is then unknown.
        Err(_) if host.is_plan() => Ok(chart::Meta {
            name: chart::name_of(&chart.arg),
            version: None,
        }),
        Err(e) => Err(e),
    }
}

fn release_args(sub: &str, release: &str, ns: &str) -> Vec<String> {
    vec![
        s("get"),
        s(sub),
        release.to_string(),
        s("-n"),
        ns.to_string(),
        s("-o"),
        s("json"),
    ]
}

fn read_release(
    host: &Arc<Host>,
    helm: &Helm,
    release: &str,
    ns: &str,
) -> Result<Option<Release>, HostError> {
    Ok(read_release_and_values(host, helm, release, ns)?.map(|(r, _)| r))
}

/// The release and its user-supplied values (`None` when the release is not installed): from
/// helm's release records through the Kubernetes API (one call), or, with another storage
/// driver, from `helm get metadata` and `helm get values` run side by side.
fn read_release_and_values(
    host: &Arc<Host>,
    helm: &Helm,
    release: &str,
    ns: &str,
) -> Result<Option<(Release, Value)>, HostError> {
    let user_values = |v: Option<Value>| match v {
        None | Some(Value::Null) => json!({}),
        Some(v) => v,
    };
    if storage::uses_secrets() {
        return Ok(storage::latest(host, ns, release)?.map(|doc| {
            (
                Release::from_release(&doc),
                user_values(doc.get("config").cloned()),
            )
        }));
    }
    let h = helm.clone();
    let (meta, values) = (
        release_args("metadata", release, ns),
        release_args("values", release, ns),
    );
    let (meta, values) = host.read(&format!("helm get metadata/values {release}"), async move {
        let (m, v) = futures::join!(h.json(meta), h.json(values));
        Ok((m?, v?))
    })?;
    Ok(meta.map(|m| (Release::from_metadata(&m), user_values(values))))
}

/// Per-key differences of values (removed keys included); secret paths masked.
pub(crate) fn values_diff(
    desired: &Value,
    live: &Value,
    secret_paths: &[String],
) -> Vec<FieldChange> {
    let is_secret = |p: &str| {
        secret_paths
            .iter()
            .any(|s| p == s || p.starts_with(&format!("{s}.")) || p.starts_with(&format!("{s}[")))
    };
    let mut fields = diff::diff(desired, Some(live), &is_secret);
    for f in diff::diff(live, Some(desired), &|_| false) {
        if f.before.is_none() {
            fields.push(FieldChange {
                path: f.path,
                before: f.after,
                after: None,
            });
        }
    }
    fields
        .into_iter()
        .map(|mut f| {
            let m = |v: Option<Value>| {
                v.map(|v| match v {
                    Value::String(t) => Value::String(mask_text(&t)),
                    other => other,
                })
            };
            f.path = format!("values.{}", f.path);
            f.before = m(f.before);
            f.after = m(f.after);
            f
        })
        .collect()
}

/// The error for a release stuck in `pending-*`, with the command that recovers it.
fn stuck(rel: &Release) -> HostError {
    let fix = if rel.status == "pending-install" || rel.revision <= 1 {
        format!("helm uninstall {} -n {}", rel.name, rel.namespace)
    } else {
        format!(
            "helm rollback {} {} -n {}",
            rel.name,
            rel.revision - 1,
            rel.namespace
        )
    };
    HostError::new(
        ErrorKind::Conflict,
        format!(
            "helm release `{}` in `{}` is stuck in `{}` (revision {}): an earlier helm run was interrupted or is still running",
            rel.name, rel.namespace, rel.status, rel.revision
        ),
    )
    .with_hint(format!("if no other helm run is in progress (hold the run lock: `k8s::lock`), recover with `{fix}`, then run again"))
}

/// Renders the chart with the values (validating them against its values.schema.json).
fn render(
    host: &Host,
    helm: &Helm,
    release: &str,
    chart: &ChartRef,
    o: &Opts,
) -> Result<String, HostError> {
    let (chart_args, repo) = chart.helm_args(host, o.version.as_deref());
    let mut args = vec![s("template"), release.to_string()];
    args.extend(chart_args);
    args.extend([s("-n"), o.namespace.clone(), s("-f"), s("-")]);
    let h = helm.clone();
    let input = values_input(&o.values);
    let out = host.read(
        &format!("helm template {release} {}", chart.arg),
        async move { h.run_fresh(args, false, input, repo.as_deref()).await },
    );
    match out {
        Ok(o) => Ok(o.stdout),
        Err(e) => {
            let schema = cli::said(&e) == cli::Said::SchemaMismatch;
            let mut err = HostError::new(ErrorKind::Input, e.message);
            if schema {
                err = err.with_hint("the values do not match the chart's values.schema.json; check the key names against the pinned chart version");
            }
            Err(err)
        }
    }
}

fn parse_timeout(opts: &Map) -> Result<Option<String>, HostError> {
    match opts.get("timeout") {
        None => Ok(None),
        Some(t) if t.is_unit() => Ok(None),
        Some(t) if t.is_int() => Ok(Some(format!("{}s", t.as_int().unwrap_or(300)))),
        Some(t) if t.is_string() => Ok(Some(t.to_string())),
        Some(t) => Err(HostError::input(format!(
            "option `timeout` must be seconds or a string like \"10m\", not `{}`",
            t.type_name()
        ))),
    }
}

const UPGRADE_KEYS: &[&str] = &[
    "namespace",
    "version",
    "values",
    "wait",
    "timeout",
    "atomic",
    "create_namespace",
    "disable_openapi_validation",
];

fn upgrade_install_impl(
    ctx: &NativeCallContext,
    release: &str,
    chart: &str,
    opts: &Map,
) -> RhaiResult<Map> {
    let o = parse_opts("helm::upgrade_install", opts, UPGRADE_KEYS)?;
    let host = Host::of(ctx)?;
    host.guard_remote(&format!("helm upgrade --install {release}"))?;
    let helm = Helm::find(&host)?;
    let chart = ChartRef::resolve(&host, ctx, chart)?;
    let read = read_release_and_values(&host, &helm, release, &o.namespace)?;
    let (live, live_values) = match read {
        Some((r, v)) => (Some(r), v),
        None => (None, json!({})),
    };
    if let Some(rel) = live.as_ref().filter(|r| r.status.starts_with("pending-")) {
        return Err(stuck(rel).into());
    }
    let chart::Meta {
        name: want_name,
        version: want_version,
    } = desired_chart(&host, &helm, &chart, o.version.as_deref())?;
    let want_chart = format!(
        "{want_name}-{}",
        want_version.clone().unwrap_or_else(|| "(latest)".into())
    );

    let (action, fields) = match &live {
        None => {
            let mut f = vec![FieldChange {
                path: s("chart"),
                before: None,
                after: Some(json!(want_chart)),
            }];
            f.extend(values_diff(&o.values_masked, &json!({}), &o.secret_paths));
            (Action::Create, f)
        }
        Some(rel) => {
            let mut f = Vec::new();
            let live_chart = format!("{}-{}", rel.chart, rel.version);
            if rel.chart != want_name || want_version.as_deref().is_some_and(|v| v != rel.version) {
                f.push(FieldChange {
                    path: s("chart"),
                    before: Some(json!(live_chart)),
                    after: Some(json!(want_chart)),
                });
            }
            if rel.status != "deployed" {
                f.push(FieldChange {
                    path: s("status"),
                    before: Some(json!(rel.status)),
                    after: Some(json!("deployed")),
                });
            }
            f.extend(values_diff(&o.values, &live_values, &o.secret_paths));
            (
                if f.is_empty() {
                    Action::Unchanged
                } else {
                    Action::Update
                },
                f,
            )
        }
    };

    let result = if action == Action::Unchanged {
        live.clone().expect("an unchanged release exists")
    } else if host.is_plan() {
        // The values are checked against the chart's schema before anything is installed.
        render(&host, &helm, release, &chart, &o)?;
        Release {
            name: release.to_string(),
            namespace: o.namespace.clone(),
            revision: live.as_ref().map(|r| r.revision + 1).unwrap_or(1),
            status: s("deployed"),
            chart: want_name.clone(),
            version: want_version.clone().unwrap_or_default(),
            app_version: live
                .as_ref()
                .map(|r| r.app_version.clone())
                .unwrap_or_default(),
            // Known once it is deployed.
            deployed_at: None,
        }
    } else {
        let (chart_args, repo) = chart.helm_args(&host, o.version.as_deref());
        let mut args = vec![s("upgrade"), s("--install"), release.to_string()];
        args.extend(chart_args);
        args.extend([
            s("-n"),
            o.namespace.clone(),
            s("-f"),
            s("-"),
            s("--reset-values"),
            s("-o"),
            s("json"),
        ]);
        if opt_bool(opts, "wait")?.unwrap_or(false) {
            args.push(s("--wait"));
        }
        if let Some(t) = parse_timeout(opts)? {
            args.extend([s("--timeout"), t]);
        }
        let atomic = opt_bool(opts, "atomic")?.unwrap_or(false);
        if opt_bool(opts, "create_namespace")?.unwrap_or(false) {
            args.push(s("--create-namespace"));
        }
        if opt_bool(opts, "disable_openapi_validation")?.unwrap_or(false) {
            args.push(s("--disable-openapi-validation"));
        }
        let h = helm.clone();
        let input = values_input(&o.values);
        let out = host.mutate(&format!("helm upgrade --install {release}"), async move {
            if atomic {
                args.push(s(h.atomic_flag().await?));
            }
            h.run_fresh(args, true, input, repo.as_deref()).await
        })?;
        let doc: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| {
            HostError::api(format!(
                "`helm upgrade --install {release}` printed something that is not JSON: {e}"
            ))
        })?;
        Release::from_release(&doc)
    };
    let change = Change::new("helm.release", format!("{}/{release}", o.namespace), action)
        .with_fields(fields);
    let change = host.journal().record(change);
    Ok(change.outcome(result.to_map().into()))
}

#[export_module]
pub mod helm_module {
    use super::*;

    /// Adds the chart repository `name` (or updates its URL). `oci://` URLs need no repository:
    /// give the `oci://` ref (or a local chart path) straight to `upgrade_install`. A repository
    /// already configured with this URL is read from helm's repository file (no helm process,
    /// as for an unchanged release). In a plan
    /// nothing is added, and charts of a repository the plan would add are read from its URL.
    /// The repository's cached index is refreshed by `upgrade_install`/`template` when it lacks
    /// the version asked for. Returns `#{changed, object: #{name, url}, diff}`.
    ///
    /// ```rhai
    /// helm::ensure_repo("argo", "https://argoproj.github.io/argo-helm");
    /// ```
    #[rhai_fn(return_raw)]
    pub fn ensure_repo(ctx: NativeCallContext, name: &str, url: &str) -> RhaiResult<Map> {
        let host = Host::of(&ctx)?;
        let mut obj = Map::new();
        obj.insert("name".into(), name.into());
        obj.insert("url".into(), url.into());
        if url.starts_with("oci://") {
            let c = host.journal().record(
                Change::new("helm.repo", name, Action::Unchanged)
                    .with_note("OCI registries need no repository"),
            );
            return Ok(c.outcome(obj.into()));
        }
        host.guard_remote(&format!("helm repo add {name}"))?;
        let norm = |u: &str| u.trim_end_matches('/').to_string();
        // Already configured with this URL (helm's own repository file says so): no helm process.
        if chart::configured_repo_url(name).is_some_and(|u| norm(&u) == norm(url)) {
            let c = host
                .journal()
                .record(Change::new("helm.repo", name, Action::Unchanged));
            return Ok(c.outcome(obj.into()));
        }
        let helm = Helm::find(&host)?;
        let h = helm.clone();
        let listed = host.read("helm repo list", async move {
            match h
                .run(vec![s("repo"), s("list"), s("-o"), s("json")], false)
                .await
            {
                Ok(o) => Ok(serde_json::from_str::<Value>(o.stdout.trim()).unwrap_or(json!([]))),
                Err(e) if cli::said(&e) == cli::Said::NoRepositories => Ok(json!([])),
                Err(e) => Err(e),
            }
        })?;
        let current = listed
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == name))
            .and_then(|r| r["url"].as_str().map(str::to_string));
        let action = match &current {
            None => Action::Create,
            Some(u) if norm(u) == norm(url) => Action::Unchanged,
            Some(_) => Action::Update,
        };
        if action.is_change() && host.is_plan() {
            host.slot::<PlannedRepos>()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string(), url.to_string());
        }
        if action.is_change() && !host.is_plan() {
            let args = vec![
                s("repo"),
                s("add"),
                name.to_string(),
                url.to_string(),
                s("--force-update"),
            ];
            host.mutate(&format!("helm repo add {name}"), async move {
                helm.run(args, false).await
            })?;
        }
        let fields = if action.is_change() {
            vec![FieldChange {
                path: s("url"),
                before: current.map(Value::String),
                after: Some(json!(url)),
            }]
        } else {
            Vec::new()
        };
        let c = host
            .journal()
            .record(Change::new("helm.repo", name, action).with_fields(fields));
        Ok(c.outcome(obj.into()))
    }

    /// Installs or upgrades a release: `#{namespace, version, values, wait, timeout, atomic,
    /// create_namespace, disable_openapi_validation}`. `chart` is `repo/chart`, an `oci://` ref, or
    /// a local chart folder or packaged `.tgz` (relative to the script), whose Chart.yaml gives
    /// the chart name and version (a `version` it is not fails). `values` may hold Secrets: they
    /// reach helm on its stdin, never the command line or a file. The release is compared first
    /// (chart name and version, and the user-supplied values, read from helm's release records):
    /// an unchanged release is not upgraded (no new revision) and starts no helm process; a plan
    /// shows the per-key differences (Secrets masked), checks the values against the chart's
    /// values.schema.json, and installs nothing. A version missing from a repository's cached
    /// index refreshes that index (`helm repo update`), in a plan too.
    /// A release stuck in `pending-*` fails with the command that recovers it.
    /// Returns `#{changed, object: #{name, namespace, revision, status, chart, version, app_version,
    /// deployed_at}, diff}` (`deployed_at`: epoch milliseconds, `()` in a plan that would deploy).
    ///
    /// ```rhai
    /// helm::upgrade_install("argo-workflows", "argo/argo-workflows", #{
    ///     namespace: "argo-workflows", version: "0.45.23",
    ///     values: yaml::parse(template::render_file("templates/argo-values.yaml.j2", config)),
    ///     wait: true, timeout: "10m",
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn upgrade_install(
        ctx: NativeCallContext,
        release: &str,
        chart: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        upgrade_install_impl(&ctx, release, chart, &opts)
    }

    /// Renders a chart with `#{namespace, version, values}` as `helm template` does, which also
    /// validates the values against the chart's values.schema.json: a typo fails here, before
    /// anything is installed. Returns the manifests as YAML text (a Secret when values held one).
    ///
    /// ```rhai
    /// let manifests = helm::template("openmetadata", "open-metadata/openmetadata", #{
    ///     namespace: "collate", version: "1.12.4", values: om_values,
    /// });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn template(
        ctx: NativeCallContext,
        release: &str,
        chart: &str,
        opts: Map,
    ) -> RhaiResult<Dynamic> {
        crate::host::track(&ctx);
        let o = parse_opts("helm::template", &opts, &["namespace", "version", "values"])?;
        let host = Host::of(&ctx)?;
        host.guard_remote(&format!("helm template {release}"))?;
        let helm = Helm::find(&host)?;
        let chart = ChartRef::resolve(&host, &ctx, chart)?;
        let text = render(&host, &helm, release, &chart, &o)?;
        Ok(if o.secret_paths.is_empty() {
            text.into()
        } else {
            Dynamic::from(Secret::new(text, format!("helm template {release}")))
        })
    }

    /// The release `#{name, namespace, revision, status, chart, version, app_version, deployed_at}`
    /// (`deployed_at`: when this revision was deployed, epoch milliseconds), or `()`
    /// when it is not installed.
    ///
    /// ```rhai
    /// let r = helm::status("openmetadata", "collate");
    /// if r != () && r.status != "deployed" { throw `openmetadata is ${r.status}`; }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn status(ctx: NativeCallContext, release: &str, namespace: &str) -> RhaiResult<Dynamic> {
        let host = Host::of(&ctx)?;
        host.guard_remote(&format!("helm status {release}"))?;
        let helm = Helm::find(&host)?;
        Ok(read_release(&host, &helm, release, namespace)?
            .map(|r| Dynamic::from(r.to_map()))
            .unwrap_or(Dynamic::UNIT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_diff_names_keys_masks_secrets_and_lists_removals() {
        let desired = json!({"db": {"host": "h2", "password": "***"}, "replicas": 1});
        let live = json!({"db": {"host": "h1", "password": "old"}, "replicas": 1.0, "extra": true});
        let f = values_diff(&desired, &live, &["db.password".to_string()]);
        let paths: Vec<&str> = f.iter().map(|x| x.path.as_str()).collect();
        assert_eq!(
            paths,
            ["values.db.host", "values.db.password", "values.extra"]
        );
        assert_eq!(f[1].before, Some(json!("***")));
        assert_eq!(f[2].after, None);
    }

    #[test]
    fn stuck_release_names_the_recovery() {
        let r = Release {
            name: "om".into(),
            namespace: "collate".into(),
            revision: 3,
            status: "pending-upgrade".into(),
            chart: "openmetadata".into(),
            version: "1".into(),
            app_version: String::new(),
            deployed_at: None,
        };
        let e = stuck(&r);
        assert!(e.hint.unwrap().contains("helm rollback om 2 -n collate"));
    }
}
