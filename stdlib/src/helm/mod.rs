//! The `helm` namespace: Helm releases through the real `helm` binary (3 or 4). Values go to
//! helm's stdin (`-f -`), never to argv or a file. A release is read from helm's own release
//! records through the Kubernetes API (one call; see `storage`), or with `helm get metadata` and
//! `helm get values` side by side when `HELM_DRIVER` names another storage; a plan compares the
//! release's chart and values with the desired ones and installs nothing; an unchanged release is
//! not upgraded again.

mod chart;
mod cli;
mod release;
mod repo;
mod storage;

use std::path::PathBuf;
use std::sync::Arc;

use rhai::Map;
use rhai::plugin::*;
use serde_json::{Value, json};

use crate::diff;
use crate::error::{ErrorKind, HostError, RhaiResult};
use crate::host::Host;
use crate::journal::FieldChange;
use crate::secret_value::{Secret, mask_text};
use crate::value::{Secrets, check_keys, opt, to_json_with_secret_paths};
use cli::Helm;

/// Helm repositories a plan would add (name → URL), a [`Host::slot`]: charts from them are
/// read with `--repo`.
#[derive(Default)]
struct PlannedRepos(std::sync::Mutex<std::collections::HashMap<String, String>>);

/// A deployed release: what `helm get metadata` describes.
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
        namespace: opt::<String>(opts, "namespace")?.unwrap_or_else(|| "default".into()),
        version: opt::<String>(opts, "version")?,
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
    Ok(read_installed(host, helm, release, ns)?.map(|i| (i.release, i.values)))
}

/// An installed release as helm recorded it.
pub(crate) struct Installed {
    pub release: Release,
    /// The user-supplied values.
    pub values: Value,
    /// The rendered manifests, when the record was read from the cluster (the secrets driver).
    pub manifest: Option<String>,
}

/// [`read_release_and_values`], with the manifests where the record holds them.
fn read_installed(
    host: &Arc<Host>,
    helm: &Helm,
    release: &str,
    ns: &str,
) -> Result<Option<Installed>, HostError> {
    if storage::uses_secrets() {
        return Ok(storage::latest(host, ns, release)?.map(|doc| Installed {
            release: Release::from_release(&doc),
            values: user_values(doc.get("config").cloned()),
            manifest: doc
                .get("manifest")
                .and_then(Value::as_str)
                .map(str::to_string),
        }));
    }
    Ok(
        get_release(host, helm, release, ns, None)?.map(|(release, values)| Installed {
            release,
            values,
            manifest: None,
        }),
    )
}

/// The user-supplied values helm recorded (`{}` for none).
fn user_values(v: Option<Value>) -> Value {
    match v {
        None | Some(Value::Null) => json!({}),
        Some(v) => v,
    }
}

/// A release (at `revision`, else the latest) and its user-supplied values, from `helm get
/// metadata` and `helm get values` run side by side; `None` when there is no such release or
/// revision.
fn get_release(
    host: &Host,
    helm: &Helm,
    release: &str,
    ns: &str,
    revision: Option<i64>,
) -> Result<Option<(Release, Value)>, HostError> {
    let args = |sub: &str| {
        let mut a = release_args(sub, release, ns);
        if let Some(r) = revision {
            a.extend([s("--revision"), r.to_string()]);
        }
        a
    };
    let (meta, values) = (args("metadata"), args("values"));
    let at = revision
        .map(|r| format!(" --revision {r}"))
        .unwrap_or_default();
    let h = helm.clone();
    let (meta, values) = host.read(
        &format!("helm get metadata/values {release}{at}"),
        async move {
            let (m, v) = futures::join!(h.json(meta), h.json(values));
            Ok((m?, v?))
        },
    )?;
    Ok(meta.map(|m| (Release::from_metadata(&m), user_values(values))))
}

/// The rendered manifests of the deployed release (`helm get manifest`).
fn live_manifest(host: &Host, helm: &Helm, release: &str, ns: &str) -> Result<String, HostError> {
    let h = helm.clone();
    let args = vec![
        s("get"),
        s("manifest"),
        release.to_string(),
        s("-n"),
        ns.to_string(),
    ];
    host.read(&format!("helm get manifest {release}"), async move {
        h.run(args, true).await.map(|o| o.stdout)
    })
}

/// What an upgrade changes in the rendered manifests, object by object (`Kind ns/name`):
/// objects added and removed, and the fields that differ in the others (a Secret's data masked,
/// server-owned fields ignored). `ns` is the release namespace, for objects that name none.
pub(crate) fn manifest_diff(
    live: &str,
    new: &str,
    ns: &str,
) -> Result<Vec<FieldChange>, HostError> {
    use std::collections::BTreeMap;
    let index = |text: &str, what: &str| -> Result<BTreeMap<String, Value>, HostError> {
        Ok(crate::yaml::parse_many(text, what)?
            .into_iter()
            // Hooks (tests, jobs) are kept apart from the release's manifest by helm, and
            // `helm template` renders them with it: compare the release's objects only.
            .filter(|d| d.is_object() && d.pointer("/metadata/annotations/helm.sh~1hook").is_none())
            .map(|d| {
                let kind = d["kind"].as_str().unwrap_or("?");
                let name = d
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let namespace = d
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(ns);
                (format!("{kind} {namespace}/{name}"), d)
            })
            .collect())
    };
    let (before, after) = (
        index(live, "the deployed manifests")?,
        index(new, "the new manifests")?,
    );
    let path = |key: &str| crate::value::join_path("manifest", key);
    let mut out = Vec::new();
    for (key, obj) in &after {
        let secret = obj["kind"] == "Secret";
        match before.get(key) {
            None => out.push(FieldChange {
                path: path(key),
                before: None,
                after: Some(json!("(added)")),
            }),
            Some(old) => {
                for f in crate::k8s::converge::object_diff(old, obj, secret) {
                    out.push(FieldChange {
                        path: format!("{}.{}", path(key), f.path),
                        ..f
                    });
                }
            }
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        out.push(FieldChange {
            path: path(key),
            before: Some(json!("(present)")),
            after: Some(json!("(removed)")),
        });
    }
    Ok(out)
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
        repo::ensure(&host, name, url)
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
        release::upgrade_install(&ctx, release, chart, &opts)
    }

    /// Uninstalls a release (`helm uninstall`), with `#{wait, timeout}`: `wait` waits until its
    /// resources are gone. An absent release is `unchanged` ("already absent"); a plan lists it
    /// and uninstalls nothing. Returns `#{changed, object, diff}` (`object`: the release as it was).
    ///
    /// ```rhai
    /// helm::uninstall("openmetadata", "collate", #{ wait: true, timeout: "5m" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn uninstall(
        ctx: NativeCallContext,
        release: &str,
        namespace: &str,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        release::uninstall(&ctx, release, namespace, &opts)
    }

    /// The revisions of a release, oldest first, as `helm history -o json` lists them:
    /// `[#{revision, updated, status, chart, app_version, description}]`; `[]` when it is not
    /// installed.
    ///
    /// ```rhai
    /// for r in helm::history("openmetadata", "collate") { print(`${r.revision} ${r.chart} ${r.status}`); }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn history(
        ctx: NativeCallContext,
        release: &str,
        namespace: &str,
    ) -> RhaiResult<rhai::Array> {
        crate::host::track(&ctx);
        release::history(&ctx, release, namespace)
    }

    /// Rolls a release back to `revision` (`helm rollback`), with `#{wait, timeout}`. Unchanged
    /// when the release already runs that revision's chart and values, so a re-run adds no
    /// revision; a plan shows the chart and values that would come back. Returns `#{changed,
    /// object, diff}`.
    ///
    /// ```rhai
    /// helm::rollback("openmetadata", "collate", 3, #{ wait: true, timeout: "10m" });
    /// ```
    #[rhai_fn(return_raw)]
    pub fn rollback(
        ctx: NativeCallContext,
        release: &str,
        namespace: &str,
        revision: i64,
        opts: Map,
    ) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        release::rollback(&ctx, release, namespace, revision, &opts)
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
    fn manifest_diff_names_objects_and_fields_skips_hooks_and_masks_secret_data() {
        let live = "kind: ConfigMap\nmetadata: {name: a}\ndata: {x: '1'}\n---\nkind: Service\nmetadata: {name: gone}\n---\nkind: Secret\nmetadata: {name: s}\ndata: {p: b2xk}\n";
        let new = "kind: ConfigMap\nmetadata: {name: a}\ndata: {x: '2'}\n---\nkind: Secret\nmetadata: {name: s}\ndata: {p: bmV3}\n---\nkind: Pod\nmetadata: {name: t, annotations: {helm.sh/hook: test}}\n---\nkind: Job\nmetadata: {name: j, namespace: other}\n";
        let f = manifest_diff(live, new, "collate").unwrap();
        let shown: Vec<(String, Option<Value>, Option<Value>)> =
            f.into_iter().map(|f| (f.path, f.before, f.after)).collect();
        assert_eq!(
            shown,
            vec![
                (
                    "manifest[\"ConfigMap collate/a\"].data.x".to_string(),
                    Some(json!("1")),
                    Some(json!("2"))
                ),
                (
                    "manifest[\"Job other/j\"]".to_string(),
                    None,
                    Some(json!("(added)"))
                ),
                (
                    "manifest[\"Secret collate/s\"].data.p".to_string(),
                    Some(json!("***")),
                    Some(json!("***"))
                ),
                (
                    "manifest[\"Service collate/gone\"]".to_string(),
                    Some(json!("(present)")),
                    Some(json!("(removed)"))
                ),
            ]
        );
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
