//! The kubelet and Job controller (README, "Kubelet and Job controller"): Jobs of a registered
//! image (`/bin/sh` as `busybox`) run as local processes with the pod's environment, volumes,
//! service-account files and user; exit codes become pod phases and Job conditions; the output
//! is served as `pods/log`. Checked with kubectl (`wait`, `logs job/...`, `--token`).

use collate_run_tests::needs::{self, installed};
use collate_run_tests::tls_server::TlsServer;
use kube_testserver::{Image, KubeTestServer};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const OPERATOR: &str = "operator-token-5a1e";
const IMAGE: &str = "busybox:1.36";

fn server(images: &[Image]) -> KubeTestServer {
    let (chain, key) = TlsServer::chain_files();
    let mut b = KubeTestServer::builder()
        .tls(&chain, key, TlsServer::root_ca_file())
        .bearer_token(OPERATOR)
        .cluster_dns("search.vpc.test", "10.0.0.8")
        .controller_delay(Duration::from_millis(10));
    for i in images {
        b = b.image(i.clone());
    }
    b.start()
}

fn sh() -> Image {
    Image::new(IMAGE, "/bin/sh").env("WORLD", "loopback")
}

/// Whether this test can run pods here (kubectl, and root with `unshare -m`).
fn runs_pods() -> bool {
    needs::needs("kubectl").is_some()
        && needs::gate(
            "unshare -m with tmpfs and overlay mounts (root)",
            kube_testserver::kubelet_supported().then_some(()),
        )
        .is_some()
}

fn kubectl(server: &KubeTestServer, args: &[&str]) -> Output {
    let out = Command::new(installed("kubectl"))
        .args(args)
        .env("KUBECONFIG", server.kubeconfig_path())
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run kubectl");
    eprintln!(
        "$ kubectl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(server: &KubeTestServer, args: &[&str]) -> String {
    let out = kubectl(server, args);
    assert!(out.status.success(), "kubectl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(server: &KubeTestServer, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    ok(server, &["apply", "-f", file.to_str().unwrap()]);
}

/// The pods of Job `job` in `default`.
fn job_pods(server: &KubeTestServer, job: &str) -> Vec<Value> {
    let list: Value = serde_json::from_str(&ok(
        server,
        &[
            "get",
            "pods",
            "-l",
            &format!("job-name={job}"),
            "-o",
            "json",
        ],
    ))
    .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SOURCES: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {API_KEY: s3cret-canary}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: "hello from a ConfigMap", MODE: fast}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: runner}
"#;

const JOB: &str = r#"
apiVersion: batch/v1
kind: Job
metadata: {name: works}
spec:
  backoffLimit: 0
  template:
    spec:
      serviceAccountName: runner
      restartPolicy: Never
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
      hostAliases:
      - {ip: 10.0.0.7, hostnames: [db.alias.test]}
      containers:
      - name: main
        image: busybox:1.36
        command: [sh, -c]
        args:
        - |
          echo "user $(id -u):$(id -g)"
          echo "key $API_KEY mode $MODE_ALIAS world $WORLD pod $POD_NAME"
          cat /etc/settings/greeting; echo
          echo "api $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"
          d=/var/run/secrets/kubernetes.io/serviceaccount
          echo "namespace $(cat $d/namespace)"
          echo "ca $(cksum < $d/ca.crt)"
          echo "token $(cat $d/token)"
          echo scratch > /scratch/file && cat /scratch/file
          grep -E 'db.alias.test|search.vpc.test' /etc/hosts
          echo "to stderr" >&2
        envFrom:
        - secretRef: {name: creds}
        - configMapRef: {name: settings}
        env:
        - {name: MODE_ALIAS, value: "$(MODE)"}
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        volumeMounts:
        - {name: settings, mountPath: /etc/settings, readOnly: true}
        - {name: scratch, mountPath: /scratch}
      volumes:
      - name: settings
        configMap: {name: settings}
      - name: scratch
        emptyDir: {}
"#;

#[test]
fn a_job_of_a_registered_image_runs_with_the_pods_environment() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    apply(&server, SOURCES);
    apply(&server, JOB);
    ok(
        &server,
        &[
            "wait",
            "--for=condition=complete",
            "job/works",
            "--timeout=30s",
        ],
    );

    let log = ok(&server, &["logs", "job/works"]);
    let pods = job_pods(&server, "works");
    assert_eq!(pods.len(), 1, "{pods:#?}");
    let pod = &pods[0];
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    for line in [
        "user 65532:65532",
        &format!("key s3cret-canary mode fast world loopback pod {pod_name}"),
        "hello from a ConfigMap",
        &format!("api 127.0.0.1:{}", server.port()),
        "namespace default",
        "scratch",
        // The pod's /etc/hosts: the cluster's DNS names, then its hostAliases; not this machine's.
        "10.0.0.8\tsearch.vpc.test",
        "10.0.0.7\tdb.alias.test",
        "to stderr",
    ] {
        assert!(log.contains(line), "{line:?} not in the log:\n{log}");
    }
    let here = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(
        !here.contains("vpc.test") && !here.contains("alias.test"),
        "{here}"
    );
    // `ca.crt` is the CA the server was started with (the one its kubeconfig trusts).
    let cksum = Command::new("sh")
        .arg("-c")
        .arg("cksum < \"$0\"")
        .arg(TlsServer::root_ca_file())
        .output()
        .unwrap();
    let cksum = String::from_utf8_lossy(&cksum.stdout).trim().to_string();
    assert!(log.contains(&format!("ca {cksum}\n")), "{log}");
    // The projected token is one the server accepts.
    let token = log
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .expect("the token line");
    ok(&server, &["get", "configmap", "settings", "--token", token]);
    let refused = kubectl(
        &server,
        &["get", "configmap", "settings", "--token", "forged"],
    );
    assert!(!refused.status.success());

    // tailLines.
    assert_eq!(ok(&server, &["logs", pod_name, "--tail=1"]), "to stderr\n");

    // The pod: owned by the Job, labelled, Succeeded with exit code 0.
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "works"
    );
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0);
    assert_eq!(terminated["reason"], "Completed");

    let job = server.get("batch/v1", "Job", "default", "works").unwrap();
    let status = &job["status"];
    assert_eq!(
        (status["succeeded"].as_i64(), status["active"].as_i64()),
        (Some(1), Some(0))
    );
    assert!(status["startTime"].is_string() && status["completionTime"].is_string());
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
    assert_eq!(status["conditions"][1]["reason"], "CompletionsReached");

    // A Job made from a CronJob by kubectl (sent as protobuf: inline `volumeSource` and
    // `localObjectReference` fields) runs the same way.
    apply(&server, CRON_JOB);
    ok(&server, &["create", "job", "now", "--from=cronjob/nightly"]);
    ok(
        &server,
        &[
            "wait",
            "--for=condition=complete",
            "job/now",
            "--timeout=30s",
        ],
    );
    assert_eq!(
        ok(&server, &["logs", "job/now"]),
        "s3cret-canary\nhello from a ConfigMap"
    );
}

const CRON_JOB: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: busybox:1.36
            command: [sh, -c, 'echo "$API_KEY"; cat /etc/settings/greeting']
            env:
            - name: API_KEY
              valueFrom: {secretKeyRef: {name: creds, key: API_KEY}}
            volumeMounts: [{name: settings, mountPath: /etc/settings}]
          volumes: [{name: settings, configMap: {name: settings}}]
"#;

#[test]
fn a_failing_job_is_retried_up_to_its_backoff_limit() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    apply(
        &server,
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: fails}
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: "busybox:1.36", command: [sh, -c, "echo attempt failing; exit 3"]}
"#,
    );
    ok(
        &server,
        &[
            "wait",
            "--for=condition=failed",
            "job/fails",
            "--timeout=30s",
        ],
    );
    let pods = job_pods(&server, "fails");
    assert_eq!(pods.len(), 3, "backoffLimit 2: three attempts");
    for pod in &pods {
        assert_eq!(pod["status"]["phase"], "Failed");
        let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
        assert_eq!(
            (
                terminated["exitCode"].as_i64(),
                terminated["reason"].as_str()
            ),
            (Some(3), Some("Error"))
        );
        let name = pod["metadata"]["name"].as_str().unwrap();
        assert_eq!(ok(&server, &["logs", name]), "attempt failing\n");
    }
    let job = server.get("batch/v1", "Job", "default", "fails").unwrap();
    let status = &job["status"];
    assert_eq!(
        (status["failed"].as_i64(), status["active"].as_i64()),
        (Some(3), Some(0))
    );
    assert!(status.get("completionTime").is_none(), "{status}");
    let conditions: Vec<(&str, &str)> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        conditions,
        [
            ("FailureTarget", "BackoffLimitExceeded"),
            ("Failed", "BackoffLimitExceeded")
        ]
    );
    assert_eq!(
        status["conditions"][1]["message"],
        "Job has reached the specified backoff limit"
    );
}

/// The waiting reason and message of the one pod of Job `job`, once it has one.
fn waiting(server: &KubeTestServer, job: &str) -> (String, String) {
    let mut found = None;
    wait_for("a waiting pod", || {
        found = job_pods(server, job).first().and_then(|p| {
            let w = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            Some((
                w["reason"].as_str()?.to_string(),
                w["message"].as_str()?.to_string(),
            ))
        });
        found.is_some()
    });
    found.unwrap()
}

fn pending_job(name: &str, image: &str, env: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: main, image: \"{image}\", command: [sh, -c, \"exit 0\"]{env}}}\n"
    )
}

#[test]
fn pods_that_cannot_run_stay_pending_and_say_why() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    apply(&server, &pending_job("unknown", "nginx:1.27", ""));
    let (reason, message) = waiting(&server, "unknown");
    assert_eq!(reason, "ImagePullBackOff");
    assert!(
        message.contains("\"nginx:1.27\" is not registered"),
        "{message}"
    );
    let job = server.get("batch/v1", "Job", "default", "unknown").unwrap();
    assert_eq!(job["status"]["active"], 1);
    let pod = job_pods(&server, "unknown")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let err = String::from_utf8_lossy(&kubectl(&server, &["logs", &pod]).stderr).into_owned();
    assert!(
        err.contains("is waiting to start: ImagePullBackOff"),
        "{err}"
    );

    apply(
        &server,
        &pending_job(
            "no-secret",
            IMAGE,
            ", env: [{name: K, valueFrom: {secretKeyRef: {name: absent, key: k}}}]",
        ),
    );
    assert_eq!(
        waiting(&server, "no-secret"),
        (
            "CreateContainerConfigError".into(),
            "secret \"absent\" not found".into()
        )
    );

    // Without TLS in-cluster clients could not reach the server: the kubelet does not start pods.
    let plain = KubeTestServer::builder().image(sh()).start();
    apply(&plain, &pending_job("plain", IMAGE, ""));
    let (reason, message) = waiting(&plain, "plain");
    assert_eq!(reason, "CreateContainerConfigError");
    assert!(message.contains("plain HTTP"), "{message}");
}

#[test]
fn stopping_the_server_kills_running_pods() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    apply(
        &server,
        &pending_job("sleeps", IMAGE, "").replace("exit 0", "exec sleep 600"),
    );
    wait_for("a running pod", || {
        job_pods(&server, "sleeps")
            .first()
            .is_some_and(|p| p["status"]["phase"] == "Running")
    });
    let start = Instant::now();
    drop(server);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// Whether a process runs `sleep SECONDS` (the pods here use unusual durations).
fn sleeping(seconds: &str) -> bool {
    let want = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
}

#[test]
fn deleting_a_job_kills_its_running_pod() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    apply(
        &server,
        &pending_job("naps", IMAGE, "").replace("exit 0", "exec sleep 617"),
    );
    wait_for("the pod's process", || sleeping("617"));
    ok(&server, &["delete", "job", "naps"]);
    wait_for("the process killed", || !sleeping("617"));
    assert!(job_pods(&server, "naps").is_empty());
}

#[test]
fn a_job_past_its_active_deadline_fails_and_its_pod_is_killed() {
    if !runs_pods() {
        return;
    }
    let server = server(&[sh()]);
    let job = pending_job("slow", IMAGE, "")
        .replace("exit 0", "exec sleep 619")
        .replace(
            "spec:\n  template:",
            "spec:\n  activeDeadlineSeconds: 1\n  template:",
        );
    apply(&server, &job);
    wait_for("the pod's process", || sleeping("619"));
    ok(
        &server,
        &[
            "wait",
            "--for=condition=failed",
            "job/slow",
            "--timeout=30s",
        ],
    );
    wait_for("the process killed", || !sleeping("619"));
    let job = server.get("batch/v1", "Job", "default", "slow").unwrap();
    let status = &job["status"];
    assert_eq!(
        (status["failed"].as_i64(), status["active"].as_i64()),
        (Some(1), Some(0))
    );
    assert_eq!(status["conditions"][1]["reason"], "DeadlineExceeded");
    assert_eq!(
        status["conditions"][1]["message"],
        "Job was active longer than specified deadline"
    );
}
