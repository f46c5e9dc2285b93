//! A tiny loopback HTTP server answering fixed JSON documents by path, for the endpoints
//! preflight reads: OpenSearch/Elasticsearch `GET /`, Argo `GET /api/v1/version`, and AWS's
//! `ip-ranges.json`. A route may require an `Authorization` header. Records what it saw.

use std::io::{BufReader, Write};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::loopback::{Loopback, Request};

/// What the server saw: (path, `Authorization` header) per request.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// One route: `GET path` answers `body` when `auth` (the exact `Authorization` value) matches.
#[derive(Clone)]
struct Route {
    path: String,
    auth: Option<String>,
    body: Value,
}

/// A running server; it stops accepting connections when dropped.
pub struct JsonServer {
    server: Loopback,
    routes: Arc<Mutex<Vec<Route>>>,
    seen: Seen,
}

impl JsonServer {
    /// Starts on 127.0.0.1 and an ephemeral port, with no routes (every path answers 404).
    pub fn start() -> JsonServer {
        let routes: Arc<Mutex<Vec<Route>>> = Arc::default();
        let seen: Seen = Arc::default();
        let (r, s) = (routes.clone(), seen.clone());
        let server = Loopback::serve_blocking("json-server", 0, move |stream| {
            let _ = serve(stream, &r, &s);
        })
        .expect("start the JSON server on 127.0.0.1");
        JsonServer {
            server,
            routes,
            seen,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        self.server.url()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Answers `GET path` with `body` (200), for any or no credentials.
    pub fn route(&self, path: &str, body: Value) -> &JsonServer {
        self.add(path, None, body)
    }

    /// Answers `GET path` with `body` only with `Authorization: <auth>`; 401 otherwise.
    pub fn route_with_auth(&self, path: &str, auth: &str, body: Value) -> &JsonServer {
        self.add(path, Some(auth.to_string()), body)
    }

    fn add(&self, path: &str, auth: Option<String>, body: Value) -> &JsonServer {
        let mut routes = self.routes.lock().expect("routes");
        routes.retain(|r| r.path != path);
        routes.push(Route {
            path: path.to_string(),
            auth,
            body,
        });
        self
    }

    /// Every request so far: (path, Authorization header).
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().expect("seen").clone()
    }
}

fn serve(
    stream: std::net::TcpStream,
    routes: &Mutex<Vec<Route>>,
    seen: &Mutex<Vec<(String, Option<String>)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    while let Some(req) = Request::read(&mut reader)? {
        let (path, auth) = (
            req.path.clone(),
            req.header("authorization").map(str::to_string),
        );
        seen.lock()
            .expect("seen")
            .push((path.clone(), auth.clone()));
        let route = routes
            .lock()
            .expect("routes")
            .iter()
            .find(|r| r.path == path)
            .cloned();
        let (status, body) = match route {
            None => (
                404,
                serde_json::json!({"error": format!("no route for {path}")}),
            ),
            Some(r) if r.auth.is_some() && r.auth != auth => {
                (401, serde_json::json!({"error": "unauthorized"}))
            }
            Some(r) => (200, r.body),
        };
        let text = body.to_string();
        let reason = match status {
            200 => "OK",
            401 => "Unauthorized",
            _ => "Not Found",
        };
        write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        )?;
        stream.flush()?;
    }
    Ok(())
}
