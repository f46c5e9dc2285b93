//! The `http` namespace: small JSON calls to the OpenMetadata and Argo APIs (`http::get`,
//! `http::post`, and `http::poll` for waiting on a run or a health endpoint).
//!
//! A call returns `#{status, body, headers}` whatever the status; with `fail: true` a non-2xx
//! answer is thrown instead (kind `auth` for 401/403, `not_found` for 404, `conflict` for 409,
//! `api` otherwise). A server that cannot be reached is always an `api` error naming the URL.
//! GETs are reads (allowed in plan mode); POSTs are changes, refused in plan mode, unless the
//! caller marks them `safe: true` (a login that changes nothing). A URL may be a service reference
//! `svc://NAMESPACE/NAME:PORT[/path]`, reached through a port-forward over the Kubernetes API
//! (`k8s/portforward.rs`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rhai::plugin::*;
use rhai::{FnPtr, Map};

use crate::error::{ErrorKind, HostError, RhaiResult, root_cause};
use crate::host::Host;
use crate::k8s::portforward::{self, Tunnel};
use crate::secret_value::Secret;
use crate::value::{Secrets, check_keys, from_json, opt, to_json};

/// Options every call takes.
const CALL_OPTIONS: &[&str] = &[
    "headers", "body", "bearer", "basic", "timeout", "fail", "safe", "ca_file",
];
/// Options of `http::poll` on top of the GET options.
const POLL_OPTIONS: &[&str] = &[
    "headers",
    "bearer",
    "basic",
    "timeout",
    "interval",
    "ready",
    "request_timeout",
];

/// Longest part of an error body shown in a message.
const MAX_BODY_IN_ERROR: usize = 600;

/// Default request timeout, seconds.
const DEFAULT_TIMEOUT: u64 = 30;

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .user_agent(concat!("collate-run/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default()
    })
}

/// A request, with every Secret already revealed into it (never displayed).
struct Request {
    method: reqwest::Method,
    /// The URL as the script wrote it (in every message).
    url: String,
    /// Where the request goes: `url`, or for a `svc://` reference the loopback end of its tunnel.
    target: String,
    tunnel: Option<Arc<Tunnel>>,
    headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, &'static str)>,
    bearer: Option<String>,
    basic: Option<(String, String)>,
    timeout: Duration,
    /// A client trusting only the CAs of option `ca_file`; else the shared one.
    client: Option<reqwest::Client>,
}

/// The answer, as scripts see it.
struct Response {
    status: u16,
    body: serde_json::Value,
    headers: Map,
}

impl Response {
    fn into_map(self) -> Map {
        let mut m = Map::new();
        m.insert("status".into(), (self.status as rhai::INT).into());
        m.insert("body".into(), from_json(&self.body));
        m.insert("headers".into(), self.headers.into());
        m
    }
}

/// A string option that may also be a Secret.
fn text_or_secret(what: &str, v: &Dynamic) -> Result<String, HostError> {
    if let Some(s) = v.read_lock::<Secret>() {
        return Ok(s.expose().to_string());
    }
    if v.is_string() {
        return Ok(v.to_string());
    }
    Err(HostError::input(format!(
        "`{what}` must be a string or a Secret, not `{}`",
        v.type_name()
    )))
}

fn build_request(method: reqwest::Method, url: &str, opts: &Map) -> Result<Request, HostError> {
    if !(url.starts_with("http://")
        || url.starts_with("https://")
        || url.starts_with(portforward::SCHEME))
    {
        return Err(HostError::input(format!(
            "`{url}` is not an http(s) URL or a service reference `svc://NAMESPACE/NAME:PORT[/path]`"
        )));
    }
    let mut headers = Vec::new();
    if let Some(h) = opts.get("headers").filter(|h| !h.is_unit()) {
        let map = h
            .read_lock::<Map>()
            .ok_or_else(|| HostError::input("option `headers` must be a map"))?;
        for (k, v) in map.iter() {
            headers.push((k.to_string(), text_or_secret(&format!("headers.{k}"), v)?));
        }
    }
    let body = match opts.get("body").filter(|b| !b.is_unit()) {
        None => None,
        Some(b) if b.is_string() => Some((b.to_string().into_bytes(), "text/plain; charset=utf-8")),
        Some(b) if b.is::<Secret>() => Some((
            text_or_secret("body", b)?.into_bytes(),
            "text/plain; charset=utf-8",
        )),
        Some(b) => {
            let json = to_json(b, Secrets::Reveal)?;
            let bytes = serde_json::to_vec(&json)
                .map_err(|e| HostError::input(format!("cannot encode `body` as JSON: {e}")))?;
            Some((bytes, "application/json"))
        }
    };
    let bearer = match opts.get("bearer").filter(|b| !b.is_unit()) {
        None => None,
        Some(b) => Some(text_or_secret("bearer", b)?),
    };
    let basic = match opts.get("basic").filter(|b| !b.is_unit()) {
        None => None,
        Some(b) => {
            let map = b.read_lock::<Map>().ok_or_else(|| {
                HostError::input("option `basic` must be a map `#{user, password}`")
            })?;
            let user = map
                .get("user")
                .map(|u| text_or_secret("basic.user", u))
                .transpose()?
                .unwrap_or_default();
            let password = map
                .get("password")
                .map(|p| text_or_secret("basic.password", p))
                .transpose()?
                .unwrap_or_default();
            Some((user, password))
        }
    };
    let timeout = opt::<i64>(opts, "timeout")?
        .unwrap_or(DEFAULT_TIMEOUT as i64)
        .max(1) as u64;
    let client = match opt::<String>(opts, "ca_file")? {
        None => None,
        Some(path) => Some(client_trusting(&path)?),
    };
    Ok(Request {
        method,
        url: url.to_string(),
        target: url.to_string(),
        tunnel: None,
        headers,
        body,
        bearer,
        basic,
        timeout: Duration::from_secs(timeout),
        client,
    })
}

/// A client that trusts only the CA certificates of the PEM bundle `path` (a private CA, as
/// `curl --cacert`).
fn client_trusting(path: &str) -> Result<reqwest::Client, HostError> {
    let pem = std::fs::read(path).map_err(|e| {
        HostError::input(format!(
            "cannot read the CA bundle `{path}` (option `ca_file`): {e}"
        ))
        .with_source(e)
    })?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            HostError::input(format!(
                "`{path}` (option `ca_file`) holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)"
            ))
        })?;
    reqwest::Client::builder()
        .user_agent(concat!("collate-run/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .tls_certs_only(certs)
        .build()
        .map_err(|e| {
            HostError::input(format!("cannot use the CA bundle `{path}`: {e}")).with_source(e)
        })
}

/// Sends a `svc://` request through the run's tunnel to that Service (opened on first use).
fn route(host: &Host, mut req: Request) -> Result<Request, HostError> {
    if let Some(parsed) = portforward::parse(&req.url) {
        let (svc, path) = parsed?;
        let tunnel = portforward::tunnel(host, &svc)?;
        req.target = tunnel.url(&path);
        req.tunnel = Some(tunnel);
    }
    Ok(req)
}

async fn send(req: Request) -> Result<Response, HostError> {
    if let Some(t) = &req.tunnel {
        t.clear_error();
    }
    let mut rb = req
        .client
        .as_ref()
        .unwrap_or_else(|| client())
        .request(req.method.clone(), &req.target)
        .timeout(req.timeout)
        .header(reqwest::header::ACCEPT, "application/json");
    for (k, v) in &req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(token) = &req.bearer {
        rb = rb.bearer_auth(token);
    }
    if let Some((user, password)) = &req.basic {
        rb = rb.basic_auth(user, Some(password));
    }
    if let Some((bytes, content_type)) = req.body {
        rb = rb
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes);
    }
    let resp = rb.send().await.map_err(|e| {
        let why = match req.tunnel.as_ref().and_then(|t| t.last_error()) {
            Some(tunnel_error) => tunnel_error,
            None if e.is_timeout() => format!("no answer within {}s", req.timeout.as_secs()),
            None => root_cause(&e).replace(&req.target, &req.url),
        };
        HostError::api(format!("cannot reach `{} {}`: {why}", req.method, req.url)).with_source(e)
    })?;
    let status = resp.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in resp.headers() {
        if let Ok(v) = value.to_str() {
            headers
                .entry(name.as_str().into())
                .or_insert_with(|| v.to_string().into());
        }
    }
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let text = resp.text().await.map_err(|e| {
        HostError::api(format!(
            "reading the answer of `{} {}` failed: {}",
            req.method,
            req.url,
            root_cause(&e)
        ))
        .with_source(e)
    })?;
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else if is_json || text.starts_with(['{', '[']) {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    } else {
        serde_json::Value::String(text)
    };
    Ok(Response {
        status,
        body,
        headers,
    })
}

/// The error thrown for a non-2xx answer when the caller asked `fail: true`.
fn status_error(method: &str, url: &str, resp: &Response) -> HostError {
    let kind = match resp.status {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        _ => ErrorKind::Api,
    };
    let mut body = match &resp.body {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if body.len() > MAX_BODY_IN_ERROR {
        let mut cut = MAX_BODY_IN_ERROR;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
        body.push_str("...");
    }
    let body = if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    };
    HostError::new(
        kind,
        format!("`{method} {url}` answered {}{body}", resp.status),
    )
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

/// Runs one call with the rules of the namespace: GET (and `safe` POST) as reads, other POSTs as
/// changes; `fail: true` turns a non-2xx answer into an error.
fn call(
    ctx: &NativeCallContext,
    method: reqwest::Method,
    url: &str,
    opts: &Map,
) -> RhaiResult<Map> {
    check_keys(
        &format!("http::{}", method.as_str().to_lowercase()),
        opts,
        CALL_OPTIONS,
    )?;
    let host = Host::of(ctx)?;
    let fail = opt::<bool>(opts, "fail")?.unwrap_or(false);
    let safe = opt::<bool>(opts, "safe")?.unwrap_or(false);
    let req = route(&host, build_request(method.clone(), url, opts)?)?;
    let what = format!("http {method} {url}");
    let resp = if method == reqwest::Method::GET || safe {
        host.read(&what, send(req))?
    } else {
        host.mutate_unlocked(&what, send(req))?
    };
    if fail && !is_success(resp.status) {
        return Err(status_error(method.as_str(), url, &resp).into());
    }
    Ok(resp.into_map())
}

/// The `http` namespace.
#[export_module]
pub mod http_module {
    use super::*;

    /// `GET url`. Returns `#{status, body, headers}`: `body` is the parsed JSON when the answer is
    /// JSON, else the text. A non-2xx status is returned, not thrown.
    ///
    /// Every `http` function takes an `http(s)://` URL or a service reference
    /// `svc://NAMESPACE/NAME:PORT[/path]`: the Service's port reached through a port-forward over
    /// the Kubernetes API (the run's kubeconfig credentials, like `kubectl port-forward svc/NAME`)
    /// to a running, ready pod it selects. One tunnel per Service port lives for the run; when its
    /// pod goes away the next connection finds another ready pod (once). A Service without a ready
    /// pod is an error naming the Service and its selector; a failed forward names the pod.
    ///
    /// ```rhai
    /// let r = http::get("http://localhost:8585/api/v1/system/version");
    /// if r.status == 200 { print(r.body.version); }
    /// let r = http::get("svc://collate/openmetadata:8585/api/v1/system/version");
    /// ```
    #[rhai_fn(name = "get", return_raw)]
    pub fn get_plain(ctx: NativeCallContext, url: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        call(&ctx, reqwest::Method::GET, url, &Map::new())
    }

    /// `GET url` with options: `headers` (map), `bearer` (string or Secret), `basic`
    /// (`#{user, password}`), `timeout` (seconds, default 30), `fail` (throw on non-2xx: kind
    /// `auth` for 401/403, `not_found` for 404, `conflict` for 409, `api` otherwise), `ca_file`
    /// (a PEM bundle: trust only these CAs for an `https://` URL, as `curl --cacert`).
    ///
    /// ```rhai
    /// let token = secret::env("COLLATE_ADMIN_TOKEN");
    /// let r = http::get("http://localhost:8585/api/v1/apps/name/SearchIndexingApplication/status?limit=1",
    ///     #{ bearer: token, fail: true });
    /// print(r.body.data[0].status);
    /// ```
    #[rhai_fn(name = "get", return_raw)]
    pub fn get_with(ctx: NativeCallContext, url: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        call(&ctx, reqwest::Method::GET, url, &opts)
    }

    /// `POST url` with options: `body` (a map or array is sent as JSON; a string as text; Secrets
    /// inside are revealed only into the request), `headers`, `bearer`, `basic`, `timeout`,
    /// `fail`, and `safe: true` for a POST that changes nothing (a login), which is then allowed
    /// in plan mode. Other POSTs are changes: refused in plan mode.
    ///
    /// ```rhai
    /// let r = http::post("http://localhost:8585/api/v1/apps/trigger/SearchIndexingApplication", #{
    ///     bearer: secret::env("COLLATE_ADMIN_TOKEN"),
    ///     body: #{ entities: ["all"], recreateIndex: true },
    ///     fail: true,
    /// });
    /// ```
    #[rhai_fn(name = "post", return_raw)]
    pub fn post_with(ctx: NativeCallContext, url: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        call(&ctx, reqwest::Method::POST, url, &opts)
    }

    /// `POST url` without a body.
    ///
    /// ```rhai
    /// http::post("http://localhost:8585/api/v1/some/action");
    /// ```
    #[rhai_fn(name = "post", return_raw)]
    pub fn post_plain(ctx: NativeCallContext, url: &str) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        call(&ctx, reqwest::Method::POST, url, &Map::new())
    }

    /// Polls `GET url` every `interval` seconds (default 5) until `ready(response)` returns
    /// `true`, and returns that response. Connection errors count as "not yet", and so does a
    /// `svc://` Service without a ready pod. After `timeout`
    /// seconds (default 300) it throws a `timeout` error with the last status or error.
    /// Takes the GET options (`headers`, `bearer`, `basic`) and `request_timeout` (seconds per
    /// request). Shows progress while waiting.
    ///
    /// ```rhai
    /// let r = http::poll("http://localhost:8585/api/v1/system/version", #{
    ///     interval: 5, timeout: 600, ready: |r| r.status == 200,
    /// });
    /// print(r.body.version);
    /// ```
    #[rhai_fn(return_raw)]
    pub fn poll(ctx: NativeCallContext, url: &str, opts: Map) -> RhaiResult<Map> {
        crate::host::track(&ctx);
        check_keys("http::poll", &opts, POLL_OPTIONS)?;
        let host = Host::of(&ctx)?;
        let ready = match opts.get("ready") {
            Some(f) if f.is::<FnPtr>() => f.clone_cast::<FnPtr>(),
            _ => {
                return Err(HostError::input(
                    "`http::poll` needs `ready`: a function of the response, e.g. `|r| r.status == 200`",
                )
                .into());
            }
        };
        let interval =
            Duration::from_secs(opt::<i64>(&opts, "interval")?.unwrap_or(5).max(0) as u64);
        let timeout =
            Duration::from_secs(opt::<i64>(&opts, "timeout")?.unwrap_or(300).max(0) as u64);
        let mut req_opts = Map::new();
        for key in ["headers", "bearer", "basic"] {
            if let Some(v) = opts.get(key) {
                req_opts.insert(key.into(), v.clone());
            }
        }
        if let Some(t) = opts.get("request_timeout") {
            req_opts.insert("timeout".into(), t.clone());
        }
        let started = Instant::now();
        let what = format!("http GET {url}");
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let req = build_request(reqwest::Method::GET, url, &req_opts)?;
            // A Service with no ready pod yet (just installed) is "not yet", like a refused connection.
            let last = match route(&host, req).and_then(|req| host.read(&what, send(req))) {
                Ok(resp) => {
                    let map = resp.into_map();
                    let done = ready.call_within_context::<Dynamic>(&ctx, (map.clone(),))?;
                    let done = done.as_bool().map_err(|t| {
                        HostError::input(format!("`ready` must return a bool, not `{t}`"))
                    })?;
                    if done {
                        return Ok(map);
                    }
                    format!("last answer {}", map["status"])
                }
                Err(e) if e.kind == ErrorKind::Api => e.message,
                Err(e) => return Err(e.into()),
            };
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(HostError::new(
                    ErrorKind::Timeout,
                    format!(
                        "`GET {url}` did not reach the expected state within {}s ({attempts} attempts; {last})",
                        timeout.as_secs()
                    ),
                )
                .into());
            }
            host.progress(&format!(
                "waiting for {url} ({}s, {last})",
                elapsed.as_secs()
            ));
            // The Sleep must be created inside the runtime: build it in the async block.
            let pause = interval.min(timeout.saturating_sub(elapsed));
            host.block_on(async move { tokio::time::sleep(pause).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_requests_with_secrets_revealed_only_inside() {
        let mut opts = Map::new();
        opts.insert(
            "bearer".into(),
            Dynamic::from(Secret::new("http-canary-token", "t")),
        );
        let mut body = Map::new();
        body.insert(
            "password".into(),
            Dynamic::from(Secret::new("http-canary-pw", "t")),
        );
        opts.insert("body".into(), body.into());
        let req = build_request(reqwest::Method::POST, "http://127.0.0.1:1/x", &opts).unwrap();
        assert_eq!(req.bearer.as_deref(), Some("http-canary-token"));
        let (bytes, ct) = req.body.unwrap();
        assert_eq!(ct, "application/json");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"password":"http-canary-pw"}"#
        );
    }

    #[test]
    fn refuses_non_http_urls_and_bad_options() {
        assert!(build_request(reqwest::Method::GET, "ftp://x", &Map::new()).is_err());
        let mut opts = Map::new();
        opts.insert("bearer".into(), (5 as rhai::INT).into());
        assert!(build_request(reqwest::Method::GET, "http://x", &opts).is_err());
    }

    #[test]
    fn status_errors_have_kinds_and_masked_bodies() {
        let _ = Secret::new("status-canary-1", "t");
        let resp = Response {
            status: 409,
            body: serde_json::json!({"message": "busy status-canary-1"}),
            headers: Map::new(),
        };
        let e = status_error("POST", "http://h/x", &resp);
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("answered 409"), "{}", e.message);
        assert!(!e.message.contains("status-canary-1"), "{}", e.message);
    }
}
