//! The `k8s` namespace against the Kubernetes API test server: plans, converge, idempotence,
//! secrets never shown, server-side apply removing fields, discovery, waits and the run lock.

use collate_run_tests::Run;
use collate_run_tests::kube::{CONTEXT_NAME, Cluster};
use serde_json::Value;

const CANARY: &str = "canary-k8s-7f3a9c";

fn run(c: &Cluster, script: &str) -> Run {
    Run::script(script).envs(c.env())
}

fn actions(out: &collate_run_tests::Output) -> Vec<(String, String, String)> {
    out.changes()
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default().to_string(),
                c["name"].as_str().unwrap_or_default().to_string(),
                c["action"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn t(k: &str, n: &str, a: &str) -> (String, String, String) {
    (k.into(), n.into(), a.into())
}

#[test]
fn server_version_and_unreachable_cluster() {
    let c = Cluster::start();
    run(
        &c,
        r#"let v = k8s::server_version(); print(`version ${v.git_version} ${v.context}`);"#,
    )
    .succeeds()
    .stdout_contains("version v1.35")
    .stdout_contains(CONTEXT_NAME);
    let url = c.server.url();
    drop(c);
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, collate_run_tests::kube::kubeconfig_yaml(&url)).unwrap();
    let out = Run::script("k8s::server_version();")
        .env("KUBECONFIG", &kc.display().to_string())
        .fails_with(4);
    out.stderr_contains("cannot reach the Kubernetes API server")
        .stderr_contains(&url)
        .stderr_contains(CONTEXT_NAME);
    Run::script("k8s::server_version();")
        .env("KUBECONFIG", &kc.display().to_string())
        .arg("--context")
        .arg("kube-testservr")
        .fails_with(3)
        .stderr_contains("did you mean `kube-testserver`");
}

const SECRET_SCRIPT: &str = r#"
k8s::ensure_namespace("collate");
let r = k8s::ensure_secret("collate", "db-credentials", #{
    data: #{ password: secret::env("DB_PASSWORD"), user: "openmetadata" },
    labels: #{ app: "collate" },
});
print(`changed=${r.changed} user=${r.object.data.user} password=${r.object.data.password}`);
"#;

#[test]
fn namespace_and_secret_plan_apply_unchanged_and_masked_update() {
    let c = Cluster::start();
    // Plan: both would be created (the namespace does not exist: local prediction), nothing saved.
    let out = run(&c, SECRET_SCRIPT)
        .env("DB_PASSWORD", CANARY)
        .plan()
        .json()
        .succeeds();
    out.never_shows(CANARY);
    assert_eq!(
        actions(&out),
        [
            t("k8s.Namespace", "collate", "create"),
            t("k8s.Secret", "collate/db-credentials", "create")
        ]
    );
    assert!(out.changes().iter().all(|c| c["planned"] == true));
    assert!(c.get("v1", "Namespace", "", "collate").is_none());
    assert!(c.get("v1", "Secret", "collate", "db-credentials").is_none());

    // Apply: created, values masked everywhere.
    let out = run(&c, SECRET_SCRIPT)
        .env("DB_PASSWORD", CANARY)
        .json()
        .succeeds();
    out.never_shows(CANARY)
        .stdout_contains("changed=created user=*** password=***");
    assert_eq!(
        actions(&out),
        [
            t("k8s.Namespace", "collate", "create"),
            t("k8s.Secret", "collate/db-credentials", "create")
        ]
    );
    let s = c
        .get("v1", "Secret", "collate", "db-credentials")
        .expect("secret created");
    assert_eq!(s["metadata"]["labels"]["app"], "collate");
    assert!(s["data"]["password"].is_string());

    // Second run: unchanged, in plan and apply.
    for plan in [true, false] {
        let r = run(&c, SECRET_SCRIPT).env("DB_PASSWORD", CANARY).json();
        let out = if plan { r.plan() } else { r }.succeeds();
        assert_eq!(
            actions(&out),
            [
                t("k8s.Namespace", "collate", "unchanged"),
                t("k8s.Secret", "collate/db-credentials", "unchanged")
            ]
        );
    }

    // A new password: the plan names the key, never a value; apply updates in place.
    let new = "canary-k8s-NEW-55e1";
    let out = run(&c, SECRET_SCRIPT)
        .env("DB_PASSWORD", new)
        .plan()
        .json()
        .succeeds();
    out.never_shows(new).never_shows(CANARY);
    let change = &out.changes()[1];
    assert_eq!(change["action"], "update");
    let fields: Vec<&Value> = change["fields"].as_array().unwrap().iter().collect();
    assert_eq!(fields.len(), 1, "{change}");
    assert_eq!(fields[0]["path"], "data.password");
    assert_eq!(fields[0]["before"], "***");
    assert_eq!(fields[0]["after"], "***");
    let uid = s["metadata"]["uid"].clone();
    let out = run(&c, SECRET_SCRIPT)
        .env("DB_PASSWORD", new)
        .json()
        .succeeds();
    out.never_shows(new);
    assert_eq!(out.changes()[1]["action"], "update");
    let s2 = c.get("v1", "Secret", "collate", "db-credentials").unwrap();
    assert_eq!(
        s2["metadata"]["uid"], uid,
        "updated in place, not re-created"
    );
    assert_ne!(s2["data"]["password"], s["data"]["password"]);
}

#[test]
fn docker_registry_secret_updates_in_place() {
    let c = Cluster::start();
    let script = r#"
        k8s::ensure_namespace("collate");
        let cfg = secret::from(`{"auths":{"r.example":{"auth":"${env}"}}}`);
        let r = k8s::ensure_docker_registry_secret("collate", "ecr-registry-creds", cfg);
        print(`changed=${r.changed} type=${r.object.type}`);
    "#;
    run(&c, &script.replace("${env}", "dG9rZW4tMQ=="))
        .succeeds()
        .stdout_contains("changed=created type=kubernetes.io/dockerconfigjson");
    let before = c
        .get("v1", "Secret", "collate", "ecr-registry-creds")
        .unwrap();
    assert!(before["data"][".dockerconfigjson"].is_string());
    run(&c, &script.replace("${env}", "dG9rZW4tMQ=="))
        .succeeds()
        .stdout_contains("changed=unchanged");
    run(&c, &script.replace("${env}", "dG9rZW4tMg=="))
        .succeeds()
        .stdout_contains("changed=updated");
    let after = c
        .get("v1", "Secret", "collate", "ecr-registry-creds")
        .unwrap();
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
}

#[test]
fn service_account_annotation_keeps_other_annotations_and_token_secret() {
    let c = Cluster::start();
    run(&c, r#"k8s::ensure_namespace("collate");"#).succeeds();
    c.server.insert(
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "om-role", "namespace": "collate", "annotations": {"keep": "me"}}}),
    );
    let script = r#"
        let r = k8s::ensure_service_account("collate", "om-role", #{
            annotations: #{ "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/om" },
        });
        print(`sa=${r.changed}`);
        let t = k8s::ensure_sa_token_secret("collate", "om-role.service-account-token", "om-role");
        print(`token=${t.changed} filled=${t.object.data.token.len > 0} shown=${t.object.data.token}`);
    "#;
    let plan = script.split("let t =").next().unwrap();
    let out = run(&c, plan).plan().json().succeeds();
    let ch = out.changes();
    assert_eq!(ch[0]["action"], "update");
    assert_eq!(
        ch[0]["fields"][0]["path"],
        "metadata.annotations[\"eks.amazonaws.com/role-arn\"]"
    );
    run(&c, script)
        .succeeds()
        .stdout_contains("sa=updated")
        .stdout_contains("token=created filled=true shown=***");
    let sa = c.get("v1", "ServiceAccount", "collate", "om-role").unwrap();
    assert_eq!(sa["metadata"]["annotations"]["keep"], "me");
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/om"
    );
    let tok = c
        .get("v1", "Secret", "collate", "om-role.service-account-token")
        .unwrap();
    assert_eq!(tok["type"], "kubernetes.io/service-account-token");
    run(&c, script)
        .succeeds()
        .stdout_contains("sa=unchanged")
        .stdout_contains("token=unchanged filled=true");
}

const CM_AB: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: collate
data:
  a: "1"
  b: "2"
---
apiVersion: v1
kind: Namespace
metadata:
  name: collate
"#;

#[test]
fn apply_multi_document_then_remove_a_field() {
    let c = Cluster::start();
    let script =
        |yaml: &str| format!("let objs = k8s::apply(`{yaml}`); print(`applied=${{objs.len()}}`);");
    let out = run(&c, &script(CM_AB)).plan().json().succeeds();
    // The namespace goes first even though it comes second.
    assert_eq!(
        actions(&out),
        [
            t("k8s.Namespace", "collate", "create"),
            t("k8s.ConfigMap", "collate/settings", "create")
        ]
    );
    run(&c, &script(CM_AB))
        .succeeds()
        .stdout_contains("applied=2");
    assert_eq!(
        c.get("v1", "ConfigMap", "collate", "settings").unwrap()["data"]["b"],
        "2"
    );
    let out = run(&c, &script(CM_AB)).json().succeeds();
    assert_eq!(
        actions(&out),
        [
            t("k8s.Namespace", "collate", "unchanged"),
            t("k8s.ConfigMap", "collate/settings", "unchanged")
        ]
    );

    let only_a = CM_AB.replace("  b: \"2\"\n", "");
    let out = run(&c, &script(&only_a)).plan().json().succeeds();
    let cm = &out.changes()[1];
    assert_eq!(cm["action"], "update");
    assert_eq!(cm["fields"][0]["path"], "data.b");
    assert_eq!(cm["fields"][0]["before"], "2");
    assert!(cm["fields"][0].get("after").is_none_or(Value::is_null));
    assert_eq!(
        c.get("v1", "ConfigMap", "collate", "settings").unwrap()["data"]["b"],
        "2",
        "plan changes nothing"
    );
    run(&c, &script(&only_a)).succeeds();
    let live = c.get("v1", "ConfigMap", "collate", "settings").unwrap();
    assert!(live["data"].get("b").is_none(), "{live}");
    assert_eq!(live["data"]["a"], "1");
}

/// 100 ConfigMaps in a namespace that comes last in the list.
const MANY: &str = r#"
let objs = [];
for i in 0..100 {
    objs.push(#{ apiVersion: "v1", kind: "ConfigMap",
        metadata: #{ name: `cm-${i}`, namespace: "many" }, data: #{ i: `${i}` } });
}
objs.push(#{ apiVersion: "v1", kind: "Namespace", metadata: #{ name: "many" } });
let live = k8s::apply(objs);
print(`applied=${live.len()} first=${live[0].metadata.name} last=${live[100].metadata.name}`);
"#;

/// `k8s::apply` of a list converges each dependency level side by side, bounded, and journals in
/// input order: against a server that holds every request 100 ms, the 101 objects (one round
/// trip to read each, one to write it: 20 s one after the other) take a few seconds, with more
/// than 32 and at most 64 requests in flight; the re-run reads only, the same way.
#[test]
fn apply_of_a_list_converges_side_by_side_bounded_in_input_order() {
    use std::time::{Duration, Instant};
    let c = Cluster::start_with(|b| b.latency(Duration::from_millis(100)));
    let mut expected = vec![t("k8s.Namespace", "many", "create")];
    expected.extend((0..100).map(|i| t("k8s.ConfigMap", &format!("many/cm-{i}"), "create")));
    for pass in ["create", "unchanged"] {
        c.server.clear_requests();
        let started = Instant::now();
        let out = run(&c, MANY).json().succeeds();
        let took = started.elapsed();
        out.stdout_contains("applied=101 first=cm-0 last=many");
        for e in &mut expected {
            e.2 = pass.to_string();
        }
        assert_eq!(
            actions(&out),
            expected,
            "{pass}: the journal in input order, namespace first"
        );
        let peak = c.server.peak_in_flight();
        assert!(
            (33..=64).contains(&peak),
            "{pass}: {peak} requests in flight at most"
        );
        assert!(took < Duration::from_secs(8), "{pass}: took {took:?}");
        let writes = if pass == "create" { 101 } else { 0 };
        assert_eq!(c.server.mutating_requests(), writes, "{pass}");
    }
    assert_eq!(
        c.get("v1", "ConfigMap", "many", "cm-99").unwrap()["data"]["i"],
        "99"
    );
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: workflows.argoproj.io
spec:
  group: argoproj.io
  scope: Namespaced
  names: {kind: Workflow, plural: workflows, singular: workflow, listKind: WorkflowList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: hello
spec:
  entrypoint: main
"#;

#[test]
fn apply_crd_with_its_custom_resource_then_get_list_delete() {
    let c = Cluster::start();
    run(&c, r#"k8s::ensure_namespace("collate");"#).succeeds();
    let script = format!(
        "let objs = k8s::apply(`{CRD}`, #{{namespace: \"collate\"}}); print(`applied=${{objs.len()}}`);"
    );
    let out = run(&c, &script).plan().json().succeeds();
    assert_eq!(
        actions(&out),
        [
            t(
                "k8s.CustomResourceDefinition",
                "workflows.argoproj.io",
                "create"
            ),
            t("k8s.Workflow", "collate/hello", "create")
        ]
    );
    run(&c, &script).succeeds().stdout_contains("applied=2");
    let out = run(&c, &script).json().succeeds();
    assert!(
        actions(&out).iter().all(|(_, _, a)| a == "unchanged"),
        "{out}"
    );

    let rw = r#"
        let w = k8s::get("Workflow", "collate", "hello");
        print(`entry=${w.spec.entrypoint}`);
        print(`missing=${k8s::get("workflows.argoproj.io", "collate", "nope") == ()}`);
        print(`secrets=${k8s::list("secrets", "collate").len()}`);
        print(`labelled=${k8s::list("Workflow", "collate", #{labels: #{app: "x"}}).len()}`);
        print(`deleted=${k8s::delete("Workflow", "collate", "hello").changed}`);
        print(`again=${k8s::delete("Workflow", "collate", "hello").changed}`);
    "#;
    run(&c, rw)
        .succeeds()
        .stdout_contains("entry=main")
        .stdout_contains("missing=true")
        .stdout_contains("labelled=0")
        .stdout_contains("deleted=deleted")
        .stdout_contains("again=unchanged");
    assert!(
        c.get("argoproj.io/v1alpha1", "Workflow", "collate", "hello")
            .is_none()
    );
    run(&c, r#"k8s::get("Wrokflow", "collate", "x");"#)
        .fails_with(4)
        .stderr_contains("did you mean `Workflow`");
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: collate}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"#;

#[test]
fn wait_for_available_and_timeout_says_what_was_seen() {
    let c = Cluster::start();
    let script = format!(
        r#"k8s::ensure_namespace("collate"); k8s::apply(`{DEPLOYMENT}`);
        let d = k8s::wait("deployments.apps", "collate", "web", "Available", 30);
        print(`ready=${{d.status.availableReplicas}}`);"#
    );
    run(&c, &script).succeeds().stdout_contains("ready=1");
    // Changing the image is an update with the container named in the path.
    let out = run(&c, &script.replace("nginx:1.27", "nginx:1.28"))
        .plan()
        .json()
        .succeeds();
    let d = out
        .changes()
        .into_iter()
        .find(|c| c["kind"] == "k8s.Deployment")
        .unwrap();
    assert_eq!(d["action"], "update");
    assert!(
        d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"] == "spec.template.spec.containers.web.image"),
        "{d}"
    );
    let out = run(
        &c,
        r#"k8s::wait("Deployment", "collate", "nope", "exists", 2);"#,
    )
    .fails_with(4);
    out.stderr_contains("timed out after 2s")
        .stderr_contains("last seen: not found");
}

#[test]
fn lock_contention_expiry_and_unlock() {
    let c = Cluster::start();
    run(&c, r#"k8s::ensure_namespace("collate");"#).succeeds();
    // Two runs at once: exactly one gets the lock; the other names the holder.
    // Each run keeps the lock for two seconds (waiting for a ConfigMap that never comes).
    let script = r#"let l = k8s::lock("collate", "collate-run", 30); print(`held=${l.held} by ${l.holder}`);
        try { k8s::wait("ConfigMap", "collate", "never", "exists", 2); } catch (e) { }"#;
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(&c, script).run());
        let b = s.spawn(|| run(&c, script).run());
        (a.join().unwrap(), b.join().unwrap())
    });
    let codes = [a.code, b.code];
    assert!(codes.contains(&0) && codes.contains(&4), "{a}\n{b}");
    let (winner, loser) = if a.code == 0 { (a, b) } else { (b, a) };
    winner.stdout_contains("held=true by ");
    loser.stderr_contains("run lock `collate/collate-run` is held by `");
    // The run gave its lock back when it ended: the lease is gone.
    assert!(
        c.get("coordination.k8s.io/v1", "Lease", "collate", "collate-run")
            .is_none(),
        "the lock outlived its run"
    );

    // A plan does not take the lock; it warns.
    run(&c, script)
        .plan()
        .succeeds()
        .stdout_contains("held=false");
    // A lease held by someone else (who died without giving it back) blocks until it expires.
    let foreign = |renew: &str, secs: i64| {
        format!(
            r#"k8s::apply(#{{apiVersion: "coordination.k8s.io/v1", kind: "Lease",
                metadata: #{{name: "short", namespace: "collate"}},
                spec: #{{holderIdentity: "someone@elsewhere:1", leaseDurationSeconds: {secs},
                        renewTime: "{renew}", acquireTime: "{renew}"}}}});"#
        )
    };
    run(&c, &foreign("2099-01-01T00:00:00.000000Z", 3600)).succeeds();
    run(&c, r#"k8s::lock("collate", "short", 30);"#)
        .fails_with(4)
        .stderr_contains("someone@elsewhere:1");
    run(&c, &foreign("2020-01-01T00:00:00.000000Z", 5)).succeeds();
    run(
        &c,
        r#"let l = k8s::lock("collate", "short", 30, #{wait: 20}); print(`took=${l.held}`);"#,
    )
    .succeeds()
    .stdout_contains("took=true");
    // unlock releases at once.
    run(
        &c,
        r#"k8s::lock("collate", "u", 60); print(`released=${k8s::unlock("collate", "u")}`);"#,
    )
    .succeeds()
    .stdout_contains("released=true");
    run(
        &c,
        r#"print(`held=${k8s::lock("collate", "u", 60).held}`);"#,
    )
    .succeeds()
    .stdout_contains("held=true");
}

/// Another run creates the run lock's lease, or the namespaces and the secret, between our read
/// and our write (the proxy sends those writes twice; ours is the second). A lease created under
/// us is read again (409 `AlreadyExists`); server-side apply turns a lost create into an update
/// of the same fields. Every call converges without an error, and the next run changes nothing.
#[test]
fn ensure_calls_and_the_lock_converge_when_they_lose_a_create_race() {
    use collate_run_tests::fault_proxy::{Fault, FaultProxy, Faults};
    // `POST `: the lease's create; `PATCH `: every server-side apply (dry-runs included).
    for writes in ["POST ", "PATCH "] {
        let c = Cluster::start();
        let proxy = FaultProxy::start(
            &c.server.url(),
            Faults::share(1.0, &[Fault::Duplicate]).only(writes),
        );
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, collate_run_tests::kube::kubeconfig_yaml(&proxy.url())).unwrap();
        let apply = || {
            run(&c, SECRET_SCRIPT)
                .env("DB_PASSWORD", CANARY)
                .env("KUBECONFIG", &kc.display().to_string())
                .config_yaml("run_lock: {namespace: collate-lock, name: deploy, ttl: 60}\n")
                .json()
                .succeeds()
        };
        let first = apply();
        assert!(
            proxy.stats().by_fault.contains_key("duplicate"),
            "{writes}: {:?}",
            proxy.stats()
        );
        first.stdout_contains("changed=created").never_shows(CANARY);
        proxy.set(Faults::none());
        let again = apply();
        assert_eq!(again.changed(), Vec::<String>::new(), "{writes}: {again}");
        assert!(
            c.get("coordination.k8s.io/v1", "Lease", "collate-lock", "deploy")
                .is_none(),
            "{writes}: the lock was not given back"
        );
    }
}

/// `k8s::run_job` on the test kubelet (`/bin/sh` registered as an image): a Job that fails is
/// `succeeded: false` with its pod's log, not an error; every object it applied is removed
/// afterwards; `k8s::logs` reads a pod's log.
#[test]
fn run_job_returns_a_failed_jobs_log_and_removes_its_objects() {
    use collate_run_tests::tls_server::TlsServer;
    use kube_testserver::{Image, KubeTestServer};
    if collate_run_tests::needs::gate(
        "unshare -m with tmpfs and overlay mounts (root)",
        kube_testserver::kubelet_supported().then_some(()),
    )
    .is_none()
    {
        return;
    }
    let (chain, key) = TlsServer::chain_files();
    let kube = KubeTestServer::builder()
        .tls(&chain, key, TlsServer::root_ca_file())
        .image(Image::new("busybox:1.36", "/bin/sh"))
        .start();
    let script = r#"
        let cm = #{ apiVersion: "v1", kind: "ConfigMap", metadata: #{ name: "say" }, data: #{ word: "hello" } };
        let job = #{ apiVersion: "batch/v1", kind: "Job", metadata: #{ name: "probe" }, spec: #{
            backoffLimit: 0,
            template: #{ spec: #{ restartPolicy: "Never", containers: [#{
                name: "sh", image: "busybox:1.36", command: ["/bin/sh", "-c", "echo $WORD from the pod; exit 3"],
                env: [#{ name: "WORD", valueFrom: #{ configMapKeyRef: #{ name: "say", key: "word" } } }],
            }] } },
        } };
        let r = k8s::run_job([cm, job], #{ namespace: "default", timeout: 30, start_timeout: 20 });
        if r == () {
            print("not run");
        } else {
            let log = r.log;
            log.trim();
            print(`${r.job}|${r.succeeded}|${log}|${r.pod != ()}|${r.status}`);
            try { k8s::logs("default", "no-such-pod"); } catch (e) { print(`logs: ${e.kind}`); }
        }
    "#;
    let out = Run::script(script)
        .env("KUBECONFIG", &kube.kubeconfig_path().display().to_string())
        .succeeds();
    let first = out
        .stdout
        .lines()
        .find(|l| l.starts_with("probe|"))
        .unwrap_or_default();
    assert!(
        first.starts_with("probe|false|hello from the pod|true|"),
        "{out}"
    );
    assert!(first.contains("Failed=True"), "{out}");
    out.stdout_contains("logs: not_found");
    assert!(kube.get("batch/v1", "Job", "default", "probe").is_none());
    assert!(kube.get("v1", "ConfigMap", "default", "say").is_none());
    let writes = kube.mutating_requests();
    // In a plan, not asked (`in_plan`): `()`, nothing written.
    let out = Run::script(script)
        .env("KUBECONFIG", &kube.kubeconfig_path().display().to_string())
        .plan()
        .succeeds();
    out.stdout_contains("not run");
    assert_eq!(kube.mutating_requests(), writes, "{out}");
}

/// A CRD of argoproj.io, stored directly (established at once).
fn argo_crd(plural: &str, kind: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.argoproj.io")},
        "spec": {"group": "argoproj.io", "scope": "Namespaced",
                 "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// The discovery requests the server saw (GETs of `/api`, `/apis` and their group versions), in
/// order, with the `Accept` each sent.
fn discovery_requests(c: &Cluster) -> Vec<(String, String)> {
    c.server
        .requests()
        .into_iter()
        .filter(|r| {
            let segs: Vec<&str> = r.uri.trim_matches('/').split('/').collect();
            r.method == "GET"
                && matches!(
                    segs.as_slice(),
                    ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _]
                )
        })
        .map(|r| (r.uri, r.accept))
        .collect()
}

#[test]
fn kinds_resolve_through_aggregated_discovery_in_one_round_and_through_the_legacy_walk_without_it()
{
    const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
    let named = r#"print(`named=${k8s::list("CronWorkflow.argoproj.io", "collate").len()}`);"#;
    let bare = r#"
        print(`bare=${k8s::list("Workflow", "collate").len()}`);
        print(`again=${k8s::list("workflows", "collate").len()}`);
    "#;
    for legacy in [false, true] {
        let c = Cluster::start_with(|b| if legacy { b.legacy_discovery_only() } else { b });
        c.server.insert(argo_crd("workflows", "Workflow"));
        c.server.insert(argo_crd("cronworkflows", "CronWorkflow"));

        // A kind named with its group.
        c.server.clear_requests();
        run(&c, named).succeeds().stdout_contains("named=0");
        let mut seen = discovery_requests(&c);
        // `/api` and `/apis` ask for aggregated discovery (kube's `Accept`).
        assert!(
            seen.iter()
                .filter(|(u, _)| u == "/api" || u == "/apis")
                .all(|(_, a)| a == AGGREGATED),
            "{seen:?}"
        );
        let uris = |seen: &mut Vec<(String, String)>| {
            let mut u: Vec<String> = seen.drain(..).map(|(u, _)| u).collect();
            u.sort();
            u
        };
        if legacy {
            // Round 1 gets the legacy documents; round 2 lists the one version of argoproj.io.
            assert_eq!(
                uris(&mut seen),
                ["/api", "/apis", "/apis/argoproj.io/v1alpha1"]
            );
        } else {
            // One round: /api and /apis, side by side.
            assert_eq!(uris(&mut seen), ["/api", "/apis"]);
        }

        // A bare kind: the whole API, once per run.
        c.server.clear_requests();
        run(&c, bare)
            .succeeds()
            .stdout_contains("bare=0")
            .stdout_contains("again=0");
        let seen = discovery_requests(&c);
        let mut uris: Vec<&str> = seen.iter().map(|(u, _)| u.as_str()).collect();
        uris.sort();
        if legacy {
            // Round 1 as above; round 2 lists every group version once, side by side.
            assert!(uris.len() > 10, "{uris:?}");
            for u in ["/api", "/apis", "/api/v1", "/apis/argoproj.io/v1alpha1"] {
                assert!(uris.contains(&u), "{u} not in {uris:?}");
            }
            let mut unique = uris.clone();
            unique.dedup();
            assert_eq!(unique, uris, "a group version listed twice");
            assert!(
                uris.iter()
                    .filter(|u| u.starts_with("/apis/"))
                    .all(|u| u.split('/').count() == 4),
                "{uris:?}"
            );
        } else {
            assert_eq!(uris, ["/api", "/apis"]);
        }
    }
}
