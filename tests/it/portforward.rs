//! `svc://NAMESPACE/NAME:PORT[/path]` in `http::*`: reached through a port-forward over the Kubernetes API test
//! server (`pods/portforward`, WebSocket `v4.channel.k8s.io`) to a loopback backend behind the Service.

use std::time::{Duration, Instant};

use collate_run_tests::Run;
use collate_run_tests::json_server::JsonServer;
use collate_run_tests::kube::Cluster;
use kube_testserver::Backend;
use serde_json::json;

fn backend(c: &Cluster, spec: &str, with_service: bool) {
    c.server
        .add_backend(Backend::parse(spec).expect("backend spec"), with_service);
}

fn portforwards(c: &Cluster) -> Vec<String> {
    c.server
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/portforward"))
        .map(|r| format!("{} {}", r.status, r.uri))
        .collect()
}

#[test]
fn http_get_reaches_a_backend_behind_a_service_through_the_tunnel() {
    let c = Cluster::start();
    let web = JsonServer::start();
    web.route("/hello", json!({"greeting": "hello through the tunnel"}));
    backend(&c, &format!("demo/web:8080={}", &web.url()[7..]), true);
    let out = Run::script(
        r#"
        let r = http::get("svc://demo/web:8080/hello", #{ fail: true });
        print(`1: ${r.status} ${r.body.greeting}`);
        let r = http::get("svc://demo/web:8080/hello");
        print(`2: ${r.status}`);
        let r = http::get("svc://demo/web:8080/missing");
        print(`3: ${r.status}`);
        "#,
    )
    .envs(c.env())
    .succeeds();
    out.stdout_contains("1: 200 hello through the tunnel")
        .stdout_contains("2: 200")
        .stdout_contains("3: 404");
    assert_eq!(web.seen().len(), 3, "{:?}", web.seen());
    let pf = portforwards(&c);
    assert!(!pf.is_empty(), "no port-forward request");
    assert!(
        pf.iter().all(
            |r| r.starts_with("101 /api/v1/namespaces/demo/pods/web-backend-8080/portforward?")
        ),
        "{pf:?}"
    );
    // Reading through a tunnel changes nothing.
    assert_eq!(c.server.mutating_requests(), 0);
}

#[test]
fn plan_mode_reads_through_the_tunnel() {
    let c = Cluster::start();
    let web = JsonServer::start();
    web.route("/api/v1/system/version", json!({"version": "1.12.3"}));
    backend(
        &c,
        &format!("collate/openmetadata:8585={}", &web.url()[7..]),
        true,
    );
    Run::script(r#"print(`version ${http::get("svc://collate/openmetadata:8585/api/v1/system/version").body.version}`);"#)
        .envs(c.env())
        .plan()
        .succeeds()
        .stdout_contains("version 1.12.3");
    assert_eq!(c.server.mutating_requests(), 0);
}

#[test]
fn a_service_without_a_ready_pod_fails_at_once_naming_the_service() {
    let c = Cluster::start();
    let started = Instant::now();
    let out = Run::script(
        r#"
        k8s::ensure_namespace("demo");
        k8s::apply(#{ apiVersion: "v1", kind: "Service",
            metadata: #{ name: "web", namespace: "demo" },
            spec: #{ selector: #{ app: "web" }, ports: [#{ port: 80, targetPort: 8080 }] } });
        http::get("svc://demo/web:80/");
        "#,
    )
    .envs(c.env())
    .run();
    assert_ne!(out.code, 0, "{out:?}");
    out.stderr_contains("service `demo/web` (for `svc://demo/web:80`) has no ready pod")
        .stderr_contains("0 pod(s) match `app=web`")
        .stderr_contains("kubectl -n demo get pods -l app=web")
        .stderr_contains("main.rhai:6:15");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    let out = Run::script(r#"http::get("svc://demo/nothing:80/");"#)
        .envs(c.env())
        .run();
    assert_ne!(out.code, 0, "{out:?}");
    out.stderr_contains("service `demo/nothing` (for `svc://demo/nothing:80`) not found");
    let out = Run::script(r#"http::get("svc://demo/web:81/");"#)
        .envs(c.env())
        .run();
    out.stderr_contains("service `demo/web` has no port 81 (it has: 80)");
    Run::script(r#"http::get("svc://web:80/");"#)
        .envs(c.env())
        .run()
        .stderr_contains("expected `svc://NAMESPACE/NAME:PORT[/path]`");
}

#[test]
fn a_pod_without_a_listening_port_fails_with_the_kubelet_error_naming_pod_and_service() {
    let c = Cluster::start();
    // A Service whose targetPort the backend's pod does not serve: the forward opens, then the
    // kubelet reports the refused connection on the error channel.
    let web = JsonServer::start();
    backend(&c, &format!("demo/web:8080={}", &web.url()[7..]), true);
    let out = Run::script(
        r#"
        k8s::apply(#{ apiVersion: "v1", kind: "Service",
            metadata: #{ name: "other", namespace: "demo" },
            spec: #{ selector: #{ "kube-testserver.io/backend": "web" }, ports: [#{ port: 9999 }] } });
        http::get("svc://demo/other:9999/", #{ timeout: 10 });
        "#,
    )
    .envs(c.env())
    .run();
    assert_ne!(out.code, 0, "{out:?}");
    out.stderr_contains(
        "port-forward to pod `demo/web-backend-8080` (port 9999) of service `demo/other` failed",
    )
    .stderr_contains("error forwarding port 9999 to pod web-backend-8080")
    .stderr_contains("svc://demo/other:9999/");
}

#[test]
fn a_pod_that_goes_away_is_replaced_by_the_next_ready_pod_once() {
    let c = Cluster::start();
    let web = JsonServer::start();
    web.route("/hello", json!({"n": 1}));
    backend(&c, &format!("demo/web:8080={}", &web.url()[7..]), true);
    Run::script(
        r#"
        print(`before: ${http::get("svc://demo/web:8080/hello", #{ fail: true }).status}`);
        k8s::delete("Pod", "demo", "web-backend-8080");
        k8s::apply(#{ apiVersion: "v1", kind: "Pod",
            metadata: #{ name: "web-2", namespace: "demo",
                labels: #{ "app.kubernetes.io/name": "web", "kube-testserver.io/backend": "web" } },
            spec: #{ nodeName: "node-1", containers: [#{ name: "web", image: "web",
                ports: [#{ containerPort: 8080 }] }] } });
        k8s::wait("Pod", "demo", "web-2", "Ready", 10);
        print(`after: ${http::get("svc://demo/web:8080/hello", #{ fail: true }).status}`);
        "#,
    )
    .envs(c.env())
    .succeeds()
    .stdout_contains("before: 200")
    .stdout_contains("after: 200");
    let pf = portforwards(&c);
    assert!(
        pf.iter()
            .any(|r| r.starts_with("404 ") && r.contains("/pods/web-backend-8080/")),
        "the old pod was not tried first: {pf:?}"
    );
    assert!(
        pf.iter()
            .any(|r| r.starts_with("101 ") && r.contains("/pods/web-2/")),
        "the new pod was not reached: {pf:?}"
    );
}

#[test]
fn poll_waits_for_a_service_whose_pod_is_not_ready_yet() {
    let c = Cluster::start();
    let web = JsonServer::start();
    web.route("/health", json!({"version": "1.12.3"}));
    c.server
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}));
    c.server.insert(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "demo"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}));
    let run = Run::script(
        r#"
        let r = http::poll("svc://demo/web:80/health", #{ interval: 1, timeout: 20, ready: |r| r.status == 200 });
        print(`healthy ${r.body.version}`);
        "#,
    )
    .envs(c.env());
    let waiting = std::thread::spawn(move || run.run());
    std::thread::sleep(Duration::from_millis(1500));
    // The workload comes up: a ready pod with the Service's selector and its named port.
    backend(&c, &format!("demo/web:80={}", &web.url()[7..]), false);
    let out = waiting.join().unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout_contains("healthy 1.12.3");
}
