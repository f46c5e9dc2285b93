//! An in-memory Kubernetes API server bound to 127.0.0.1, good enough for kubectl, helm 3/4 and kube-rs in tests
//! and benchmarks. It runs on its own thread with its own tokio runtime, so it works from sync tests and from any
//! async runtime. See `README.md` for what it emulates and what it does not.
//!
//! ```no_run
//! let server = kube_testserver::KubeTestServer::builder().version("1.31").start();
//! server.add_node("node-1", "4", "16Gi", "100Gi");
//! std::process::Command::new("kubectl").env("KUBECONFIG", server.kubeconfig_path()).args(["get", "nodes"]).status().unwrap();
//! assert_eq!(server.mutating_requests(), 0);
//! ```

mod api;
mod controllers;
mod defaults;
mod discovery;
mod fields;
mod kubelet;
mod patch;
mod portforward;
mod protobuf;
mod protobuf_schema;
mod resources;
mod selectors;
mod server;
mod spdy;
mod state;
mod util;

pub use kubelet::{IRSA_TOKEN_DIR, Image, SERVICE_ACCOUNT_DIR, supported as kubelet_supported};
pub use portforward::Backend;
pub use state::RequestRecord;

use api::Shared;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Name of the cluster, context and user in the kubeconfig files written by the server.
pub const CONTEXT_NAME: &str = "kube-testserver";

/// Configures a [`KubeTestServer`] before it starts.
#[derive(Debug, Clone)]
pub struct Builder {
    version: String,
    port: u16,
    controller_delay: Duration,
    /// Loopback backends, each with "seed the Service too".
    backends: Vec<(Backend, bool)>,
    tls: Option<Tls>,
    tokens: Vec<String>,
    images: Vec<Image>,
    /// EKS's pod identity webhook, and the region it injects.
    eks_webhook: Option<Option<String>>,
    cluster_dns: Vec<(String, String)>,
    legacy_discovery_only: bool,
    latency: Duration,
}

/// The server's certificate chain and key, and the CA clients trust (PEM files).
#[derive(Debug, Clone)]
struct Tls {
    chain: Vec<PathBuf>,
    key: PathBuf,
    ca: PathBuf,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            version: "1.35.0".into(),
            port: 0,
            controller_delay: Duration::from_millis(100),
            backends: Vec::new(),
            tls: None,
            tokens: Vec::new(),
            images: Vec::new(),
            eks_webhook: None,
            cluster_dns: Vec::new(),
            legacy_discovery_only: false,
            latency: Duration::ZERO,
        }
    }
}

impl Builder {
    /// The Kubernetes version `/version` reports: `"1.31"` or `"1.31.4"`.
    pub fn version(mut self, version: &str) -> Self {
        self.version = if version.matches('.').count() == 1 {
            format!("{version}.0")
        } else {
            version.trim_start_matches('v').to_string()
        };
        self
    }

    /// Port on 127.0.0.1 (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How long after a write workloads are marked ready (default 100 ms).
    pub fn controller_delay(mut self, delay: Duration) -> Self {
        self.controller_delay = delay;
        self
    }

    /// A loopback backend for `pods/portforward`: a forward to a pod behind Service `namespace/service` on its port
    /// `port` reaches `addr`. Seeds a ready Pod and Endpoints for the Service (see [`KubeTestServer::add_backend`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push((backend, false));
        self
    }

    /// Like [`Builder::backend`], and seeds the Service too (when no chart creates it).
    pub fn backend_with_service(mut self, backend: Backend) -> Self {
        self.backends.push((backend, true));
        self
    }

    /// Serves HTTPS with this certificate chain (PEM files, leaf first) and key; `ca` is the
    /// certificate clients trust, written into the kubeconfig as `certificate-authority-data`.
    pub fn tls<P: AsRef<Path>>(
        mut self,
        chain: &[P],
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Self {
        self.tls = Some(Tls {
            chain: chain.iter().map(|p| p.as_ref().to_path_buf()).collect(),
            key: key.as_ref().to_path_buf(),
            ca: ca.as_ref().to_path_buf(),
        });
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request, as an API server with
    /// `--anonymous-auth=false` that knows this token (anything else: 401 `Unauthorized`).
    /// Repeatable (e.g. an operator's token and a pod's); the kubeconfig's user carries the first.
    pub fn bearer_token(mut self, token: &str) -> Self {
        self.tokens.push(token.to_string());
        self
    }

    /// Registers a container image the kubelet runs (repeatable; see [`Image`] and the README's
    /// "Kubelet and Job controller"). Pods need the server to serve TLS ([`Builder::tls`]).
    pub fn image(mut self, image: Image) -> Self {
        self.images.push(image);
        self
    }

    /// A name only the cluster's DNS resolves, to `ip` (repeatable): pods the kubelet runs find
    /// it in their `/etc/hosts`, this machine does not — as a database in a private DNS zone of
    /// the customer's VPC is reachable by name from the nodes only.
    pub fn cluster_dns(mut self, name: &str, ip: &str) -> Self {
        self.cluster_dns.push((name.to_string(), ip.to_string()));
        self
    }

    /// Serves only the legacy discovery documents at `/api` and `/apis`, as a server before 1.27
    /// (or one whose `AggregatedDiscoveryEndpoint` gate is off): a client asking for aggregated
    /// discovery gets `APIVersions` / `APIGroupList` when its `Accept` allows them, else 406.
    /// By default the server serves aggregated discovery as its version does (`v2beta1` in
    /// 1.27-1.32, `v2` from 1.30): see the README's "Discovery".
    pub fn legacy_discovery_only(mut self) -> Self {
        self.legacy_discovery_only = true;
        self
    }

    /// Mutates new pods as EKS's pod identity webhook does (IRSA): a pod whose service account
    /// is annotated `eks.amazonaws.com/role-arn` gets `AWS_ROLE_ARN`,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` (and `AWS_REGION`/`AWS_DEFAULT_REGION` = `region` when
    /// given) and the projected token at [`IRSA_TOKEN_DIR`].
    pub fn eks_pod_identity_webhook(mut self, region: Option<&str>) -> Self {
        self.eks_webhook = Some(region.map(str::to_string));
        self
    }

    /// Every request waits this long before it is handled (default none), as behind a network:
    /// requests sent together wait together, so a client's round trips show. See
    /// [`KubeTestServer::peak_in_flight`].
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Starts the server; panics if 127.0.0.1 cannot be bound (this is test infrastructure).
    pub fn start(self) -> KubeTestServer {
        self.try_start().expect("kube-testserver: failed to start")
    }

    /// Starts the server.
    pub fn try_start(self) -> std::io::Result<KubeTestServer> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", self.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let acceptor = self.tls.as_ref().map(server::acceptor).transpose()?;
        let ca = match &self.tls {
            Some(t) => Some(std::fs::read(&t.ca)?),
            None => None,
        };
        let mut state = state::State::new(
            ca.as_ref()
                .map(|pem| String::from_utf8_lossy(pem).into_owned()),
        );
        state.kubelet.images = self.images;
        state.kubelet.cluster_dns = self.cluster_dns;
        state.kubelet.port = addr.port();
        state.kubelet.eks_pod_identity_webhook = self.eks_webhook.is_some();
        state.kubelet.eks_region = self.eks_webhook.flatten();
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            version: self.version,
            port: addr.port(),
            controller_delay: self.controller_delay,
            backends: Mutex::new(Vec::new()),
            tokens: self.tokens.clone(),
            legacy_discovery_only: self.legacy_discovery_only,
            latency: self.latency,
            in_flight: Default::default(),
            peak_in_flight: Default::default(),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("kube-testserver-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(std_listener).expect("listener");
                    server::serve(listener, acceptor, thread_shared, stop_rx).await;
                });
            })?;
        let dir = tempfile::Builder::new()
            .prefix("kube-testserver-")
            .tempdir()?;
        let server = KubeTestServer {
            shared,
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            kubeconfig: dir.path().join("kubeconfig"),
            _dir: dir,
            ca,
            token: self.tokens.first().cloned(),
        };
        server.write_kubeconfig(&server.kubeconfig)?;
        for (backend, with_service) in self.backends {
            server.add_backend(backend, with_service);
        }
        Ok(server)
    }
}

/// The stored objects of one kind, read when called (see [`KubeTestServer::lister`]).
#[derive(Clone)]
pub struct Lister(Arc<dyn Fn() -> Vec<Value> + Send + Sync>);

impl Lister {
    pub fn list(&self) -> Vec<Value> {
        (self.0)()
    }
}

impl std::fmt::Debug for Lister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lister")
    }
}

/// A running test API server; stops when dropped.
pub struct KubeTestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    /// The CA clients trust (PEM) when serving HTTPS.
    ca: Option<Vec<u8>>,
    token: Option<String>,
}

impl KubeTestServer {
    /// Starts a server with the defaults (Kubernetes 1.35.0, free port).
    pub fn start() -> Self {
        Builder::default().start()
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `http://127.0.0.1:PORT`, or `https://` with [`Builder::tls`].
    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A kubeconfig (written at start in a temp dir owned by the server) whose current context points here.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The kubeconfig text: cluster, context and user all named `kube-testserver` (with the CA
    /// and the bearer token when configured).
    pub fn kubeconfig_yaml(&self) -> String {
        use base64::Engine as _;
        let ca = self
            .ca
            .as_ref()
            .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
        kubeconfig_text(&self.url(), ca.as_deref(), self.token.as_deref())
    }

    /// Writes the kubeconfig to `path`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }

    /// Seeds a Node with the given capacity (also its allocatable), Ready, e.g. `add_node("n1", "4", "16Gi", "100Gi")`.
    pub fn add_node(&self, name: &str, cpu: &str, memory: &str, ephemeral_storage: &str) {
        let resources = json!({"cpu": cpu, "memory": memory, "ephemeral-storage": ephemeral_storage, "pods": "110"});
        let now = util::now_rfc3339();
        self.insert(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
            "spec": {},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}],
                "nodeInfo": {"kubeletVersion": format!("v{}", self.shared.version), "architecture": "amd64", "operatingSystem": "linux", "containerRuntimeVersion": "containerd://2.0.0"},
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": name}],
            },
        }));
    }

    /// Registers a loopback backend for `pods/portforward` (replacing one for the same Service port) and seeds a
    /// ready Pod `SERVICE-backend-PORT` and the Service's Endpoints — and, with `with_service`, the Service itself when
    /// it does not exist. A forward to any Running pod the Service selects, on the port its `targetPort` resolves to,
    /// reaches `backend.addr`. Call again after a chart created the Service to re-seed the pod with its selector.
    pub fn add_backend(&self, backend: Backend, with_service: bool) {
        {
            let mut backends = self
                .shared
                .backends
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            backends.retain(|b| {
                (&b.namespace, &b.service, b.port)
                    != (&backend.namespace, &backend.service, backend.port)
            });
            backends.push(backend.clone());
        }
        portforward::seed(&mut self.shared.lock(), &backend, with_service);
    }

    /// Registers a container image the kubelet runs, replacing one of the same name (see
    /// [`Builder::image`]); pods already started keep what they had.
    pub fn add_image(&self, image: Image) {
        let mut state = self.shared.lock();
        state.kubelet.images.retain(|i| i.name != image.name);
        state.kubelet.images.push(image);
    }

    /// Stores an object directly (not through HTTP, not counted as a mutation), filling uid, timestamps and
    /// resourceVersion; replaces an existing object of the same name. Returns the stored object.
    /// Panics if the object's apiVersion/kind is not served.
    pub fn insert(&self, mut obj: Value) -> Value {
        let mut state = self.shared.lock();
        let av = obj["apiVersion"].as_str().unwrap_or_default().to_string();
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let rt = state
            .type_for_kind(&av, &kind)
            .unwrap_or_else(|| panic!("kube-testserver: {av} {kind} is not served"));
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if rt.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let existing = state.get(&rt, &ns, &name).cloned();
        obj["metadata"]["uid"] = existing
            .as_ref()
            .map(|e| e["metadata"]["uid"].clone())
            .unwrap_or_else(|| json!(util::new_uid()));
        obj["metadata"]["creationTimestamp"] = json!(util::now_rfc3339());
        if rt.kind == "CustomResourceDefinition"
            && let Some(t) = resources::from_crd(&obj)
        {
            state
                .types
                .retain(|r| !(r.group == t.group && r.plural == t.plural && r.custom));
            state.types.push(t);
        }
        let stored = state.commit(
            &rt,
            obj,
            if existing.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            },
        );
        drop(state);
        stored
    }

    /// The stored object, if any (`namespace` is ignored for cluster-scoped kinds).
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let state = self.shared.lock();
        let rt = state.type_for_kind(api_version, kind)?;
        state.get(&rt, namespace, name).cloned()
    }

    /// A reader of the stored objects of one kind (all namespaces), for a server beside this one
    /// that asks the cluster, as Argo's client mode validates a bearer token through it.
    pub fn lister(&self, api_version: &str, kind: &str) -> Lister {
        let (shared, api_version, kind) = (
            self.shared.clone(),
            api_version.to_string(),
            kind.to_string(),
        );
        Lister(Arc::new(move || {
            let state = shared.lock();
            match state.type_for_kind(&api_version, &kind) {
                Some(rt) => state.list(&rt, None).into_iter().cloned().collect(),
                None => Vec::new(),
            }
        }))
    }

    /// Number of non-dry-run POST/PUT/PATCH/DELETE requests to resources received so far (successful or not;
    /// access and token reviews excluded). A plan-only run must leave this at zero.
    pub fn mutating_requests(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.mutating)
            .count()
    }

    /// Every request handled so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Clears the request log (and so the mutation count) and the peak of requests in flight.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
        let now = self
            .shared
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst);
        self.shared
            .peak_in_flight
            .store(now, std::sync::atomic::Ordering::SeqCst);
    }

    /// The most requests handled at once so far (a request counts from its arrival, through
    /// the [`Builder::latency`] wait, until its response starts): how concurrent a client is.
    pub fn peak_in_flight(&self) -> usize {
        self.shared
            .peak_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

impl Drop for KubeTestServer {
    fn drop(&mut self) {
        kubelet::kill_all(&mut self.shared.lock());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A kubeconfig for a server at `url` (cluster, context and user named `kube-testserver`).
pub fn kubeconfig_yaml(url: &str) -> String {
    kubeconfig_text(url, None, None)
}

fn kubeconfig_text(url: &str, ca_data: Option<&str>, token: Option<&str>) -> String {
    let ca = ca_data
        .map(|d| format!("\n    certificate-authority-data: {d}"))
        .unwrap_or_default();
    let token = token.unwrap_or(CONTEXT_NAME);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {CONTEXT_NAME}\n  cluster:\n    server: {url}{ca}\ncontexts:\n- name: {CONTEXT_NAME}\n  context:\n    cluster: {CONTEXT_NAME}\n    user: {CONTEXT_NAME}\n    namespace: default\ncurrent-context: {CONTEXT_NAME}\nusers:\n- name: {CONTEXT_NAME}\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}
