//! Discovery at `/api` and `/apis`: aggregated discovery (`apidiscovery.k8s.io/v2`, `v2beta1` up
//! to 1.32) with upstream's content negotiation, `ETag`/304 and 406, rendered from the same table
//! as the legacy documents (CRDs included), and `kubectl api-resources` with and without it.

use collate_run_tests::needs;
use collate_run_tests::needs::installed;
use kube_testserver::KubeTestServer;
use serde_json::{Value, json};
use std::io::{Read as _, Write as _};
use std::process::Command;

/// kube-rs's `ACCEPT_AGGREGATED_DISCOVERY_V2`: v2, then v2beta1, then the legacy documents.
const KUBE_RS: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
const V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const V2BETA1: &str = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// One answer: status, headers (names lower-case) and the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// `GET path` over a plain HTTP/1.1 connection, with these request headers.
fn get(server: &KubeTestServer, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    };
    if answer.header("transfer-encoding") == Some("chunked") {
        answer.body = dechunk(&answer.body);
    }
    answer
}

/// The data of a chunked body (`SIZE\r\nDATA\r\n`... `0\r\n\r\n`).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

fn accept(server: &KubeTestServer, path: &str, accept: &str) -> Answer {
    get(server, path, &[("Accept", accept)])
}

/// The item of group `name` in an aggregated document.
fn group<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {doc}"))
}

/// The resource `plural` of the version `version` of an aggregated group.
fn resource<'a>(group: &'a Value, version: &str, plural: &str) -> &'a Value {
    group["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["version"] == version)
        .and_then(|v| {
            v["resources"]
                .as_array()?
                .iter()
                .find(|r| r["resource"] == plural)
        })
        .unwrap_or_else(|| panic!("no {plural} in {version} of {group}"))
}

fn workflow_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "workflows.argoproj.io"},
        "spec": {"group": "argoproj.io", "scope": "Namespaced",
                 "names": {"plural": "workflows", "singular": "workflow", "kind": "Workflow", "shortNames": ["wf"]},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}, "subresources": {"status": {}}}]}
    })
}

#[test]
fn aggregated_discovery_has_the_upstream_shape_and_the_legacy_resources() {
    let server = KubeTestServer::start();
    let apis = accept(&server, "/apis", KUBE_RS);
    assert_eq!(apis.status, 200);
    assert_eq!(
        apis.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    assert_eq!(apis.header("vary"), Some("Accept"));
    assert_eq!(apis.header("cache-control"), Some("public"));
    let etag = apis.header("etag").expect("an ETag");
    assert!(
        etag.len() == 130
            && etag.starts_with('"')
            && etag.ends_with('"')
            && etag[1..129]
                .chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()),
        "{etag}"
    );
    let doc = apis.json();
    assert_eq!(doc["kind"], "APIGroupDiscoveryList");
    assert_eq!(doc["apiVersion"], "apidiscovery.k8s.io/v2");
    let apps = group(&doc, "apps");
    assert_eq!(apps["versions"][0]["freshness"], "Current");
    let deployments = resource(apps, "v1", "deployments");
    assert_eq!(
        deployments,
        &json!({
            "resource": "deployments",
            "responseKind": {"group": "", "version": "", "kind": "Deployment"},
            "scope": "Namespaced",
            "singularResource": "deployment",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["deploy"],
            "categories": ["all"],
            "subresources": [
                {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]},
                {"subresource": "status", "responseKind": {"group": "", "version": "", "kind": "Deployment"}, "verbs": ["get", "patch", "update"]},
            ],
        })
    );
    // Versions in preference order, as in the legacy group.
    let autoscaling = group(&doc, "autoscaling");
    let legacy = accept(&server, "/apis/autoscaling", "application/json").json();
    assert_eq!(
        autoscaling["versions"][0]["version"],
        legacy["preferredVersion"]["version"]
    );
    assert_eq!(
        resource(
            group(&doc, "rbac.authorization.k8s.io"),
            "v1",
            "clusterroles"
        )["scope"],
        "Cluster"
    );

    // The same resources as the legacy lists, group version by group version.
    let legacy_groups = accept(&server, "/apis", "application/json").json();
    assert_eq!(legacy_groups["kind"], "APIGroupList");
    let names = |list: &Value| -> Vec<String> {
        let mut v: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str().or(r["resource"].as_str()))
            .filter(|n| !n.contains('/'))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    for g in legacy_groups["groups"].as_array().unwrap() {
        for v in g["versions"].as_array().unwrap() {
            let gv = v["groupVersion"].as_str().unwrap();
            let list = accept(&server, &format!("/apis/{gv}"), "application/json").json();
            let item = group(&doc, g["name"].as_str().unwrap());
            let version = item["versions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["version"] == v["version"])
                .unwrap_or_else(|| panic!("{gv} missing"));
            assert_eq!(
                names(&list["resources"]),
                names(&version["resources"]),
                "{gv}"
            );
        }
    }

    // The core group at /api: one item without a name.
    let api = accept(&server, "/api", KUBE_RS);
    assert_eq!(api.status, 200);
    let core = api.json();
    assert_eq!(core["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        core["items"][0]["metadata"],
        json!({"creationTimestamp": null})
    );
    let pods = core["items"][0]["versions"][0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "pods")
        .unwrap();
    let subs: Vec<&str> = pods["subresources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subresource"].as_str().unwrap())
        .collect();
    assert_eq!(subs, ["log", "status"]);
    let legacy_core = accept(&server, "/api/v1", "application/json").json();
    assert_eq!(
        names(&legacy_core["resources"]),
        names(&core["items"][0]["versions"][0]["resources"])
    );
}

#[test]
fn negotiation_gates_versions_falls_back_to_legacy_and_refuses_with_406() {
    let server = KubeTestServer::start(); // 1.35: v2 only
    let kind = |a: &Answer| a.json()["kind"].as_str().unwrap_or_default().to_string();
    let api_version = |a: &Answer| {
        a.json()["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        kind(&accept(&server, "/apis", KUBE_RS)),
        "APIGroupDiscoveryList"
    );
    for legacy in ["application/json", "*/*", "application/yaml, */*;q=0.8"] {
        let a = accept(&server, "/apis", legacy);
        assert_eq!(
            (a.status, kind(&a)),
            (200, "APIGroupList".into()),
            "{legacy}"
        );
        assert_eq!(a.header("etag"), None);
        assert_eq!(kind(&accept(&server, "/api", legacy)), "APIVersions");
    }
    let none = get(&server, "/apis", &[]);
    assert_eq!(kind(&none), "APIGroupList");
    // v2beta1 is gone from 1.33: an Accept that allows nothing else is refused.
    let refused = accept(&server, "/apis", V2BETA1);
    assert_eq!(refused.status, 406);
    let status = refused.json();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotAcceptable");
    assert_eq!(
        status["message"],
        "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
    );
    assert_eq!(accept(&server, "/api", "text/plain").status, 406);
    // A lower q loses, whatever the order.
    let q = format!("application/json;q=0.9,{V2}");
    assert_eq!(kind(&accept(&server, "/apis", &q)), "APIGroupDiscoveryList");

    // 1.31 serves both; 1.28 only v2beta1; 1.26 none (the gate was alpha, off).
    let s131 = KubeTestServer::builder().version("1.31").start();
    assert_eq!(
        api_version(&accept(&s131, "/apis", V2BETA1)),
        "apidiscovery.k8s.io/v2beta1"
    );
    assert_eq!(
        api_version(&accept(&s131, "/apis", KUBE_RS)),
        "apidiscovery.k8s.io/v2"
    );
    let s128 = KubeTestServer::builder().version("1.28.4").start();
    let beta = accept(&s128, "/apis", KUBE_RS);
    assert_eq!(api_version(&beta), "apidiscovery.k8s.io/v2beta1");
    assert_eq!(
        beta.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList")
    );
    assert_eq!(accept(&s128, "/apis", V2).status, 406);
    let s126 = KubeTestServer::builder().version("1.26").start();
    assert_eq!(kind(&accept(&s126, "/apis", KUBE_RS)), "APIGroupList");
    assert_eq!(accept(&s126, "/apis", V2).status, 406);

    // Switched off: legacy documents only, whatever the version.
    let legacy = KubeTestServer::builder().legacy_discovery_only().start();
    assert_eq!(kind(&accept(&legacy, "/apis", KUBE_RS)), "APIGroupList");
    assert_eq!(kind(&accept(&legacy, "/api", KUBE_RS)), "APIVersions");
    assert_eq!(accept(&legacy, "/apis", V2).status, 406);

    // The request log keeps the Accept header sent.
    let log = server.requests();
    assert!(
        log.iter()
            .any(|r| r.uri == "/apis" && r.accept == KUBE_RS && r.status == 200)
    );
    assert!(log.iter().any(|r| r.accept == V2BETA1 && r.status == 406));
    assert!(log.iter().any(|r| r.uri == "/apis" && r.accept.is_empty()));
}

#[test]
fn etag_answers_304_until_a_crd_changes_the_document() {
    let server = KubeTestServer::start();
    let first = accept(&server, "/apis", V2);
    let etag = first.header("etag").unwrap().to_string();
    let again = get(
        &server,
        "/apis",
        &[("Accept", V2), ("If-None-Match", &etag)],
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.header("vary"), Some("Accept"));
    // Unquoted or stale: the whole document.
    let unquoted = etag.trim_matches('"').to_string();
    assert_eq!(
        get(
            &server,
            "/apis",
            &[("Accept", V2), ("If-None-Match", &unquoted)]
        )
        .status,
        200
    );
    // /api has its own document and tag.
    let core = accept(&server, "/api", V2);
    assert_ne!(core.header("etag"), Some(etag.as_str()));

    server.insert(workflow_crd());
    let changed = get(
        &server,
        "/apis",
        &[("Accept", V2), ("If-None-Match", &etag)],
    );
    assert_eq!(changed.status, 200);
    assert_ne!(changed.header("etag"), Some(etag.as_str()));
    let doc = changed.json();
    let argo = group(&doc, "argoproj.io");
    assert_eq!(argo["versions"][0]["version"], "v1alpha1");
    assert_eq!(
        resource(argo, "v1alpha1", "workflows"),
        &json!({
            "resource": "workflows",
            "responseKind": {"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"},
            "scope": "Namespaced",
            "singularResource": "workflow",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["wf"],
            "subresources": [
                {"subresource": "status", "responseKind": {"group": "argoproj.io", "version": "v1alpha1", "kind": "Workflow"}, "verbs": ["get", "patch", "update"]},
            ],
        })
    );
    // The core document did not change.
    let core_again = get(
        &server,
        "/api",
        &[
            ("Accept", V2),
            ("If-None-Match", core.header("etag").unwrap()),
        ],
    );
    assert_eq!(core_again.status, 304);
}

#[tokio::test]
async fn kube_rs_discovers_through_aggregated_discovery() {
    let server = KubeTestServer::start();
    server.insert(workflow_crd());
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    server.clear_requests();
    let d = kube::discovery::Discovery::new(client)
        .run_aggregated()
        .await
        .unwrap();
    let (ar, caps) = d
        .get("argoproj.io")
        .and_then(|g| g.recommended_kind("Workflow"))
        .expect("Workflow discovered");
    assert_eq!(
        (ar.plural.as_str(), ar.version.as_str()),
        ("workflows", "v1alpha1")
    );
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    assert!(d.get("").and_then(|g| g.recommended_kind("Pod")).is_some());
    let uris: Vec<String> = server.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, ["/apis", "/api"]);
}

/// `kubectl api-resources` against a server with a CRD: with aggregated discovery kubectl reads
/// `/api` and `/apis` only; without it, every group version too. Same resources either way.
#[test]
fn kubectl_api_resources_with_and_without_aggregated_discovery() {
    needs!("kubectl");
    let mut listed = Vec::new();
    for legacy_only in [false, true] {
        let mut builder = KubeTestServer::builder();
        if legacy_only {
            builder = builder.legacy_discovery_only();
        }
        let server = builder.start();
        server.insert(workflow_crd());
        let home = tempfile::tempdir().unwrap();
        let out = Command::new(installed("kubectl"))
            .args(["api-resources", "-o", "name"])
            .env("HOME", home.path())
            .env("KUBECONFIG", server.kubeconfig_path())
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in [
            "pods",
            "deployments.apps",
            "workflows.argoproj.io",
            "leases.coordination.k8s.io",
        ] {
            assert!(
                stdout.lines().any(|l| l == name),
                "{name} missing:\n{stdout}"
            );
        }
        let log = server.requests();
        // kubectl adds `?timeout=32s`.
        let path = |uri: &str| uri.split('?').next().unwrap_or_default().to_string();
        let discovery: Vec<_> = log.iter().filter(|r| r.method == "GET").collect();
        let per_version = discovery
            .iter()
            .filter(|r| path(&r.uri).starts_with("/apis/") || path(&r.uri).starts_with("/api/"))
            .count();
        assert!(
            discovery.iter().any(|r| path(&r.uri) == "/apis"
                && r.accept
                    .contains("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")),
            "{discovery:?}"
        );
        if legacy_only {
            assert!(per_version >= 10, "{discovery:?}");
        } else {
            assert_eq!(per_version, 0, "{discovery:?}");
            assert!(discovery.iter().all(|r| r.status == 200), "{discovery:?}");
        }
        let mut names: Vec<String> = stdout.lines().map(str::to_string).collect();
        names.sort();
        listed.push(names);
    }
    assert_eq!(listed[0], listed[1]);
}
