//! A Kubernetes API test server per test, with an isolated kubeconfig and isolated helm homes, so
//! tests that talk to "the cluster" or run helm can run in parallel.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube_testserver::KubeTestServer;

use crate::tls_server::TlsServer;

pub use kube_testserver::{CONTEXT_NAME, kubeconfig_yaml};

/// A test server and the environment that points `collate-run` (and helm) at it.
pub struct Cluster {
    pub server: KubeTestServer,
    dir: tempfile::TempDir,
    helm: Option<PathBuf>,
    /// `HELM_DRIVER` for helm and collate-run (helm's default, Secrets, when `None`).
    helm_driver: Option<String>,
}

/// The helm binaries the tests run with: `.tools/bin/helm` (v4) and `.tools/bin/helm3`.
pub fn helm_binaries() -> Vec<PathBuf> {
    ["helm", "helm3"]
        .into_iter()
        .filter_map(crate::needs::locate)
        .collect()
}

impl Cluster {
    /// Starts a fresh server on a free port.
    pub fn start() -> Cluster {
        Cluster {
            server: KubeTestServer::start(),
            dir: tempfile::tempdir().expect("temp dir"),
            helm: crate::needs::locate("helm"),
            helm_driver: None,
        }
    }

    /// Starts a fresh server on a free port with more settings of the server (its version,
    /// legacy discovery only, its latency).
    pub fn start_with(
        configure: impl FnOnce(kube_testserver::Builder) -> kube_testserver::Builder,
    ) -> Cluster {
        Cluster {
            server: configure(KubeTestServer::builder()).start(),
            dir: tempfile::tempdir().expect("temp dir"),
            helm: crate::needs::locate("helm"),
            helm_driver: None,
        }
    }

    /// Starts a fresh server over HTTPS (the fixture chain of [`TlsServer`], trusted through the
    /// root CA) that accepts only these bearer tokens (the kubeconfig carries the first), as a
    /// cluster's API server accepts an operator's token and a pod's service-account token.
    pub fn start_tls(tokens: &[&str]) -> Cluster {
        Cluster::start_tls_with(tokens, |b| b)
    }

    /// Like [`Cluster::start_tls`], with more settings of the server (the kubelet's images, EKS's
    /// pod identity webhook).
    pub fn start_tls_with(
        tokens: &[&str],
        configure: impl FnOnce(kube_testserver::Builder) -> kube_testserver::Builder,
    ) -> Cluster {
        let (chain, key) = TlsServer::chain_files();
        let mut builder = KubeTestServer::builder().tls(&chain, key, TlsServer::root_ca_file());
        for t in tokens {
            builder = builder.bearer_token(t);
        }
        let server = configure(builder).start();
        Cluster {
            server,
            dir: tempfile::tempdir().expect("temp dir"),
            helm: crate::needs::locate("helm"),
            helm_driver: None,
        }
    }

    /// Sets `HELM_DRIVER` (e.g. `configmap`) for helm and collate-run.
    pub fn with_helm_driver(mut self, driver: &str) -> Cluster {
        self.helm_driver = Some(driver.to_string());
        self
    }

    /// Uses this helm binary (for `HELM_BIN` and [`Cluster::helm`]).
    pub fn with_helm(mut self, bin: &Path) -> Cluster {
        self.helm = Some(bin.to_path_buf());
        self
    }

    /// The helm binary in use, if any is installed.
    pub fn helm_bin(&self) -> Option<&Path> {
        self.helm.as_deref()
    }

    /// `KUBECONFIG`, `HELM_BIN` and isolated `HELM_*_HOME`s for a `Run`.
    pub fn env(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        let mut env = vec![
            (
                "KUBECONFIG".to_string(),
                self.server.kubeconfig_path().display().to_string(),
            ),
            (
                "HELM_CACHE_HOME".to_string(),
                d.join("helm-cache").display().to_string(),
            ),
            (
                "HELM_CONFIG_HOME".to_string(),
                d.join("helm-config").display().to_string(),
            ),
            (
                "HELM_DATA_HOME".to_string(),
                d.join("helm-data").display().to_string(),
            ),
        ];
        if let Some(h) = &self.helm {
            env.push(("HELM_BIN".to_string(), h.display().to_string()));
        }
        if let Some(d) = &self.helm_driver {
            env.push(("HELM_DRIVER".to_string(), d.clone()));
        }
        env
    }

    /// Runs the helm in use directly (e.g. `history`) against this server; panics on failure.
    pub fn helm(&self, args: &[&str]) -> String {
        let bin = self
            .helm
            .as_ref()
            .expect("helm is installed (scripts/test-deps.sh)");
        let out = Command::new(bin)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .envs(self.env())
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An object on the server, read directly.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        self.server.get(api_version, kind, ns, name)
    }
}

/// The fixture chart folder `tests/fixtures/charts/NAME`.
pub fn chart(name: &str) -> PathBuf {
    crate::run::root().join("tests/fixtures/charts").join(name)
}
