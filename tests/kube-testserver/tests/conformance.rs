//! Conformance of kube-testserver with the real clients: kubectl 1.35, helm 4 and helm 3 (from `.tools/bin`,
//! installed by `scripts/test-deps.sh`) and kube-rs. The kubectl/helm tests declare their tools with the harness's
//! `needs!` gate: a missing tool fails the test under `CI` and skips it (one visible line) elsewhere.

use collate_run_tests::needs;
use collate_run_tests::needs::installed;
use collate_run_tests::tls_server::TlsServer;
use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube_testserver::KubeTestServer;
use serde_json::{Value, json};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A server plus a private HOME/KUBECONFIG/helm directories, so tests run in parallel.
struct Env {
    server: KubeTestServer,
    home: tempfile::TempDir,
}

impl Env {
    /// The test declares the tools it runs first: `needs!("kubectl")`.
    fn new() -> Env {
        Env::with(KubeTestServer::start())
    }

    fn with(server: KubeTestServer) -> Env {
        let home = tempfile::tempdir().expect("temp home");
        Env { server, home }
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let h = self.home.path();
        let out = Command::new(installed(program))
            .args(args)
            .env("HOME", h)
            .env("KUBECONFIG", self.server.kubeconfig_path())
            .env("HELM_CACHE_HOME", h.join("cache"))
            .env("HELM_CONFIG_HOME", h.join("config"))
            .env("HELM_DATA_HOME", h.join("data"))
            .current_dir(collate_run_tests::run::root())
            .output()
            .expect("run tool");
        eprintln!(
            "$ {program} {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs, asserts failure, returns stderr.
    fn fails(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            !out.status.success(),
            "`{program} {}` unexpectedly succeeded",
            args.join(" ")
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok("kubectl", &all)).expect("kubectl json")
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p.to_string_lossy().into_owned()
    }
}

#[test]
fn kubectl_creates_gets_applies_and_deletes() {
    needs!("kubectl");
    let env = Env::new();
    env.ok("kubectl", &["create", "namespace", "demo"]);
    env.ok(
        "kubectl",
        &[
            "create",
            "secret",
            "generic",
            "db",
            "-n",
            "demo",
            "--from-literal=password=s3cret",
        ],
    );
    env.ok(
        "kubectl",
        &[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            "demo",
            "--docker-server=registry.example.com",
            "--docker-username=u",
            "--docker-password=p",
        ],
    );
    env.ok(
        "kubectl",
        &["create", "serviceaccount", "bot", "-n", "demo"],
    );
    env.ok(
        "kubectl",
        &[
            "create",
            "role",
            "reader",
            "-n",
            "demo",
            "--verb=get,list",
            "--resource=pods,secrets",
        ],
    );
    env.ok(
        "kubectl",
        &[
            "create",
            "rolebinding",
            "reader",
            "-n",
            "demo",
            "--role=reader",
            "--serviceaccount=demo:bot",
        ],
    );

    let db = env.kubectl_json(&["get", "secret", "db", "-n", "demo"]);
    assert_eq!(db["data"]["password"], "czNjcmV0");
    assert_eq!(db["type"], "Opaque");
    let reg = env.kubectl_json(&["get", "secret", "regcred", "-n", "demo"]);
    assert_eq!(reg["type"], "kubernetes.io/dockerconfigjson");
    assert!(reg["data"][".dockerconfigjson"].is_string());
    let rb = env.kubectl_json(&["get", "rolebinding", "reader", "-n", "demo"]);
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
    );
    assert_eq!(rb["subjects"][0]["name"], "bot");
    let role = env.kubectl_json(&["get", "role", "reader", "-n", "demo"]);
    assert_eq!(role["rules"][0]["verbs"], json!(["get", "list"]));

    // Already exists, not found.
    assert!(
        env.fails(
            "kubectl",
            &["create", "serviceaccount", "bot", "-n", "demo"]
        )
        .contains("already exists")
    );
    assert!(
        env.fails("kubectl", &["get", "secret", "nope", "-n", "demo"])
            .contains("NotFound")
    );
    assert!(
        env.fails(
            "kubectl",
            &["create", "serviceaccount", "bot", "-n", "missing"]
        )
        .contains("not found")
    );

    // Client-side apply, twice (the second one is a strategic merge patch), then server-side apply.
    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: run-lock\n  namespace: demo\nspec:\n  holderIdentity: alice\n  leaseDurationSeconds: 30\n";
    let lease_file = env.write("lease.yaml", lease);
    assert!(
        env.ok("kubectl", &["apply", "-f", &lease_file])
            .contains("created")
    );
    env.write("lease.yaml", &lease.replace("alice", "bob"));
    assert!(
        env.ok("kubectl", &["apply", "-f", &lease_file])
            .contains("configured")
    );
    assert_eq!(
        env.kubectl_json(&["get", "lease", "run-lock", "-n", "demo"])["spec"]["holderIdentity"],
        "bob"
    );
    let cm = env.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\ndata:\n  a: \"1\"\n  b: \"2\"\n");
    env.ok("kubectl", &["apply", "--server-side", "-f", &cm]);
    env.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: demo\ndata:\n  a: \"1\"\n");
    env.ok("kubectl", &["apply", "--server-side", "-f", &cm]);
    assert_eq!(
        env.kubectl_json(&["get", "configmap", "settings", "-n", "demo"])["data"],
        json!({"a": "1"})
    );

    // Label selectors.
    env.ok(
        "kubectl",
        &["label", "secret", "db", "-n", "demo", "tier=data"],
    );
    let listed = env.kubectl_json(&["get", "secrets", "-n", "demo", "-l", "tier in (data,web)"]);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let typed = env.kubectl_json(&[
        "get",
        "secrets",
        "-n",
        "demo",
        "--field-selector",
        "type=kubernetes.io/dockerconfigjson",
    ]);
    assert_eq!(typed["items"][0]["metadata"]["name"], "regcred");

    // Deleting the namespace deletes what is in it.
    env.ok("kubectl", &["delete", "namespace", "demo"]);
    assert!(env.server.get("v1", "Secret", "demo", "db").is_none());
    assert!(
        env.server
            .get("coordination.k8s.io/v1", "Lease", "demo", "run-lock")
            .is_none()
    );
    assert!(
        env.fails("kubectl", &["get", "namespace", "demo"])
            .contains("NotFound")
    );
}

#[test]
fn kubectl_server_dry_run_saves_nothing() {
    needs!("kubectl");
    let env = Env::new();
    env.server.clear_requests();
    env.ok(
        "kubectl",
        &["create", "namespace", "plan", "--dry-run=server"],
    );
    env.ok(
        "kubectl",
        &[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            "default",
            "--from-literal=a=b",
            "--dry-run=server",
        ],
    );
    let cm = env.write("cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: default\ndata:\n  a: \"1\"\n");
    env.ok("kubectl", &["apply", "--dry-run=server", "-f", &cm]);
    env.ok(
        "kubectl",
        &["apply", "--server-side", "--dry-run=server", "-f", &cm],
    );
    assert!(env.server.get("v1", "Namespace", "", "plan").is_none());
    assert!(env.server.get("v1", "Secret", "default", "s").is_none());
    assert!(env.server.get("v1", "ConfigMap", "default", "c").is_none());
    assert_eq!(
        env.server.mutating_requests(),
        0,
        "{:#?}",
        env.server.requests()
    );
    // A dry-run delete leaves the object in place.
    env.ok("kubectl", &["create", "configmap", "keep", "-n", "default"]);
    env.ok(
        "kubectl",
        &[
            "delete",
            "configmap",
            "keep",
            "-n",
            "default",
            "--dry-run=server",
        ],
    );
    assert!(
        env.server
            .get("v1", "ConfigMap", "default", "keep")
            .is_some()
    );
}

#[test]
fn kubectl_stale_update_conflicts() {
    needs!("kubectl");
    let env = Env::new();
    env.ok(
        "kubectl",
        &[
            "create",
            "configmap",
            "c",
            "-n",
            "default",
            "--from-literal=a=1",
        ],
    );
    let stale = env.ok(
        "kubectl",
        &["get", "configmap", "c", "-n", "default", "-o", "json"],
    );
    env.ok(
        "kubectl",
        &["label", "configmap", "c", "-n", "default", "x=y"],
    );
    let file = env.write("stale.json", &stale);
    let err = env.fails("kubectl", &["replace", "-f", &file]);
    assert!(err.contains("the object has been modified"), "{err}");
}

/// helm upgrade --install with --wait, upgrade to revision 2, rollback, history, uninstall.
fn helm_lifecycle(helm: &str) {
    needs!(helm, "kubectl");
    let env = Env::new();
    let chart = "tests/fixtures/charts/conformance";
    env.ok("kubectl", &["create", "namespace", "apps"]);
    let started = Instant::now();
    env.ok(
        helm,
        &[
            "upgrade",
            "--install",
            "web",
            chart,
            "-n",
            "apps",
            "--wait",
            "--timeout",
            "60s",
        ],
    );
    let dep = env
        .server
        .get("apps/v1", "Deployment", "apps", "web-web")
        .expect("deployment");
    assert_eq!(dep["status"]["availableReplicas"], 1);
    assert!(
        env.server.get("v1", "Service", "apps", "web-web").unwrap()["spec"]["clusterIP"]
            .is_string()
    );
    assert_eq!(
        env.server
            .get("v1", "Secret", "apps", "web-config")
            .unwrap()["data"]["greeting"],
        "aGVsbG8="
    );
    assert!(
        env.server
            .get("v1", "Secret", "apps", "sh.helm.release.v1.web.v1")
            .is_some()
    );

    let out = env.ok(
        helm,
        &[
            "upgrade",
            "--install",
            "web",
            chart,
            "-n",
            "apps",
            "--wait",
            "--timeout",
            "60s",
            "--set",
            "greeting=bonjour,image=registry.example.com/web:2.0.0",
        ],
    );
    assert!(out.contains("REVISION: 2"), "{out}");
    let dep = env
        .server
        .get("apps/v1", "Deployment", "apps", "web-web")
        .unwrap();
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:2.0.0"
    );
    assert_eq!(dep["metadata"]["generation"], 2);

    env.ok(helm, &["rollback", "web", "1", "-n", "apps", "--wait"]);
    let dep = env
        .server
        .get("apps/v1", "Deployment", "apps", "web-web")
        .unwrap();
    assert_eq!(
        dep["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/web:1.0.0"
    );
    let history: Value =
        serde_json::from_str(&env.ok(helm, &["history", "web", "-n", "apps", "-o", "json"]))
            .unwrap();
    let statuses: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["superseded", "superseded", "deployed"]);
    let values: Value =
        serde_json::from_str(&env.ok(helm, &["get", "values", "web", "-n", "apps", "-o", "json"]))
            .unwrap();
    assert!(values.as_object().is_none_or(|v| v.is_empty()), "{values}");

    env.ok(helm, &["uninstall", "web", "-n", "apps", "--wait"]);
    assert!(
        env.server
            .get("apps/v1", "Deployment", "apps", "web-web")
            .is_none()
    );
    assert!(
        env.server
            .get("v1", "Secret", "apps", "sh.helm.release.v1.web.v1")
            .is_none()
    );
    assert!(
        env.server
            .get("apps/v1", "ReplicaSet", "apps", "web-web")
            .is_none()
    );
    eprintln!("{helm} lifecycle took {:?}", started.elapsed());
}

#[test]
fn helm4_lifecycle() {
    helm_lifecycle("helm");
}

#[test]
fn helm3_lifecycle() {
    helm_lifecycle("helm3");
}

fn client(server: &KubeTestServer) -> kube::Client {
    let config = kube::Config::new(server.url().parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

#[tokio::test]
async fn kube_rs_get_opt_and_kubeconfig() {
    let server = KubeTestServer::start();
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    assert!(secrets.get_opt("missing").await.unwrap().is_none());
    let err = secrets.get("missing").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "35")
    );
    assert_eq!(server.mutating_requests(), 0);

    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}}))
            .unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.data.unwrap()["k"].0, b"v");
    let err = secrets
        .create(&PostParams::default(), &s)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
    assert_eq!(server.mutating_requests(), 2);
}

#[tokio::test]
async fn kube_rs_watch_sees_updates() {
    let server = KubeTestServer::start();
    let client = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "w"}, "data": {"a": "1"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    let mut stream = Box::pin(
        cms.watch(
            &WatchParams::default().fields("metadata.name=w").timeout(10),
            &rv,
        )
        .await
        .unwrap(),
    );
    let patch = json!({"data": {"a": "2"}});
    cms.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("event in time")
            .expect("event");
        match event.unwrap() {
            WatchEvent::Modified(cm) => break assert_eq!(cm.data.unwrap()["a"], "2"),
            WatchEvent::Bookmark(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_side_apply_ownership() {
    let server = KubeTestServer::start();
    let cms: Api<ConfigMap> = Api::namespaced(client(&server), "default");
    let apply = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});
    let pp = PatchParams::apply("collate-run");
    cms.patch(
        "ssa",
        &pp,
        &Patch::Apply(apply(json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    let after = cms
        .patch("ssa", &pp, &Patch::Apply(apply(json!({"a": "1"}))))
        .await
        .unwrap();
    assert_eq!(
        after.data.unwrap().len(),
        1,
        "removing a field from the applied config removes it"
    );

    // Another manager setting a different value conflicts, unless forced.
    let other = PatchParams::apply("someone-else");
    let err = cms
        .patch("ssa", &other, &Patch::Apply(apply(json!({"a": "9"}))))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    let forced = cms
        .patch(
            "ssa",
            &other.clone().force(),
            &Patch::Apply(apply(json!({"a": "9"}))),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["a"], "9");

    // Dry-run apply returns the result and saves nothing.
    let before = server.mutating_requests();
    let dry = cms
        .patch(
            "ssa",
            &PatchParams::apply("collate-run").dry_run(),
            &Patch::Apply(apply(json!({"a": "9", "c": "3"}))),
        )
        .await
        .unwrap();
    assert_eq!(dry.data.unwrap()["c"], "3");
    let saved = cms.get("ssa").await.unwrap().data.unwrap();
    assert!(!saved.contains_key("c"));
    assert_eq!(server.mutating_requests(), before);

    // Stale resourceVersion on replace: 409 Conflict.
    let mut stale = cms.get("ssa").await.unwrap();
    cms.patch(
        "ssa",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"z": "1"}})),
    )
    .await
    .unwrap();
    stale.data.as_mut().unwrap().insert("y".into(), "2".into());
    let err = cms
        .replace("ssa", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    // generateName, and a dry-run delete (dryRun in the DeleteOptions body) that keeps the object.
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).unwrap();
    let generated = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let name = generated.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let before = server.mutating_requests();
    cms.delete(&name, &DeleteParams::default().dry_run())
        .await
        .unwrap();
    assert!(cms.get_opt(&name).await.unwrap().is_some());
    assert_eq!(server.mutating_requests(), before);

    // Apply creates missing objects, also cluster-scoped ones; leases work.
    let leases: Api<Lease> = Api::namespaced(client(&server), "default");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "lock"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}});
    let l = leases
        .patch("lock", &pp, &Patch::Apply(lease))
        .await
        .unwrap();
    assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("me"));
    leases
        .delete("lock", &DeleteParams::default())
        .await
        .unwrap();
    assert!(leases.get_opt("lock").await.unwrap().is_none());
}

#[tokio::test]
async fn crd_then_custom_resource() {
    let server = KubeTestServer::start();
    let client = client(&server);
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "workflows");
    let workflows: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let wf: DynamicObject = serde_json::from_value(json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "hello"}, "spec": {"entrypoint": "main"}})).unwrap();
    let err = workflows
        .create(&PostParams::default(), &wf)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );

    let crd_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
        "customresourcedefinitions",
    );
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_ar);
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "workflows.argoproj.io"},
        "spec": {"group": "argoproj.io", "scope": "Namespaced",
                 "names": {"plural": "workflows", "singular": "workflow", "kind": "Workflow", "shortNames": ["wf"]},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}, "subresources": {"status": {}}}]}
    });
    crds.patch(
        "workflows.argoproj.io",
        &PatchParams::apply("collate-run"),
        &Patch::Apply(crd),
    )
    .await
    .unwrap();
    let discovered = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .unwrap();
    assert!(discovered.groups().any(|g| g.name() == "argoproj.io"));
    let created = workflows.create(&PostParams::default(), &wf).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        workflows
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Deleting the CRD removes its resources and the type.
    crds.delete("workflows.argoproj.io", &DeleteParams::default())
        .await
        .unwrap();
    let err = workflows.get("hello").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn service_account_token_secret_is_filled() {
    let server = KubeTestServer::start();
    let client = client(&server);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client, "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "argo"}})).unwrap(),
    )
    .await
    .unwrap();
    let token: Secret = serde_json::from_value(json!({"metadata": {"name": "argo-token", "annotations": {"kubernetes.io/service-account.name": "argo"}}, "type": "kubernetes.io/service-account-token"})).unwrap();
    secrets
        .create(&PostParams::default(), &token)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = secrets.get("argo-token").await.unwrap();
        if let Some(data) = s.data.filter(|d| d.contains_key("token")) {
            assert!(data.contains_key("ca.crt"));
            assert_eq!(data["namespace"].0, b"default");
            break;
        }
        assert!(Instant::now() < deadline, "token never filled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn nodes_version_and_starts_fast() {
    let started = Instant::now();
    let server = KubeTestServer::builder().version("1.31").start();
    assert!(started.elapsed() < Duration::from_secs(1));
    server.add_node("node-1", "4", "16Gi", "100Gi");
    let node = server.get("v1", "Node", "", "node-1").unwrap();
    assert_eq!(node["status"]["allocatable"]["memory"], "16Gi");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = client(&server);
        assert_eq!(client.apiserver_version().await.unwrap().minor, "31");
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
        assert_eq!(
            nodes.list(&Default::default()).await.unwrap().items.len(),
            1
        );
    });
    assert_eq!(server.mutating_requests(), 0);
}

/// Like the real server, an applied configuration is validated after the merge with the live
/// object: a partial config (only a pod-template annotation) is fine for an existing Deployment,
/// while the same config cannot create one.
#[tokio::test]
async fn partial_apply_is_validated_after_the_merge() {
    use k8s_openapi::api::apps::v1::Deployment;
    let server = KubeTestServer::start();
    let deployments: Api<Deployment> = Api::namespaced(client(&server), "default");
    let pp = PatchParams::apply("collate-run");
    let partial = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"metadata": {"annotations": {"restarted": "1"}}}}});
    let err = deployments
        .patch("web", &pp, &Patch::Apply(partial.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422),
        "{err:?}"
    );
    let full = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}});
    deployments
        .patch("web", &PatchParams::apply("helm"), &Patch::Apply(full))
        .await
        .unwrap();
    let patched = deployments
        .patch("web", &pp, &Patch::Apply(partial))
        .await
        .unwrap();
    let template = patched.spec.unwrap().template;
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()["restarted"],
        "1"
    );
    assert_eq!(
        template.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx")
    );
}

/// HTTPS with the fixture chain and bearer-token authentication (`Builder::tls`, `bearer_token`).
fn tls_server(tokens: &[&str]) -> KubeTestServer {
    let (chain, key) = TlsServer::chain_files();
    let mut b = KubeTestServer::builder().tls(&chain, key, TlsServer::root_ca_file());
    for t in tokens {
        b = b.bearer_token(t);
    }
    b.start()
}

#[tokio::test]
async fn kube_rs_over_tls_with_a_bearer_token_and_401_without() {
    let server = tls_server(&["operator-token", "pod-token"]);
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    // The kubeconfig carries the CA and the first token: kube-rs verifies the chain and gets in.
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .unwrap();
    let client = kube::Client::try_from(config.clone()).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, "default");
    assert!(secrets.get_opt("missing").await.unwrap().is_none());

    // The second token is accepted too; a wrong or missing one gets upstream's 401 Status.
    for (token, ok) in [
        (Some("pod-token"), true),
        (Some("wrong"), false),
        (None, false),
    ] {
        let mut c = config.clone();
        c.auth_info.token = token.map(|t| t.to_string().into());
        let secrets: Api<Secret> = Api::namespaced(kube::Client::try_from(c).unwrap(), "default");
        match secrets.get_opt("missing").await {
            Ok(found) => assert!(ok && found.is_none(), "token {token:?} got in"),
            Err(kube::Error::Api(s)) => {
                assert!(!ok, "token {token:?} refused: {s:?}");
                assert_eq!(
                    (s.code, s.reason.as_str(), s.message.as_str()),
                    (401, "Unauthorized", "Unauthorized")
                );
            }
            Err(e) => panic!("token {token:?}: {e:?}"),
        }
    }
    // A client that does not trust the CA never completes the handshake.
    let mut untrusted = config.clone();
    untrusted.root_cert = None;
    untrusted.root_cert_file = None;
    let secrets: Api<Secret> =
        Api::namespaced(kube::Client::try_from(untrusted).unwrap(), "default");
    assert!(!matches!(
        secrets.get_opt("x").await,
        Ok(_) | Err(kube::Error::Api(_))
    ));
}

#[test]
fn kubectl_over_tls_with_a_bearer_token_and_401_without() {
    needs!("kubectl");
    let env = Env::with(tls_server(&["operator-token"]));
    env.ok("kubectl", &["get", "namespaces"]);
    let err = env.fails("kubectl", &["get", "namespaces", "--token", "wrong"]);
    assert!(err.contains("Unauthorized"), "{err}");
    // The raw answer: 401 and the Status body, no WWW-Authenticate.
    let raw = env.fails(
        "kubectl",
        &["get", "--raw", "/version", "--token", "wrong", "-v=8"],
    );
    assert!(
        raw.contains("401 Unauthorized") || raw.contains("Response Status: 401"),
        "{raw}"
    );
    assert!(raw.contains(r#""reason": "Unauthorized""#), "{raw}");
    assert!(
        !raw.contains("details") && !raw.contains("Www-Authenticate"),
        "{raw}"
    );
}

/// `Builder::latency` delays every request (requests sent together wait together) and
/// `peak_in_flight` counts the most handled at once: what a client's concurrency test reads.
#[tokio::test]
async fn latency_delays_each_request_and_the_peak_in_flight_is_counted() {
    let server = KubeTestServer::builder()
        .latency(Duration::from_millis(100))
        .start();
    let secrets: Api<Secret> = Api::namespaced(client(&server), "default");
    let started = Instant::now();
    assert!(secrets.get_opt("a").await.unwrap().is_none());
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(server.peak_in_flight(), 1);
    server.clear_requests();
    let started = Instant::now();
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    let gets = names.iter().map(|n| secrets.get_opt(n));
    let found = futures::future::join_all(gets).await;
    assert!(found.iter().all(|f| matches!(f, Ok(None))), "{found:?}");
    let took = started.elapsed();
    assert!(
        (Duration::from_millis(100)..Duration::from_millis(500)).contains(&took),
        "8 gets side by side took {took:?}"
    );
    assert_eq!(server.peak_in_flight(), 8);
    assert_eq!(server.requests().len(), 8);
}
