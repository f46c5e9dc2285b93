//! The `pods/portforward` subresource — over WebSocket (subprotocol `v4.channel.k8s.io`, what kube-rs speaks), and
//! over SPDY/3.1 tunnelled in a WebSocket or on a plain upgrade (what kubectl speaks, `spdy.rs`) — and the
//! loopback backends it forwards to: `--backend NAMESPACE/SERVICE:PORT=127.0.0.1:PORT` registers one, seeds a
//! ready Pod and Endpoints for the Service, and a port-forward to a pod behind that Service reaches the backend.
//! What is emulated, and from which upstream file: `README.md`, "Port-forward".

use crate::api::Shared;
use crate::server::Body;
use crate::spdy;
use crate::state::{RequestRecord, State};
use crate::util::now_rfc3339;
use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The binary channel protocol the kubelet's port-forward accepts (`pkg/kubelet/cri/streaming/portforward/
/// websocket.go`: `v4BinaryWebsocketProtocol`). The empty protocol (no header) means the same framing.
const V4_BINARY: &str = "v4.channel.k8s.io";

/// How often a running forward checks that its pod is still there and running.
const POD_CHECK: Duration = Duration::from_millis(100);

/// A loopback backend: what a port-forward to `SERVICE:PORT` in `NAMESPACE` reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    /// The Service's port.
    pub port: u16,
    pub addr: SocketAddr,
}

impl Backend {
    /// Parses `NAMESPACE/SERVICE:PORT=127.0.0.1:PORT`.
    pub fn parse(spec: &str) -> Result<Backend, String> {
        let bad = || format!("`{spec}` is not `NAMESPACE/SERVICE:PORT=127.0.0.1:PORT`");
        let (service, addr) = spec.split_once('=').ok_or_else(bad)?;
        let (ns, service) = service.split_once('/').ok_or_else(bad)?;
        let (service, port) = service.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        if ns.is_empty() || service.is_empty() || port == 0 {
            return Err(bad());
        }
        if !addr.ip().is_loopback() {
            return Err(format!("backend `{addr}` must be a loopback address"));
        }
        Ok(Backend {
            namespace: ns.into(),
            service: service.into(),
            port,
            addr,
        })
    }

    /// The name of the Pod seeded for this backend.
    pub fn pod_name(&self) -> String {
        format!("{}-backend-{}", self.service, self.port)
    }
}

fn service(state: &State, ns: &str, name: &str) -> Option<Value> {
    let rt = state.find_type("", "services")?;
    state.get(&rt, ns, name).cloned()
}

/// The Service's `spec.selector` matches the pod's labels (an empty or missing selector selects nothing:
/// such a Service has no managed endpoints).
fn selects(svc: &Value, pod: &Value) -> bool {
    let Some(sel) = svc.pointer("/spec/selector").and_then(Value::as_object) else {
        return false;
    };
    !sel.is_empty()
        && sel
            .iter()
            .all(|(k, v)| pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
}

/// The container port a Service port reaches on `pod`: a numeric `targetPort`, a named one through the pod's
/// container ports, or the Service port itself when `targetPort` is absent (the API server defaults it so).
fn target_on_pod(svc: &Value, svc_port: u16, pod: &Value) -> Option<u16> {
    let entry = svc
        .pointer("/spec/ports")?
        .as_array()?
        .iter()
        .find(|p| p["port"].as_u64() == Some(svc_port as u64))?;
    match &entry["targetPort"] {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(name) => pod
            .pointer("/spec/containers")?
            .as_array()?
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_u64())
            .map(|n| n as u16),
        _ => Some(svc_port),
    }
}

/// The backend a forward of `port` on `pod` reaches, if any: a backend whose Service selects the pod and whose
/// Service port resolves to `port` on it, or (while the Service does not exist) the pod seeded for it.
fn backend_for(state: &State, backends: &[Backend], pod: &Value, port: u16) -> Option<SocketAddr> {
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    backends
        .iter()
        .filter(|b| b.namespace == ns)
        .find(|b| match service(state, ns, &b.service) {
            Some(svc) => selects(&svc, pod) && target_on_pod(&svc, b.port, pod) == Some(port),
            None => b.pod_name() == name && b.port == port,
        })
        .map(|b| b.addr)
}

/// Seeds what a cluster would have for a backend's Service, when its namespace exists: a ready Pod (labels from the Service's selector when the
/// Service exists, the container port its `targetPort` names) and the Endpoints. With `with_service`, also the
/// Service itself when it does not exist yet (leave it to the chart when a chart creates it: Helm refuses to adopt
/// an object it did not create).
pub fn seed(state: &mut State, b: &Backend, with_service: bool) {
    if with_service {
        if !state.namespace_exists(&b.namespace)
            && let Some(rt) = state.find_type("", "namespaces")
        {
            state.commit(&rt, crate::api::namespace_object(&b.namespace), "ADDED");
        }
        state.seed_namespace(&b.namespace);
    } else if !state.namespace_exists(&b.namespace) {
        // Nothing to seed into yet: the pods will be the chart's (its Deployment's, by the simulated controllers).
        return;
    }
    let default_labels =
        json!({"app.kubernetes.io/name": b.service, "kube-testserver.io/backend": b.service});
    let mut svc = service(state, &b.namespace, &b.service);
    if svc.is_none()
        && with_service
        && let Some(rt) = state.find_type("", "services")
    {
        let obj = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": b.service, "namespace": b.namespace, "uid": crate::util::new_uid(), "creationTimestamp": now_rfc3339()},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "selector": default_labels,
                     "ports": [{"name": "http", "port": b.port, "protocol": "TCP", "targetPort": b.port}]},
        });
        svc = Some(state.commit(&rt, obj, "ADDED"));
    }
    let labels = svc
        .as_ref()
        .and_then(|s| s.pointer("/spec/selector"))
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .cloned()
        .unwrap_or(default_labels);
    let (port_name, container_port) = match svc.as_ref().and_then(|s| {
        s.pointer("/spec/ports")?
            .as_array()?
            .iter()
            .find(|p| p["port"].as_u64() == Some(b.port as u64))
            .map(|p| p["targetPort"].clone())
    }) {
        Some(Value::Number(n)) => ("backend".to_string(), n.as_u64().unwrap_or(b.port as u64)),
        Some(Value::String(name)) => (name, b.port as u64),
        _ => ("backend".to_string(), b.port as u64),
    };
    let node = crate::controllers::node_name(state);
    let now = now_rfc3339();
    let pod_name = b.pod_name();
    let Some(pod_type) = state.find_type("", "pods") else {
        return;
    };
    let uid = state
        .get(&pod_type, &b.namespace, &pod_name)
        .map(|p| p["metadata"]["uid"].clone())
        .unwrap_or_else(|| json!(crate::util::new_uid()));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod_name, "namespace": b.namespace, "uid": uid, "creationTimestamp": now, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "backend", "image": "kube-testserver/backend",
                 "ports": [{"name": port_name, "containerPort": container_port, "protocol": "TCP"}]}]},
        "status": {
            "phase": "Running", "podIP": "10.244.0.20", "podIPs": [{"ip": "10.244.0.20"}], "hostIP": "10.0.0.1", "startTime": now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
            ],
            "containerStatuses": [{"name": "backend", "image": "kube-testserver/backend", "imageID": "", "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": now}}}],
        },
    });
    let pod = state.commit(&pod_type, pod, "ADDED");
    if let Some(ep_type) = state.find_type("", "endpoints") {
        let ep = json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": b.service, "namespace": b.namespace},
            "subsets": [{
                "addresses": [{"ip": "10.244.0.20", "nodeName": node, "targetRef": {"kind": "Pod", "namespace": b.namespace, "name": pod_name, "uid": pod["metadata"]["uid"]}}],
                "ports": [{"name": port_name, "port": container_port, "protocol": "TCP"}],
            }],
        });
        state.commit(&ep_type, ep, "ADDED");
    }
}

/// `/api/v1/namespaces/NS/pods/NAME/portforward` → `(NS, NAME)`.
pub fn target(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, kind, name, sub) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (kind == "pods" && sub == "portforward" && parts.next().is_none())
        .then(|| (ns.to_string(), name.to_string()))
}

/// The `ports` query parameters (`PodPortForwardOptions.ports`, repeatable and comma-separated), validated as the
/// kubelet's `NewV4Options` does.
fn ports(query: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        if k != "ports" {
            continue;
        }
        let v = v.replace("%2C", ",").replace("%2c", ",");
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            let port: u16 = p
                .parse()
                .map_err(|e| format!("unable to parse {v:?} as a port: {e}"))?;
            if port < 1 {
                return Err(format!("port {v:?} must be > 0"));
            }
            out.push(port);
        }
    }
    if out.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(out)
}

fn reply(code: u16, ctype: &str, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", ctype)
        .body(Body::Full(Some(Bytes::from(body))))
        .expect("valid response")
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let s = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code});
    reply(
        code,
        "application/json",
        serde_json::to_vec(&s).unwrap_or_default(),
    )
}

/// Handles a port-forward request: the API server's checks, then the kubelet's, then the WebSocket upgrade.
pub fn handle(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    ns: &str,
    name: &str,
) -> Response<Body> {
    let resp = open(shared, &mut req, ns, name);
    shared.lock().requests.push(RequestRecord {
        method: req.method().as_str().to_string(),
        uri: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        status: resp.status().as_u16(),
        accept: header(&req, "accept"),
        mutating: false,
        user_agent: header(&req, "user-agent"),
    });
    resp
}

fn open(shared: &Arc<Shared>, req: &mut Request<Incoming>, ns: &str, name: &str) -> Response<Body> {
    let header = |n: &str| header(req, n);
    let pod = {
        let state = shared.lock();
        state
            .find_type("", "pods")
            .and_then(|rt| state.get(&rt, ns, name).cloned())
    };
    // API server (`pkg/registry/core/pod/strategy.go` `PortForwardLocation`): the pod must exist and be scheduled.
    let Some(pod) = pod else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return status(
            400,
            "BadRequest",
            &format!("pod {name} does not have a host assigned"),
        );
    }
    // The kubelet (`pkg/kubelet/server/server.go` `getPortForward` → `GetPortForward`): a pod whose containers
    // are not running has no sandbox to forward into.
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return reply(
            500,
            "text/plain; charset=utf-8",
            format!("pod not found (\"{name}_{ns}\")").into_bytes(),
        );
    }
    let target = Arc::new(PodTarget {
        shared: Arc::clone(shared),
        ns: ns.to_string(),
        name: name.to_string(),
        uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    });
    // apimachinery `httpstream.IsUpgradeRequest` / `wsstream.IsWebSocketRequest`.
    let upgrading = header("connection")
        .to_ascii_lowercase()
        .contains("upgrade");
    let websocket = upgrading && header("upgrade").eq_ignore_ascii_case("websocket");
    let offered = comma_list(&header("sec-websocket-protocol"));
    if websocket {
        // apimachinery `wsstream.IsWebSocketRequestWithTunnelingProtocol`: a SPDY protocol offered as a WebSocket
        // subprotocol goes to the tunnel (`apiserver/pkg/util/proxy/streamtunnel.go` `TunnelingHandler`).
        let tunnelled: Vec<String> = offered
            .iter()
            .filter(|p| p.starts_with(spdy::TUNNEL_PREFIX) && p.ends_with(".k8s.io"))
            .map(|p| p[spdy::TUNNEL_PREFIX.len()..].to_string())
            .collect();
        if !tunnelled.is_empty() {
            return spdy_upgrade(req, &tunnelled, target, true);
        }
    } else if upgrading {
        // kubectl's fallback: the kubelet's SPDY upgrade, proxied as is by the API server.
        let offered = comma_list(
            &req.headers()
                .get_all("x-stream-protocol-version")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(","),
        );
        return spdy_upgrade(req, &offered, target, false);
    } else {
        // `proxy.UpgradeAwareHandler` with `upgradeRequired` (`pkg/registry/core/pod/rest/subresources.go`).
        return status(400, "BadRequest", "Upgrade request required");
    }
    let ports = match ports(req.uri().query().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return reply(400, "text/plain; charset=utf-8", e.into_bytes()),
    };
    // `wsstream.Conn.Open` → `handshake`: the first protocol the client offers that the server supports.
    let protocol = if offered.is_empty() {
        None
    } else if offered.iter().any(|p| p == V4_BINARY) {
        Some(V4_BINARY)
    } else {
        return reply(
            400,
            "text/plain; charset=utf-8",
            format!("unable to upgrade websocket connection: requested protocol(s) are not supported: {offered:?}; supports [\"\" \"{V4_BINARY}\"]").into_bytes(),
        );
    };
    let key = header("sec-websocket-key");
    if key.is_empty() {
        return reply(
            400,
            "text/plain; charset=utf-8",
            b"missing Sec-WebSocket-Key".to_vec(),
        );
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        serve(target, ws, ports).await;
    });
    let mut resp = Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-accept", accept);
    if let Some(p) = protocol {
        resp = resp.header("sec-websocket-protocol", p);
    }
    resp.body(Body::Full(None)).expect("valid response")
}

/// A request header's value as text (empty when absent or not text).
fn header(req: &Request<Incoming>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// What Go's `http.Error` writes: the text and a newline, as plain text that may not be sniffed.
fn http_error(code: u16, text: &str) -> Response<Body> {
    let mut resp = reply(
        code,
        "text/plain; charset=utf-8",
        format!("{text}\n").into_bytes(),
    );
    resp.headers_mut()
        .insert("x-content-type-options", "nosniff".parse().expect("header"));
    resp
}

/// A comma-separated header value as a list (apimachinery `httpstream.commaSeparatedHeaderValues`).
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The kubelet's SPDY upgrade (`pkg/kubelet/cri/streaming/portforward/httpstream.go` `handleHTTPStreams`):
/// `httpstream.Handshake` picks the first offered protocol it supports (`portforward.k8s.io`), then
/// `spdy.responseUpgrader.UpgradeResponse` switches protocols. Through the WebSocket tunnel
/// (`streamtunnel.go`) the same happens on the SPDY protocols the client offered as `SPDY/3.1+...` subprotocols, the
/// kubelet's 101 becomes the WebSocket handshake answering `SPDY/3.1+<negotiated>`, and any other answer of the
/// kubelet's passes through unchanged.
fn spdy_upgrade(
    req: &mut Request<Incoming>,
    offered: &[String],
    pod: Arc<PodTarget>,
    tunnel: bool,
) -> Response<Body> {
    let header = |n: &str| header(req, n);
    if offered.is_empty() {
        // `Handshake` returns "X-Stream-Protocol-Version is required" without writing a response, and
        // `ServePortForward` only logs it: Go's server answers an empty 200.
        return reply(200, "text/plain; charset=utf-8", Vec::new());
    }
    if !offered.iter().any(|p| p == spdy::PROTOCOL) {
        let mut resp = http_error(
            403,
            &format!(
                "unable to upgrade: unable to negotiate protocol: client supports [{}], server accepts [{}]",
                offered.join(" "),
                spdy::PROTOCOL
            ),
        );
        resp.headers_mut().insert(
            "x-accepted-stream-protocol-versions",
            spdy::PROTOCOL.parse().expect("header"),
        );
        return resp;
    }
    if tunnel {
        // gorilla/websocket `Upgrader.Upgrade` (what `streamtunnel.go` upgrades with) refuses a handshake that is
        // not a GET, not version 13 or without a key of 16 bytes, through `returnError`: the status text.
        let key = header("sec-websocket-key");
        let key_ok = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .is_ok_and(|k| k.len() == 16);
        let refused = if req.method() != hyper::Method::GET {
            Some((405, "Method Not Allowed"))
        } else if header("sec-websocket-version") != "13" || !key_ok {
            Some((400, "Bad Request"))
        } else {
            None
        };
        if let Some((code, text)) = refused {
            let mut resp = http_error(code, text);
            resp.headers_mut()
                .insert("sec-websocket-version", "13".parse().expect("header"));
            return resp;
        }
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let ws =
                WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            spdy::serve(spdy::Transport::Tunnel(Box::new(ws)), pod).await;
        });
        return Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", accept)
            .header(
                "sec-websocket-protocol",
                format!("{}{}", spdy::TUNNEL_PREFIX, spdy::PROTOCOL),
            )
            .body(Body::Full(None))
            .expect("valid response");
    }
    if !header("upgrade").to_ascii_lowercase().contains("spdy/3.1") {
        return http_error(
            400,
            &format!(
                "unable to upgrade: missing upgrade headers in request: Connection: {:?}, Upgrade: {:?}",
                header("connection"),
                header("upgrade")
            ),
        );
    }
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        spdy::serve(spdy::Transport::Raw(TokioIo::new(upgraded)), pod).await;
    });
    Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", spdy::PROTOCOL)
        .body(Body::Full(None))
        .expect("valid response")
}

/// The pod a port-forward connection reaches, as the kubelet and its container runtime see it.
pub struct PodTarget {
    shared: Arc<Shared>,
    ns: String,
    name: String,
    uid: String,
}

impl PodTarget {
    /// `true` while the pod (same uid) exists and runs.
    pub fn alive(&self) -> bool {
        let state = self.shared.lock();
        state
            .find_type("", "pods")
            .and_then(|rt| state.get(&rt, &self.ns, &self.name).cloned())
            .is_some_and(|p| {
                p["metadata"]["uid"].as_str() == Some(self.uid.as_str())
                    && p.pointer("/metadata/deletionTimestamp").is_none()
                    && p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
            })
    }

    /// Connects to `port` in the pod, like the container runtime dials `localhost:PORT` in the pod's network
    /// namespace; a failure is the kubelet's message for the error stream/channel:
    /// `error forwarding port P to pod NAME, uid UID: ...`.
    pub async fn connect(&self, port: u16) -> Result<tokio::net::TcpStream, String> {
        let addr = {
            let state = self.shared.lock();
            let backends = self
                .shared
                .backends
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            state
                .find_type("", "pods")
                .and_then(|rt| state.get(&rt, &self.ns, &self.name).cloned())
                .and_then(|pod| backend_for(&state, &backends, &pod, port))
        };
        let refused = format!("dial tcp4 127.0.0.1:{port}: connect: connection refused");
        let conn = match addr {
            Some(a) => tokio::net::TcpStream::connect(a)
                .await
                .map_err(|e| e.to_string()),
            None => Err(refused),
        };
        let (name, uid) = (&self.name, &self.uid);
        conn.map_err(|e| format!(
            "error forwarding port {port} to pod {name}, uid {uid}: failed to connect to localhost:{port} inside namespace \"{uid}\", IPv4: {e} IPv6 dial tcp6 [::1]:{port}: connect: connection refused "
        ))
    }
}

/// One port-forward connection: per requested port a data channel (2i) and an error channel (2i+1), each opened with
/// the port as a little-endian u16 (`websocket.go` `handleWebSocketStreams`); each port is connected to its
/// backend like the container runtime dials `localhost:PORT` in the pod's network namespace; a failure is written
/// on the error channel as `error forwarding port P to pod NAME, uid UID: ...`. The connection ends when every port
/// is done, the client closes, or the pod goes away.
async fn serve(pod: Arc<PodTarget>, ws: Upgraded, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
    for (i, port) in ports.iter().enumerate() {
        let le = port.to_le_bytes();
        let _ = tx.send(Message::binary(vec![2 * i as u8, le[0], le[1]]));
        let _ = tx.send(Message::binary(vec![2 * i as u8 + 1, le[0], le[1]]));
    }
    let mut to_backend = Vec::new();
    let mut live = 0usize;
    for (i, &port) in ports.iter().enumerate() {
        let conn = pod.connect(port).await;
        match conn {
            Ok(conn) => {
                let (mut r, w) = conn.into_split();
                to_backend.push(Some(w));
                live += 1;
                let tx = tx.clone();
                let ch = 2 * i as u8;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let mut frame = Vec::with_capacity(n + 1);
                                frame.push(ch);
                                frame.extend_from_slice(&buf[..n]);
                                if tx.send(Message::binary(frame)).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    // The backend closed: this port is done (the kubelet closes both streams).
                    let _ = tx.send(Message::Text(format!("done {ch}").into()));
                });
            }
            Err(msg) => {
                to_backend.push(None);
                let mut frame = vec![2 * i as u8 + 1];
                frame.extend_from_slice(msg.as_bytes());
                let _ = tx.send(Message::binary(frame));
            }
        }
    }
    if live == 0 {
        while let Ok(m) = rx.try_recv() {
            let _ = sink.send(m).await;
        }
        close(sink, stream).await;
        return;
    }
    let mut check = tokio::time::interval(POD_CHECK);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                // Internal marker: a backend connection ended.
                Some(Message::Text(_)) => {
                    live -= 1;
                    if live == 0 {
                        break;
                    }
                }
                Some(m) => if sink.send(m).await.is_err() { return },
                None => break,
            },
            inc = stream.next() => match inc {
                Some(Ok(Message::Binary(data))) if data.len() > 1 => {
                    let ch = data[0] as usize;
                    // Only data channels are read; the error channel is write-only (`wsstream.WriteChannel`).
                    if ch.is_multiple_of(2)
                        && let Some(Some(w)) = to_backend.get_mut(ch / 2)
                        && w.write_all(&data[1..]).await.is_err()
                    {
                        to_backend[ch / 2] = None;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = check.tick() => if !pod.alive() { break },
        }
    }
    while let Ok(m) = rx.try_recv() {
        if !matches!(m, Message::Text(_)) {
            let _ = sink.send(m).await;
        }
    }
    close(sink, stream).await;
}

type Upgraded = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Ends the WebSocket with a closing handshake (what `wsstream.Conn.Close` does): a Close frame, then the client's
/// Close read (or a second at most) before the connection is dropped.
async fn close(
    mut sink: futures::stream::SplitSink<Upgraded, Message>,
    mut stream: futures::stream::SplitStream<Upgraded>,
) {
    let _ = sink.send(Message::Close(None)).await;
    let _ = sink.flush().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_specs() {
        let b = Backend::parse("collate/openmetadata:8585=127.0.0.1:4000").unwrap();
        assert_eq!(
            (b.namespace.as_str(), b.service.as_str(), b.port),
            ("collate", "openmetadata", 8585)
        );
        assert_eq!(b.addr.port(), 4000);
        assert!(Backend::parse("collate/openmetadata=127.0.0.1:4000").is_err());
        assert!(Backend::parse("collate/openmetadata:8585=10.0.0.1:4000").is_err());
    }

    #[test]
    fn parses_ports_like_the_kubelet() {
        assert_eq!(ports("&ports=80%2C1234").unwrap(), vec![80, 1234]);
        assert_eq!(ports("ports=80&ports=81").unwrap(), vec![80, 81]);
        assert!(ports("").is_err());
        assert!(ports("ports=0").is_err());
        assert!(ports("ports=x").is_err());
    }

    #[test]
    fn resolves_named_target_ports_through_the_pod() {
        let svc = json!({"spec": {"selector": {"app": "om"}, "ports": [{"port": 8585, "targetPort": "http"}]}});
        let pod = json!({"metadata": {"labels": {"app": "om", "x": "y"}},
                         "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 9000}]}]}});
        assert!(selects(&svc, &pod));
        assert_eq!(target_on_pod(&svc, 8585, &pod), Some(9000));
        assert_eq!(target_on_pod(&svc, 1, &pod), None);
        assert!(!selects(&json!({"spec": {}}), &pod));
    }
}
