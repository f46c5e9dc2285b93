//! The connection to the cluster of a run: the kube client built from kube's kubeconfig inference
//! (with `--context`), the context and server it points at (named in every connection error), and
//! kind resolution through a table of well-known kinds and API discovery (aggregated discovery in
//! one round where the server serves it, else the legacy documents in two).

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIGroupList, APIVersions};
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::core::discovery::v2::{
    ACCEPT_AGGREGATED_DISCOVERY_V2, APIGroupDiscovery, APIGroupDiscoveryList,
};
use kube::core::{ApiResource, GroupVersion};
use kube::discovery::Scope;

use crate::error::{ErrorKind, HostError};
use crate::host::Host;

/// A resolved kind: where its objects live and whether they are namespaced.
#[derive(Debug, Clone)]
pub(crate) struct Res {
    pub ar: ApiResource,
    pub namespaced: bool,
}

impl Res {
    /// `deployments.apps`, `secrets`: how kubectl names the resource.
    pub fn describe(&self) -> String {
        if self.ar.group.is_empty() {
            self.ar.plural.clone()
        } else {
            format!("{}.{}", self.ar.plural, self.ar.group)
        }
    }
}

/// The cluster connection of one run.
pub(crate) struct Kube {
    pub client: Client,
    /// The kubeconfig context name, or `in-cluster`.
    pub context: String,
    /// The API server URL.
    pub server: String,
    pub default_namespace: String,
    /// What discovery found so far: the whole API, or the groups looked up one by one.
    discovery: tokio::sync::Mutex<Option<Arc<Catalog>>>,
    /// `true` once the server answered anything (shared with the retry policy).
    reached: Arc<std::sync::atomic::AtomicBool>,
}

/// The cluster connection of a run (a [`Host::slot`]).
#[derive(Default)]
struct KubeSlot(tokio::sync::OnceCell<Arc<Kube>>);

/// The cluster connection of `host`, built on first use.
pub(crate) fn kube(host: &Host) -> Result<Arc<Kube>, HostError> {
    // `collate-run check` stops before the first remote call: do not even read the kubeconfig.
    host.guard_remote("k8s: connect")?;
    let slot = host.slot::<KubeSlot>();
    let context = host.settings().kube_context.as_deref();
    let connect = || async { connect(context).await.map(Arc::new) };
    host.block_on(slot.0.get_or_try_init(connect)).cloned()
}

fn context_names() -> Vec<String> {
    Kubeconfig::read()
        .map(|k| k.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default()
}

async fn connect(context: Option<&str>) -> Result<Kube, HostError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let (mut config, name) = match Config::from_kubeconfig(&options).await {
        Ok(config) => {
            let name = match context {
                Some(c) => c.to_string(),
                None => Kubeconfig::read()
                    .ok()
                    .and_then(|k| k.current_context)
                    .unwrap_or_else(|| "(current)".into()),
            };
            (config, name)
        }
        Err(e) if context.is_some() => {
            let c = context.unwrap_or_default();
            let names = context_names();
            let mut err = HostError::config(format!("cannot use kubeconfig context `{c}`: {e}"));
            err = match crate::suggest::closest(c, names.iter().map(String::as_str)) {
                Some(s) => err.with_hint(format!("did you mean `{s}`?")),
                None if names.is_empty() => {
                    err.with_hint("set KUBECONFIG or run `aws eks update-kubeconfig`")
                }
                None => err.with_hint(format!("contexts in the kubeconfig: {}", names.join(", "))),
            };
            return Err(err);
        }
        Err(kubeconfig_err) => {
            match Config::incluster() {
                Ok(config) => (config, "in-cluster".to_string()),
                Err(_) => {
                    return Err(HostError::config(format!(
                    "no Kubernetes configuration: {kubeconfig_err}, and not running in a cluster"
                ))
                .with_hint("set KUBECONFIG, run `aws eks update-kubeconfig`, or pass `--context`"));
                }
            }
        }
    };
    config.apply_debug_overrides();
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    let server = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let default_namespace = config.default_namespace.clone();
    // kube's own retry covers 429/503/504 only, up to 15 times; ours (below) also covers 500/502
    // and connection errors, with fewer, jittered attempts.
    config.default_retry = false;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| {
        HostError::config(format!(
            "cannot set up a client for the Kubernetes API `{server}` (context `{name}`): {}",
            crate::error::error_chain(&e)
        ))
    })?;
    let policy = retry::Policy::default();
    let reached = policy.reached();
    let client = builder
        .with_layer(
            &tower::ServiceBuilder::new()
                .layer(tower::retry::RetryLayer::new(policy))
                .layer(tower::buffer::BufferLayer::new(64))
                .into_inner(),
        )
        .build();
    Ok(Kube {
        client,
        context: name,
        server,
        default_namespace,
        discovery: tokio::sync::Mutex::new(None),
        reached,
    })
}

/// Retries of Kubernetes API requests: throttling (429), server errors (500, 502, 503, 504) and
/// connection errors (refused, reset, closed early, timed out) are retried up to
/// [`retry::MAX_ATTEMPTS`] attempts in all, with exponential backoff and jitter (or the server's
/// `Retry-After`, capped). Every method is retried: reads and server-side applies are idempotent,
/// and every create the stdlib sends is named, so a create that did happen before its answer was
/// lost comes back as `409 AlreadyExists`, never as a second object. 4xx answers other than 429 are
/// final at once.
pub(crate) mod retry {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;
    use tower::BoxError;

    /// Attempts per request, the first included.
    pub const MAX_ATTEMPTS: u32 = 8;
    /// Attempts while the cluster has never answered in this run and refuses connections: a
    /// wrong or stopped endpoint fails in well under a second instead of after every backoff.
    /// (Once it has answered, a refused connection is a restart worth the full retries.)
    pub const FIRST_CONTACT_ATTEMPTS: u32 = 2;
    /// The first backoff; each next one doubles, up to [`MAX_DELAY`].
    const BASE_DELAY: Duration = Duration::from_millis(100);
    const MAX_DELAY: Duration = Duration::from_secs(4);
    /// A server's `Retry-After` is honoured up to this.
    const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

    static SEED: AtomicU64 = AtomicU64::new(0);

    /// The retry state of one request (tower clones the policy per request).
    #[derive(Clone)]
    pub struct Policy {
        attempt: u32,
        rng: u64,
        /// Shared by every request of the client: `true` once the server answered anything.
        reached: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Default for Policy {
        fn default() -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            Policy {
                attempt: 1,
                rng: nanos ^ SEED.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
                reached: Default::default(),
            }
        }
    }

    /// Statuses worth another attempt.
    pub fn is_transient_status(code: u16) -> bool {
        matches!(code, 429 | 500 | 502 | 503 | 504)
    }

    /// Transport errors worth another attempt: anything at the socket level (refused, reset,
    /// closed before the answer, timed out), decided on the `io::ErrorKind` and on hyper's own
    /// predicates (`is_incomplete_message`: "connection closed before message completed",
    /// `is_closed`: "channel closed"; hyper `src/error.rs`). Not: TLS, auth-plugin or URL errors.
    pub fn is_transient_error(e: &(dyn std::error::Error + 'static)) -> bool {
        crate::error::causes(e).any(|err| {
            use std::io::ErrorKind::*;
            let io = err
                .downcast_ref::<std::io::Error>()
                .map(std::io::Error::kind);
            matches!(
                io,
                Some(
                    ConnectionRefused
                        | ConnectionReset
                        | ConnectionAborted
                        | BrokenPipe
                        | UnexpectedEof
                        | TimedOut
                        | NotConnected
                )
            ) || err
                .downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_incomplete_message() || h.is_closed())
        })
    }

    /// A connection the server refused (nothing listens there).
    pub fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
        crate::error::causes(e).any(|err| {
            err.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        })
    }

    impl Policy {
        /// The flag this policy sets once the server answered (shared by its clones).
        pub fn reached(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
            self.reached.clone()
        }

        /// The wait before attempt `self.attempt + 1`: half the exponential delay plus a random
        /// part up to the other half ("equal jitter"), so clients that failed together spread out.
        fn backoff(&mut self) -> Duration {
            let exp = BASE_DELAY
                .saturating_mul(1 << (self.attempt - 1).min(16))
                .min(MAX_DELAY);
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let half = exp / 2;
            half + half.mul_f64((self.rng >> 11) as f64 / (1u64 << 53) as f64)
        }
    }

    fn retry_after<B>(res: &Response<B>) -> Option<Duration> {
        let secs: u64 = res
            .headers()
            .get(http::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
    }

    impl<B> tower::retry::Policy<Request<Body>, Response<B>, BoxError> for Policy {
        type Future = tokio::time::Sleep;

        fn retry(
            &mut self,
            _req: &mut Request<Body>,
            result: &mut Result<Response<B>, BoxError>,
        ) -> Option<Self::Future> {
            if self.attempt >= MAX_ATTEMPTS {
                return None;
            }
            if result.is_ok() {
                self.reached.store(true, Ordering::Relaxed);
            }
            let server_wait = match result {
                Ok(res) if is_transient_status(res.status().as_u16()) => retry_after(res),
                Ok(_) => return None,
                Err(e)
                    if is_refused(e.as_ref())
                        && !self.reached.load(Ordering::Relaxed)
                        && self.attempt >= FIRST_CONTACT_ATTEMPTS =>
                {
                    return None;
                }
                Err(e) if is_transient_error(e.as_ref()) => None,
                Err(_) => return None,
            };
            let wait = server_wait.unwrap_or_else(|| self.backoff());
            self.attempt += 1;
            Some(tokio::time::sleep(wait))
        }

        fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
            let body = req.body().try_clone()?;
            let mut out = Request::builder()
                .method(req.method().clone())
                .uri(req.uri().clone())
                .version(req.version())
                .body(body)
                .ok()?;
            *out.headers_mut() = req.headers().clone();
            *out.extensions_mut() = req.extensions().clone();
            Some(out)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn backoff_grows_is_jittered_and_capped() {
            let mut p = Policy::default();
            let mut total = Duration::ZERO;
            for attempt in 1..MAX_ATTEMPTS {
                p.attempt = attempt;
                let exp = BASE_DELAY.saturating_mul(1 << (attempt - 1)).min(MAX_DELAY);
                let d = p.backoff();
                assert!(
                    d >= exp / 2 && d <= exp,
                    "attempt {attempt}: {d:?} vs {exp:?}"
                );
                total += d;
            }
            assert!(total <= Duration::from_secs(11), "{total:?}");
            let mut a = Policy::default();
            let mut b = Policy::default();
            a.attempt = 5;
            b.attempt = 5;
            let (x, y): (Vec<_>, Vec<_>) = (0..8).map(|_| (a.backoff(), b.backoff())).unzip();
            assert_ne!(x, y, "two clients back off in lockstep");
        }

        #[tokio::test]
        async fn a_refused_first_contact_fails_fast_a_refusal_after_an_answer_is_retried() {
            use tower::retry::Policy as _;
            let refused = || -> Result<Response<()>, BoxError> {
                Err(Box::new(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                )))
            };
            let mut req = Request::new(Body::empty());
            let shared = Policy::default();
            let mut p = shared.clone();
            let mut attempts = 1;
            while p.retry(&mut req, &mut refused()).is_some() {
                attempts += 1;
            }
            assert_eq!(attempts, FIRST_CONTACT_ATTEMPTS);
            // The server answered once (another request of the same client): now a refusal is
            // a restart, retried in full.
            let mut ok: Result<Response<()>, BoxError> = Ok(Response::new(()));
            assert!(shared.clone().retry(&mut req, &mut ok).is_none());
            let mut p = shared.clone();
            let mut attempts = 1;
            while p.retry(&mut req, &mut refused()).is_some() {
                attempts += 1;
            }
            assert_eq!(attempts, MAX_ATTEMPTS);
        }

        #[test]
        fn only_throttling_server_and_socket_errors_are_transient() {
            for c in [429, 500, 502, 503, 504] {
                assert!(is_transient_status(c));
            }
            for c in [400, 401, 403, 404, 409, 422] {
                assert!(!is_transient_status(c));
            }
            let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            assert!(is_transient_error(&reset));
            let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
            assert!(!is_transient_error(&denied));
        }

        #[test]
        fn transient_and_refused_are_decided_on_types_not_text() {
            // A TLS failure whose text has the old needles is not transient, not refused.
            let tls = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "connection reset: channel closed, connection refused",
            );
            assert!(!is_transient_error(&tls));
            assert!(!is_refused(&tls));
            // A refusal wrapped in another error is found by its kind.
            let refused =
                std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
            assert!(is_refused(&refused));
            assert!(is_transient_error(&refused));
        }
    }
}

impl Kube {
    /// A kube error as a host error; `what` says what was attempted (`get secrets collate/x`).
    pub fn err(&self, what: &str, e: kube::Error) -> HostError {
        let err = match &e {
            kube::Error::Api(status) => {
                let msg = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
                let kind = match status.code {
                    404 => ErrorKind::NotFound,
                    409 => ErrorKind::Conflict,
                    401 | 403 => ErrorKind::Auth,
                    400 | 422 => ErrorKind::Input,
                    _ => ErrorKind::Api,
                };
                let mut err = HostError::new(kind, format!("{what}: {msg} (HTTP {})", status.code));
                if retry::is_transient_status(status.code) {
                    err.message = format!(
                        "{what}: {msg} (HTTP {}, still failing after {} attempts)",
                        status.code,
                        retry::MAX_ATTEMPTS
                    );
                    err = err.with_hint(format!(
                        "the API server `{}` kept answering {}; retried with backoff, then gave up. Re-run when it is healthy: the recipe converges from where it stopped",
                        self.server, status.code
                    ));
                }
                match status.code {
                    401 | 403 => err.with_hint(format!(
                        "the credentials of context `{}` are refused or lack permission; check `kubectl --context {} auth can-i ...`",
                        self.context, self.context
                    )),
                    _ => err,
                }
            }
            kube::Error::Auth(a) => HostError::new(
                ErrorKind::Auth,
                format!("{what}: cannot authenticate to `{}` (context `{}`): {}", self.server, self.context, crate::error::root_cause(a)),
            )
            .with_hint("refresh the credentials (e.g. `aws sso login`) or check the kubeconfig user"),
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => HostError::api(format!(
                "{what}: cannot reach the Kubernetes API server `{}` (context `{}`{}): {}",
                self.server,
                self.context,
                match (retry::is_transient_error(&e), retry::is_refused(&e) && !self.reached.load(std::sync::atomic::Ordering::Relaxed)) {
                    (_, true) => format!(", {} attempts: nothing answers there", retry::FIRST_CONTACT_ATTEMPTS),
                    (true, false) => format!(", {} attempts", retry::MAX_ATTEMPTS),
                    (false, false) => String::new(),
                },
                crate::error::root_cause(&e)
            ))
            .with_hint(format!(
                "is the cluster up and reachable from here? try `kubectl --context {} cluster-info`",
                self.context
            )),
            other => HostError::api(format!("{what}: {}", crate::error::root_cause(other))),
        };
        err.with_source(e)
    }

    /// A dynamic API for `res` in `ns` (ignored for cluster-scoped kinds).
    pub fn api(&self, res: &Res, ns: &str) -> Result<Api<DynamicObject>, HostError> {
        if res.namespaced {
            if ns.is_empty() {
                return Err(HostError::input(format!(
                    "`{}` is namespaced: give a namespace",
                    res.ar.kind
                )));
            }
            Ok(Api::namespaced_with(self.client.clone(), ns, &res.ar))
        } else {
            Ok(Api::all_with(self.client.clone(), &res.ar))
        }
    }

    /// An API over all namespaces (for `list` with an empty namespace).
    pub fn api_all(&self, res: &Res) -> Api<DynamicObject> {
        Api::all_with(self.client.clone(), &res.ar)
    }

    /// Runs (or reuses) discovery of the whole API; `refresh` forces a new run (after CRDs were
    /// applied).
    pub async fn discovery(&self, refresh: bool) -> Result<Arc<Catalog>, HostError> {
        let mut cell = self.discovery.lock().await;
        if let Some(d) = cell.as_ref().filter(|d| d.complete && !refresh) {
            return Ok(d.clone());
        }
        let d = Arc::new(self.discover(None).await?);
        *cell = Some(d.clone());
        Ok(d)
    }

    /// What discovery knows of `group`, discovering it if nothing does yet: aggregated discovery
    /// answers with the whole API (kept); without it, that group alone is listed (kept beside
    /// the groups looked up before), not every group.
    async fn discovery_of(&self, group: &str) -> Result<Arc<Catalog>, HostError> {
        let mut cell = self.discovery.lock().await;
        if let Some(d) = cell.as_ref().filter(|d| d.covers(group)) {
            return Ok(d.clone());
        }
        let mut d = self.discover(Some(group)).await?;
        if let Some(before) = cell.as_ref().filter(|_| !d.complete) {
            d.merge(before);
        }
        let d = Arc::new(d);
        *cell = Some(d.clone());
        Ok(d)
    }

    /// API discovery, of every group or of `only` one. One round asks `/api` and `/apis` side by
    /// side for aggregated discovery (kube's `Accept`, whose last clause also takes the legacy
    /// documents); a server that answers with the `APIGroupDiscoveryList`s has said everything.
    /// One that answers with the legacy `APIVersions` and `APIGroupList` has named its group
    /// versions: a second round lists the resources of those wanted, side by side (kube's
    /// `pinned_group` each). Decided on the documents' `kind`, never on their text.
    async fn discover(&self, only: Option<&str>) -> Result<Catalog, HostError> {
        let what = "discover the API resources";
        let get = |path: &'static str| async move {
            let req = http::Request::get(path)
                .header(http::header::ACCEPT, ACCEPT_AGGREGATED_DISCOVERY_V2)
                .body(Vec::new())
                .map_err(kube::Error::HttpError)?;
            self.client.request::<serde_json::Value>(req).await
        };
        let (api, apis) =
            tokio::try_join!(get("/api"), get("/apis")).map_err(|e| self.err(what, e))?;
        let decode = |e: serde_json::Error| {
            HostError::api(format!("{what}: unexpected discovery document: {e}")).with_source(e)
        };
        let aggregated = |v: &serde_json::Value| v["kind"] == "APIGroupDiscoveryList";
        if aggregated(&api) && aggregated(&apis) {
            let mut catalog = Catalog {
                complete: true,
                ..Catalog::default()
            };
            for doc in [api, apis] {
                let list: APIGroupDiscoveryList = serde_json::from_value(doc).map_err(decode)?;
                for group in list.items {
                    catalog.push_aggregated(group);
                }
            }
            return Ok(catalog);
        }
        let core: APIVersions = serde_json::from_value(api).map_err(decode)?;
        let groups: APIGroupList = serde_json::from_value(apis).map_err(decode)?;
        let wanted = |g: &str| only.is_none_or(|o| o == g);
        // (group version, the group's preferred version)
        let mut gvs: Vec<(GroupVersion, String)> = Vec::new();
        if wanted("") {
            for v in core.versions {
                gvs.push((GroupVersion::gv("", &v), "v1".to_string()));
            }
        }
        for g in groups.groups.into_iter().filter(|g| wanted(&g.name)) {
            let preferred = g
                .preferred_version
                .map(|p| p.version)
                .or_else(|| g.versions.first().map(|v| v.version.clone()))
                .unwrap_or_default();
            for v in g.versions {
                gvs.push((GroupVersion::gv(&g.name, &v.version), preferred.clone()));
            }
        }
        let listed = futures::future::join_all(
            gvs.iter()
                .map(|(gv, _)| kube::discovery::pinned_group(&self.client, gv)),
        )
        .await;
        let mut catalog = Catalog {
            complete: only.is_none(),
            groups: only.map(str::to_string).into_iter().collect(),
            ..Catalog::default()
        };
        for ((gv, preferred), group) in gvs.into_iter().zip(listed) {
            match group {
                Ok(group) => {
                    for (ar, caps) in group.versioned_resources(&gv.version) {
                        catalog.push(ar, caps.scope, gv.version == preferred);
                    }
                }
                // The group asked for must answer; in a walk of every group, one that does not
                // (an aggregated API whose backend is down) is left out, as kubectl does.
                Err(e) if only.is_some() => return Err(self.err(what, e)),
                Err(_) => {}
            }
        }
        Ok(catalog)
    }

    /// Resolves what a script calls a kind: `Secret`, `secret`, `secrets`, `deployments.apps`,
    /// `Deployment.apps`, `Workflow`, `workflows.argoproj.io`.
    pub async fn resolve(&self, kind: &str) -> Result<Res, HostError> {
        let (name, group) = match kind.split_once('.') {
            Some((n, g)) => (n, Some(g)),
            None => (kind, None),
        };
        if let Some(r) = well_known(name, group) {
            return Ok(r);
        }
        // A kind named with its API group (`CronWorkflow.argoproj.io`): that group, before the
        // whole API is walked.
        if let Some(g) = group.filter(|g| g.contains('.')) {
            let d = self.discovery_of(g).await?;
            if let Some(r) = d.find(name, group) {
                return Ok(r);
            }
        }
        for refresh in [false, true] {
            let d = self.discovery(refresh).await?;
            if let Some(r) = d.find(name, group) {
                return Ok(r);
            }
        }
        let d = self.discovery(false).await?;
        let kinds: Vec<String> = d.recommended().map(|r| r.ar.kind.clone()).collect();
        let mut e = HostError::not_found(format!(
            "unknown kind `{kind}`: the cluster `{}` does not serve it",
            self.context
        ));
        if let Some(s) = crate::suggest::closest(name, kinds.iter().map(String::as_str)) {
            e = e.with_hint(format!("did you mean `{s}`?"));
        } else {
            e = e.with_hint("is its CustomResourceDefinition installed? `k8s::apply` it first");
        }
        Err(e)
    }

    /// Resolves `apiVersion` + `kind` of a manifest. `Ok(None)` when the cluster does not serve it.
    pub async fn resolve_gvk(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<Res>, HostError> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if let Some(r) = well_known(kind, Some(group)).filter(|r| r.ar.version == version) {
            return Ok(Some(r));
        }
        let d = self.discovery_of(group).await?;
        if let Some(r) = d.resolve_gvk(group, version, kind) {
            return Ok(Some(r));
        }
        for refresh in [false, true] {
            let d = self.discovery(refresh).await?;
            if let Some(r) = d.resolve_gvk(group, version, kind) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }
}

/// What API discovery found: each resource of each served version of the groups it looked at
/// (subresources left out), the core group first, then as the server listed them.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    entries: Vec<Entry>,
    /// Every group was discovered.
    complete: bool,
    /// The groups discovered, when not every one was.
    groups: Vec<String>,
}

#[derive(Debug)]
struct Entry {
    res: Res,
    /// In its group's preferred version (kube's `ApiGroup::recommended_resources`).
    preferred: bool,
}

impl Catalog {
    fn covers(&self, group: &str) -> bool {
        self.complete || self.groups.iter().any(|g| g == group)
    }

    fn push(&mut self, ar: ApiResource, scope: Scope, preferred: bool) {
        let namespaced = scope == Scope::Namespaced;
        self.entries.push(Entry {
            res: Res { ar, namespaced },
            preferred,
        });
    }

    /// One group of an aggregated document: its versions come in the server's order of
    /// preference, the preferred first (`apidiscovery.k8s.io/v2` `APIGroupDiscovery.versions`);
    /// a resource's kind is its `responseKind.kind`, its scope `Namespaced` or `Cluster`.
    fn push_aggregated(&mut self, group: APIGroupDiscovery) {
        let name = group.metadata.and_then(|m| m.name).unwrap_or_default();
        for (i, version) in group.versions.into_iter().enumerate() {
            let v = version.version.unwrap_or_default();
            let gv = GroupVersion::gv(&name, &v);
            for r in version.resources {
                let kind = r.response_kind.and_then(|k| k.kind).unwrap_or_default();
                let plural = r.resource.unwrap_or_default();
                let scope = match r.scope.as_deref() {
                    Some("Namespaced") => Scope::Namespaced,
                    _ => Scope::Cluster,
                };
                self.push(
                    ApiResource::from_gvk_with_plural(&gv.clone().with_kind(&kind), &plural),
                    scope,
                    i == 0,
                );
            }
        }
    }

    /// Adds what `other` found of the groups this catalog did not look at.
    fn merge(&mut self, other: &Catalog) {
        let kept: Vec<Entry> = other
            .entries
            .iter()
            .filter(|e| !self.covers(&e.res.ar.group))
            .map(|e| Entry {
                res: e.res.clone(),
                preferred: e.preferred,
            })
            .collect();
        self.entries.extend(kept);
        for g in &other.groups {
            if !self.covers(g) {
                self.groups.push(g.clone());
            }
        }
    }

    /// The resources in their group's preferred version.
    fn recommended(&self) -> impl Iterator<Item = &Res> {
        self.entries.iter().filter(|e| e.preferred).map(|e| &e.res)
    }

    /// A kind by name (kind or plural, any case), in its group's preferred version; the core
    /// group first, so `Event` is `v1/Event`, as kubectl resolves it.
    fn find(&self, name: &str, group: Option<&str>) -> Option<Res> {
        let mut found = self.recommended().filter(|r| matches(&r.ar, name, group));
        let first = found.next()?;
        Some(
            std::iter::once(first)
                .chain(found)
                .find(|r| r.ar.group.is_empty())
                .unwrap_or(first)
                .clone(),
        )
    }

    fn resolve_gvk(&self, group: &str, version: &str, kind: &str) -> Option<Res> {
        self.entries
            .iter()
            .map(|e| &e.res)
            .find(|r| r.ar.group == group && r.ar.version == version && r.ar.kind == kind)
            .cloned()
    }
}

fn matches(ar: &ApiResource, name: &str, group: Option<&str>) -> bool {
    let n = name.to_ascii_lowercase();
    let kind = ar.kind.to_ascii_lowercase();
    (n == kind || n == ar.plural)
        && group.is_none_or(|g| g == ar.group || g.split('/').next() == Some(ar.group.as_str()))
}

macro_rules! known {
    ($( $ty:ty => $ns:expr ),* $(,)?) => {
        fn table() -> Vec<Res> {
            vec![$( Res { ar: ApiResource::erase::<$ty>(&()), namespaced: $ns } ),*]
        }
    };
}

known! {
    k8s_openapi::api::core::v1::Namespace => false,
    k8s_openapi::api::core::v1::Secret => true,
    k8s_openapi::api::core::v1::ServiceAccount => true,
    k8s_openapi::api::core::v1::ConfigMap => true,
    k8s_openapi::api::core::v1::Service => true,
    k8s_openapi::api::core::v1::Pod => true,
    k8s_openapi::api::core::v1::PersistentVolumeClaim => true,
    k8s_openapi::api::apps::v1::Deployment => true,
    k8s_openapi::api::apps::v1::StatefulSet => true,
    k8s_openapi::api::apps::v1::DaemonSet => true,
    k8s_openapi::api::apps::v1::ReplicaSet => true,
    k8s_openapi::api::batch::v1::Job => true,
    k8s_openapi::api::batch::v1::CronJob => true,
    k8s_openapi::api::rbac::v1::Role => true,
    k8s_openapi::api::rbac::v1::RoleBinding => true,
    k8s_openapi::api::rbac::v1::ClusterRole => false,
    k8s_openapi::api::rbac::v1::ClusterRoleBinding => false,
    k8s_openapi::api::coordination::v1::Lease => true,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition => false,
}

/// Kinds every cluster serves, resolved without discovery.
pub(crate) fn well_known(name: &str, group: Option<&str>) -> Option<Res> {
    table().into_iter().find(|r| matches(&r.ar, name, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_kinds_resolve_by_kind_plural_and_group() {
        for k in ["Secret", "secret", "secrets"] {
            assert_eq!(well_known(k, None).unwrap().ar.kind, "Secret");
        }
        let d = well_known("deployments", Some("apps")).unwrap();
        assert_eq!((d.ar.api_version.as_str(), d.namespaced), ("apps/v1", true));
        assert!(well_known("Deployment", Some("extensions")).is_none());
        assert!(!well_known("Namespace", Some("")).unwrap().namespaced);
        assert_eq!(
            well_known("lease", None).unwrap().ar.group,
            "coordination.k8s.io"
        );
        assert!(well_known("Workflow", None).is_none());
    }

    /// `(plural, kind, scope)` of each resource of a version.
    type Resources<'a> = &'a [(&'a str, &'a str, &'a str)];

    /// One group of an aggregated document, its versions preferred first.
    fn group(name: &str, versions: &[(&str, Resources)]) -> APIGroupDiscovery {
        let versions: Vec<serde_json::Value> = versions
            .iter()
            .map(|(v, rs)| {
                let resources: Vec<serde_json::Value> = rs
                    .iter()
                    .map(|(plural, kind, scope)| serde_json::json!({"resource": plural, "responseKind": {"group": "", "version": "", "kind": kind}, "scope": scope, "verbs": ["get"]}))
                    .collect();
                serde_json::json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name}, "versions": versions}),
        )
        .unwrap()
    }

    #[test]
    fn an_aggregated_catalog_prefers_the_core_group_and_the_preferred_version() {
        let mut c = Catalog {
            complete: true,
            ..Catalog::default()
        };
        c.push_aggregated(group("", &[("v1", &[("events", "Event", "Namespaced")])]));
        c.push_aggregated(group(
            "events.k8s.io",
            &[("v1", &[("events", "Event", "Namespaced")])],
        ));
        c.push_aggregated(group(
            "autoscaling",
            &[
                (
                    "v2",
                    &[(
                        "horizontalpodautoscalers",
                        "HorizontalPodAutoscaler",
                        "Namespaced",
                    )],
                ),
                (
                    "v1",
                    &[(
                        "horizontalpodautoscalers",
                        "HorizontalPodAutoscaler",
                        "Namespaced",
                    )],
                ),
            ],
        ));
        c.push_aggregated(group(
            "storage.k8s.io",
            &[("v1", &[("storageclasses", "StorageClass", "Cluster")])],
        ));
        assert_eq!(c.find("Event", None).unwrap().ar.api_version, "v1");
        assert_eq!(
            c.find("events", Some("events.k8s.io"))
                .unwrap()
                .ar
                .api_version,
            "events.k8s.io/v1"
        );
        let hpa = c.find("HorizontalPodAutoscaler", None).unwrap();
        assert_eq!((hpa.ar.version.as_str(), hpa.namespaced), ("v2", true));
        let v1 = c
            .resolve_gvk("autoscaling", "v1", "HorizontalPodAutoscaler")
            .unwrap();
        assert_eq!(v1.ar.plural, "horizontalpodautoscalers");
        assert_eq!(
            c.find("storageclass", None).map(|r| r.namespaced),
            Some(false)
        );
        assert!(c.covers("anything"));
    }

    #[test]
    fn groups_looked_up_one_by_one_are_kept_side_by_side() {
        let mut argo = Catalog {
            groups: vec!["argoproj.io".into()],
            ..Catalog::default()
        };
        argo.push_aggregated(group(
            "argoproj.io",
            &[("v1alpha1", &[("workflows", "Workflow", "Namespaced")])],
        ));
        let mut apps = Catalog {
            groups: vec!["apps".into()],
            ..Catalog::default()
        };
        apps.push_aggregated(group(
            "apps",
            &[("v1", &[("deployments", "Deployment", "Namespaced")])],
        ));
        apps.merge(&argo);
        assert!(apps.covers("argoproj.io") && apps.covers("apps") && !apps.covers(""));
        assert!(apps.find("Workflow", None).is_some() && apps.find("Deployment", None).is_some());
        // A group looked up again is not doubled.
        apps.merge(&argo);
        assert_eq!(apps.entries.len(), 2);
    }
}
