//! A loopback stand-in for the OpenMetadata (Collate) and Argo server APIs the recipes call,
//! on the real paths: system version/health, basic login, the SearchIndexingApplication trigger
//! and run status (runs progress `running` → `success`, or `failed` with a `failureContext`),
//! and Argo's version and workflow list with a bearer check.
//!
//! `ApiServer::start(ApiOptions::default())` listens on 127.0.0.1 on an ephemeral port, on its
//! own thread and tokio runtime, with a minimal HTTP/1.1 server (one request per connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::loopback::Loopback;

/// How the server behaves.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The server version reported by `GET /api/v1/system/version`.
    pub version: String,
    /// A bearer token accepted by the OpenMetadata API (an admin or bot JWT).
    pub token: String,
    /// Basic login: email and plain password (the client sends it base64-encoded).
    pub admin_email: String,
    pub admin_password: String,
    /// The bearer token the Argo API accepts (the om-role service-account token).
    pub argo_token: String,
    /// Status polls a re-index run takes before it ends.
    pub run_polls: u32,
    /// Records the re-index processes.
    pub total_records: u64,
    /// When set, re-index runs end `failed` with this failure context.
    pub fail_with: Option<Value>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            version: "1.12.3".into(),
            token: "om-admin-token".into(),
            admin_email: "admin@open-metadata.org".into(),
            admin_password: "admin-password".into(),
            argo_token: "argo-sa-token".into(),
            run_polls: 3,
            total_records: 1200,
            fail_with: None,
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
    id: u64,
    start_time: i64,
    polls: u32,
    status: String,
    recreate_index: bool,
    /// Never ends (a run started elsewhere that is still going).
    stuck: bool,
}

#[derive(Debug, Default)]
struct State {
    runs: Vec<RunRecord>,
    sessions: Vec<String>,
    seen: Vec<Seen>,
    clock: i64,
}

impl State {
    /// Starts a `running` re-index run, a second after the previous one.
    fn start_run(&mut self, recreate_index: bool, stuck: bool) {
        self.clock += 1000;
        self.runs.push(RunRecord {
            id: self.runs.len() as u64 + 1,
            start_time: self.clock,
            polls: 0,
            status: "running".into(),
            recreate_index,
            stuck,
        });
    }
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
        let shared = Arc::new(Shared {
            opts: Mutex::new(opts),
            state: Mutex::new(State {
                clock: 1_767_225_600_000,
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
        self.configure(|o| o.fail_with = Some(context));
    }

    /// Starts a run that stays `running` (to test "refuse while a run is active").
    pub fn start_active_run(&self) {
        self.shared.state.lock().unwrap().start_run(true, true);
    }

    /// How many re-index runs were triggered through the API.
    pub fn triggers(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST" && s.path.starts_with("/api/v1/apps/trigger/"))
            .count()
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
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
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

fn error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({"code": status, "message": message}))
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
    let om_authorized = bearer(req).is_some_and(|t| t == opts.token || st.sessions.contains(&t));
    let app = "SearchIndexingApplication";
    match (req.method.as_str(), req.path.as_str()) {
        // --- OpenMetadata ---
        ("GET", "/api/v1/system/version") => (
            200,
            json!({"version": opts.version, "revision": "test", "timestamp": 1_767_225_600_000_i64}),
        ),
        ("GET", "/api/v1/system/health") | ("GET", "/healthcheck") => (200, json!("OK")),
        ("POST", "/api/v1/users/login") => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let email = body["email"].as_str().unwrap_or_default();
            let password = body["password"].as_str().unwrap_or_default();
            if email == opts.admin_email && password == base64(opts.admin_password.as_bytes()) {
                let token = format!("om-session-{}", st.sessions.len() + 1);
                st.sessions.push(token.clone());
                (
                    200,
                    json!({"tokenType": "Bearer", "accessToken": token, "refreshToken": "r", "expiryDuration": 3600}),
                )
            } else {
                error(401, "You have entered an invalid username or password.")
            }
        }
        ("POST", p) if p == format!("/api/v1/apps/trigger/{app}") => {
            if !om_authorized {
                return error(401, "Not authorized; User's Email is not present");
            }
            if st.runs.iter().any(|r| r.status == "running") {
                return error(
                    400,
                    "Job is already running, please wait for it to complete.",
                );
            }
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            st.start_run(body["recreateIndex"].as_bool().unwrap_or(false), false);
            (
                200,
                json!({"message": "Application SearchIndexingApplication triggered"}),
            )
        }
        ("GET", p) if p == format!("/api/v1/apps/name/{app}/status") => {
            if !om_authorized {
                return error(401, "Not authorized; User's Email is not present");
            }
            let limit: usize = req
                .query
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(10);
            let total = opts.total_records;
            for run in st
                .runs
                .iter_mut()
                .filter(|r| r.status == "running" && !r.stuck)
            {
                run.polls += 1;
                if run.polls >= opts.run_polls {
                    run.status = if opts.fail_with.is_some() {
                        "failed"
                    } else {
                        "success"
                    }
                    .into();
                }
            }
            let data: Vec<Value> = st
                .runs
                .iter()
                .rev()
                .take(limit)
                .map(|r| run_json(r, &opts, total))
                .collect();
            let n = data.len();
            (200, json!({"data": data, "paging": {"total": n}}))
        }
        ("GET", p) if p.starts_with("/api/v1/apps/") => {
            if !om_authorized {
                return error(401, "Not authorized");
            }
            error(404, &format!("App not found: {p}"))
        }
        // --- Argo ---
        ("GET", "/api/v1/version") => (200, json!({"version": "v3.7.1", "gitCommit": "test"})),
        ("GET", p) if p.starts_with("/api/v1/workflows/") => {
            if bearer(req).as_deref() != Some(opts.argo_token.as_str()) {
                return error(
                    401,
                    "token not valid. see https://argo-workflows.readthedocs.io/en/latest/faq/",
                );
            }
            (
                200,
                json!({"metadata": {"resourceVersion": "1"}, "items": null}),
            )
        }
        _ => error(404, &format!("no route for {} {}", req.method, req.path)),
    }
}

fn run_json(r: &RunRecord, opts: &ApiOptions, total: u64) -> Value {
    let fraction = (
        r.polls.min(opts.run_polls) as u64,
        opts.run_polls.max(1) as u64,
    );
    let done = if r.status == "success" {
        total
    } else {
        total * fraction.0 / fraction.1
    };
    let mut v = json!({
        "appId": "search-indexing-app",
        "appName": "SearchIndexingApplication",
        "runId": format!("run-{}", r.id),
        "status": r.status,
        "runType": "OnDemand",
        "startTime": r.start_time,
        "timestamp": r.start_time,
        "config": {"entities": ["all"], "recreateIndex": r.recreate_index},
        "successContext": {"stats": {"jobStats": {
            "totalRecords": total, "successRecords": done, "failedRecords": 0
        }}},
    });
    if r.status != "running" {
        v["endTime"] = json!(r.start_time + 5000);
    }
    if r.status == "failed" {
        v["failureContext"] = opts.fail_with.clone().unwrap_or(Value::Null);
    }
    v
}

/// Standard base64 (the login password encoding).
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b"admin-password"), "YWRtaW4tcGFzc3dvcmQ=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
