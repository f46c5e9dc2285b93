//! Conformance of `pods/portforward` with the client that speaks it here: kube-rs 5's `Api::<Pod>::portforward`
//! (WebSocket, `v4.channel.k8s.io`). kubectl's SPDY port-forward is not served (README, "Port-forward").

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube_testserver::{Backend, KubeTestServer};
use serde_json::json;
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
