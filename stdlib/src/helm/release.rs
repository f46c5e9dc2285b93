//! A helm release as a converge resource (see [`crate::converge`]): read from helm's release
//! records with its user-supplied values, compared by chart name and version, status and values;
//! a plan checks the values against the chart's schema; an apply runs `helm upgrade --install`
//! with the values on stdin.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Map, NativeCallContext};
use serde_json::{Value, json};

use super::cli::Helm;
use super::{
    ChartRef, Installed, Opts, Release, chart, desired_chart, get_release, live_manifest,
    manifest_diff, parse_opts, read_installed, render, s, stuck, values_diff, values_input,
};
use crate::converge::{self, Applied, Planned, Resource};
use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::journal::FieldChange;
use crate::value::opt;

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

/// `wait` and `timeout` of an upgrade, uninstall or rollback, as helm's flags.
struct Waiting {
    wait: bool,
    /// Seconds, as helm reads a duration (`600s`).
    timeout: Option<String>,
}

impl Waiting {
    fn from_opts(opts: &Map) -> Result<Waiting, HostError> {
        Ok(Waiting {
            wait: opt::<bool>(opts, "wait")?.unwrap_or(false),
            timeout: opt::<Duration>(opts, "timeout")?.map(|d| format!("{}s", d.as_secs())),
        })
    }
    /// `--wait`, `--timeout T`, as asked.
    fn extend(&self, args: &mut Vec<String>) {
        if self.wait {
            args.push(s("--wait"));
        }
        if let Some(t) = &self.timeout {
            args.extend([s("--timeout"), t.clone()]);
        }
    }
}

/// The release the script asks for.
struct Upgrade<'a> {
    host: Arc<Host>,
    helm: Helm,
    release: &'a str,
    chart: ChartRef,
    o: Opts,
    waiting: Waiting,
    atomic: bool,
    create_namespace: bool,
    disable_openapi_validation: bool,
    /// The new manifests (`helm template`), rendered once per plan: for the manifest diff and
    /// the schema check.
    rendered: std::sync::OnceLock<String>,
}

/// The installed release (with its user-supplied values) and the chart it should run.
struct Observed {
    live: Option<Installed>,
    want: chart::Meta,
}

impl Observed {
    /// `name-version`, `(latest)` for a version only the install knows.
    fn want_chart(&self) -> String {
        format!(
            "{}-{}",
            self.want.name,
            self.want.version.as_deref().unwrap_or("(latest)")
        )
    }
}

impl Upgrade<'_> {
    /// The new manifests (rendered once), which also checks the values against the schema.
    fn rendered(&self, host: &Host) -> Result<&str, HostError> {
        if let Some(r) = self.rendered.get() {
            return Ok(r);
        }
        let text = render(host, &self.helm, self.release, &self.chart, &self.o)?;
        Ok(self.rendered.get_or_init(|| text))
    }

    /// `helm upgrade --install`, the values on stdin; the release helm reports. A failed
    /// upgrade of a deployed release says how to roll it back.
    fn install(&self, live: Option<&Release>) -> Result<Applied<Release>, HostError> {
        let (host, release, o) = (&self.host, self.release, &self.o);
        let (chart_args, repo) = self.chart.helm_args(host, o.version.as_deref());
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
        self.waiting.extend(&mut args);
        if self.create_namespace {
            args.push(s("--create-namespace"));
        }
        if self.disable_openapi_validation {
            args.push(s("--disable-openapi-validation"));
        }
        let (h, atomic) = (self.helm.clone(), self.atomic);
        let input = values_input(&o.values);
        let ns = o.namespace.clone();
        let out = host
            .mutate(&format!("helm upgrade --install {release}"), async move {
                if atomic {
                    args.push(s(h.atomic_flag().await?));
                }
                h.run_fresh(args, true, input, repo.as_deref()).await
            })
            .map_err(|e| match live.filter(|r| r.status == "deployed") {
                Some(r) if !atomic => e.with_hint(format!(
                    "revision {rev} was the last deployed: roll back with `helm::rollback(\"{release}\", \"{ns}\", {rev})` or `helm rollback {release} {rev} -n {ns}`",
                    rev = r.revision
                )),
                _ => e,
            })?;
        let doc: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| {
            HostError::api(format!(
                "`helm upgrade --install {release}` printed something that is not JSON: {e}"
            ))
        })?;
        Ok(Applied::Done(Release::from_release(&doc)))
    }
}

impl Resource for Upgrade<'_> {
    type State = Observed;
    type Object = Release;

    fn kind(&self) -> String {
        "helm.release".into()
    }
    fn name(&self) -> String {
        format!("{}/{}", self.o.namespace, self.release)
    }
    fn read(&self, _: &Host) -> Result<Observed, HostError> {
        let host = &self.host;
        let live = read_installed(host, &self.helm, self.release, &self.o.namespace)?;
        if let Some(i) = live
            .as_ref()
            .filter(|i| i.release.status.starts_with("pending-"))
        {
            return Err(stuck(&i.release));
        }
        let want = desired_chart(host, &self.helm, &self.chart, self.o.version.as_deref())?;
        Ok(Observed { live, want })
    }
    fn exists(&self, s: &Observed) -> bool {
        s.live.is_some()
    }
    fn diff(&self, host: &Host, st: &Observed) -> Result<Planned, HostError> {
        let o = &self.o;
        let want_chart = st.want_chart();
        let Some(Installed {
            release: rel,
            values: live_values,
            manifest,
        }) = &st.live
        else {
            let mut f = vec![FieldChange {
                path: s("chart"),
                before: None,
                after: Some(json!(want_chart)),
            }];
            f.extend(values_diff(&o.values_masked, &json!({}), &o.secret_paths));
            return Ok(Planned::fields(f));
        };
        let mut f = Vec::new();
        let version_differs = st.want.version.as_deref().is_some_and(|v| v != rel.version);
        if rel.chart != st.want.name || version_differs {
            f.push(FieldChange {
                path: s("chart"),
                before: Some(json!(format!("{}-{}", rel.chart, rel.version))),
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
        f.extend(values_diff(&o.values, live_values, &o.secret_paths));
        // A plan of an upgrade also shows what changes in the rendered manifests (helm-diff's
        // job, without a plugin).
        if host.is_plan() && !f.is_empty() {
            let live = match manifest {
                Some(m) => m.clone(),
                None => live_manifest(host, &self.helm, self.release, &o.namespace)?,
            };
            f.extend(manifest_diff(&live, self.rendered(host)?, &o.namespace)?);
        }
        Ok(Planned::fields(f))
    }
    fn current(&self, st: &Observed) -> Release {
        match &st.live {
            Some(i) => i.release.clone(),
            None => Release {
                name: self.release.to_string(),
                namespace: self.o.namespace.clone(),
                revision: 0,
                status: s("uninstalled"),
                chart: st.want.name.clone(),
                version: st.want.version.clone().unwrap_or_default(),
                app_version: String::new(),
                deployed_at: None,
            },
        }
    }
    fn predict(&self, host: &Host, st: &Observed, _: &Planned) -> Result<Release, HostError> {
        // The values are checked against the chart's schema before anything is installed.
        self.rendered(host)?;
        let live = st.live.as_ref().map(|i| &i.release);
        Ok(Release {
            name: self.release.to_string(),
            namespace: self.o.namespace.clone(),
            revision: live.map(|r| r.revision + 1).unwrap_or(1),
            status: s("deployed"),
            chart: st.want.name.clone(),
            version: st.want.version.clone().unwrap_or_default(),
            app_version: live.map(|r| r.app_version.clone()).unwrap_or_default(),
            // Known once it is deployed.
            deployed_at: None,
        })
    }
    fn create(
        &self,
        _: &Host,
        _: &Observed,
        _: &mut Planned,
    ) -> Result<Applied<Release>, HostError> {
        self.install(None)
    }
    fn update(
        &self,
        _: &Host,
        st: &Observed,
        _: &mut Planned,
    ) -> Result<Applied<Release>, HostError> {
        self.install(st.live.as_ref().map(|i| &i.release))
    }
}

/// `helm::upgrade_install(release, chart, opts)`.
pub(super) fn upgrade_install(
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
    let r = Upgrade {
        helm,
        release,
        chart,
        o,
        waiting: Waiting::from_opts(opts)?,
        atomic: opt::<bool>(opts, "atomic")?.unwrap_or(false),
        create_namespace: opt::<bool>(opts, "create_namespace")?.unwrap_or(false),
        disable_openapi_validation: opt::<bool>(opts, "disable_openapi_validation")?
            .unwrap_or(false),
        rendered: std::sync::OnceLock::new(),
        host: host.clone(),
    };
    let done = converge::ensure(&host, &r)?;
    Ok(done.change.outcome(done.object.to_map().into()))
}

/// A release to uninstall.
struct Uninstall<'a> {
    host: Arc<Host>,
    helm: Helm,
    release: &'a str,
    namespace: String,
    waiting: Waiting,
}

impl Resource for Uninstall<'_> {
    type State = Option<Release>;
    type Object = Option<Release>;

    fn kind(&self) -> String {
        "helm.release".into()
    }
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.release)
    }
    fn read(&self, _: &Host) -> Result<Option<Release>, HostError> {
        super::read_release(&self.host, &self.helm, self.release, &self.namespace)
    }
    fn exists(&self, live: &Option<Release>) -> bool {
        live.is_some()
    }
    fn current(&self, live: &Option<Release>) -> Option<Release> {
        live.clone()
    }
    fn deletion_fields(&self, live: &Option<Release>) -> Vec<FieldChange> {
        live.iter()
            .map(|r| FieldChange {
                path: s("chart"),
                before: Some(json!(format!("{}-{}", r.chart, r.version))),
                after: None,
            })
            .collect()
    }
    fn delete(&self, host: &Host, _: &Option<Release>) -> Result<(), HostError> {
        let mut args = vec![
            s("uninstall"),
            self.release.to_string(),
            s("-n"),
            self.namespace.clone(),
        ];
        self.waiting.extend(&mut args);
        let h = self.helm.clone();
        host.mutate(&format!("helm uninstall {}", self.release), async move {
            h.run(args, true).await
        })?;
        Ok(())
    }
}

/// `helm::uninstall(release, namespace, opts)`.
pub(super) fn uninstall(
    ctx: &NativeCallContext,
    release: &str,
    namespace: &str,
    opts: &Map,
) -> RhaiResult<Map> {
    crate::value::check_keys("helm::uninstall", opts, &["wait", "timeout"])?;
    let host = Host::of(ctx)?;
    host.guard_remote(&format!("helm uninstall {release}"))?;
    let r = Uninstall {
        helm: Helm::find(&host)?,
        release,
        namespace: namespace.to_string(),
        waiting: Waiting::from_opts(opts)?,
        host: host.clone(),
    };
    let gone = converge::remove(&host, &r, None)?;
    let object = gone
        .object
        .map(|r| Dynamic::from(r.to_map()))
        .unwrap_or(Dynamic::UNIT);
    Ok(gone.change.outcome(object))
}

/// A rollback to an earlier revision, as a converge: unchanged when the release already runs
/// that revision's chart and values (a second rollback adds no revision).
struct Rollback<'a> {
    host: Arc<Host>,
    helm: Helm,
    release: &'a str,
    namespace: String,
    revision: i64,
    waiting: Waiting,
}

/// The release now, and the revision to go back to (its metadata and values).
struct Revisions {
    now: Installed,
    target: (Release, Value),
}

impl Resource for Rollback<'_> {
    type State = Revisions;
    type Object = Release;

    fn kind(&self) -> String {
        "helm.release".into()
    }
    fn name(&self) -> String {
        format!("{}/{}", self.namespace, self.release)
    }
    fn read(&self, _: &Host) -> Result<Revisions, HostError> {
        let (host, release, ns) = (&self.host, self.release, &self.namespace);
        let now = read_installed(host, &self.helm, release, ns)?.ok_or_else(|| {
            HostError::not_found(format!(
                "helm release `{release}` is not installed in `{ns}`"
            ))
        })?;
        let target =
            get_release(host, &self.helm, release, ns, Some(self.revision))?.ok_or_else(|| {
                HostError::not_found(format!(
                    "helm release `{release}` has no revision {}",
                    self.revision
                ))
                .with_hint(format!("see `helm::history(\"{release}\", \"{ns}\")`"))
            })?;
        Ok(Revisions { now, target })
    }
    fn exists(&self, _: &Revisions) -> bool {
        true
    }
    fn diff(&self, _: &Host, r: &Revisions) -> Result<Planned, HostError> {
        let (now, (target, values)) = (&r.now.release, &r.target);
        let mut f = Vec::new();
        let (from, to) = (
            format!("{}-{}", now.chart, now.version),
            format!("{}-{}", target.chart, target.version),
        );
        if from != to {
            f.push(FieldChange {
                path: s("chart"),
                before: Some(json!(from)),
                after: Some(json!(to)),
            });
        }
        if now.status != "deployed" {
            f.push(FieldChange {
                path: s("status"),
                before: Some(json!(now.status)),
                after: Some(json!("deployed")),
            });
        }
        f.extend(values_diff(values, &r.now.values, &[]));
        Ok(Planned::fields(f))
    }
    fn current(&self, r: &Revisions) -> Release {
        r.now.release.clone()
    }
    fn predict(&self, _: &Host, r: &Revisions, _: &Planned) -> Result<Release, HostError> {
        Ok(Release {
            revision: r.now.release.revision + 1,
            status: s("deployed"),
            deployed_at: None,
            ..r.target.0.clone()
        })
    }
    fn update(
        &self,
        host: &Host,
        _: &Revisions,
        _: &mut Planned,
    ) -> Result<Applied<Release>, HostError> {
        let (release, ns) = (self.release, &self.namespace);
        let mut args = vec![
            s("rollback"),
            release.to_string(),
            self.revision.to_string(),
            s("-n"),
            ns.clone(),
        ];
        self.waiting.extend(&mut args);
        let h = self.helm.clone();
        host.mutate(
            &format!("helm rollback {release} {}", self.revision),
            async move { h.run(args, true).await },
        )?;
        let now = read_installed(&self.host, &self.helm, release, ns)?.ok_or_else(|| {
            HostError::not_found(format!(
                "helm release `{release}` vanished during the rollback"
            ))
        })?;
        Ok(Applied::Done(now.release))
    }
}

/// `helm::rollback(release, namespace, revision, opts)`.
pub(super) fn rollback(
    ctx: &NativeCallContext,
    release: &str,
    namespace: &str,
    revision: i64,
    opts: &Map,
) -> RhaiResult<Map> {
    crate::value::check_keys("helm::rollback", opts, &["wait", "timeout"])?;
    let host = Host::of(ctx)?;
    host.guard_remote(&format!("helm rollback {release}"))?;
    if revision < 1 {
        return Err(HostError::input(format!(
            "revision {revision} is not a helm revision (1, 2, ...)"
        ))
        .into());
    }
    let r = Rollback {
        helm: Helm::find(&host)?,
        release,
        namespace: namespace.to_string(),
        revision,
        waiting: Waiting::from_opts(opts)?,
        host: host.clone(),
    };
    let done = converge::ensure(&host, &r)?;
    Ok(done.change.outcome(done.object.to_map().into()))
}

/// `helm::history(release, namespace)`: helm's revisions, oldest first.
pub(super) fn history(
    ctx: &NativeCallContext,
    release: &str,
    namespace: &str,
) -> RhaiResult<rhai::Array> {
    let host = Host::of(ctx)?;
    host.guard_remote(&format!("helm history {release}"))?;
    let helm = Helm::find(&host)?;
    let args = vec![
        s("history"),
        release.to_string(),
        s("-n"),
        namespace.to_string(),
        s("-o"),
        s("json"),
    ];
    let h = helm.clone();
    let list = host.read(&format!("helm history {release}"), async move {
        h.json(args).await
    })?;
    Ok(match list {
        Some(Value::Array(items)) => items.iter().map(crate::value::from_json).collect(),
        _ => rhai::Array::new(),
    })
}
