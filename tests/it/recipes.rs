//! The recipes end to end: against the Kubernetes API test server, real helm with the fixture
//! charts, and the OpenMetadata/Argo API test server. AWS (prereqs) is left out of the
//! Kubernetes tests (`steps.prereqs: false`, `account_id` given) until the moto helpers land.

use std::path::PathBuf;

use collate_run_tests::Run;
use collate_run_tests::api_server::{ApiOptions, ApiServer};
use collate_run_tests::kube::Cluster;
use collate_run_tests::run::root;
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";

fn example() -> PathBuf {
    root().join("recipes/customer.example.yaml")
}

fn secrets_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("COLLATE_DB_PASSWORD", "db-canary-5e1f"),
        ("COLLATE_ES_PASSWORD", "es-canary-77ab"),
        ("ARGO_DB_PASSWORD", "argo-canary-9c2d"),
        ("COLLATE_ADMIN_TOKEN", "om-admin-token"),
    ]
}

/// The example config pointed at the loopback servers (`api_url`: the OpenMetadata/Argo test
/// server) and the fixture charts; `head` holds what differs per test world (the account, which
/// steps run, a run lock).
pub(crate) fn loopback_overrides(api_url: &str, head: &str) -> String {
    let charts = root().join("tests/fixtures/charts");
    format!(
        r#"{head}
charts:
  argo_workflows: {{repo_url: "", chart: "{argo}"}}
  openmetadata: {{repo_url: "", chart: "{om}"}}
  timeout: 60s
argo: {{api_url: "{api_url}", database: {{user: argo_user}}}}
openmetadata: {{url: "{api_url}", health_timeout: 20}}
reindex: {{poll_interval: 0, timeout: 30}}
"#,
        argo = charts.join("argo-workflows").display(),
        om = charts.join("openmetadata").display(),
    )
}

/// The example config on the loopback servers, AWS prerequisites off.
fn local_overrides(api: &ApiServer) -> String {
    loopback_overrides(
        api.url(),
        &format!("account_id: \"{ACCOUNT}\"\nsteps: {{prereqs: false, preflight: false}}"),
    )
}

struct World {
    kube: Cluster,
    api: ApiServer,
}

impl World {
    fn start() -> Option<World> {
        let kube = Cluster::start();
        kube.helm_bin()?;
        let api = ApiServer::start(ApiOptions::default());
        Some(World { kube, api })
    }

    fn recipe(&self, name: &str) -> Run {
        Run::recipe(name)
            .config(example())
            .config_yaml(&local_overrides(&self.api))
            .envs(secrets_env())
            .envs(self.kube.env())
            .json()
    }

    fn get(&self, api_version: &str, kind: &str, ns: &str, name: &str) -> Value {
        self.kube
            .get(api_version, kind, ns, name)
            .unwrap_or_else(|| panic!("{kind} {ns}/{name} does not exist"))
    }
}

#[test]
fn full_plans_converges_and_reruns_without_changes() {
    let Some(w) = World::start() else {
        eprintln!("skipped: helm not installed (scripts/test-deps.sh)");
        return;
    };

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
    // From now on the Argo API accepts only the token the cluster issued for om-role.
    let issued = w.get("v1", "Secret", "collate", "om-role.service-account-token");
    let issued = unbase64(
        issued["data"]["token"]
            .as_str()
            .expect("the om-role token is issued"),
    );
    w.api.configure(|o| o.argo_token = issued);
    apply
        .never_shows("db-canary-5e1f")
        .never_shows("es-canary-77ab")
        .never_shows("argo-canary-9c2d");
    assert_eq!(w.api.triggers(), 1, "one re-index after the install");

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
    let cm = w.get(
        "v1",
        "ConfigMap",
        "argo-workflows",
        "argo-workflows-workflow-controller-configmap",
    );
    let config = cm["data"]["config"].as_str().expect("config");
    assert!(
        config
            .contains("keyFormat: workflows/{{workflow.namespace}}/{{workflow.name}}/{{pod.name}}"),
        "{config}"
    );
    assert!(
        !config.contains("accessKeySecret"),
        "static credentials with IRSA: {config}"
    );
    assert!(
        config.contains("name: argo-db-credentials") && config.contains("archive: true"),
        "{config}"
    );
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
    let om = w.get("apps/v1", "Deployment", "collate", "openmetadata");
    let pod = &om["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "openmetadata");
    assert_eq!(pod["imagePullSecrets"][0]["name"], "ecr-registry-creds");
    let c = &pod["containers"][0];
    assert!(
        c["image"]
            .as_str()
            .unwrap()
            .ends_with(":om-1.12.3-cl-1.12.3")
    );
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    let env = c["env"].as_array().expect("env");
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        var("PIPELINE_SERVICE_CLIENT_TYPE")["value"],
        "argoWorkflows"
    );
    assert_eq!(
        var("ARGO_TOKEN")["valueFrom"]["secretKeyRef"]["name"],
        "om-role.service-account-token"
    );
    assert_eq!(var("ARGO_NAMESPACE")["value"], "collate");
    assert_eq!(
        var("ARGO_WORKFLOW_EXECUTOR_SERVICE_ACCOUNT_NAME")["value"],
        "om-role"
    );
    assert_eq!(
        var("ASSET_UPLOADER_S3_PREFIX_PATH")["value"],
        "assets/collate"
    );
    let server_sa = w.get("v1", "ServiceAccount", "collate", "openmetadata");
    assert_eq!(
        server_sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        format!("arn:aws:iam::{ACCOUNT}:role/collate-server-role")
    );

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
    out.stderr_contains("already running");
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
    let Some(w) = World::start() else {
        eprintln!("skipped: helm not installed (scripts/test-deps.sh)");
        return;
    };
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

/// Standard base64 decoding (Secret data read straight from the test server).
fn unbase64(text: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = T.iter().position(|t| *t == c).expect("base64") as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn refresh_ecr_updates_the_pull_secret_in_place() {
    let Some(w) = World::start() else {
        eprintln!("skipped: helm not installed (scripts/test-deps.sh)");
        return;
    };
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
    let Some(w) = World::start() else {
        eprintln!("skipped: helm not installed (scripts/test-deps.sh)");
        return;
    };
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
