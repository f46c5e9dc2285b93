//! A helm chart repository as a converge resource (see [`crate::converge`]): read from helm's
//! repositories file (no helm process when it is configured with this URL), else from
//! `helm repo list`; added (or its URL changed) with `helm repo add --force-update`. In a plan
//! nothing is added: charts of a repository the plan would add are read from its URL.

use std::sync::Arc;

use rhai::Map;
use serde_json::{Value, json};

use super::cli::Helm;
use super::{PlannedRepos, chart, s};
use crate::converge::{self, Applied, Planned, Resource};
use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::journal::FieldChange;

/// The repository the script asks for.
struct Repo<'a> {
    host: Arc<Host>,
    name: &'a str,
    url: &'a str,
}

/// What helm has configured for the repository's name.
enum Configured {
    /// An `oci://` registry: helm needs no repository.
    Oci,
    /// The URL configured under this name, if any.
    Url(Option<String>),
}

/// A URL as compared: without a trailing `/`.
fn norm(u: &str) -> &str {
    u.trim_end_matches('/')
}

impl Repo<'_> {
    fn object(&self) -> Map {
        let mut obj = Map::new();
        obj.insert("name".into(), self.name.into());
        obj.insert("url".into(), self.url.into());
        obj
    }
}

impl Resource for Repo<'_> {
    type State = Configured;
    type Object = Map;

    fn kind(&self) -> String {
        "helm.repo".into()
    }
    fn name(&self) -> String {
        self.name.to_string()
    }
    fn read(&self, host: &Host) -> Result<Configured, HostError> {
        if self.url.starts_with("oci://") {
            return Ok(Configured::Oci);
        }
        host.guard_remote(&format!("helm repo add {}", self.name))?;
        // Already configured with this URL (helm's own repository file says so): no helm process.
        if chart::configured_repo_url(self.name).is_some_and(|u| norm(&u) == norm(self.url)) {
            return Ok(Configured::Url(Some(self.url.to_string())));
        }
        let helm = Helm::find(&self.host)?;
        let listed = host.read("helm repo list", async move {
            match helm
                .run(vec![s("repo"), s("list"), s("-o"), s("json")], false)
                .await
            {
                Ok(o) => Ok(serde_json::from_str::<Value>(o.stdout.trim()).unwrap_or(json!([]))),
                Err(e) if super::cli::said(&e) == super::cli::Said::NoRepositories => Ok(json!([])),
                Err(e) => Err(e),
            }
        })?;
        Ok(Configured::Url(
            listed
                .as_array()
                .and_then(|a| a.iter().find(|r| r["name"] == self.name))
                .and_then(|r| r["url"].as_str().map(str::to_string)),
        ))
    }
    fn exists(&self, c: &Configured) -> bool {
        !matches!(c, Configured::Url(None))
    }
    fn diff(&self, _: &Host, c: &Configured) -> Result<Planned, HostError> {
        Ok(match c {
            Configured::Oci => Planned::default().with_note("OCI registries need no repository"),
            Configured::Url(Some(u)) if norm(u) == norm(self.url) => Planned::default(),
            Configured::Url(current) => Planned::fields(vec![FieldChange {
                path: s("url"),
                before: current.clone().map(Value::String),
                after: Some(json!(self.url)),
            }]),
        })
    }
    fn current(&self, _: &Configured) -> Map {
        self.object()
    }
    fn predict(&self, host: &Host, _: &Configured, _: &Planned) -> Result<Map, HostError> {
        host.slot::<PlannedRepos>()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.name.to_string(), self.url.to_string());
        Ok(self.object())
    }
    /// `helm repo add --force-update`, which also changes the URL of a configured name
    /// (`update` is this too).
    fn create(
        &self,
        host: &Host,
        _: &Configured,
        _: &mut Planned,
    ) -> Result<Applied<Map>, HostError> {
        let helm = Helm::find(&self.host)?;
        let args = vec![
            s("repo"),
            s("add"),
            self.name.to_string(),
            self.url.to_string(),
            s("--force-update"),
        ];
        host.mutate(&format!("helm repo add {}", self.name), async move {
            helm.run(args, false).await
        })?;
        Ok(Applied::Done(self.object()))
    }
}

/// `helm::ensure_repo(name, url)`.
pub(super) fn ensure(host: &Arc<Host>, name: &str, url: &str) -> RhaiResult<Map> {
    let r = Repo {
        host: host.clone(),
        name,
        url,
    };
    Ok(converge::ensure(host, &r)?.outcome())
}
