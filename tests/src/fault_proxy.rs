//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 for the reliability tests: it forwards each
//! request to a target (moto, the Kubernetes API test server) or, on a configurable share of
//! requests chosen by a seeded RNG, answers with a throttling/5xx status or resets the connection
//! instead. A faulted request never reaches the target, so a retry is the only way the change
//! happens. Counters say how many requests were seen, forwarded and faulted.
//!
//! ```ignore
//! let proxy = FaultProxy::start(&kube.server.url(), Faults::share(0.3, &[Fault::Status(503), Fault::Reset]).seed(7));
//! // point the kubeconfig at proxy.url() ...
//! assert!(proxy.stats().injected > 0);
//! ```
//!
//! It runs on its own thread and current-thread tokio runtime. Each client connection is served
//! one request at a time; a forwarded request is sent upstream on a new connection with
//! `Connection: close` and the answer is piped back as it comes (watch streams included), then
//! both connections are closed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::loopback::Loopback;

/// What the proxy does to a faulted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answers with this HTTP status (429, 500, 503, 403 ...) and a small body.
    Status(u16),
    /// Reads the request, then closes the connection with a TCP reset (no answer).
    Reset,
    /// Sends the request to the target twice and answers with the second answer: as if another
    /// process had made the same call a moment before (a create race, deterministically).
    Duplicate,
}

impl Fault {
    fn label(self) -> String {
        match self {
            Fault::Status(s) => s.to_string(),
            Fault::Reset => "reset".into(),
            Fault::Duplicate => "duplicate".into(),
        }
    }
}

/// Which requests are faulted, and how.
#[derive(Debug, Clone)]
pub struct Faults {
    /// The share of matching requests that are faulted, 0.0..=1.0.
    pub share: f64,
    /// The faults to choose from (uniformly) for a faulted request.
    pub kinds: Vec<Fault>,
    /// The RNG seed: the same seed and the same request order give the same faults.
    pub seed: u64,
    /// Only requests whose `METHOD path` contains this are candidates (all when `None`).
    pub only: Option<String>,
    /// The body of a status fault (default: a Kubernetes `Status` object; AWS clients read the
    /// status code and the `x-amzn-ErrorType` header the proxy also sends).
    pub body: Option<String>,
}

impl Faults {
    /// No faults: a plain forwarding proxy.
    pub fn none() -> Faults {
        Faults::share(0.0, &[])
    }

    /// `share` of the requests get one of `kinds`.
    pub fn share(share: f64, kinds: &[Fault]) -> Faults {
        Faults {
            share,
            kinds: kinds.to_vec(),
            seed: 1,
            only: None,
            body: None,
        }
    }

    /// Every request gets `fault` (a permanent error).
    pub fn always(fault: Fault) -> Faults {
        Faults::share(1.0, &[fault])
    }

    pub fn seed(mut self, seed: u64) -> Faults {
        self.seed = seed;
        self
    }

    /// Only requests whose `METHOD path` or body contains `pattern` (e.g.
    /// `"PATCH /api/v1/namespaces/collate/secrets"`, or `"Action=CreateRole"` for AWS query APIs).
    pub fn only(mut self, pattern: &str) -> Faults {
        self.only = Some(pattern.into());
        self
    }

    pub fn body(mut self, body: &str) -> Faults {
        self.body = Some(body.into());
        self
    }
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests read from clients.
    pub requests: u64,
    /// Requests sent to the target.
    pub forwarded: u64,
    /// Requests faulted instead.
    pub injected: u64,
    /// Faulted requests by fault (`"429"`, `"503"`, `"reset"`).
    pub by_fault: BTreeMap<String, u64>,
    /// `METHOD path -> fault` of every faulted request, in order.
    pub faulted: Vec<String>,
}

struct Shared {
    target: String,
    faults: Mutex<Faults>,
    rng: Mutex<u64>,
    stats: Mutex<Stats>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    server: Loopback,
}

/// splitmix64: small, seedable, good enough to pick faults.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultProxy {
    /// Starts a proxy to `target` (`http://127.0.0.1:PORT`) on 127.0.0.1 and an ephemeral port.
    pub fn start(target: &str, faults: Faults) -> FaultProxy {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        assert!(
            target.starts_with("127.0.0.1:") || target.starts_with("localhost:"),
            "the fault proxy forwards to loopback targets only, not {target}"
        );
        let shared = Arc::new(Shared {
            target,
            rng: Mutex::new(faults.seed),
            faults: Mutex::new(faults),
            stats: Mutex::new(Stats::default()),
        });
        let inner = shared.clone();
        let server = Loopback::serve("fault-proxy", 0, move |stream| serve(inner.clone(), stream))
            .expect("start the fault proxy on 127.0.0.1");
        FaultProxy { shared, server }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url().to_string()
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Changes the faults from now on (the RNG is re-seeded).
    pub fn set(&self, faults: Faults) {
        *self.shared.rng.lock().unwrap() = faults.seed;
        *self.shared.faults.lock().unwrap() = faults;
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats.lock().unwrap().clone()
    }
}

/// One request as read from a client: its head (request line and headers) and body bytes.
struct Request {
    line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `METHOD path` without the query.
    fn what(&self) -> String {
        let mut parts = self.line.split(' ');
        let method = parts.next().unwrap_or("");
        let path = parts.next().unwrap_or("");
        format!("{method} {}", path.split('?').next().unwrap_or(""))
    }
}

/// Appends what the client sends next to `buf`; `None` at EOF, on an error or after 30 s of
/// silence.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut chunk))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}

/// Reads one request; `None` at EOF, on a malformed request, or after 30 s of silence.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end + 4);
    let mut req = Request {
        line,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        // Keep the chunked encoding as sent; read until the terminating chunk.
        loop {
            if let Some(end) = chunked_end(buf) {
                req.body = buf.drain(..end).collect();
                break;
            }
            read_more(stream, buf).await?;
        }
    } else {
        let len: usize = req
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            read_more(stream, buf).await?;
        }
        req.body = buf.drain(..len).collect();
    }
    Some(req)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of a complete chunked body at the start of `buf`, if it is all there.
fn chunked_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let line_end = at + find(&buf[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let end = at + find(&buf[at..], b"\r\n")?;
            return Some(end + 2);
        }
        if buf.len() < at + size + 2 {
            return None;
        }
        at += size + 2;
    }
}

/// Decides whether this request (`METHOD path` and body) is faulted, and how.
fn decide(shared: &Shared, what: &str, body: &[u8]) -> Option<Fault> {
    let faults = shared.faults.lock().unwrap().clone();
    if faults.kinds.is_empty() || faults.share <= 0.0 {
        return None;
    }
    if faults
        .only
        .as_deref()
        .is_some_and(|o| !what.contains(o) && !String::from_utf8_lossy(body).contains(o))
    {
        return None;
    }
    let mut rng = shared.rng.lock().unwrap();
    let roll = (next(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
    if roll >= faults.share {
        return None;
    }
    let i = (next(&mut rng) % faults.kinds.len() as u64) as usize;
    Some(faults.kinds[i])
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected Fault",
    }
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut client, &mut buf).await {
        let what = req.what();
        shared.stats.lock().unwrap().requests += 1;
        match decide(&shared, &what, &req.body) {
            Some(fault) => {
                {
                    let mut s = shared.stats.lock().unwrap();
                    s.injected += 1;
                    *s.by_fault.entry(fault.label()).or_default() += 1;
                    s.faulted.push(format!("{what} -> {}", fault.label()));
                }
                match fault {
                    Fault::Duplicate => {
                        // The first answer is dropped; the client sees the second.
                        if let Some(mut first) = send(&shared.target, &req).await {
                            let _ = first.read_to_end(&mut Vec::new()).await;
                        }
                        forward(&shared.target, req, client).await;
                        return;
                    }
                    Fault::Reset => {
                        // SO_LINGER 0: close() sends a RST instead of a FIN.
                        #[allow(deprecated)]
                        let _ = client.set_linger(Some(Duration::ZERO));
                        drop(client);
                        return;
                    }
                    Fault::Status(status) => {
                        let body =
                            shared
                                .faults
                                .lock()
                                .unwrap()
                                .body
                                .clone()
                                .unwrap_or_else(|| {
                                    serde_json::json!({
                                "kind": "Status",
                                "apiVersion": "v1",
                                "metadata": {},
                                "status": "Failure",
                                "message": format!("injected fault: {} {}", status, reason(status)),
                                "reason": reason(status).replace(' ', ""),
                                "code": status,
                            })
                            .to_string()
                                });
                        let error_type = match status {
                            429 => "ThrottlingException",
                            403 => "AccessDeniedException",
                            _ => "ServiceUnavailableException",
                        };
                        let answer = format!(
                            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\nx-amzn-errortype: {error_type}\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{body}",
                            reason(status),
                            body.len()
                        );
                        if client.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            }
            None => {
                shared.stats.lock().unwrap().forwarded += 1;
                forward(&shared.target, req, client).await;
                return;
            }
        }
    }
}

/// Sends `req` to the target on a new connection and pipes the answer back, then closes both.
async fn forward(target: &str, req: Request, mut client: TcpStream) {
    let Some(mut upstream) = send(target, &req).await else {
        let _ = client
            .write_all(
                b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let _ = tokio::io::copy(&mut upstream, &mut client).await;
    let _ = client.shutdown().await;
}

/// Sends `req` to the target on a new connection (`Connection: close`); the connection to read
/// the answer from, `None` when the target cannot be reached.
async fn send(target: &str, req: &Request) -> Option<TcpStream> {
    let mut upstream = TcpStream::connect(target).await.ok()?;
    let mut head = format!("{}\r\n", req.line);
    for (k, v) in &req.headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    upstream.write_all(head.as_bytes()).await.ok()?;
    upstream.write_all(&req.body).await.ok()?;
    Some(upstream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rng_is_seeded_and_the_share_holds() {
        let shared = Shared {
            target: String::new(),
            faults: Mutex::new(Faults::share(0.3, &[Fault::Status(503)]).seed(42)),
            rng: Mutex::new(42),
            stats: Mutex::new(Stats::default()),
        };
        let hits: Vec<bool> = (0..1000)
            .map(|_| decide(&shared, "GET /", b"").is_some())
            .collect();
        let n = hits.iter().filter(|h| **h).count();
        assert!((250..350).contains(&n), "{n} of 1000 faulted at 30 %");
        *shared.rng.lock().unwrap() = 42;
        let again: Vec<bool> = (0..1000)
            .map(|_| decide(&shared, "GET /", b"").is_some())
            .collect();
        assert_eq!(hits, again);
    }

    #[test]
    fn chunked_bodies_end_at_the_zero_chunk() {
        assert_eq!(chunked_end(b"3\r\nabc\r\n0\r\n\r\nGET"), Some(13));
        assert_eq!(chunked_end(b"3\r\nabc\r\n"), None);
    }
}
