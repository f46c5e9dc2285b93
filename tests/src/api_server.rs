//! A loopback stand-in for the OpenMetadata (Collate) and Argo server APIs the recipes call,
//! as strict as the upstream servers where the recipes depend on them: every behaviour, status
//! code and message is taken from the upstream source, cited in `om-argo-testserver.md`.
//! OpenMetadata: system version/health, basic login, the SearchIndexingApplication trigger and
//! run records (the whole status state machine, stale `running` records, a trigger refused while
//! the job really runs). Argo: client auth on every path, RBAC per namespace.
//!
//! `ApiServer::start(ApiOptions::default())` listens on 127.0.0.1 on an ephemeral port, on its
//! own thread and tokio runtime, with a minimal HTTP/1.1 server (one request per connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::loopback::Loopback;

/// The app the recipes re-index with.
const APP: &str = "SearchIndexingApplication";
/// Argo's answer to a request without a valid bearer token (server/auth/gatekeeper.go).
const ARGO_UNAUTHENTICATED: &str =
    "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/";
/// OpenMetadata's answer to a trigger while the app's Quartz job executes (AppScheduler).
pub const JOB_ALREADY_RUNNING: &str = "Job is already running, please wait for it to complete.";

/// How a triggered re-index run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `success`, with the final stats in `successContext.stats`.
    Success,
    /// `failed`, with this `failureContext` (OmAppJobListener: `{"failure": {...}}`).
    Failed(Value),
    /// `activeError` with an `endTime`: completed with errors (the distributed re-index's
    /// COMPLETED_WITH_ERRORS); `failed` records failed, the context as `failureContext`.
    CompletedWithErrors { failed: u64, context: Value },
    /// `stopped` (stopped from the UI), after passing through `stopInProgress`.
    Stopped,
}

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The server version reported by `GET /api/v1/system/version`.
    pub version: String,
    /// A bearer token of an admin or bot (may trigger apps).
    pub token: String,
    /// A bearer token of a user without the `Trigger` operation on apps (a Data Consumer).
    pub viewer_token: String,
    /// Basic login: email and plain password (the client sends it base64-encoded).
    pub admin_email: String,
    pub admin_password: String,
    /// The server uses an SSO provider: `/users/login` is refused with 403.
    pub sso: bool,
    /// How many authenticated requests a login token serves before it is expired (`None`:
    /// never; upstream: `jwtTokenExpiryTime`, 3600 s by default).
    pub session_requests: Option<u32>,
    /// The bearer token the Argo API accepts (the om-role service-account token).
    pub argo_token: String,
    /// Namespaces that token may list workflows in (its RBAC); others answer 403.
    pub argo_namespaces: Vec<String>,
    /// The cluster the Argo server runs in (its Secrets and ServiceAccounts): in client mode it
    /// also accepts the token of every live service-account token Secret, as the cluster's API
    /// server does ([`sa_token_valid`]).
    pub argo_cluster: Option<ArgoCluster>,
    /// Status reads before the record of a triggered run appears (the listener inserts it when
    /// the Quartz job starts, after the trigger has answered).
    pub start_polls: u32,
    /// Triggers are accepted but no run ever starts (a disabled or wedged scheduler).
    pub never_starts: bool,
    /// The active statuses a run walks through, one status read each, before it ends.
    pub via: Vec<String>,
    /// Status reads a run spends in its last active status before it ends.
    pub run_polls: u32,
    /// How runs end.
    pub outcome: Outcome,
    /// Records the re-index processes.
    pub total_records: u64,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            version: "1.12.4".into(),
            token: "om-admin-token".into(),
            viewer_token: "om-viewer-token".into(),
            admin_email: "admin@open-metadata.org".into(),
            admin_password: "admin-password".into(),
            sso: false,
            session_requests: None,
            argo_token: "argo-sa-token".into(),
            argo_namespaces: vec!["collate".into()],
            argo_cluster: None,
            start_polls: 1,
            never_starts: false,
            via: vec!["started".into(), "running".into()],
            run_polls: 2,
            outcome: Outcome::Success,
            total_records: 1200,
        }
    }
}

/// One request as the server saw it (for assertions).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: String,
}

#[derive(Debug, Clone)]
struct RunRecord {
    start_time: i64,
    /// Status reads since the run started.
    polls: u32,
    status: String,
    end_time: Option<i64>,
    recreate_index: bool,
    /// How it ends; `None`: never (a run that outlived its job, or one that is still going).
    outcome: Option<Outcome>,
    /// Its Quartz job is executing (a trigger is refused while true).
    executing: bool,
}

/// A trigger accepted whose run record has not appeared yet.
#[derive(Debug, Clone)]
struct Pending {
    polls: u32,
    recreate_index: bool,
}

#[derive(Debug, Default)]
struct State {
    runs: Vec<RunRecord>,
    pending: Option<Pending>,
    /// Login tokens and the authenticated requests each has served.
    sessions: Vec<(String, u32)>,
    seen: Vec<Seen>,
    clock: i64,
}

impl State {
    /// The server's time for a new record: the wall clock (the real server stamps records with
    /// its own), kept strictly increasing so records order by `startTime`.
    fn tick(&mut self) -> i64 {
        self.clock = (self.clock + 1).max(now_ms());
        self.clock
    }

    fn job_executing(&self) -> bool {
        self.pending.is_some() || self.runs.iter().any(|r| r.executing)
    }
}

/// Epoch milliseconds of the wall clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Shared {
    opts: Mutex<ApiOptions>,
    state: Mutex<State>,
}

/// A running test server; stops when dropped.
pub struct ApiServer {
    shared: Arc<Shared>,
    server: Loopback,
}

impl ApiServer {
    /// Starts the server on 127.0.0.1 and an ephemeral port.
    pub fn start(opts: ApiOptions) -> ApiServer {
        ApiServer::start_on(opts, 0).expect("start the OpenMetadata/Argo test server")
    }

    /// Starts the server on 127.0.0.1:`port` (0 = ephemeral).
    pub fn start_on(opts: ApiOptions, port: u16) -> std::io::Result<ApiServer> {
        let now = now_ms();
        let shared = Arc::new(Shared {
            opts: Mutex::new(opts),
            state: Mutex::new(State {
                clock: now,
                ..State::default()
            }),
        });
        let inner = shared.clone();
        let server = Loopback::serve("om-argo-testserver", port, move |stream| {
            serve(stream, inner.clone())
        })?;
        Ok(ApiServer { shared, server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// Changes the behaviour of later requests.
    pub fn configure(&self, f: impl FnOnce(&mut ApiOptions)) {
        f(&mut self.shared.opts.lock().unwrap());
    }

    /// Makes later re-index runs fail with `context` as their `failureContext`.
    pub fn fail_reindex(&self, context: Value) {
        self.configure(|o| o.outcome = Outcome::Failed(context));
    }

    /// A run whose job really executes and never ends: a trigger answers 500.
    pub fn start_active_run(&self) {
        let start_time = self.shared.state.lock().unwrap().tick();
        self.add_run(start_time, "running", None, true);
    }

    /// A `running` record whose job died with the server that ran it (OpenMetadata#22767):
    /// it stays `running`, and a trigger is accepted. Started at `start_time` (epoch ms).
    pub fn add_stale_run(&self, start_time: i64) {
        self.add_run(start_time, "running", None, false);
    }

    /// A run record that never moves on by itself.
    fn add_run(&self, start_time: i64, status: &str, end_time: Option<i64>, executing: bool) {
        self.shared.state.lock().unwrap().runs.push(RunRecord {
            start_time,
            polls: 0,
            status: status.into(),
            end_time,
            recreate_index: true,
            outcome: None,
            executing,
        });
    }

    /// How many re-index runs were triggered through the API (accepted or not).
    pub fn triggers(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.starts_with("/api/v1/apps/trigger/"))
            .count()
    }

    /// How many runs the server holds.
    pub fn runs(&self) -> usize {
        self.shared.state.lock().unwrap().runs.len()
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.state.lock().unwrap().seen.clone()
    }
}

struct Request {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 1 << 20 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), parse_query(q)),
        None => (target, HashMap::new()),
    };
    Ok(Some(Request {
        method,
        path,
        query,
        headers,
        body,
    }))
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let Some(req) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let (status, body) = route(&req, &shared);
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        500 => "Internal Server Error",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

fn bearer(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

/// OpenMetadata's error body for a `WebApplicationException` (`{"code", "message"}`).
fn error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({"code": status, "message": message}))
}

/// OpenMetadata's `CustomExceptionMessage` body (`{"code", "errorType", "message"}`).
fn typed_error(status: u16, error_type: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"code": status, "errorType": error_type, "message": message}),
    )
}

/// Argo's grpc-gateway error body (`{"code": <grpc code>, "message"}`).
fn argo_error(status: u16, grpc_code: u16, message: &str) -> (u16, Value) {
    (status, json!({"code": grpc_code, "message": message}))
}

/// Who a bearer token is, for OpenMetadata.
enum Principal {
    Anonymous,
    Expired,
    Invalid,
    Admin,
    Viewer,
}

fn principal(req: &Request, opts: &ApiOptions, st: &mut State) -> Principal {
    let Some(header) = req.headers.get("authorization") else {
        return Principal::Anonymous;
    };
    let Some(token) = header.strip_prefix("Bearer ") else {
        return Principal::Anonymous;
    };
    if token == opts.token {
        return Principal::Admin;
    }
    if token == opts.viewer_token {
        return Principal::Viewer;
    }
    match st.sessions.iter_mut().find(|(t, _)| t == token) {
        Some((_, used)) => {
            *used += 1;
            if opts.session_requests.is_some_and(|n| *used > n) {
                Principal::Expired
            } else {
                Principal::Admin
            }
        }
        None => Principal::Invalid,
    }
}

/// Paths the OpenMetadata JWT filter lets through without a token.
fn om_public(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/system/version" | "/api/v1/system/health" | "/healthcheck" | "/api/v1/users/login"
    )
}

/// Paths of the Argo server API (every one behind its gatekeeper).
fn argo_path(path: &str) -> bool {
    path == "/api/v1/version"
        || path == "/api/v1/info"
        || path == "/api/v1/userinfo"
        || path.starts_with("/api/v1/workflows")
        || path.starts_with("/api/v1/workflow-templates")
        || path.starts_with("/api/v1/cron-workflows")
        || path.starts_with("/api/v1/archived-workflows")
}

fn route(req: &Request, shared: &Shared) -> (u16, Value) {
    let opts = shared.opts.lock().unwrap().clone();
    let mut st = shared.state.lock().unwrap();
    st.seen.push(Seen {
        method: req.method.clone(),
        path: req.path.clone(),
        authorization: req.headers.get("authorization").cloned(),
        body: String::from_utf8_lossy(&req.body).to_string(),
    });
    if argo_path(&req.path) {
        return argo(req, &opts);
    }
    if !om_public(&req.path) {
        match principal(req, &opts, &mut st) {
            Principal::Anonymous => return error(401, "Not Authorized! Token not present"),
            Principal::Expired => return error(401, "Not Authorized! Expired token!"),
            Principal::Invalid => {
                return error(401, "Not Authorized! Invalid token");
            }
            Principal::Viewer
                if req.method == "POST" && req.path.starts_with("/api/v1/apps/trigger/") =>
            {
                return error(
                    403,
                    "Principal: CatalogPrincipal{name='data-consumer'} operations [Trigger] not allowed",
                );
            }
            Principal::Admin | Principal::Viewer => {}
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/v1/system/version") => (
            200,
            json!({"version": opts.version, "revision": "test", "timestamp": 1_767_225_600_000_i64}),
        ),
        ("GET", "/api/v1/system/health") | ("GET", "/healthcheck") => (200, json!("OK")),
        ("POST", "/api/v1/users/login") => login(req, &opts, &mut st),
        ("POST", p) if p.starts_with("/api/v1/apps/trigger/") => {
            let name = &p["/api/v1/apps/trigger/".len()..];
            if name != APP {
                return error(404, &format!("app instance for {name} not found"));
            }
            if st.job_executing() {
                return error(500, JOB_ALREADY_RUNNING);
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            if !opts.never_starts {
                st.pending = Some(Pending {
                    polls: 0,
                    recreate_index: body["recreateIndex"].as_bool().unwrap_or(false),
                });
            }
            (
                200,
                json!({"message": format!("Application {APP} triggered")}),
            )
        }
        ("GET", p) if p == format!("/api/v1/apps/name/{APP}/status") => {
            advance(&mut st, &opts);
            let offset: usize = req
                .query
                .get("offset")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10);
            let data: Vec<Value> = st
                .runs
                .iter()
                .rev()
                .skip(offset)
                .take(limit)
                .map(|r| run_json(r, &opts))
                .collect();
            (
                200,
                json!({"data": data, "paging": {"total": st.runs.len()}}),
            )
        }
        ("GET", p) if p.starts_with("/api/v1/apps/name/") => {
            let name = p["/api/v1/apps/name/".len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            error(404, &format!("app instance for {name} not found"))
        }
        _ => error(
            404,
            &format!("HTTP 404 Not Found: {} {}", req.method, req.path),
        ),
    }
}

/// `POST /api/v1/users/login` (UserResource.loginUserWithPassword, BasicAuthenticator.loginUser).
fn login(req: &Request, opts: &ApiOptions, st: &mut State) -> (u16, Value) {
    if opts.sso {
        return typed_error(
            403,
            "AUTHENTICATOR_OPERATION_NOT_SUPPORTED",
            "Operation is not permitted with the Selected Authenticator.",
        );
    }
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let email = body["email"].as_str().unwrap_or_default();
    let Some(password) = body["password"]
        .as_str()
        .and_then(|p| BASE64_STANDARD.decode(p).ok())
    else {
        return error(400, "Password needs to be encoded in Base-64.");
    };
    let invalid = "You have entered an invalid username or password.";
    if !email.contains('@') || email != opts.admin_email {
        return typed_error(400, "INVALID_USER_OR_PASSWORD", invalid);
    }
    if password != opts.admin_password.as_bytes() {
        return error(401, invalid);
    }
    let token = format!("om-session-{}", st.sessions.len() + 1);
    st.sessions.push((token.clone(), 0));
    let expires_at = st.clock + 3_600_000;
    (
        200,
        json!({"tokenType": "Bearer", "accessToken": token, "refreshToken": "r", "expiryDuration": expires_at}),
    )
}

/// The Secrets and ServiceAccounts of the cluster the Argo server runs in.
#[derive(Debug, Clone)]
pub struct ArgoCluster {
    pub secrets: kube_testserver::Lister,
    pub service_accounts: kube_testserver::Lister,
}

/// Whether the cluster's API server would authenticate `token` as a legacy service-account
/// token (kubernetes/kubernetes pkg/serviceaccount/legacy.go `legacyValidator.Validate`): a
/// `kubernetes.io/service-account-token` Secret holds exactly this token, is not being deleted,
/// and the ServiceAccount it names exists (and has the UID the Secret names, when it names one).
fn sa_token_valid(cluster: &ArgoCluster, token: &str) -> bool {
    let decoded = |v: &Value| {
        v.as_str()
            .and_then(|t| BASE64_STANDARD.decode(t).ok())
            .and_then(|b| String::from_utf8(b).ok())
    };
    let sas = cluster.service_accounts.list();
    cluster.secrets.list().iter().any(|s| {
        let meta = &s["metadata"];
        let ann = &meta["annotations"];
        s["type"] == "kubernetes.io/service-account-token"
            && meta["deletionTimestamp"].is_null()
            && decoded(&s["data"]["token"]).as_deref() == Some(token)
            && sas.iter().any(|sa| {
                sa["metadata"]["namespace"] == meta["namespace"]
                    && sa["metadata"]["name"] == ann["kubernetes.io/service-account.name"]
                    && (ann["kubernetes.io/service-account.uid"].is_null()
                        || sa["metadata"]["uid"] == ann["kubernetes.io/service-account.uid"])
            })
    })
}

/// The Argo server: client auth on every path, then RBAC of the token on the namespace.
fn argo(req: &Request, opts: &ApiOptions) -> (u16, Value) {
    let token = bearer(req).unwrap_or_default();
    let valid = !token.is_empty()
        && (token == opts.argo_token
            || opts
                .argo_cluster
                .as_ref()
                .is_some_and(|c| sa_token_valid(c, &token)));
    if !valid {
        return argo_error(401, 16, ARGO_UNAUTHENTICATED);
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/v1/version") => (
            200,
            json!({"version": "v3.7.1", "buildDate": "2025-08-01T00:00:00Z", "gitCommit": "test", "gitTag": "v3.7.1", "gitTreeState": "clean", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        ),
        ("GET", p) if p.starts_with("/api/v1/workflows/") => {
            let ns = p["/api/v1/workflows/".len()..]
                .split('/')
                .next()
                .unwrap_or_default();
            if !opts.argo_namespaces.iter().any(|n| n == ns) {
                return argo_error(
                    403,
                    7,
                    &format!(
                        "workflows.argoproj.io is forbidden: User \"system:serviceaccount:collate:om-role\" cannot list resource \"workflows\" in API group \"argoproj.io\" in the namespace \"{ns}\""
                    ),
                );
            }
            (
                200,
                json!({"metadata": {"resourceVersion": "1"}, "items": null}),
            )
        }
        _ => argo_error(404, 5, &format!("Not Found: {} {}", req.method, req.path)),
    }
}

/// One status read: a pending trigger's record appears, running records move on.
fn advance(st: &mut State, opts: &ApiOptions) {
    if let Some(p) = st.pending.as_mut() {
        p.polls += 1;
        if p.polls >= opts.start_polls {
            let recreate_index = p.recreate_index;
            st.pending = None;
            let start_time = st.tick();
            st.runs.push(RunRecord {
                start_time,
                polls: 0,
                status: opts
                    .via
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "running".into()),
                end_time: None,
                recreate_index,
                outcome: Some(opts.outcome.clone()),
                executing: true,
            });
            return;
        }
    }
    let now = st.tick();
    for run in st.runs.iter_mut().filter(|r| r.end_time.is_none()) {
        let Some(outcome) = run.outcome.clone() else {
            continue;
        };
        run.polls += 1;
        let step = run.polls as usize;
        if step < opts.via.len() {
            run.status = opts.via[step].clone();
        } else if run.polls >= opts.via.len() as u32 + opts.run_polls {
            run.status = match outcome {
                Outcome::Success => "success",
                Outcome::Failed(_) => "failed",
                Outcome::CompletedWithErrors { .. } => "activeError",
                Outcome::Stopped => "stopped",
            }
            .into();
            run.end_time = Some(now);
            run.executing = false;
        } else if outcome == Outcome::Stopped
            && run.polls + 1 == opts.via.len() as u32 + opts.run_polls
        {
            run.status = "stopInProgress".into();
        }
    }
}

/// A run record as `GET .../status` lists it (AppRunRecord): the stats are written when the
/// run ends, not while it runs.
fn run_json(r: &RunRecord, opts: &ApiOptions) -> Value {
    let mut v = json!({
        "appId": "7a5f6a0e-4c0b-4b8e-9d55-3c1f0a6b2e11",
        "appName": APP,
        "status": r.status,
        "runType": "OnDemandJob",
        "startTime": r.start_time,
        "timestamp": r.start_time,
        "config": {"entities": ["all"], "recreateIndex": r.recreate_index, "batchSize": 100},
        "scheduleInfo": {"scheduleTimeline": "None"},
    });
    let Some(end) = r.end_time else {
        return v;
    };
    v["endTime"] = json!(end);
    v["executionTime"] = json!(end - r.start_time);
    let total = opts.total_records;
    let stats = |failed: u64| {
        json!({
            "jobStats": {"totalRecords": total, "successRecords": total - failed, "failedRecords": failed},
            "readerStats": {"totalRecords": total, "successRecords": total, "failedRecords": 0},
            "sinkStats": {"totalRecords": total, "successRecords": total - failed, "failedRecords": failed},
            "entityStats": {"table": {"totalRecords": total, "successRecords": total - failed, "failedRecords": failed}},
        })
    };
    match &r.outcome {
        Some(Outcome::Success) | None if r.status == "success" => {
            v["successContext"] = json!({"stats": stats(0)});
        }
        Some(Outcome::Failed(context)) => v["failureContext"] = context.clone(),
        Some(Outcome::CompletedWithErrors { failed, context }) => {
            v["successContext"] = json!({"stats": stats(*failed)});
            v["failureContext"] = context.clone();
        }
        Some(Outcome::Stopped) => v["successContext"] = json!({"stats": stats(total / 2)}),
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_base64_passwords_log_in() {
        let opts = ApiOptions::default();
        let login_with = |password: &str| {
            let req = Request {
                method: "POST".into(),
                path: "/api/v1/users/login".into(),
                query: HashMap::new(),
                headers: HashMap::new(),
                body: json!({"email": opts.admin_email, "password": password})
                    .to_string()
                    .into_bytes(),
            };
            login(&req, &opts, &mut State::default()).0
        };
        assert_eq!(
            login_with(&BASE64_STANDARD.encode(&opts.admin_password)),
            200
        );
        assert_eq!(login_with(&opts.admin_password), 400);
    }
}
