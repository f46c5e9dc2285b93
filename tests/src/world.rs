//! The loopback world of the end-to-end tests (recipes, reliability): the Kubernetes API test
//! server with helm's isolated homes, the OpenMetadata/Argo test server, and moto for the AWS
//! prerequisites when a test asks for it. Tests declare the tools first (`needs!("helm")`, and
//! `"moto"` with [`World::with_moto`]).
//!
//! ```ignore
//! needs!("helm");
//! let w = World::start();
//! Run::recipe("full.rhai").config_yaml(&w.overrides("steps: {prereqs: false}")).envs(w.kube.env());
//! ```

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::Value;

use crate::api_server::{ApiOptions, ApiServer, ArgoCluster};
use crate::chart_repo::upstream_chart;
use crate::kube::Cluster;
use crate::moto::Moto;

/// The Services the OpenMetadata/Argo test server stands behind: the example config's
/// `openmetadata.url` and `argo.api_url`.
const SERVICES: [&str; 2] = [
    "collate/openmetadata:8585",
    "argo-workflows/argo-workflows-server:2746",
];

/// The servers of one end-to-end test.
pub struct World {
    pub kube: Cluster,
    pub api: ApiServer,
    moto: Option<Moto>,
}

impl World {
    /// A fresh Kubernetes API test server and an OpenMetadata/Argo test server with the default
    /// options; no AWS.
    pub fn start() -> World {
        World::start_with(ApiOptions::default(), None)
    }

    /// With these OpenMetadata/Argo options, and `moto` (already seeded) as the AWS.
    /// The Collate and Argo server Services (of the upstream charts, as the recipes install them) are
    /// backed by the OpenMetadata/Argo test server: a port-forward to their pods reaches it, so the
    /// example config's `svc://` URLs work as they are.
    pub fn start_with(api: ApiOptions, moto: Option<Moto>) -> World {
        World::start_on(Cluster::start(), api, moto)
    }

    /// On this Kubernetes test server (e.g. [`Cluster::start_tls`]).
    pub fn start_on(kube: Cluster, mut api: ApiOptions, moto: Option<Moto>) -> World {
        // Argo's client mode: the cluster's service-account tokens authenticate.
        api.argo_cluster = Some(ArgoCluster {
            secrets: kube.server.lister("v1", "Secret"),
            service_accounts: kube.server.lister("v1", "ServiceAccount"),
        });
        let api = ApiServer::start(api);
        let addr = api.url().trim_start_matches("http://").to_string();
        for service in SERVICES {
            let backend = kube_testserver::Backend::parse(&format!("{service}={addr}"))
                .expect("a backend spec");
            kube.server.add_backend(backend, false);
        }
        World { kube, api, moto }
    }

    /// `openmetadata.url` and `argo.api_url` straight at the OpenMetadata/Argo test server (not
    /// through the Kubernetes API): for tests that put a fault proxy in front of the API server.
    pub fn direct_api_urls(&self) -> String {
        let url = self.api.url();
        format!("argo: {{api_url: \"{url}\"}}\nopenmetadata: {{url: \"{url}\"}}\n")
    }

    /// The AWS of this world; panics when it was started without one.
    pub fn moto(&self) -> &Moto {
        self.moto
            .as_ref()
            .expect("this world was started without moto")
    }

    /// The AWS of this world, if it has one.
    pub fn moto_opt(&self) -> Option<&Moto> {
        self.moto.as_ref()
    }

    /// Takes moto back (to reuse it for the next world); the other servers stop.
    pub fn into_moto(self) -> Option<Moto> {
        self.moto
    }

    /// The example config's overrides pointing at the real upstream charts as packaged archives
    /// (the Collate and Argo APIs are the example's `svc://` URLs, reached through the Kubernetes
    /// API test server's port-forward); `head` holds what differs per test (the account, which steps run,
    /// a run lock).
    pub fn overrides(&self, head: &str) -> String {
        format!(
            r#"{head}
charts:
  argo_workflows: {{repo_url: "", chart: "{argo}"}}
  openmetadata: {{repo_url: "", chart: "{om}"}}
  timeout: 60s
argo: {{database: {{user: argo_user}}}}
openmetadata: {{health_timeout: 20}}
reindex: {{poll_interval: 0, timeout: 30}}
"#,
            argo = upstream_chart("argo-workflows-0.45.23.tgz").display(),
            om = upstream_chart("openmetadata-1.12.4.tgz").display(),
        )
    }

    /// An object on the Kubernetes server; panics when it does not exist.
    pub fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        self.kube
            .get(api_version, kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {ns}/{name} does not exist"))
    }

    /// The decoded value of `key` in Secret `ns/name`, if the Secret and the key exist.
    pub fn secret(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        let s = self.kube.get("v1", "Secret", ns, name)?;
        let bytes = BASE64_STANDARD
            .decode(s["data"][key].as_str()?)
            .expect("Secret data is base64");
        Some(String::from_utf8(bytes).expect("Secret data is UTF-8"))
    }

    /// The token the cluster issued for the om-role service account (after an apply).
    pub fn issued_token(&self) -> Option<String> {
        self.secret("collate", "om-role.service-account-token", "token")
    }

    /// From now on the Argo API accepts only the token the cluster issued for om-role.
    pub fn trust_issued_argo_token(&self) {
        let issued = self.issued_token().expect("the om-role token is issued");
        self.api.configure(|o| o.argo_token = issued);
    }
}
