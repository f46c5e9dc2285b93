//! Conformance of `pods/portforward` with the clients that speak it: kube-rs 5's `Api::<Pod>::portforward`
//! (WebSocket, `v4.channel.k8s.io`) and kubectl 1.35's `port-forward` (SPDY/3.1, tunnelled through a WebSocket or,
//! with `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`, over a plain SPDY upgrade). README, "Port-forward".

use collate_run_tests::needs;
use collate_run_tests::needs::installed;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_testserver::{Backend, KubeTestServer};
use serde_json::json;
use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback echo server: what the forwarded port reaches.
async fn echo() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn pods(server: &KubeTestServer, ns: &str) -> Api<Pod> {
    let config = kube::Config::new(server.url().parse().unwrap());
    Api::namespaced(kube::Client::try_from(config).unwrap(), ns)
}

#[tokio::test]
async fn kube_rs_forwards_to_the_backend_of_the_service_that_selects_the_pod() {
    let addr = echo().await;
    let server = KubeTestServer::builder()
        .backend_with_service(Backend::parse(&format!("demo/web:8080={addr}")).unwrap())
        .start();
    let api = pods(&server, "demo");
    let mut pf = api
        .portforward("web-backend-8080", &[8080])
        .await
        .expect("portforward");
    let mut stream = pf.take_stream(8080).unwrap();
    stream
        .write_all(b"ping through the api server")
        .await
        .unwrap();
    let mut buf = vec![0u8; 27];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping through the api server");
    drop(stream);
    pf.join().await.expect("clean end");

    // Two ports on one connection: one reaches the backend, the other has nothing listening and
    // reports the kubelet's error on its error channel.
    let mut pf = api
        .portforward("web-backend-8080", &[8080, 9999])
        .await
        .unwrap();
    let error = pf.take_error(9999).unwrap();
    let message = error.await.expect("an error message");
    assert!(
        message.starts_with("error forwarding port 9999 to pod web-backend-8080, uid ")
            && message.contains("failed to connect to localhost:9999"),
        "{message}"
    );
    let mut ok = pf.take_stream(8080).unwrap();
    ok.write_all(b"x").await.unwrap();
    let mut one = [0u8; 1];
    ok.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"x");
    pf.abort();
}

#[tokio::test]
async fn missing_unscheduled_and_stopped_pods_are_refused_like_the_api_server_and_kubelet() {
    let server = KubeTestServer::start();
    let api = pods(&server, "default");
    match api.portforward("nothing", &[80]).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (404, "NotFound")),
        other => panic!("{:?}", other.map(|_| ())),
    }
    server.insert(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}}));
    match api.portforward("pending", &[80]).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert!(
                s.message
                    .contains("pod pending does not have a host assigned"),
                "{s:?}"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    server.insert(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "done", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Succeeded"}}));
    let err = api.portforward("done", &[80]).await.err().expect("refused");
    assert!(format!("{err:?}").contains("500"), "{err:?}");
}

/// The bytes a test sends or expects: a pattern that a dropped, duplicated or reordered chunk breaks.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// A loopback backend with a small protocol: the line `UP DOWN\n`, then UP bytes, which it sends back followed by
/// DOWN bytes of [`pattern`] (seed 7); then it closes.
fn blocking_backend() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let (up, down) = line.trim().split_once(' ').unwrap();
                let (up, down): (usize, usize) = (up.parse().unwrap(), down.parse().unwrap());
                let mut got = vec![0u8; up];
                reader.read_exact(&mut got).unwrap();
                let mut w = conn;
                w.write_all(&got).unwrap();
                w.write_all(&pattern(down, 7)).unwrap();
            });
        }
    });
    addr
}

/// A running `kubectl port-forward TARGET :PORT` and the local port it listens on; killed when dropped.
struct KubectlForward {
    child: Child,
    local: u16,
    stderr: std::thread::JoinHandle<String>,
}

impl KubectlForward {
    fn start(server: &KubeTestServer, target: &str, port: u16, websockets: bool) -> KubectlForward {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(installed("kubectl"))
            .args([
                "port-forward",
                "--address",
                "127.0.0.1",
                "-n",
                "demo",
                target,
            ])
            .arg(format!(":{port}"))
            .env("HOME", home.path())
            .env("KUBECONFIG", server.kubeconfig_path())
            .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", websockets.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::BufReader::new(stderr).read_to_string(&mut text);
            text
        });
        // "Forwarding from 127.0.0.1:PORT -> REMOTE" (client-go `portforward.go` `getListener`).
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        std::thread::spawn(move || for _ in lines {});
        let local = first
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok());
        let Some(local) = local else {
            let _ = child.kill();
            panic!(
                "kubectl port-forward did not start: {first:?}\n{}",
                stderr.join().unwrap()
            );
        };
        KubectlForward {
            child,
            local,
            stderr,
        }
    }

    /// Sends UP bytes through the forward, asks for DOWN more, and checks every byte that comes back.
    fn exchange(&self, up: usize, down: usize) {
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.local)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let sent = pattern(up, 1);
        conn.write_all(format!("{up} {down}\n").as_bytes()).unwrap();
        conn.write_all(&sent).unwrap();
        let mut got = vec![0u8; up + down];
        conn.read_exact(&mut got).unwrap();
        assert!(got[..up] == sent[..], "the upload came back changed");
        assert!(
            got[up..] == pattern(down, 7)[..],
            "the download arrived changed"
        );
    }

    /// Stops kubectl and returns what it printed on stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.join().unwrap()
    }
}

/// The port-forward requests the server answered, as `(method, status)`.
fn forward_requests(server: &KubeTestServer) -> Vec<(String, u16)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/portforward"))
        .map(|r| (r.method, r.status))
        .collect()
}

fn kubectl_reaches_the_backend(websockets: bool) {
    let server = KubeTestServer::builder()
        .backend_with_service(
            Backend::parse(&format!("demo/web:8080={}", blocking_backend())).unwrap(),
        )
        .start();
    for target in ["svc/web", "pod/web-backend-8080"] {
        server.clear_requests();
        let forward = KubectlForward::start(&server, target, 8080, websockets);
        forward.exchange(5, 12);
        // Bigger than SPDY's initial 64 KiB window, both ways, on one connection after another.
        forward.exchange(300 * 1024, 256 * 1024);
        forward.exchange(1, 0);
        let stderr = forward.stop();
        assert!(!stderr.contains("error"), "{stderr}");
        // The WebSocket tunnel is a GET answered 101; the SPDY fallback a POST answered 101, the first try only.
        let expected = if websockets {
            ("GET", 101)
        } else {
            ("POST", 101)
        };
        assert_eq!(
            forward_requests(&server),
            vec![(expected.0.to_string(), expected.1)],
            "{target}"
        );
    }
}

#[test]
fn kubectl_port_forward_through_the_websocket_tunnel_reaches_the_backend() {
    needs!("kubectl");
    kubectl_reaches_the_backend(true);
}

#[test]
fn kubectl_port_forward_over_spdy_reaches_the_backend() {
    needs!("kubectl");
    kubectl_reaches_the_backend(false);
}

#[test]
fn kubectl_port_forward_reports_a_missing_pod_and_a_port_nothing_listens_on() {
    needs!("kubectl");
    let server = KubeTestServer::builder()
        .backend_with_service(
            Backend::parse(&format!("demo/web:8080={}", blocking_backend())).unwrap(),
        )
        .start();
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(installed("kubectl"))
        .args(["port-forward", "-n", "demo", "pod/nothing", ":80"])
        .env("HOME", home.path())
        .env("KUBECONFIG", server.kubeconfig_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("pods \"nothing\" not found"), "{stderr}");

    // The pod runs but nothing listens on 9999 in it: the kubelet's message comes on the error stream, and kubectl
    // gives up the connection.
    for websockets in [true, false] {
        let forward = KubectlForward::start(&server, "pod/web-backend-8080", 9999, websockets);
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", forward.local)).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest);
        assert!(rest.is_empty());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut forward = forward;
        while forward.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let stderr = forward.stop();
        assert!(
            stderr.contains("error forwarding port 9999 to pod web-backend-8080, uid ")
                && stderr.contains("failed to connect to localhost:9999"),
            "{stderr}"
        );
        assert!(stderr.contains("lost connection to pod"), "{stderr}");
    }
}

/// Sends one raw HTTP/1.1 request and returns the response (head and body), lowercased.
fn raw_request(server: &KubeTestServer, head: &str) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", server.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    conn.write_all(head.replace('\n', "\r\n").as_bytes())
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

#[test]
fn spdy_upgrades_are_negotiated_like_the_kubelet() {
    let server = KubeTestServer::builder()
        .backend_with_service(Backend::parse("demo/web:8080=127.0.0.1:9").unwrap())
        .start();
    let path = "/api/v1/namespaces/demo/pods/web-backend-8080/portforward";
    let plain = |protocol: &str| {
        raw_request(
            &server,
            &format!(
                "POST {path} HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: SPDY/3.1\n{protocol}Content-Length: 0\n\n"
            ),
        )
    };
    let ok = plain("X-Stream-Protocol-Version: portforward.k8s.io\n");
    assert!(ok.starts_with("http/1.1 101"), "{ok}");
    assert!(
        ok.contains("upgrade: spdy/3.1")
            && ok.contains("x-stream-protocol-version: portforward.k8s.io"),
        "{ok}"
    );
    let refused = plain("X-Stream-Protocol-Version: portforward.k8s.io.v9\n");
    assert!(refused.starts_with("http/1.1 403"), "{refused}");
    assert!(
        refused.contains("x-accepted-stream-protocol-versions: portforward.k8s.io"),
        "{refused}"
    );
    assert!(
        refused.contains("unable to negotiate protocol: client supports [portforward.k8s.io.v9]"),
        "{refused}"
    );
    let none = plain("");
    assert!(none.starts_with("http/1.1 200"), "{none}");
    // The API server's own checks come first: a pod that does not exist is a 404 Status on either transport.
    let missing = raw_request(
        &server,
        "POST /api/v1/namespaces/demo/pods/nothing/portforward HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: SPDY/3.1\nX-Stream-Protocol-Version: portforward.k8s.io\nContent-Length: 0\n\n",
    );
    assert!(
        missing.starts_with("http/1.1 404") && missing.contains(r#""reason":"notfound""#),
        "{missing}"
    );

    let tunnel = |method: &str, protocol: &str| {
        raw_request(
            &server,
            &format!(
                "{method} {path} HTTP/1.1\nHost: x\nConnection: Upgrade\nUpgrade: websocket\nSec-WebSocket-Version: 13\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Protocol: {protocol}\nContent-Length: 0\n\n"
            ),
        )
    };
    let ok = tunnel("GET", "SPDY/3.1+portforward.k8s.io");
    assert!(ok.starts_with("http/1.1 101"), "{ok}");
    assert!(
        ok.contains("sec-websocket-protocol: spdy/3.1+portforward.k8s.io"),
        "{ok}"
    );
    assert!(
        ok.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{ok}"
    );
    let refused = tunnel("GET", "SPDY/3.1+v9.portforward.k8s.io");
    assert!(refused.starts_with("http/1.1 403"), "{refused}");
    let post = tunnel("POST", "SPDY/3.1+portforward.k8s.io");
    assert!(post.starts_with("http/1.1 405"), "{post}");

    let not_upgraded = raw_request(
        &server,
        &format!("GET {path} HTTP/1.1\nHost: x\nConnection: close\n\n"),
    );
    assert!(
        not_upgraded.starts_with("http/1.1 400")
            && not_upgraded.contains("upgrade request required"),
        "{not_upgraded}"
    );
}
