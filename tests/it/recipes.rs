//! The recipes end to end: against the Kubernetes API test server, real helm with the real
//! upstream charts (`tests/fixtures/charts/upstream`), and the OpenMetadata/Argo API test
//! server. AWS (prereqs) is left out of these tests (`steps.prereqs: false`, `account_id` given);
//! the reliability tests run the whole recipe on moto too.

use std::path::PathBuf;

use collate_run_tests::api_server::{ApiOptions, ApiServer, Outcome};
use collate_run_tests::base64::{Engine as _, prelude::BASE64_STANDARD};
use collate_run_tests::chart_repo::{ChartRepo, upstream_chart};
use collate_run_tests::kube::Cluster;
use collate_run_tests::run::root;
use collate_run_tests::world::World;
use collate_run_tests::{Run, needs};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";

pub(crate) fn example() -> PathBuf {
    root().join("recipes/customer.example.yaml")
}

pub(crate) fn secrets_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("COLLATE_DB_PASSWORD", "db-canary-5e1f"),
        ("COLLATE_ES_PASSWORD", "es-canary-77ab"),
        ("ARGO_DB_PASSWORD", "argo-canary-9c2d"),
        ("COLLATE_ADMIN_TOKEN", "om-admin-token"),
        ("COLLATE_ADMIN_PASSWORD", "admin-canary-3q8v"),
    ]
}

/// The recipes on the shared loopback world (`collate_run_tests::world`), AWS prerequisites off.
pub(crate) trait Recipes {
    fn recipe(&self, name: &str) -> Run;
}

impl Recipes for World {
    fn recipe(&self, name: &str) -> Run {
        let head =
            format!("account_id: \"{ACCOUNT}\"\nsteps: {{prereqs: false, preflight: false}}");
        Run::recipe(name)
            .config(example())
            .config_yaml(&self.overrides(&head))
            .envs(secrets_env())
            .envs(self.kube.env())
            .json()
    }
}

#[test]
fn full_plans_converges_and_reruns_without_changes() {
    needs!("helm");
    let w = World::start();

    // A plan on an empty world lists every creation and changes nothing.
    let plan = w.recipe("full.rhai").plan().succeeds();
    let planned = plan.changed();
    for want in [
        "argo-workflows/argo-db-credentials",
        "collate/om-role",
        "collate/om-role.service-account-token",
        "collate/db-credentials",
        "collate/es-credentials",
        "om-argo-role",
        "om-argo-role-binding",
        "argo-workflows",
        "openmetadata",
    ] {
        assert!(
            planned
                .iter()
                .any(|c| c.starts_with("create") && c.contains(want)),
            "plan does not create {want}: {planned:#?}"
        );
    }
    assert!(
        w.kube.get("v1", "Namespace", "", "collate").is_none(),
        "the plan created a namespace"
    );
    assert_eq!(w.api.triggers(), 0, "the plan triggered a re-index");

    // Apply converges, and re-indexes once after the install.
    let apply = w.recipe("full.rhai").succeeds();
    w.trust_issued_argo_token();
    apply
        .never_shows("db-canary-5e1f")
        .never_shows("es-canary-77ab")
        .never_shows("argo-canary-9c2d");
    assert_eq!(w.api.triggers(), 1, "one re-index after the install");
    // The example config's `svc://collate/openmetadata:8585`: the Collate API was reached through
    // a port-forward to a pod of the chart's Deployment, not by a URL of the test's own.
    let forwards: Vec<String> = w
        .kube
        .server
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/portforward"))
        .map(|r| format!("{} {}", r.status, r.uri))
        .collect();
    assert!(
        forwards
            .iter()
            .any(|r| r.starts_with("101 /api/v1/namespaces/collate/pods/openmetadata-")),
        "{forwards:?}"
    );

    // Every object the guide creates, with the guide's names and annotations.
    let argo_secret = w.get("v1", "Secret", "argo-workflows", "argo-db-credentials");
    assert!(
        argo_secret["data"]["username"].is_string() && argo_secret["data"]["password"].is_string()
    );
    let om_role = w.get("v1", "ServiceAccount", "collate", "om-role");
    assert_eq!(
        om_role["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/collate-ingestion-role")
    );
    let token = w.get("v1", "Secret", "collate", "om-role.service-account-token");
    assert_eq!(token["type"], "kubernetes.io/service-account-token");
    assert_eq!(
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "om-role"
    );
    let role = w.get(
        "rbac.authorization.k8s.io/v1",
        "Role",
        "collate",
        "om-argo-role",
    );
    let rules = role["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0]["resources"], json!(["workflows"]));
    assert_eq!(rules[3]["resources"], json!(["workflowtaskresults"]));
    assert_eq!(rules[3]["verbs"], json!(["create", "patch"]));
    let binding = w.get(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "collate",
        "om-argo-role-binding",
    );
    assert_eq!(binding["roleRef"]["name"], "om-argo-role");
    assert_eq!(binding["subjects"][0]["name"], "om-role");
    assert_eq!(binding["subjects"][0]["namespace"], "collate");
    for name in ["db-credentials", "es-credentials"] {
        let s = w.get("v1", "Secret", "collate", name);
        assert!(s["data"]["password"].is_string(), "{name} has no password");
    }
    assert_guide_intent(&w);

    // A second run changes nothing, does not re-index, and lists workflows with the om-role token.
    let again = w.recipe("full.rhai").succeeds();
    assert_eq!(again.changed(), Vec::<String>::new());
    assert_eq!(w.api.triggers(), 1);
    assert!(
        w.api
            .seen()
            .iter()
            .any(|s| s.path == "/api/v1/workflows/collate")
    );

    // A changed image tag plans exactly that change.
    let bump = w
        .recipe("full.rhai")
        .set("images.server.tag", "om-1.12.4-cl-1.12.4")
        .plan()
        .succeeds();
    let bumped = bump.changed();
    assert_eq!(bumped.len(), 1, "{bumped:#?}");
    assert!(bumped[0].contains("openmetadata"), "{bumped:#?}");
}

/// The guide's intent, read from what the real charts rendered into the test cluster: the Argo
/// pipeline client (chart openmetadata 1.12.4 puts it in the `openmetadata-pipeline-secret` the
/// server reads with `envFrom`), the ingestion image and pull secret, ARGO_TOKEN from the om-role
/// token, the IRSA annotations, and Argo's S3 artifact repository and archive (chart
/// argo-workflows 0.45.23, in the workflow-controller ConfigMap).
fn assert_guide_intent(w: &World) {
    // Argo Workflows.
    let cm = w.get(
        "v1",
        "ConfigMap",
        "argo-workflows",
        "argo-workflows-workflow-controller-configmap",
    );
    let config: Value =
        serde_saphyr::from_str(cm["data"]["config"].as_str().expect("config")).expect("YAML");
    let s3 = &config["artifactRepository"]["s3"];
    assert_eq!(s3["bucket"], "collate-argo-artifacts-eu-west-1", "{config}");
    assert_eq!(s3["region"], "eu-west-1", "{config}");
    assert_eq!(s3["useSDKCreds"], true, "IRSA credentials: {config}");
    assert_eq!(
        s3["keyFormat"],
        "workflows/{{workflow.namespace}}/{{workflow.name}}/{{pod.name}}"
    );
    assert!(
        s3.get("accessKeySecret").is_none() && s3.get("secretKeySecret").is_none(),
        "static credentials with IRSA: {config}"
    );
    assert_eq!(config["artifactRepository"]["archiveLogs"], true);
    let pg = &config["persistence"]["postgresql"];
    assert_eq!(config["persistence"]["archive"], true, "{config}");
    assert_eq!(pg["userNameSecret"]["name"], "argo-db-credentials");
    assert_eq!(pg["passwordSecret"]["key"], "password");
    assert_eq!(pg["tableName"], "argo_workflows");
    assert_eq!(
        config["workflowDefaults"]["spec"]["serviceAccountName"],
        "om-role"
    );
    for (sa, role) in [
        (
            "argo-workflows-controller-sa",
            "collate-argo-controller-role",
        ),
        ("argo-workflows-server-sa", "collate-argo-server-role"),
    ] {
        let obj = w.get("v1", "ServiceAccount", "argo-workflows", sa);
        assert_eq!(
            obj["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            format!("arn:aws:iam::{ACCOUNT}:role/{role}")
        );
    }
    let server = w.get(
        "apps/v1",
        "Deployment",
        "argo-workflows",
        "argo-workflows-server",
    );
    let args = server["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("--auth-mode=client") && !args.contains("--auth-mode=server"),
        "{args}"
    );
    // The workflow controller watches the Collate namespace, where the chart gave the workflow
    // service account its Role.
    w.get(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "collate",
        "argo-workflows-workflow",
    );

    // Collate / OpenMetadata.
    let om = w.get("apps/v1", "Deployment", "collate", "openmetadata");
    let pod = &om["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "openmetadata");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "ecr-registry-creds");
    let c = &pod["containers"][0];
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .ends_with(":om-1.12.3-cl-1.12.3"),
        "{c}"
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let env = c["env"].as_array().expect("env");
    let token = env
        .iter()
        .find(|e| e["name"] == "ARGO_TOKEN")
        .expect("ARGO_TOKEN");
    assert_eq!(
        token["valueFrom"]["secretKeyRef"],
        json!({"name": "om-role.service-account-token", "key": "token"})
    );
    let from = c["envFrom"].to_string();
    assert!(from.contains("openmetadata-pipeline-secret"), "{from}");
    let secret = w.get("v1", "Secret", "collate", "openmetadata-pipeline-secret");
    // The chart quotes some of these values before encoding them: compare without the quotes.
    let var = |k: &str| {
        let v = unbase64(
            secret["data"][k]
                .as_str()
                .unwrap_or_else(|| panic!("no {k}: {secret}")),
        );
        v.trim_matches('"').to_string()
    };
    assert_eq!(
        var("PIPELINE_SERVICE_CLIENT_CLASS_NAME"),
        "io.collate.pipeline.argo.ArgoServiceClient"
    );
    assert_eq!(
        var("PIPELINE_SERVICE_CLIENT_ENDPOINT"),
        "http://argo-workflows-server.argo-workflows:2746"
    );
    assert_eq!(var("SERVER_HOST_API_URL"), "http://openmetadata:8585/api");
    assert_eq!(var("ARGO_NAMESPACE"), "collate");
    assert!(
        var("ARGO_INGESTION_IMAGE").contains("ingestion"),
        "{}",
        var("ARGO_INGESTION_IMAGE")
    );
    assert_eq!(var("ARGO_IMAGE_PULL_SECRETS"), "ecr-registry-creds");
    assert_eq!(
        var("ARGO_WORKFLOW_EXECUTOR_SERVICE_ACCOUNT_NAME"),
        "om-role"
    );
    // Identity (config `auth:`): the customer's administrators, domain and initial password,
    // not the chart's `admin` at open-metadata.org; no self sign-up.
    let secret_var = |name: &str, k: &str| {
        let s = w.get("v1", "Secret", "collate", name);
        let v = s["data"][k]
            .as_str()
            .unwrap_or_else(|| panic!("no {k} in {name}: {s}"));
        unbase64(v).trim_matches('"').to_string()
    };
    let admins = secret_var(
        "openmetadata-authorizer-secret",
        "AUTHORIZER_ADMIN_PRINCIPALS",
    );
    assert!(admins.contains("jane.doe:admin-canary-3q8v"), "{admins}");
    assert!(!admins.contains("\"admin\""), "{admins}");
    assert_eq!(
        secret_var(
            "openmetadata-authorizer-secret",
            "AUTHORIZER_PRINCIPAL_DOMAIN"
        ),
        "acme.com"
    );
    assert_eq!(
        secret_var(
            "openmetadata-authentication-secret",
            "AUTHENTICATION_PROVIDER"
        ),
        "basic"
    );
    assert_eq!(
        secret_var(
            "openmetadata-authentication-secret",
            "AUTHENTICATION_ENABLE_SELF_SIGNUP"
        ),
        "false"
    );
    let server_sa = w.get("v1", "ServiceAccount", "collate", "openmetadata");
    assert_eq!(
        server_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/collate-server-role")
    );
}

/// The example config's form (a chart repository) and an OCI reference, both on 127.0.0.1 and
/// serving the real charts: full.rhai installs, and a second run changes nothing and does not
/// re-index (a packaged `.tgz` is what the test above installs).
#[test]
fn full_reruns_without_changes_from_a_chart_repository_and_an_oci_registry() {
    needs!("helm");
    let server = ChartRepo::start(&[
        upstream_chart("argo-workflows-0.45.23.tgz"),
        upstream_chart("openmetadata-1.12.4.tgz"),
    ]);
    let repo = format!(
        r#"charts:
  argo_workflows: {{repo_name: argo, repo_url: "{url}", chart: argo/argo-workflows}}
  openmetadata: {{repo_name: open-metadata, repo_url: "{url}", chart: open-metadata/openmetadata}}
"#,
        url = server.url()
    );
    let oci = format!(
        r#"charts:
  argo_workflows: {{repo_url: "", chart: "{argo}"}}
  openmetadata: {{repo_url: "", chart: "{om}"}}
"#,
        argo = server.oci("argo-workflows"),
        om = server.oci("openmetadata"),
    );
    for charts in [repo, oci] {
        let w = World::start();
        let run = || {
            w.recipe("full.rhai")
                .config_yaml(&charts)
                .envs(ChartRepo::env())
        };
        let first = run().succeeds();
        assert!(
            first
                .changed()
                .iter()
                .any(|c| c == "create helm.release collate/openmetadata"),
            "{charts}: {:#?}",
            first.changed()
        );
        assert_eq!(w.api.triggers(), 1, "{charts}");
        let issued = w.get("v1", "Secret", "collate", "om-role.service-account-token");
        w.api.configure(|o| {
            o.argo_token = unbase64(issued["data"]["token"].as_str().expect("token"))
        });
        let again = run().succeeds();
        assert_eq!(again.changed(), Vec::<String>::new(), "{charts}");
        assert_eq!(w.api.triggers(), 1, "{charts}: re-indexed again");
    }
}

#[test]
fn a_typo_in_the_config_fails_before_any_change() {
    let api = ApiServer::start(ApiOptions::default());
    let out = Run::recipe("full.rhai")
        .config(example())
        .config_yaml(&format!(
            "account_id: \"{ACCOUNT}\"\nopenmetadata: {{url: \"{}\"}}\ndatabase:\n  hots: pg.example\n",
            api.url()
        ))
        .envs(secrets_env())
        .fails_with(3);
    out.stderr_contains("unknown config key `database.hots`")
        .stderr_contains("did you mean `database.host`");
    assert!(
        api.seen().is_empty(),
        "a remote call was made: {:?}",
        api.seen()
    );
}

fn reindex(api: &ApiServer) -> Run {
    Run::recipe("reindex.rhai")
        .config(example())
        .config_yaml(&format!(
            "account_id: \"{ACCOUNT}\"\nopenmetadata: {{url: \"{}\"}}\nreindex: {{poll_interval: 0, timeout: 30}}\n",
            api.url()
        ))
        .envs(secrets_env())
}

#[test]
fn reindex_triggers_and_follows_the_run_to_success() {
    let api = ApiServer::start(ApiOptions::default());
    let out = reindex(&api).succeeds();
    out.stdout_contains("SearchIndexingApplication success");
    assert_eq!(api.triggers(), 1);
    let trigger = api
        .seen()
        .into_iter()
        .find(|s| s.path.contains("/apps/trigger/"))
        .unwrap();
    assert_eq!(
        trigger.authorization.as_deref(),
        Some("Bearer om-admin-token")
    );
    let body: Value = serde_json::from_str(&trigger.body).unwrap();
    assert_eq!(body, json!({"entities": ["all"], "recreateIndex": true}));
}

#[test]
fn reindex_failure_exits_non_zero_with_the_failure_context() {
    let api = ApiServer::start(ApiOptions::default());
    api.fail_reindex(json!({"failure": {"message": "mapping conflict in table_search_index"}}));
    let out = reindex(&api).fails_with(4);
    out.stderr_contains("SearchIndexingApplication ended failed")
        .stderr_contains("mapping conflict in table_search_index");
}

#[test]
fn reindex_refuses_while_a_run_is_active() {
    let api = ApiServer::start(ApiOptions::default());
    api.start_active_run();
    let out = reindex(&api).run();
    assert_ne!(out.code, 0, "{out:?}");
    out.stderr_contains("already running")
        .stderr_contains("reindex.force");
    assert_eq!(api.triggers(), 0);
}

#[test]
fn reindex_logs_in_with_basic_auth() {
    let api = ApiServer::start(ApiOptions::default());
    reindex(&api)
        .config_yaml("reindex:\n  auth:\n    token: null\n    basic: {email: admin@open-metadata.org, password: {env: OM_ADMIN_PASSWORD}}\n")
        .env("OM_ADMIN_PASSWORD", "admin-password")
        .succeeds()
        .never_shows("admin-password");
    let trigger = api
        .seen()
        .into_iter()
        .find(|s| s.path.contains("/apps/trigger/"))
        .unwrap();
    assert_eq!(
        trigger.authorization.as_deref(),
        Some("Bearer om-session-1")
    );
}

fn reindex_with(opts: ApiOptions) -> (ApiServer, Run) {
    let api = ApiServer::start(opts);
    let run = reindex(&api);
    (api, run)
}

fn basic_auth(run: Run) -> Run {
    run.config_yaml("reindex:\n  auth:\n    token: null\n    basic: {email: admin@open-metadata.org, password: {env: OM_ADMIN_PASSWORD}}\n")
        .env("OM_ADMIN_PASSWORD", "admin-password")
}

fn logins(api: &ApiServer) -> usize {
    api.seen()
        .iter()
        .filter(|s| s.path == "/api/v1/users/login")
        .count()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn reindex_finished_with_errors_exits_non_zero_with_stats_and_failure_context() {
    let (_api, run) = reindex_with(ApiOptions {
        outcome: Outcome::CompletedWithErrors {
            failed: 3,
            context: json!({"failure": {"errorSource": "SINK", "message": "3 documents rejected by table_search_index"}}),
        },
        ..ApiOptions::default()
    });
    // `activeError` with an `endTime` is final: no waiting until the timeout.
    let started = std::time::Instant::now();
    let out = run.set("reindex.timeout", "20").fails_with(4);
    assert!(started.elapsed().as_secs() < 10, "{out}");
    out.stderr_contains("SearchIndexingApplication finished with errors")
        .stderr_contains("records 1197/1200 (3 failed)")
        .stderr_contains("3 documents rejected by table_search_index");
}

#[test]
fn reindex_follows_stop_in_progress_to_stopped() {
    let (_api, run) = reindex_with(ApiOptions {
        outcome: Outcome::Stopped,
        run_polls: 3,
        ..ApiOptions::default()
    });
    let out = run.fails_with(4);
    out.stdout_contains("SearchIndexingApplication: stopInProgress")
        .stderr_contains("SearchIndexingApplication was stopped before it finished");
}

#[test]
fn reindex_reports_the_servers_refusal_as_a_conflict() {
    let api = ApiServer::start(ApiOptions::default());
    // The job really runs: `reindex.force` passes our check, the server refuses (HTTP 500).
    api.start_active_run();
    let out = reindex(&api).set("reindex.force", "true").fails_with(4);
    out.stderr_contains("the server refuses to start SearchIndexingApplication")
        .stderr_contains("HTTP 500: Job is already running, please wait for it to complete.")
        .stderr_contains("`reindex.force` cannot override the server");
    assert_eq!(api.triggers(), 1);
    assert_eq!(api.runs(), 1);
}

#[test]
fn reindex_force_triggers_over_a_running_record() {
    let api = ApiServer::start(ApiOptions::default());
    api.add_stale_run(now_ms());
    reindex(&api)
        .set("reindex.force", "true")
        .succeeds()
        .stderr_contains("triggering anyway (reindex.force)");
    assert_eq!(api.triggers(), 1);
}

#[test]
fn reindex_triggers_over_a_running_record_older_than_the_server_pods() {
    let kube = Cluster::start();
    let api = ApiServer::start(ApiOptions::default());
    // The Collate server pod (the chart's selector labels) started ten minutes ago; the record
    // reads `running` since an hour: its job died with the server that ran it.
    let started = now_ms() - 600_000;
    let ts = chrono_like(started / 1000);
    kube.server.insert(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "openmetadata-5d9c7b9f4-x2x7q", "namespace": "collate",
                     "labels": {"app.kubernetes.io/name": "openmetadata", "app.kubernetes.io/instance": "openmetadata"}},
        "spec": {"containers": [{"name": "openmetadata", "image": "openmetadata/server:1.12.4"}]},
        "status": {"phase": "Running", "startTime": ts},
    }));
    api.add_stale_run(now_ms() - 3_600_000);
    let out = reindex(&api).envs(kube.env()).succeeds();
    out.stderr_contains("a record left behind by a server that stopped; triggering")
        .stdout_contains("SearchIndexingApplication success");
    assert_eq!(api.triggers(), 1);

    // A record younger than the pod is a live run: refused, naming `reindex.force`.
    let api = ApiServer::start(ApiOptions::default());
    api.add_stale_run(now_ms());
    reindex(&api)
        .envs(kube.env())
        .fails_with(4)
        .stderr_contains("already running")
        .stderr_contains("reindex.force");
    assert_eq!(api.triggers(), 0);
}

/// `2026-12-02T13:00:00Z` for epoch seconds (UTC), as Kubernetes writes timestamps.
fn chrono_like(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn chrono_like_formats_utc() {
    assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
    assert_eq!(chrono_like(1_767_225_600), "2026-01-01T00:00:00Z");
    assert_eq!(chrono_like(1_709_210_096), "2024-02-29T12:34:56Z");
}

#[test]
fn reindex_fails_when_no_run_starts_within_the_start_timeout() {
    let (api, run) = reindex_with(ApiOptions {
        never_starts: true,
        ..ApiOptions::default()
    });
    let started = std::time::Instant::now();
    let out = run.set("reindex.start_timeout", "1").fails_with(4);
    assert!(started.elapsed().as_secs() < 15, "{out}");
    out.stderr_contains("SearchIndexingApplication was triggered but no run started within 1s")
        .stderr_contains("reindex.start_timeout");
    assert_eq!(api.triggers(), 1);
}

#[test]
fn reindex_logs_in_again_once_when_the_login_token_expires() {
    // A login token serves 4 requests: status, trigger, two polls; the fifth is refused.
    let (api, run) = reindex_with(ApiOptions {
        session_requests: Some(4),
        ..ApiOptions::default()
    });
    basic_auth(run)
        .succeeds()
        .stderr_contains("logging in again")
        .stdout_contains("SearchIndexingApplication success");
    assert_eq!(logins(&api), 2);
}

#[test]
fn reindex_fails_at_once_when_the_token_is_refused_while_polling() {
    // Every login token serves only 2 requests: the renewed one runs out too.
    let (api, run) = reindex_with(ApiOptions {
        session_requests: Some(2),
        ..ApiOptions::default()
    });
    let started = std::time::Instant::now();
    let out = basic_auth(run).set("reindex.timeout", "20").fails_with(4);
    assert!(started.elapsed().as_secs() < 10, "{out}");
    out.stderr_contains("reading the SearchIndexingApplication status answered HTTP 401");
    assert_eq!(logins(&api), 2);
}

#[test]
fn reindex_with_a_token_that_may_not_trigger_fails_clearly() {
    let api = ApiServer::start(ApiOptions::default());
    reindex(&api)
        .env("COLLATE_ADMIN_TOKEN", "om-viewer-token")
        .fails_with(4)
        .stderr_contains("the token may not trigger SearchIndexingApplication (HTTP 403")
        .stderr_contains("operations [Trigger] not allowed");
    assert_eq!(api.runs(), 0);
}

#[test]
fn reindex_basic_login_refusals_say_why() {
    let (api, run) = reindex_with(ApiOptions::default());
    basic_auth(run)
        .env("OM_ADMIN_PASSWORD", "wrong-password")
        .fails_with(4)
        .stderr_contains("login as `admin@open-metadata.org` refused (HTTP 401)")
        .never_shows("wrong-password");
    let (_sso, run) = reindex_with(ApiOptions {
        sso: true,
        ..ApiOptions::default()
    });
    basic_auth(run)
        .fails_with(4)
        .stderr_contains("refused (HTTP 403)")
        .stderr_contains("the server uses SSO");
    assert_eq!(api.triggers(), 0);
}

/// `charts.*.extra_values` customise a chart without forking the templates: merged over the
/// rendered values (keys the recipes set kept), checked by the chart's schema before any change.
#[test]
fn extra_values_are_merged_and_checked_by_the_chart_schema() {
    needs!("helm");
    let w = World::start();
    w.recipe("full.rhai")
        .config_yaml("charts: {openmetadata: {extra_values: {resources: {requests: {cpu: \"1\"}}, nodeSelector: {pool: collate}}}}\n")
        .succeeds();
    let om = w.get("apps/v1", "Deployment", "collate", "openmetadata");
    let pod = &om["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["pool"], "collate", "{pod}");
    assert_eq!(
        pod["containers"][0]["resources"]["requests"]["cpu"], "1",
        "{pod}"
    );
    // The recipes' own values stay (merged, not replaced).
    assert_eq!(pod["serviceAccountName"], "openmetadata");
    // A key the chart does not know fails in the plan, before anything changes.
    w.recipe("full.rhai")
        .plan()
        .config_yaml(
            "charts: {openmetadata: {extra_values: {openmetadata: {config: {bogusKey: 1}}}}}\n",
        )
        .fails_with(1)
        .stdout_contains("additional properties 'bogusKey' not allowed");
}

/// A fork's CI checks every customer's config without its secrets: `check` lists them as
/// needed at run time; `--require-secrets` makes them errors again.
#[test]
fn check_lists_missing_secrets_as_needed_at_run_time() {
    let check = || {
        Run::check(root().join("recipes/full.rhai"))
            .config(example())
            .set("openmetadata.url", "http://127.0.0.1:1")
    };
    check()
        .succeeds()
        .stdout_contains(
            "needed at run time: `database.password` (environment variable `COLLATE_DB_PASSWORD`)",
        )
        .stdout_contains("needed at run time: `auth.admin_password`");
    // A secret kept in AWS is not read by `check` (no remote call) either.
    check()
        .config_yaml("search: {password: {aws_secret: collate/search, key: password}}\n")
        .succeeds()
        .stdout_contains(
            "needed at run time: `search.password` (AWS Secrets Manager secret `collate/search`)",
        );
    let json = check().json().succeeds();
    let last = json.json_lines().pop().expect("a JSON line");
    assert_eq!(last["type"], "check", "{json}");
    assert!(
        last["needed_at_run_time"]
            .to_string()
            .contains("search.password"),
        "{last}"
    );
    check()
        .arg("--require-secrets")
        .fails_with(3)
        .stderr_contains("environment variable `COLLATE_DB_PASSWORD` is not set");
    // With the secrets there, nothing is listed.
    check()
        .envs(secrets_env())
        .succeeds()
        .never_shows("needed at run time");
}

/// `auth.admins` and `auth.principal_domain` have no default (the chart's are the same on every
/// install): a config without them fails in `check` and `--plan`, naming the key, with a hint.
#[test]
fn a_config_without_administrators_fails_naming_the_key() {
    let text = std::fs::read_to_string(example()).expect("example config");
    let stripped: String = text
        .lines()
        .filter(|l| !l.starts_with("  admins:") && !l.starts_with("  principal_domain:"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        text.contains("\n  admins:") && text.contains("\n  principal_domain:"),
        "the example config sets both keys"
    );
    for run in [
        Run::recipe("full.rhai").plan(),
        Run::check(root().join("recipes/full.rhai")),
    ] {
        run.config_yaml(&stripped)
            .envs(secrets_env())
            .fails_with(3)
            .stderr_contains("missing config key `auth.admins`")
            .stderr_contains("name the Collate administrators")
            .stderr_contains("missing config key `auth.principal_domain`");
    }
    // SSO without its settings, and an e-mail where a user name belongs.
    Run::recipe("full.rhai")
        .plan()
        .config(example())
        .config_yaml("auth: {provider: google, admins: [jane@acme.com], admin_password: null}\n")
        .envs(secrets_env())
        .fails_with(3)
        .stderr_contains("auth.authority is needed with auth.provider google")
        .stderr_contains("auth.public_keys is needed")
        .stderr_contains("'jane@acme.com' is not a user name");
}

#[test]
fn full_with_an_empty_openmetadata_url_fails_before_any_change() {
    needs!("helm");
    let w = World::start();
    for plan in [true, false] {
        let run = w
            .recipe("full.rhai")
            .config_yaml("openmetadata: {url: \"\"}\n");
        let run = if plan { run.plan() } else { run };
        run.fails_with(3)
            .stdout_contains("re-indexing needs `openmetadata.url`")
            .stdout_contains("steps.reindex: false");
    }
    assert!(
        w.kube
            .get("v1", "Namespace", "", "argo-workflows")
            .is_none(),
        "something was applied"
    );
    assert!(w.api.seen().is_empty(), "{:?}", w.api.seen());
    // With the step off, the same config plans.
    w.recipe("full.rhai")
        .config_yaml("openmetadata: {url: \"\"}\nsteps: {reindex: false}\n")
        .plan()
        .succeeds();
}

#[test]
fn full_re_indexes_again_after_a_failed_re_index() {
    needs!("helm");
    let w = World::start();
    w.api
        .fail_reindex(json!({"failure": {"message": "mapping conflict in table_search_index"}}));
    w.recipe("full.rhai")
        .fails_with(4)
        .stdout_contains("mapping conflict in table_search_index");
    assert_eq!(w.api.triggers(), 1);
    w.trust_issued_argo_token();

    // The release is unchanged, but the last re-index failed: re-index again. The check and
    // the re-index share one session: one basic login.
    w.api.configure(|o| o.outcome = Outcome::Success);
    let before = logins(&w.api);
    basic_auth(w.recipe("full.rhai"))
        .succeeds()
        .stdout_contains("re-indexing search: the last re-index ended failed");
    assert_eq!(w.api.triggers(), 2);
    assert_eq!(logins(&w.api) - before, 1, "one login per run");

    // Now it succeeded: nothing to do.
    w.recipe("full.rhai").succeeds();
    assert_eq!(w.api.triggers(), 2);
}

#[test]
fn full_re_indexes_after_an_upgrade_whose_re_index_never_ran() {
    needs!("helm");
    let w = World::start();
    w.recipe("full.rhai").succeeds();
    assert_eq!(w.api.triggers(), 1);
    w.trust_issued_argo_token();
    // helm records deployment times in whole seconds: the upgrade lands in a later second.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // An upgrade whose re-index is triggered but never starts: the run fails after the upgrade,
    // and the server's last run record is still the earlier success.
    w.api.configure(|o| o.never_starts = true);
    w.recipe("full.rhai")
        .set("openmetadata.replicas", "2")
        .set("reindex.start_timeout", "1")
        .fails_with(4)
        .stdout_contains("no run started within 1s");
    assert_eq!(w.api.triggers(), 2);

    // The release is unchanged now and the last run succeeded, but before the upgrade: the
    // next run re-indexes.
    w.api.configure(|o| o.never_starts = false);
    w.recipe("full.rhai")
        .set("openmetadata.replicas", "2")
        .succeeds()
        .stdout_contains(
            "re-indexing search: the last successful re-index started before revision 2",
        );
    assert_eq!(w.api.triggers(), 3);

    // Converged: nothing to do.
    w.recipe("full.rhai")
        .set("openmetadata.replicas", "2")
        .succeeds();
    assert_eq!(w.api.triggers(), 3);
}

#[test]
fn argo_api_check_authenticates_and_reports_an_rbac_denial() {
    needs!("helm");
    let w = World::start();
    // Argo alone on a fresh cluster: the om-role token does not exist yet, so no call is made.
    w.recipe("argo.rhai")
        .succeeds()
        .stdout_contains("argo server API not checked: no token yet");
    assert!(
        w.api.seen().iter().all(|s| s.path != "/api/v1/version"),
        "the Argo API was called without a token"
    );
    // The whole deploy checks the Argo API after Collate's install issued the token: the
    // server (client mode) accepts it because the cluster holds it in a live token Secret.
    w.recipe("full.rhai")
        .succeeds()
        .stdout_contains("argo server answers: v3.7.1")
        .stdout_contains("om-role may list workflows in collate");
    let issued = format!("Bearer {}", w.issued_token().expect("the om-role token"));
    assert!(
        w.api
            .seen()
            .iter()
            .any(|s| s.path == "/api/v1/version" && s.authorization.as_deref() == Some(&issued)),
        "the check did not use the issued token"
    );

    // `argo.token` from the config is the bearer of every Argo call.
    w.api
        .configure(|o| o.argo_token = "argo-canary-token-31f".into());
    let before = w.api.seen().len();
    w.recipe("argo.rhai")
        .config_yaml("argo: {token: {env: ARGO_API_TOKEN}}\n")
        .env("ARGO_API_TOKEN", "argo-canary-token-31f")
        .succeeds()
        .never_shows("argo-canary-token-31f");
    let argo_calls: Vec<_> = w
        .api
        .seen()
        .into_iter()
        .skip(before)
        .filter(|s| s.path == "/api/v1/version" || s.path.starts_with("/api/v1/workflows/"))
        .collect();
    assert_eq!(argo_calls.len(), 2, "{argo_calls:?}");
    for call in argo_calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer argo-canary-token-31f")
        );
    }

    // Without `argo.token`, the om-role token the cluster issued; its RBAC not covering the
    // Collate namespace is a 403, named.
    w.trust_issued_argo_token();
    w.api
        .configure(|o| o.argo_namespaces = vec!["default".into()]);
    w.recipe("argo.rhai")
        .fails_with(4)
        .stdout_contains("answered 403")
        .stdout_contains("cannot list resource");
}

#[test]
fn every_recipe_passes_check() {
    let dir = root().join("recipes");
    let mut recipes = Vec::new();
    for sub in ["", "maintenance", "lib"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "rhai") {
                recipes.push(p);
            }
        }
    }
    assert!(recipes.len() >= 12, "{recipes:?}");
    // No cluster and no AWS endpoint: `check` makes no remote call, so it needs neither.
    for p in recipes {
        let out = Run::check(&p)
            .config(example())
            .config_yaml(&format!(
                "account_id: \"{ACCOUNT}\"\nopenmetadata: {{url: \"http://localhost:8585\"}}\n"
            ))
            .envs(secrets_env())
            .run();
        assert_eq!(
            out.code,
            0,
            "{} fails `collate-run check`: {out}",
            p.display()
        );
    }
}

#[test]
fn full_with_the_aws_prerequisites_on_moto() {
    needs!("helm", "moto");
    let w = World::start();
    let moto = collate_run_tests::moto::Moto::start();
    let issuer = moto.create_eks_cluster("acme-eks");
    let issuer_host = issuer.trim_start_matches("https://").to_string();
    let run = |plan: bool| {
        let mut r = w
            .recipe("full.rhai")
            .config_yaml(
                "steps: {prereqs: true, preflight: false, reindex: false}\naccount_id: \"\"\n",
            )
            .envs(moto.env());
        if plan {
            r = r.plan();
        }
        r.succeeds()
    };
    // The plan creates nothing on AWS either.
    let plan = run(true);
    assert!(
        plan.changed()
            .iter()
            .any(|c| c == "create aws.iam.role collate-server-role"),
        "{plan}"
    );
    assert!(moto.role_names().is_empty() && moto.bucket_names().is_empty());
    run(false);
    // The guide's AWS objects, one by one.
    assert_eq!(moto.oidc_provider_arns().len(), 1);
    assert!(moto.oidc_provider_arns()[0].ends_with(&format!("oidc-provider/{issuer_host}")));
    assert!(
        moto.bucket_names()
            .contains(&"collate-argo-artifacts-eu-west-1".to_string())
    );
    for (role, ns, sa, policy) in [
        (
            "collate-argo-controller-role",
            "argo-workflows",
            "argo-workflows-controller-sa",
            "AmazonS3FullAccess",
        ),
        (
            "collate-argo-server-role",
            "argo-workflows",
            "argo-workflows-server-sa",
            "AmazonS3ReadOnlyAccess",
        ),
        (
            "collate-server-role",
            "collate",
            "openmetadata",
            "AmazonS3FullAccess",
        ),
        (
            "collate-ingestion-role",
            "collate",
            "om-role",
            "AmazonS3FullAccess",
        ),
    ] {
        let r = moto.python(&format!(
            "iam = c('iam')\nr = iam.get_role(RoleName='{role}')['Role']\n\
             p = [a['PolicyArn'] for a in iam.list_attached_role_policies(RoleName='{role}')['AttachedPolicies']]\n\
             out = {{'trust': r['AssumeRolePolicyDocument'], 'policies': p}}"
        ));
        let cond = &r["trust"]["Statement"][0]["Condition"]["StringEquals"];
        assert_eq!(
            cond[format!("{issuer_host}:sub")],
            format!("system:serviceaccount:{ns}:{sa}"),
            "{role}: {r}"
        );
        assert_eq!(
            cond[format!("{issuer_host}:aud")],
            "sts.amazonaws.com",
            "{role}"
        );
        assert_eq!(
            r["policies"],
            json!([format!("arn:aws:iam::aws:policy/{policy}")]),
            "{role}"
        );
    }
    // The ECR pull secret in the namespace that pulls, with the registry of the config.
    let pull = w.get("v1", "Secret", "collate", "ecr-registry-creds");
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
    let auths = unbase64(pull["data"][".dockerconfigjson"].as_str().unwrap());
    assert!(
        auths.contains("118146679784.dkr.ecr.eu-west-1.amazonaws.com"),
        "{auths}"
    );
    // And a second run changes nothing, on AWS or Kubernetes.
    let again = run(true);
    assert!(again.changed().is_empty(), "{:#?}", again.changed());
}

/// A world with moto as the AWS (its EKS cluster `acme-eks`) and, when `steps` is given, the
/// example deployment made by full.rhai with those steps and the account of the credentials.
fn deployed_on_moto(steps: Option<&str>) -> (World, collate_run_tests::moto::Moto) {
    let w = World::start();
    let moto = collate_run_tests::moto::Moto::start();
    moto.create_eks_cluster("acme-eks");
    if let Some(steps) = steps {
        w.recipe("full.rhai")
            .config_yaml(&format!("steps: {steps}\naccount_id: \"\"\n"))
            .envs(moto.env())
            .succeeds();
    }
    (w, moto)
}

/// status.rhai on a full deployment: one table, healthy (exit 0), the same rows in one JSON
/// report; with a release gone it fails with exit 5 naming the row.
#[test]
fn status_reports_a_deployment_and_fails_when_something_is_wrong() {
    needs!("helm", "moto");
    let (w, moto) = deployed_on_moto(Some("{prereqs: true, preflight: false}"));
    let aws = "account_id: \"\"\n";
    let status = || w.recipe("status.rhai").config_yaml(aws).envs(moto.env());
    // The pull secret records its token's expiry (GetAuthorizationToken's expiresAt). moto
    // answers a fixed 2015-01-01 (moto/ecr/responses.py): an expired token, as status says.
    let pull = w.get("v1", "Secret", "collate", "ecr-registry-creds");
    assert_eq!(
        pull["metadata"]["annotations"]["collate-run.io/token-expires-at"], "2015-01-01T00:00:00Z",
        "{pull}"
    );
    let expiring_in = |hours: i64| {
        let mut s = pull.clone();
        s["metadata"]["annotations"]["collate-run.io/token-expires-at"] =
            json!(chrono_like(now_ms() / 1000 + hours * 3600));
        w.kube.server.insert(s);
    };
    let token_row = |out: &collate_run_tests::run::Output| {
        let report = out
            .json_lines()
            .into_iter()
            .find(|l| l["type"] == "report")
            .unwrap_or_else(|| panic!("no report line: {out}"));
        report["data"]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["requirement"] == "ECR pull secret collate/ecr-registry-creds")
            .cloned()
            .unwrap_or_else(|| panic!("no pull secret row: {report}"))
    };
    let expired = token_row(&status().fails_with(5));
    assert_eq!(expired["verdict"], "FAIL", "{expired}");
    assert!(
        expired["found"].as_str().unwrap().contains("expired"),
        "{expired}"
    );
    // 11 h 30 left of 12: 30 min old, fine; 1 h left: 11 h old, a warning (exit 0).
    expiring_in(1);
    let old = token_row(&status().succeeds());
    assert_eq!(old["verdict"], "warn", "{old}");
    assert!(
        old["found"].as_str().unwrap().starts_with("token 11h 0"),
        "{old}"
    );
    expiring_in(11);
    let out = status().succeeds();
    let fresh = token_row(&out);
    assert_eq!(fresh["verdict"], "ok", "{fresh}");
    assert!(
        fresh["found"]
            .as_str()
            .unwrap()
            .contains("expires in 10h 5"),
        "{fresh}"
    );
    let report = out
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "report")
        .unwrap_or_else(|| panic!("no report line: {out}"));
    assert_eq!(report["name"], "status");
    assert_eq!(report["data"]["healthy"], true, "{report}");
    let rows = report["data"]["rows"].as_array().unwrap();
    let find = |what: &str| {
        rows.iter()
            .find(|r| r["requirement"].as_str().unwrap().starts_with(what))
            .unwrap_or_else(|| panic!("no row {what}: {report}"))
    };
    assert!(
        find("release collate/openmetadata")["found"]
            .as_str()
            .unwrap()
            .contains("openmetadata-1.12.4"),
        "{report}"
    );
    assert_eq!(find("deployment collate/openmetadata")["verdict"], "ok");
    assert_eq!(find("kubernetes")["verdict"], "ok");
    assert!(
        find("last search re-index")["found"]
            .as_str()
            .unwrap()
            .starts_with("success"),
        "{report}"
    );
    // The provider, and for each of the 4 roles: exists, trust sub, trust aud, policies, annotation.
    assert_eq!(find("IRSA")["found"], "21 checks ok", "{report}");
    // Human output: the table.
    Run::recipe("status.rhai")
        .config(example())
        .config_yaml(&w.overrides("account_id: \"\""))
        .envs(secrets_env())
        .envs(w.kube.env())
        .envs(moto.env())
        .succeeds()
        .stdout_contains("how to fix")
        .stdout_contains("release argo-workflows/argo-workflows");

    // The Argo release is gone: exit 5, the row says so.
    w.kube
        .helm(&["uninstall", "argo-workflows", "-n", "argo-workflows"]);
    status()
        .fails_with(5)
        .stdout_contains("release argo-workflows/argo-workflows")
        .stdout_contains("not installed");
}

/// Another customer's credentials or cluster are refused before any change, in a plan too: the
/// account of the AWS credentials against `account_id`, an EKS kube context (named by ARN, as
/// `aws eks update-kubeconfig` writes it) against `cluster_name`, region and account; the
/// config's `kube.context` is the context used.
#[test]
fn another_customers_account_or_cluster_is_refused_before_any_change() {
    needs!("helm", "moto");
    let (w, moto) = deployed_on_moto(None);
    let prereqs = "steps: {prereqs: true, preflight: false, reindex: false}\n";
    w.recipe("full.rhai")
        .plan()
        .config_yaml(prereqs)
        .config_yaml("account_id: \"999999999999\"\n")
        .envs(moto.env())
        .fails_with(3)
        .stdout_contains("the AWS credentials are for account 123456789012, the config is for account 999999999999");
    assert!(moto.role_names().is_empty());

    // The kube context names another EKS cluster.
    let kubeconfig = w
        .kube
        .env()
        .into_iter()
        .find(|(k, _)| k == "KUBECONFIG")
        .map(|(_, v)| v)
        .expect("KUBECONFIG");
    let text = std::fs::read_to_string(&kubeconfig).expect("kubeconfig");
    let name = collate_run_tests::kube::CONTEXT_NAME;
    let eks = |cluster: &str| {
        let arn = format!("arn:aws:eks:eu-west-1:{ACCOUNT}:cluster/{cluster}");
        let path =
            std::env::temp_dir().join(format!("kubeconfig-{cluster}-{}", std::process::id()));
        std::fs::write(
            &path,
            text.replace(
                &format!("- name: {name}\n  cluster:"),
                &format!("- name: {arn}\n  cluster:"),
            )
            .replace(
                &format!("    cluster: {name}\n"),
                &format!("    cluster: {arn}\n"),
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    w.recipe("full.rhai")
        .plan()
        .env("KUBECONFIG", &eks("other-customer"))
        .fails_with(3)
        .stdout_contains("cluster other-customer, not acme-eks");
    w.recipe("full.rhai")
        .plan()
        .env("KUBECONFIG", &eks("acme-eks"))
        .succeeds();
    // `kube.context` picks the context (a wrong one is named).
    w.recipe("full.rhai")
        .plan()
        .config_yaml("kube: {context: nope}\n")
        .fails_with(3)
        .stdout_contains("cannot use kubeconfig context `nope`");
}

/// teardown.rhai after a full deployment with the AWS prerequisites: a plan lists every deletion
/// and changes nothing; an apply without `teardown.confirm` = the cluster name is refused before
/// any change; with it, the releases, objects, namespaces and roles go, the bucket and the OIDC
/// provider stay; a second run changes nothing; asked to, the bucket (with an object in it) and
/// the provider go too.
#[test]
fn teardown_removes_what_the_recipes_made_and_keeps_shared_things() {
    needs!("helm", "moto");
    let (w, moto) = deployed_on_moto(Some("{prereqs: true, preflight: false, reindex: false}"));
    let aws = "account_id: \"\"\n";
    // The four IRSA roles and the in-cluster ECR refresh's.
    assert_eq!(moto.role_names().len(), 5, "{:?}", moto.role_names());
    let teardown = || w.recipe("teardown.rhai").config_yaml(aws).envs(moto.env());

    let plan = teardown().plan().succeeds();
    let planned = plan.changed();
    for want in [
        "delete helm.release collate/openmetadata",
        "delete helm.release argo-workflows/argo-workflows",
        "delete k8s.Secret collate/db-credentials",
        "delete k8s.Role collate/om-argo-role",
        "delete k8s.Namespace collate",
        "delete aws.iam.role collate-server-role",
    ] {
        assert!(planned.iter().any(|c| c == want), "{want}: {planned:#?}");
    }
    assert!(
        !planned
            .iter()
            .any(|c| c.contains("aws.s3.bucket") || c.contains("oidc_provider")),
        "{planned:#?}"
    );
    assert_eq!(moto.role_names().len(), 5, "the plan deleted a role");
    w.get("v1", "Namespace", "", "collate");

    teardown()
        .fails_with(3)
        .stdout_contains("teardown.confirm is empty, not the cluster name")
        .stdout_contains("--set teardown.confirm=acme-eks");
    teardown()
        .set("teardown.confirm", "other-cluster")
        .fails_with(3)
        .stdout_contains("teardown.confirm is `other-cluster`");
    assert_eq!(
        moto.role_names().len(),
        5,
        "a refused teardown deleted a role"
    );

    teardown().set("teardown.confirm", "acme-eks").succeeds();
    assert!(moto.role_names().is_empty(), "{:?}", moto.role_names());
    for ns in ["collate", "argo-workflows"] {
        assert!(
            w.kube.get("v1", "Namespace", "", ns).is_none(),
            "{ns} is left"
        );
    }
    assert_eq!(moto.bucket_names().len(), 1, "the bucket is kept");
    assert_eq!(moto.oidc_provider_arns().len(), 1, "the provider is kept");
    let again = teardown().set("teardown.confirm", "acme-eks").succeeds();
    assert!(again.changed().is_empty(), "{:#?}", again.changed());

    // Asked to: the bucket, emptied first, and the provider.
    moto.python(
        "c('s3').put_object(Bucket='collate-argo-artifacts-eu-west-1', Key='workflows/x/log', Body=b'l')\nout = 1",
    );
    let opts = "teardown: {bucket: true, oidc_provider: true}\n";
    let plan = teardown().config_yaml(opts).plan().succeeds();
    assert!(
        plan.changed()
            .iter()
            .any(|c| c == "delete aws.s3.bucket collate-argo-artifacts-eu-west-1"),
        "{plan}"
    );
    teardown()
        .config_yaml(opts)
        .set("teardown.confirm", "acme-eks")
        .succeeds();
    assert!(moto.bucket_names().is_empty(), "{:?}", moto.bucket_names());
    assert!(moto.oidc_provider_arns().is_empty());
}

/// Decodes Secret data read straight from the test server.
fn unbase64(text: &str) -> String {
    String::from_utf8(BASE64_STANDARD.decode(text).expect("base64")).expect("utf-8")
}

#[test]
fn refresh_ecr_updates_the_pull_secret_in_place() {
    needs!("helm");
    let w = World::start();
    let refresh = |password: &str| {
        Run::recipe("maintenance/refresh-ecr.rhai")
            .config(example())
            .config_yaml(
                "ecr: {password: {env: ECR_PASSWORD}, namespaces: [collate, argo-workflows]}\n",
            )
            .envs(w.kube.env())
            .env("ECR_PASSWORD", password)
            .json()
            .succeeds()
    };
    // No pull secret yet: the refresh creates none (prereqs does), and says so.
    let missing = Run::recipe("maintenance/refresh-ecr.rhai")
        .config(example())
        .config_yaml("ecr: {password: {env: ECR_PASSWORD}, namespaces: [collate]}\n")
        .envs(w.kube.env())
        .env("ECR_PASSWORD", "ecr-token-canary-zero")
        .fails_with(4);
    missing.stderr_contains(
        "pull secret `collate/ecr-registry-creds` does not exist: run prereqs.rhai first",
    );
    assert_eq!(w.kube.server.mutating_requests(), 0, "{missing}");
    // The secrets prereqs.rhai makes.
    Run::script(
        "for ns in [\"collate\", \"argo-workflows\"] {\n\
         k8s::ensure_namespace(ns);\n\
         k8s::ensure_docker_registry_secret(ns, \"ecr-registry-creds\", #{auths: #{}});\n}",
    )
    .envs(w.kube.env())
    .succeeds();
    let first = refresh("ecr-token-canary-one");
    first.never_shows("ecr-token-canary-one");
    let before = w.get("v1", "Secret", "collate", "ecr-registry-creds");
    assert!(
        w.kube
            .get("v1", "Secret", "argo-workflows", "ecr-registry-creds")
            .is_some()
    );
    // A new token (the old one expired after 12 hours): updated, not deleted and re-created.
    w.kube.server.clear_requests();
    let second = refresh("ecr-token-canary-two");
    second.never_shows("ecr-token-canary-two");
    let actions: Vec<String> = second
        .changes()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["action"].as_str().unwrap_or(""),
                c["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        actions.contains(&"update collate/ecr-registry-creds".to_string()),
        "{actions:?}"
    );
    let after = w.get("v1", "Secret", "collate", "ecr-registry-creds");
    assert_eq!(
        before["metadata"]["uid"], after["metadata"]["uid"],
        "the secret was re-created"
    );
    assert!(
        unbase64(after["data"][".dockerconfigjson"].as_str().unwrap())
            .contains("ecr-token-canary-two")
    );
    let deletes: Vec<_> = w
        .kube
        .server
        .requests()
        .into_iter()
        // The run lock's lease is given back (deleted) at the end of every apply.
        .filter(|r| r.method == "DELETE" && !r.uri.contains("/leases/"))
        .collect();
    assert!(deletes.is_empty(), "refresh deleted something: {deletes:?}");
    // The same token again: nothing changes.
    let third = refresh("ecr-token-canary-two");
    assert_eq!(third.summary()["update"], 0, "{third}");
}

#[test]
fn rotate_db_password_updates_the_secret_and_restarts_the_server_once() {
    needs!("helm");
    let w = World::start();
    w.recipe("full.rhai")
        .config_yaml("steps: {reindex: false}\n")
        .succeeds();
    let rotate = |password: &str, plan: bool| {
        let mut r = Run::recipe("maintenance/rotate-db-password.rhai")
            .config(example())
            .envs(w.kube.env())
            .env("COLLATE_DB_PASSWORD", password)
            .json();
        if plan {
            r = r.plan();
        }
        r.succeeds()
    };
    let generation = |w: &World| {
        w.get("apps/v1", "Deployment", "collate", "openmetadata")["metadata"]["generation"].clone()
    };
    let gen0 = generation(&w);
    // The plan shows the change (masked) and restarts nothing.
    let plan = rotate("db-rotated-canary-2", true);
    plan.never_shows("db-rotated-canary-2");
    plan.stdout_contains("would restart deployment/openmetadata");
    assert_eq!(generation(&w), gen0);
    // Apply: the secret holds the new password and the server's pods roll.
    rotate("db-rotated-canary-2", false).never_shows("db-rotated-canary-2");
    let secret = w.get("v1", "Secret", "collate", "db-credentials");
    assert_eq!(
        unbase64(secret["data"]["password"].as_str().unwrap()),
        "db-rotated-canary-2"
    );
    assert_ne!(generation(&w), gen0, "the server was not restarted");
    // The same password again: no restart.
    let gen1 = generation(&w);
    rotate("db-rotated-canary-2", false).stdout_contains("no restart");
    assert_eq!(generation(&w), gen1);
}

/// Keys that must agree are checked with the config, before any remote call, each failure at
/// the key's file:line:col with a hint: the Collate namespace pulls from ECR, the `svc://`
/// endpoints are in the releases' namespaces; the IAM customisation keys are checked for shape.
/// A one-namespace config that agrees passes `check`.
#[test]
fn keys_that_must_agree_are_checked_before_any_change() {
    let fails = |yaml: &str| {
        Run::recipe("full.rhai")
            .plan()
            .config(example())
            .config_yaml(yaml)
            .envs(secrets_env())
            .fails_with(3)
    };
    fails("namespaces: {argo: collate}\n")
        .stderr_contains("argo.api_url (svc://argo-workflows/argo-workflows-server:2746) names namespace argo-workflows, but namespaces.argo is collate")
        .stderr_contains("customer.example.yaml:")
        .stderr_contains("svc://collate/argo-workflows-server:2746");
    fails("namespaces: {collate: acme}\n")
        .stderr_contains(
            "ecr.namespaces ([\"collate\"]) does not include namespaces.collate (acme)",
        )
        .stderr_contains("customer.example.yaml:")
        .stderr_contains("`ecr: {namespaces: [acme]}`");
    fails("openmetadata:\n  url: svc://acme/openmetadata:8585\n")
        .stderr_contains("openmetadata.url (svc://acme/openmetadata:8585) names namespace acme, but namespaces.collate is collate")
        .stderr_contains("config-1.yaml:2:3")
        .stderr_contains("svc://collate/openmetadata:8585");
    // A renamed release: the hint names its Service (the chart's `fullname`).
    fails("releases: {argo: wf}\nnamespaces: {argo: collate}\n")
        .stderr_contains("svc://collate/wf-argo-workflows-server:2746");
    fails("iam:\n  path: collate\n  permissions_boundary: DeveloperBoundary\n  extra_policies: {srever: [arn:aws:iam::123456789012:policy/x]}\n")
        .stderr_contains("iam.path 'collate' must start and end with '/'")
        .stderr_contains("config-1.yaml:2:3")
        .stderr_contains("iam.permissions_boundary 'DeveloperBoundary' is not a managed policy ARN")
        .stderr_contains("iam.extra_policies.srever: no such role");
    // Renamed namespaces, the run lock left behind in the old one: a warning naming the key.
    Run::check(root().join("recipes/full.rhai"))
        .config(example())
        .config_yaml("namespaces: {argo: acme, collate: acme}\necr: {namespaces: [acme]}\nargo: {api_url: \"\"}\nopenmetadata: {url: \"\"}\n")
        .envs(secrets_env())
        .succeeds()
        .stderr_contains("run_lock.namespace (collate) is neither namespaces.collate (acme) nor namespaces.argo (acme)")
        .stderr_contains("customer.example.yaml:")
        .stderr_contains("run_lock: {namespace: acme}");
    Run::check(root().join("recipes/full.rhai"))
        .config(example())
        .config_yaml("namespaces: {argo: collate}\nargo: {api_url: \"svc://collate/argo-workflows-server:2746\"}\n")
        .envs(secrets_env())
        .succeeds();
}

/// prereqs.rhai with the IAM customisation keys, in the partition of the credentials (moto
/// answers `aws-cn` for a China region): every role under `iam.path` with the permissions
/// boundary, the guide's managed policy and the extra ones (`arn:aws-cn:...`), trusting the
/// provider by its `aws-cn` ARN; the provider tagged. A second run changes nothing; an extra
/// policy no longer asked for would be detached (exclusive), so asked ones are what keeps them;
/// a changed path is refused at the key, in a plan.
#[test]
fn prereqs_customised_iam_in_the_callers_partition() {
    needs!("moto");
    let w = World::start();
    let moto = collate_run_tests::moto::Moto::start();
    let region = "cn-north-1";
    let policy = |name: &str| format!("arn:aws-cn:iam::{ACCOUNT}:policy/{name}");
    let issuer = moto.python(&format!(
        "r = c('eks', region='{region}').create_cluster(name='acme-eks', roleArn='arn:aws-cn:iam::{ACCOUNT}:role/eks', \
         resourcesVpcConfig={{'subnetIds': ['subnet-1']}})\n\
         iam = c('iam', region='{region}')\n\
         for n in ['CollateBoundary', 'collate-kms']:\n    iam.create_policy(PolicyName=n, PolicyDocument=json.dumps({{'Version': '2012-10-17', 'Statement': [{{'Effect': 'Allow', 'Action': 'kms:Decrypt', 'Resource': '*'}}]}}))\n\
         out = r['cluster']['identity']['oidc']['issuer']"
    ));
    let hp = issuer
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_string();
    let customised = format!(
        "account_id: \"\"\nregion: {region}\ns3: {{artifacts_bucket: collate-argo-artifacts-{region}}}\n\
         iam: {{permissions_boundary: \"{}\", path: /collate/, extra_policies: {{server: [\"{}\"]}}}}\n\
         oidc: {{tags: {{team: data}}}}\necr: {{password: {{plaintext: ecr-canary}}}}\n",
        policy("CollateBoundary"),
        policy("collate-kms"),
    );
    let prereqs = |extra: &str| {
        w.recipe("prereqs.rhai")
            .config_yaml(&customised)
            .config_yaml(extra)
            .envs(moto.env())
            .env("AWS_REGION", region)
            .env("AWS_DEFAULT_REGION", region)
    };
    let plan = prereqs("{}").plan().succeeds();
    assert!(moto.role_names().is_empty(), "the plan made a role: {plan}");
    prereqs("{}").succeeds();

    let provider = format!("arn:aws-cn:iam::{ACCOUNT}:oidc-provider/{hp}");
    let tags = moto.python(&format!(
        "out = {{t['Key']: t['Value'] for t in c('iam', region='{region}').list_open_id_connect_provider_tags(OpenIDConnectProviderArn='{provider}')['Tags']}}"
    ));
    assert_eq!(tags, json!({"team": "data"}));
    for (role, managed, extra) in [
        ("collate-argo-controller-role", "AmazonS3FullAccess", None),
        ("collate-argo-server-role", "AmazonS3ReadOnlyAccess", None),
        (
            "collate-server-role",
            "AmazonS3FullAccess",
            Some(policy("collate-kms")),
        ),
        ("collate-ingestion-role", "AmazonS3FullAccess", None),
    ] {
        let r = moto.python(&format!(
            "iam = c('iam', region='{region}')\nr = iam.get_role(RoleName='{role}')['Role']\n\
             p = sorted(a['PolicyArn'] for a in iam.list_attached_role_policies(RoleName='{role}')['AttachedPolicies'])\n\
             out = {{'arn': r['Arn'], 'path': r['Path'], 'boundary': r.get('PermissionsBoundary', {{}}).get('PermissionsBoundaryArn'), \
             'trust': r['AssumeRolePolicyDocument'], 'policies': p}}"
        ));
        assert_eq!(
            r["arn"],
            format!("arn:aws-cn:iam::{ACCOUNT}:role/collate/{role}"),
            "{r}"
        );
        assert_eq!(r["path"], "/collate/");
        assert_eq!(r["boundary"], policy("CollateBoundary").as_str(), "{r}");
        assert_eq!(
            r["trust"]["Statement"][0]["Principal"]["Federated"],
            provider.as_str()
        );
        let mut want = vec![format!("arn:aws-cn:iam::aws:policy/{managed}")];
        want.extend(extra);
        want.sort();
        assert_eq!(r["policies"], json!(want), "{role}");
    }

    let again = prereqs("{}").plan().succeeds();
    assert_eq!(again.changed(), Vec::<String>::new());
    // doctor-irsa checks the path and the boundary the config asks for (the service accounts do
    // not exist in this world: those rows fail, exit 5).
    let doctor = || {
        w.recipe("maintenance/doctor-irsa.rhai")
            .config_yaml(&customised)
            .envs(moto.env())
            .env("AWS_REGION", region)
            .env("AWS_DEFAULT_REGION", region)
    };
    let rows = |out: &collate_run_tests::run::Output| -> Vec<Value> {
        out.json_lines()
            .into_iter()
            .filter(|l| l["type"] == "report")
            .flat_map(|l| l["data"]["rows"].as_array().cloned().unwrap_or_default())
            .collect()
    };
    let checked = rows(&doctor().fails_with(5));
    for check in ["path", "permissions boundary"] {
        let found: Vec<_> = checked.iter().filter(|r| r["check"] == check).collect();
        assert_eq!(found.len(), 4, "{check}: {checked:#?}");
        assert!(found.iter().all(|r| r["ok"] == true), "{check}: {found:#?}");
    }
    // A boundary the roles do not have: the row says which.
    let other = rows(
        &doctor()
            .config_yaml(&format!(
                "iam: {{permissions_boundary: \"{}\"}}\n",
                policy("collate-kms")
            ))
            .fails_with(5),
    );
    let wrong = other
        .iter()
        .find(|r| r["check"] == "permissions boundary")
        .unwrap_or_else(|| panic!("{other:#?}"));
    assert_eq!(wrong["ok"], false, "{wrong}");
    assert_eq!(
        wrong["detail"],
        policy("CollateBoundary").as_str(),
        "{wrong}"
    );
    // Not asked for any more: the exclusive converge would detach it.
    let out = prereqs("iam: {extra_policies: {server: []}}")
        .plan()
        .succeeds();
    assert_eq!(
        out.changed(),
        vec!["update aws.iam.role collate-server-role".to_string()]
    );
    out.stdout_contains(&policy("collate-kms"));
    // The scoped policy's bucket ARNs are in the partition too.
    prereqs("s3: {scoped_policy: true}")
        .plan()
        .succeeds()
        .stdout_contains(&format!(
            "arn:aws-cn:s3:::collate-argo-artifacts-{region}/*"
        ));
    // With `account_id` given, the ARNs take the region's partition; credentials of another
    // partition are refused before any change.
    w.recipe("prereqs.rhai")
        .plan()
        .config_yaml(&format!("region: {region}\ns3: {{artifacts_bucket: b-{region}}}\n"))
        .envs(moto.env())
        .fails_with(3)
        .stdout_contains("the AWS credentials are for partition aws, the config's region cn-north-1 is in aws-cn");
    // IAM cannot move a role: the plan fails at the key.
    prereqs("iam:\n  path: /platform/\n")
        .plan()
        .fails_with(3)
        .stdout_contains("IAM role `collate-")
        .stdout_contains("exists with path `/collate/`, not `/platform/`")
        .stdout_contains("config-3.yaml:2:3");
}

/// The ARNs of recipes that make no AWS call (`account_id` in the config) are in the partition
/// of the config's region, under `iam.path`.
#[test]
fn arns_without_aws_calls_take_the_partition_of_the_region() {
    for (region, partition) in [
        ("eu-west-1", "aws"),
        ("cn-north-1", "aws-cn"),
        ("us-gov-west-1", "aws-us-gov"),
    ] {
        Run::script(&format!(
            r#"import "iam" as iam;
            let cfg = #{{ account_id: "{ACCOUNT}", region: "{region}", iam: #{{ path: "/collate/" }} }};
            print(iam::role_arn(cfg, "r"));
            print(iam::bucket_arn(cfg, "b"));"#
        ))
        .arg("--lib")
        .arg(&root().join("recipes/lib").display().to_string())
        .succeeds()
        .stdout_contains(&format!("arn:{partition}:iam::{ACCOUNT}:role/collate/r"))
        .stdout_contains(&format!("arn:{partition}:s3:::b"));
    }
}

/// A one-namespace install with every configurable name changed: both releases, the om-argo
/// Role and binding and the credentials Secrets in `collate`, named from the config; the Argo
/// chart's objects follow the release name (`wf-argo-workflows-server`, reached through
/// `svc://`; the openmetadata chart keeps `openmetadata`, its fullnameOverride); a second run
/// changes nothing; status finds the renamed releases; teardown removes the renamed objects.
#[test]
fn one_namespace_install_with_renamed_objects() {
    needs!("helm", "moto");
    let w = World::start();
    let moto = collate_run_tests::moto::Moto::start();
    moto.create_eks_cluster("acme-eks");
    let addr = w.api.url().trim_start_matches("http://").to_string();
    let backend =
        kube_testserver::Backend::parse(&format!("collate/wf-argo-workflows-server:2746={addr}"))
            .expect("backend");
    w.kube.server.add_backend(backend, false);
    let renamed = "account_id: \"\"\nsteps: {prereqs: true, preflight: false}\n\
        namespaces: {argo: collate, collate: collate}\n\
        releases: {argo: wf, openmetadata: om}\n\
        names: {om_argo_role: ingestion-argo, om_argo_role_binding: ingestion-argo-binding, db_secret: acme-db, search_secret: acme-search, argo_db_secret: acme-argo-db}\n\
        argo: {api_url: \"svc://collate/wf-argo-workflows-server:2746\"}\n";
    let recipe = |name: &str| w.recipe(name).config_yaml(renamed).envs(moto.env());
    recipe("full.rhai").succeeds();
    w.trust_issued_argo_token();
    assert_eq!(w.api.triggers(), 1, "one re-index after the install");
    for (kind, name) in [
        ("Role", "ingestion-argo"),
        ("RoleBinding", "ingestion-argo-binding"),
    ] {
        w.get("rbac.authorization.k8s.io/v1", kind, "collate", name);
    }
    for name in [
        "acme-db",
        "acme-search",
        "acme-argo-db",
        "ecr-registry-creds",
    ] {
        w.get("v1", "Secret", "collate", name);
    }
    for name in ["db-credentials", "es-credentials", "argo-db-credentials"] {
        assert!(
            w.kube.get("v1", "Secret", "collate", name).is_none(),
            "{name}"
        );
    }
    assert!(
        w.kube
            .get("v1", "Namespace", "", "argo-workflows")
            .is_none()
    );
    let om = w.get("apps/v1", "Deployment", "collate", "openmetadata");
    assert!(om.to_string().contains("\"acme-db\""), "{om}");
    w.get(
        "apps/v1",
        "Deployment",
        "collate",
        "wf-argo-workflows-server",
    );
    let pipeline = w
        .kube
        .helm(&["get", "values", "om", "-n", "collate", "-o", "json"]);
    assert!(
        pipeline.contains("http://wf-argo-workflows-server.collate:2746")
            && pipeline.contains("http://openmetadata:8585/api"),
        "{pipeline}"
    );

    let again = recipe("full.rhai").succeeds();
    assert_eq!(again.changed(), Vec::<String>::new());
    assert_eq!(w.api.triggers(), 1);

    // Every row is fine but the pull secret's token: moto answers GetAuthorizationToken with a
    // fixed 2015-01-01 expiresAt (moto/ecr/responses.py), which status reads as expired.
    let status = recipe("status.rhai").fails_with(5);
    status
        .stdout_contains("release collate/om")
        .stdout_contains("release collate/wf");
    let report = status
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "report")
        .unwrap_or_else(|| panic!("no report line: {status}"));
    let failed: Vec<_> = report["data"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "FAIL")
        .map(|r| r["requirement"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        failed,
        ["ECR pull secret collate/ecr-registry-creds"],
        "{report}"
    );

    recipe("teardown.rhai")
        .set("teardown.confirm", "acme-eks")
        .succeeds();
    assert!(w.kube.get("v1", "Namespace", "", "collate").is_none());
    assert!(moto.role_names().is_empty(), "{:?}", moto.role_names());
    let out = w.kube.helm(&["list", "-A", "-q"]);
    assert!(out.trim().is_empty(), "{out}");
}
