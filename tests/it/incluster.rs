//! The ECR pull-secret refresh installed in the cluster (`ecr.refresh.*`): what the recipes
//! render (least privilege, idempotence, removal, the Argo engine), and the refresh Jobs really
//! run by the test cluster's kubelet (`images.collate_run` is the binary under test): in-cluster
//! config over TLS with the pod's service-account token, AWS credentials from the Secret or from
//! IRSA web identity (EKS's pod identity webhook emulated), against a `full.rhai` deployment.

use collate_run_tests::api_server::ApiOptions;
use collate_run_tests::base64::{Engine as _, prelude::BASE64_STANDARD};
use collate_run_tests::kube::Cluster;
use collate_run_tests::moto::Moto;
use collate_run_tests::run::{binary, root};
use collate_run_tests::world::World;
use collate_run_tests::{Run, needs};
use kube_testserver::Image;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NS: &str = "collate";
const NAME: &str = "collate-run-ecr-refresh";
const PULL_SECRET: &str = "ecr-registry-creds";
const REGISTRY_ACCOUNT: &str = "118146679784";
const OPERATOR_TOKEN: &str = "operator-token-3f1c";
/// `images.collate_run` of the example config: the kubelet runs the binary under test for it.
const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/collate-run:0.1.0";
const KEY_ID: &str = "AKIAECRCANARY0001";
const SECRET_KEY: &str = "ecr-secret-canary-41d7";

/// The example config's secrets (the recipes tests' canaries) and the ECR access key.
fn secrets_env() -> Vec<(&'static str, &'static str)> {
    let mut env = crate::recipes::secrets_env();
    env.extend([
        ("ECR_ACCESS_KEY_ID", KEY_ID),
        ("ECR_SECRET_ACCESS_KEY", SECRET_KEY),
    ]);
    env
}

const KEYS: &str = "ecr: {credentials: {access_key_id: {env: ECR_ACCESS_KEY_ID}, \
                    secret_access_key: {env: ECR_SECRET_ACCESS_KEY}}}";

/// A world on a TLS API server that accepts the operator's token (and the service-account
/// tokens it issues); with moto when the prerequisites (the pull secret, the IRSA role) run too,
/// and then a kubelet that runs `images.collate_run` with moto as the AWS and EKS's pod
/// identity webhook.
fn world(moto: Option<Moto>) -> World {
    let cluster = match &moto {
        None => Cluster::start_tls(&[OPERATOR_TOKEN]),
        Some(m) => Cluster::start_tls_with(&[OPERATOR_TOKEN], |b| {
            b.image(image(m)).eks_pod_identity_webhook(None)
        }),
    };
    World::start_on(cluster, ApiOptions::default(), moto)
}

/// The collate-run image as this world runs it: the binary under test, with what only the
/// loopback world needs (moto as the AWS endpoint, no instance metadata off 127.0.0.1).
fn image(moto: &Moto) -> Image {
    Image::new(IMAGE, binary())
        .env("AWS_ENDPOINT_URL", &moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// `full.rhai` (apply) on `w` with `extra` config; prereqs on moto when the world has it.
fn full(w: &World, extra: &str) -> Run {
    let (head, aws) = match w.moto_opt() {
        Some(m) => ("account_id: \"\"\nsteps: {preflight: false}", m.env()),
        None => (
            "account_id: \"123456789012\"\nsteps: {prereqs: false, preflight: false}",
            Vec::new(),
        ),
    };
    Run::recipe("full.rhai")
        .config(root().join("recipes/customer.example.yaml"))
        .config_yaml(&w.overrides(head))
        .config_yaml(extra)
        .envs(secrets_env())
        .envs(w.kube.env())
        .envs(aws)
        .json()
}

fn get(w: &World, api_version: &str, kind: &str, name: &str) -> Option<Value> {
    w.kube.get(api_version, kind, NS, name)
}

#[test]
fn refresh_cronjob_is_least_privilege_idempotent_and_removable() {
    needs!("helm");
    let w = world(None);

    // The plan lists every object of the refresh and creates nothing.
    let plan = full(&w, KEYS).plan().succeeds();
    let planned = plan.changed();
    for want in [
        "create k8s.ServiceAccount collate/collate-run-ecr-refresh",
        "create k8s.Secret collate/collate-run-ecr-credentials",
        "create k8s.Role collate/collate-run-ecr-refresh",
        "create k8s.RoleBinding collate/collate-run-ecr-refresh",
        "create k8s.ConfigMap collate/collate-run-ecr-refresh",
        "create k8s.CronJob collate/collate-run-ecr-refresh",
        "create k8s.Job collate/collate-run-ecr-refresh-install-1",
    ] {
        assert!(
            planned.iter().any(|c| c == want),
            "plan lacks {want}: {planned:#?}"
        );
    }
    assert_eq!(
        w.kube.server.mutating_requests(),
        0,
        "the plan changed something"
    );

    let apply = full(&w, KEYS).succeeds();
    w.trust_issued_argo_token();
    apply.never_shows(SECRET_KEY).never_shows(KEY_ID);

    let cron = get(&w, "batch/v1", "CronJob", NAME).expect("the CronJob");
    assert_eq!(cron["spec"]["schedule"], "0 */6 * * *");
    assert_eq!(cron["spec"]["concurrencyPolicy"], "Forbid");
    assert_eq!(cron["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cron["spec"]["failedJobsHistoryLimit"], 3);
    let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], NAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/collate-run:0.1.0"
    );
    assert_eq!(
        c["args"],
        json!([
            "/etc/collate-run/refresh-ecr.rhai",
            "--config",
            "/etc/collate-run/config.yaml"
        ])
    );
    let key_ref = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "AWS_SECRET_ACCESS_KEY")
        .expect("the secret key comes from the Secret");
    assert_eq!(
        key_ref["valueFrom"]["secretKeyRef"],
        json!({"name": "collate-run-ecr-credentials", "key": "AWS_SECRET_ACCESS_KEY"})
    );

    // Least privilege: get/patch/update on the one pull secret, nothing else.
    let role = get(&w, "rbac.authorization.k8s.io/v1", "Role", NAME).expect("the Role");
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [PULL_SECRET],
                "verbs": ["get", "patch", "update"]}])
    );
    let binding = get(&w, "rbac.authorization.k8s.io/v1", "RoleBinding", NAME).unwrap();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NS}])
    );

    // The ConfigMap holds the recipe, its libraries and a config without any secret reference.
    let cm = get(&w, "v1", "ConfigMap", NAME).expect("the ConfigMap");
    let data = cm["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["config.rhai", "config.yaml", "ecr.rhai", "refresh-ecr.rhai"]
    );
    let text = serde_json::to_string(data).unwrap();
    for leak in [
        "password",
        "ECR_SECRET_ACCESS_KEY",
        "COLLATE_ADMIN_TOKEN",
        "token:",
    ] {
        assert!(
            !data["config.yaml"].as_str().unwrap().contains(leak),
            "{leak} in {text}"
        );
    }
    let creds = get(&w, "v1", "Secret", "collate-run-ecr-credentials").unwrap();
    assert_eq!(
        creds["data"]["AWS_SECRET_ACCESS_KEY"],
        BASE64_STANDARD.encode(SECRET_KEY)
    );

    // The run right after install: a Job made from the CronJob, owned by it.
    let job = get(&w, "batch/v1", "Job", &format!("{NAME}-install-1")).expect("the first run");
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        c["args"]
    );

    // A converged re-run changes nothing and starts no second run.
    let again = full(&w, KEYS).succeeds();
    assert_eq!(again.changed(), Vec::<String>::new());

    // A new schedule updates the CronJob and runs once more.
    let moved = full(&w, KEYS)
        .set("ecr.refresh.schedule", "0 */4 * * *")
        .succeeds();
    let changed = moved.changed();
    assert!(
        changed.contains(&format!("update k8s.CronJob collate/{NAME}")),
        "{changed:#?}"
    );
    assert!(
        changed.contains(&format!("create k8s.Job collate/{NAME}-install-2")),
        "{changed:#?}"
    );

    // No schedule: everything of the refresh is removed (the pull secret stays).
    let off = full(&w, KEYS).set("ecr.refresh.schedule", "").succeeds();
    let removed = off.changed();
    for kind in [
        "CronJob",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "ServiceAccount",
    ] {
        assert!(
            removed.contains(&format!("delete k8s.{kind} collate/{NAME}")),
            "{kind} not removed: {removed:#?}"
        );
    }
    assert!(get(&w, "v1", "ConfigMap", NAME).is_none());
    assert!(get(&w, "batch/v1", "CronJob", NAME).is_none());
    assert!(get(&w, "v1", "Secret", "collate-run-ecr-credentials").is_none());
    let off_again = full(&w, KEYS).set("ecr.refresh.schedule", "").succeeds();
    assert_eq!(off_again.changed(), Vec::<String>::new());
}

#[test]
fn refresh_as_an_argo_cron_workflow() {
    needs!("helm");
    let w = world(None);
    let argo = "ecr: {refresh: {engine: argo}}";
    full(&w, argo).succeeds();
    w.trust_issued_argo_token();
    let cwf = get(&w, "argoproj.io/v1alpha1", "CronWorkflow", NAME).expect("the CronWorkflow");
    assert_eq!(cwf["spec"]["schedules"], json!(["0 */6 * * *"]));
    assert_eq!(cwf["spec"]["concurrencyPolicy"], "Forbid");
    let spec = &cwf["spec"]["workflowSpec"];
    assert_eq!(spec["serviceAccountName"], NAME);
    assert_eq!(
        spec["templates"][0]["container"]["args"][0],
        "/etc/collate-run/refresh-ecr.rhai"
    );
    let wf = get(
        &w,
        "argoproj.io/v1alpha1",
        "Workflow",
        &format!("{NAME}-install-1"),
    )
    .expect("the first run");
    assert_eq!(
        wf["metadata"]["labels"]["workflows.argoproj.io/cron-workflow"],
        NAME
    );
    assert!(get(&w, "batch/v1", "CronJob", NAME).is_none());
    // IRSA (no access key): the service account names the role; the executor may report results.
    let sa = get(&w, "v1", "ServiceAccount", NAME).unwrap();
    assert_eq!(
        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::123456789012:role/collate-ecr-refresh-role"
    );
    let role = get(&w, "rbac.authorization.k8s.io/v1", "Role", NAME).unwrap();
    assert_eq!(
        role["rules"][1]["resources"],
        json!(["workflowtaskresults"])
    );
    assert_eq!(full(&w, argo).succeeds().changed(), Vec::<String>::new());
    // Back to a CronJob: the CronWorkflow goes (its kind found by discovering its group only).
    let back = full(&w, "{}").succeeds();
    assert!(
        get(&w, "argoproj.io/v1alpha1", "CronWorkflow", NAME).is_none(),
        "{back}"
    );
    assert!(get(&w, "batch/v1", "CronJob", NAME).is_some(), "{back}");
}

#[test]
fn refresh_config_errors_name_the_key() {
    let out = Run::recipe("maintenance/refresh-ecr.rhai")
        .config(root().join("recipes/customer.example.yaml"))
        .config_yaml("ecr:\n  refresh:\n    schedule: \"every 6 hours\"\n    engine: k8s\n")
        .envs(secrets_env())
        .fails_with(3);
    out.stderr_contains("ecr.refresh.engine must be cronjob or argo, not 'k8s'")
        .stderr_contains("config-1.yaml:4:5")
        .stderr_contains("is not a cron schedule")
        .stderr_contains("config-1.yaml:3:5");
}

/// The pull secret's `.dockerconfigjson`, decoded.
fn docker_config(w: &World) -> Option<String> {
    w.secret(NS, PULL_SECRET, ".dockerconfigjson")
}

/// Puts an expired token into the pull secret, as 12 hours later.
fn expire_pull_secret(w: &World) {
    let mut s = get(w, "v1", "Secret", PULL_SECRET).expect("the pull secret");
    let stale = r#"{"auths":{"118146679784.dkr.ecr.eu-west-1.amazonaws.com":{"username":"AWS","password":"expired","auth":"QVdTOmV4cGlyZWQ="}}}"#;
    s["data"][".dockerconfigjson"] = json!(BASE64_STANDARD.encode(stale));
    w.kube.server.insert(s);
}

/// The requests that changed something, as `METHOD URI` (query dropped).
fn writes(w: &World) -> Vec<String> {
    w.kube
        .server
        .requests()
        .iter()
        .filter(|r| r.mutating)
        .map(|r| {
            format!(
                "{} {}",
                r.method,
                r.uri.split('?').next().unwrap_or_default()
            )
        })
        .collect()
}

/// A `full.rhai` deployment (prereqs on moto) with `extra` config, when helm, moto, kubectl and
/// the kubelet (root, `unshare -m`) are available here.
fn deployed(extra: &str) -> Option<World> {
    let tools = [
        needs::needs("helm"),
        needs::needs("moto"),
        needs::needs("kubectl"),
    ];
    let pods = needs::gate(
        "unshare -m with tmpfs and overlay mounts (root)",
        kube_testserver::kubelet_supported().then_some(()),
    );
    if tools.iter().any(Option::is_none) || pods.is_none() {
        return None;
    }
    let moto = Moto::start();
    moto.create_eks_cluster("acme-eks");
    let w = world(Some(moto));
    full(&w, extra).succeeds();
    Some(w)
}

/// kubectl as the operator, against this world's cluster.
fn kubectl(w: &World, args: &[&str]) -> collate_run_tests::Output {
    let out = std::process::Command::new(needs::installed("kubectl"))
        .args(args)
        .env("KUBECONFIG", w.kube.server.kubeconfig_path())
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run kubectl");
    collate_run_tests::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits until Job `name` is Complete or Failed; returns which, and the log of its last pod
/// (`kubectl logs job/NAME`).
fn finished(w: &World, name: &str) -> (&'static str, String) {
    let start = Instant::now();
    let done = loop {
        let job = get(w, "batch/v1", "Job", name).unwrap_or_else(|| panic!("no Job {name}"));
        let conditions = job["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let has = |ty: &str| {
            conditions
                .iter()
                .any(|c| c["type"] == ty && c["status"] == "True")
        };
        if has("Complete") {
            break "Complete";
        }
        if has("Failed") {
            break "Failed";
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Job {name} did not finish: {job:#}\npods: {:#}",
            json!(
                pods_of(w, name)
                    .iter()
                    .map(|p| &p["spec"]["volumes"])
                    .collect::<Vec<_>>()
            )
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = kubectl(w, &["logs", "-n", NS, &format!("job/{name}")]);
    assert_eq!(log.code, 0, "{log}");
    (done, log.stdout)
}

/// A run now, as the operator starts one (`kubectl create job --from=cronjob/...`).
fn run_now(w: &World, name: &str) {
    let out = kubectl(
        w,
        &[
            "create",
            "job",
            "-n",
            NS,
            name,
            &format!("--from=cronjob/{NAME}"),
        ],
    );
    assert_eq!(out.code, 0, "{out}");
}

/// The exit codes of the pods of Job `name`.
fn exit_codes(w: &World, name: &str) -> Vec<i64> {
    pods_of(w, name)
        .iter()
        .map(|p| {
            p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
                .as_i64()
                .unwrap_or(-1)
        })
        .collect()
}

fn pods_of(w: &World, job: &str) -> Vec<Value> {
    let out = kubectl(
        w,
        &[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            &format!("job-name={job}"),
            "-o",
            "json",
        ],
    );
    assert_eq!(out.code, 0, "{out}");
    let list: Value = serde_json::from_str(&out.stdout).expect("pod list");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_refresh_job_refreshes_the_pull_secret_with_the_access_key_from_the_secret() {
    let Some(w) = deployed(KEYS) else { return };
    // With an access key, no IRSA role is made for the refresh.
    assert!(
        !w.moto()
            .role_names()
            .contains(&"collate-ecr-refresh-role".to_string())
    );
    let fresh = docker_config(&w).expect("prereqs made the pull secret");
    assert!(fresh.contains(&w.moto().ecr_password(REGISTRY_ACCOUNT)));

    // The run right after install really ran in the cluster: the secret was already fresh.
    let (state, log) = finished(&w, &format!("{NAME}-install-1"));
    assert_eq!(state, "Complete", "{log}");
    assert!(
        log.contains(&format!("pull secret {NS}/{PULL_SECRET} unchanged")),
        "{log}"
    );

    // 12 hours later: a run refreshes the token, and changes nothing else.
    expire_pull_secret(&w);
    w.kube.server.clear_requests();
    run_now(&w, "refresh-now");
    let (state, log) = finished(&w, "refresh-now");
    assert_eq!(state, "Complete", "{log}");
    assert!(
        log.contains(&format!("pull secret {NS}/{PULL_SECRET} updated")),
        "{log}"
    );
    assert!(!log.contains(SECRET_KEY) && !log.contains(&w.moto().ecr_password(REGISTRY_ACCOUNT)));
    assert_eq!(docker_config(&w).as_deref(), Some(fresh.as_str()), "{log}");
    let expected = format!("/api/v1/namespaces/{NS}/secrets/{PULL_SECRET}");
    let cron = get(&w, "batch/v1", "CronJob", NAME).unwrap();
    let refreshed = &get(&w, "batch/v1", "Job", "refresh-now").unwrap()["status"]["completionTime"];
    assert_eq!(&cron["status"]["lastSuccessfulTime"], refreshed);
    let writes = writes(&w);
    let (operator, pod): (Vec<&String>, Vec<&String>) =
        writes.iter().partition(|r| r.ends_with("/jobs"));
    assert_eq!(operator.len(), 1, "{writes:#?}");
    assert!(
        !pod.is_empty() && pod.iter().all(|r| r.ends_with(&expected)),
        "{writes:#?}"
    );

    // status.rhai reads the refresh's last success from the CronJob, and the token's expiry from
    // the pull secret: moto answers GetAuthorizationToken with a fixed 2015-01-01 expiresAt
    // (moto/ecr/responses.py), so the token row fails (exit 5) while the refresh row is fine.
    let status = Run::recipe("status.rhai")
        .config(root().join("recipes/customer.example.yaml"))
        .config_yaml(&w.overrides("account_id: \"\""))
        .config_yaml(KEYS)
        .envs(secrets_env())
        .envs(w.kube.env())
        .envs(w.moto().env())
        .json()
        .fails_with(5);
    let report = status
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "report")
        .unwrap_or_else(|| panic!("no report line: {status}"));
    let row = report["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requirement"] == format!("ECR pull secret refresh in {NS}"))
        .cloned()
        .unwrap_or_else(|| panic!("no refresh row: {report}"));
    assert_eq!(
        (row["found"].as_str(), row["verdict"].as_str()),
        (Some("last success 0h 00m ago"), Some("ok")),
        "{report}"
    );
    let token = report["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["requirement"] == format!("ECR pull secret {NS}/{PULL_SECRET}"))
        .cloned()
        .unwrap_or_else(|| panic!("no token row: {report}"));
    assert_eq!(token["verdict"], "FAIL", "{report}");
    assert!(
        token["found"].as_str().unwrap().contains("expired"),
        "{report}"
    );

    // AWS refuses the access key: every attempt (backoffLimit 2) exits 4 with AWS's reason,
    // the Job fails, and the secret is left alone.
    let strict = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    w.kube.server.add_image(image(&strict));
    expire_pull_secret(&w);
    let stale = docker_config(&w);
    run_now(&w, "refused");
    let (state, log) = finished(&w, "refused");
    assert_eq!(state, "Failed", "{log}");
    assert_eq!(exit_codes(&w, "refused"), [4, 4, 4]);
    assert!(!log.contains(SECRET_KEY), "{log}");
    assert!(log.contains("ecr:GetAuthorizationToken"), "{log}");
    assert!(log.contains("failed: HTTP 403"), "{log}");
    assert!(log.contains("credentials were refused"), "{log}");
    assert_eq!(docker_config(&w), stale);
    let job = get(&w, "batch/v1", "Job", "refused").unwrap();
    assert_eq!(
        job["status"]["conditions"][1]["reason"],
        "BackoffLimitExceeded"
    );
    w.kube.server.add_image(image(w.moto()));

    // The pull secret gone: the refresh may not create it, and says why.
    Run::eval(&format!(
        "k8s::delete(\"Secret\", \"{NS}\", \"{PULL_SECRET}\")"
    ))
    .envs(w.kube.env())
    .succeeds();
    run_now(&w, "no-pull-secret");
    let (state, log) = finished(&w, "no-pull-secret");
    assert_eq!(state, "Failed", "{log}");
    assert!(exit_codes(&w, "no-pull-secret").iter().all(|c| *c != 0));
    assert!(
        log.contains("ecr-registry-creds` does not exist: run prereqs.rhai first"),
        "{log}"
    );

    // The credentials Secret gone: the pod cannot start (the kubelet's reason), nothing runs.
    Run::eval(&format!(
        "k8s::delete(\"Secret\", \"{NS}\", \"collate-run-ecr-credentials\")"
    ))
    .envs(w.kube.env())
    .succeeds();
    run_now(&w, "no-credentials");
    let start = Instant::now();
    let waiting = loop {
        let w8 = pods_of(&w, "no-credentials")
            .first()
            .map(|p| p["status"]["containerStatuses"][0]["state"]["waiting"].clone());
        if let Some(v) = w8.filter(|v| v.is_object()) {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no waiting pod");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(waiting["reason"], "CreateContainerConfigError");
    assert_eq!(
        waiting["message"],
        "secret \"collate-run-ecr-credentials\" not found"
    );
}

#[test]
fn the_refresh_job_refreshes_the_pull_secret_with_irsa_web_identity() {
    let Some(w) = deployed("") else { return };
    let role = "arn:aws:iam::123456789012:role/collate-ecr-refresh-role";
    assert!(
        w.moto()
            .role_names()
            .contains(&"collate-ecr-refresh-role".to_string())
    );
    let (state, log) = finished(&w, &format!("{NAME}-install-1"));
    assert_eq!(state, "Complete", "{log}");
    let fresh = docker_config(&w).expect("prereqs made the pull secret");
    expire_pull_secret(&w);
    w.kube.server.clear_requests();

    let spec = &get(&w, "batch/v1", "CronJob", NAME).unwrap()["spec"]["jobTemplate"]["spec"]["template"]
        ["spec"];
    let env = spec["containers"][0]["env"].to_string();
    assert!(!env.contains("AWS_ACCESS_KEY_ID"), "{env}");
    run_now(&w, "refresh-now");
    let (state, log) = finished(&w, "refresh-now");
    assert_eq!(state, "Complete", "{log}");
    assert_eq!(docker_config(&w).as_deref(), Some(fresh.as_str()), "{log}");
    // EKS's webhook gave the pod the role and the projected web-identity token.
    let pod = &pods_of(&w, "refresh-now")[0];
    let pod_env = pod["spec"]["containers"][0]["env"].to_string();
    assert!(pod_env.contains(role), "{pod_env}");
    assert!(
        pod_env.contains("/var/run/secrets/eks.amazonaws.com/serviceaccount/token"),
        "{pod_env}"
    );
    let writes = writes(&w);
    assert!(
        writes
            .iter()
            .all(|r| r.ends_with(PULL_SECRET) || r.ends_with("/jobs")),
        "{writes:#?}"
    );
}
