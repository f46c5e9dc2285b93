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
    ChartRef, Opts, Release, chart, desired_chart, parse_opts, read_release_and_values, render, s,
    stuck, values_diff, values_input,
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

/// The release the script asks for.
struct Upgrade<'a> {
    host: Arc<Host>,
    helm: Helm,
    release: &'a str,
    chart: ChartRef,
    o: Opts,
    wait: bool,
    timeout: Option<String>,
    atomic: bool,
    create_namespace: bool,
    disable_openapi_validation: bool,
}

/// The installed release (with its user-supplied values) and the chart it should run.
struct Observed {
    live: Option<(Release, Value)>,
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
    /// `helm upgrade --install`, the values on stdin; the release helm reports.
    fn install(&self) -> Result<Applied<Release>, HostError> {
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
        if self.wait {
            args.push(s("--wait"));
        }
        if let Some(t) = &self.timeout {
            args.extend([s("--timeout"), t.clone()]);
        }
        if self.create_namespace {
            args.push(s("--create-namespace"));
        }
        if self.disable_openapi_validation {
            args.push(s("--disable-openapi-validation"));
        }
        let (h, atomic) = (self.helm.clone(), self.atomic);
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
        let live = read_release_and_values(host, &self.helm, self.release, &self.o.namespace)?;
        if let Some((rel, _)) = live
            .as_ref()
            .filter(|(r, _)| r.status.starts_with("pending-"))
        {
            return Err(stuck(rel));
        }
        let want = desired_chart(host, &self.helm, &self.chart, self.o.version.as_deref())?;
        Ok(Observed { live, want })
    }
    fn exists(&self, s: &Observed) -> bool {
        s.live.is_some()
    }
    fn diff(&self, _: &Host, st: &Observed) -> Result<Planned, HostError> {
        let o = &self.o;
        let want_chart = st.want_chart();
        let Some((rel, live_values)) = &st.live else {
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
        Ok(Planned::fields(f))
    }
    fn current(&self, st: &Observed) -> Release {
        match &st.live {
            Some((r, _)) => r.clone(),
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
        render(host, &self.helm, self.release, &self.chart, &self.o)?;
        let live = st.live.as_ref().map(|(r, _)| r);
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
        self.install()
    }
    fn update(
        &self,
        _: &Host,
        _: &Observed,
        _: &mut Planned,
    ) -> Result<Applied<Release>, HostError> {
        self.install()
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
        wait: opt::<bool>(opts, "wait")?.unwrap_or(false),
        timeout: opt::<Duration>(opts, "timeout")?.map(|d| format!("{}s", d.as_secs())),
        atomic: opt::<bool>(opts, "atomic")?.unwrap_or(false),
        create_namespace: opt::<bool>(opts, "create_namespace")?.unwrap_or(false),
        disable_openapi_validation: opt::<bool>(opts, "disable_openapi_validation")?
            .unwrap_or(false),
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
    wait: bool,
    timeout: Option<String>,
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
        if self.wait {
            args.push(s("--wait"));
        }
        if let Some(t) = &self.timeout {
            args.extend([s("--timeout"), t.clone()]);
        }
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
        wait: opt::<bool>(opts, "wait")?.unwrap_or(false),
        timeout: opt::<Duration>(opts, "timeout")?.map(|d| format!("{}s", d.as_secs())),
        host: host.clone(),
    };
    let gone = converge::remove(&host, &r, None)?;
    let object = gone
        .object
        .map(|r| Dynamic::from(r.to_map()))
        .unwrap_or(Dynamic::UNIT);
    Ok(gone.change.outcome(object))
}
