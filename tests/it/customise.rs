//! Customisation without forking (issue #16): config keys the recipes render into the real
//! upstream charts, checked on what the charts made (the workflow-controller ConfigMap, the
//! Deployments, the RBAC objects), each with today's values as its default.

use collate_run_tests::needs;
use collate_run_tests::world::World;
use serde_json::Value;

use crate::recipes::Recipes;

/// The workflow controller's configuration (the `config` key of its ConfigMap), parsed.
fn controller_config(w: &World, ns: &str) -> Value {
    let cm = w.get(
        "v1",
        "ConfigMap",
        ns,
        "argo-workflows-workflow-controller-configmap",
    );
    serde_saphyr::from_str(cm["data"]["config"].as_str().expect("config")).expect("YAML")
}

fn container(w: &World, ns: &str, deployment: &str) -> Value {
    let d = w.get("apps/v1", "Deployment", ns, deployment);
    d["spec"]["template"]["spec"]["containers"][0].clone()
}

/// A secret reference to a variable no test sets: resolving it fails the run.
const UNSET: &str = "{env: COLLATE_RUN_TEST_NEVER_SET}";

/// Argo from a mirror, its archive on MySQL, in one namespace; then without the archive, whose
/// password is then not needed and whose persistence is gone. Each as the real chart renders it.
#[test]
fn argo_images_mysql_archive_and_single_namespace_as_the_chart_renders_them() {
    needs!("helm");
    let w = World::start();
    let argo = |yaml: &str| {
        w.recipe("argo.rhai")
            .config_yaml("argo: {api_url: \"\"}\n")
            .config_yaml(yaml)
    };

    // One namespace for Argo but workflows elsewhere: refused before any change.
    argo("argo: {single_namespace: true}\n")
        .plan()
        .fails_with(3)
        .stdout_contains("argo.single_namespace: the controller then watches only namespaces.argo (argo-workflows), but the workflows run in namespaces.collate (collate)");
    // An archive on an unknown engine, or without its host: refused, naming the key.
    argo("argo: {database: {engine: oracle, host: \"\"}}\n")
        .plan()
        .fails_with(3)
        .stdout_contains("argo.database.engine must be postgresql or mysql, not 'oracle'")
        .stdout_contains("argo.database.host is needed while argo.archive is true");

    let custom = r#"namespaces: {argo: collate, collate: collate}
argo:
  single_namespace: true
  database: {engine: mysql, host: mysql.internal, name: argo}
  images:
    registry: mirror.example.com
    tag: v3.7.1-mirror
    pull_secrets: [mirror-creds]
    pull_policy: IfNotPresent
    executor: {registry: exec.example.com, repository: mirror/argoexec}
    server: {tag: v3.7.1-server}
"#;
    let out = argo(custom).succeeds();
    assert!(
        out.changed()
            .iter()
            .any(|c| c.contains("collate/argo-db-credentials")),
        "{:?}",
        out.changed()
    );
    let config = controller_config(&w, "collate");
    let persistence = &config["persistence"];
    assert_eq!(persistence["archive"], true, "{config}");
    assert!(persistence.get("postgresql").is_none(), "{config}");
    let my = &persistence["mysql"];
    assert_eq!(my["host"], "mysql.internal", "{config}");
    assert_eq!(my["port"], 3306, "MySQL's port by default: {config}");
    assert_eq!(my["database"], "argo");
    assert_eq!(my["tableName"], "argo_workflows");
    assert_eq!(my["userNameSecret"]["name"], "argo-db-credentials");
    assert_eq!(my["passwordSecret"]["key"], "password");
    assert!(
        my.get("ssl").is_none() && my.get("sslMode").is_none(),
        "{config}"
    );

    let controller = container(&w, "collate", "argo-workflows-workflow-controller");
    assert_eq!(
        controller["image"],
        "mirror.example.com/argoproj/workflow-controller:v3.7.1-mirror"
    );
    assert_eq!(controller["imagePullPolicy"], "IfNotPresent");
    let args: Vec<&str> = controller["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let executor = args
        .iter()
        .position(|a| *a == "--executor-image")
        .map(|i| args[i + 1]);
    assert_eq!(
        executor,
        Some("exec.example.com/mirror/argoexec:v3.7.1-mirror"),
        "{args:?}"
    );
    assert!(args.contains(&"--namespaced"), "{args:?}");
    let server = container(&w, "collate", "argo-workflows-server");
    assert_eq!(
        server["image"],
        "mirror.example.com/argoproj/argocli:v3.7.1-server"
    );
    assert!(server["args"].to_string().contains("--namespaced"));
    let deployment = w.get(
        "apps/v1",
        "Deployment",
        "collate",
        "argo-workflows-workflow-controller",
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["imagePullSecrets"][0]["name"], "mirror-creds", "{pod}");
    // singleNamespace: a RoleBinding in the release's namespace, no ClusterRoleBinding.
    w.get(
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "collate",
        "argo-workflows-workflow-controller",
    );
    assert!(
        w.kube
            .get(
                "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding",
                "",
                "argo-workflows-workflow-controller",
            )
            .is_none()
    );
    assert!(argo(custom).succeeds().changed().is_empty());

    // No archive: no persistence in the controller's configuration (it would open the database),
    // and the database password is not needed.
    let no_archive = || {
        argo(custom).config_yaml(&format!(
            "argo: {{archive: false, database: {{password: {UNSET}}}}}\n"
        ))
    };
    let plan = no_archive().plan().succeeds();
    assert!(
        plan.changed()
            .iter()
            .any(|c| c.contains("argo-workflows") && !c.contains("argo-db-credentials")),
        "{:?}",
        plan.changed()
    );
    no_archive().succeeds();
    let config = controller_config(&w, "collate");
    assert!(config.get("persistence").is_none(), "{config}");
    assert!(no_archive().succeeds().changed().is_empty());
}

/// With no Argo key set, the values are today's: a re-run of the default deployment after
/// these keys existed changes nothing (see full_plans_converges_and_reruns_without_changes);
/// here, an install without the archive never creates the database Secret.
#[test]
fn argo_without_archive_never_creates_the_database_secret() {
    needs!("helm");
    let w = World::start();
    let plan = w
        .recipe("argo.rhai")
        .plan()
        .config_yaml(&format!(
            "argo: {{archive: false, api_url: \"\", database: {{host: \"\", name: \"\", user: \"\", password: {UNSET}}}}}\n"
        ))
        .succeeds();
    let changed = plan.changed();
    assert!(
        !changed.iter().any(|c| c.contains("argo-db-credentials")),
        "{changed:?}"
    );
    assert!(
        changed.iter().any(|c| c.contains("argo-workflows")),
        "{changed:?}"
    );
}

/// A search domain without auth: no password needed, no es-credentials Secret, and the chart
/// renders no search user or password for the server.
#[test]
fn search_without_auth_renders_no_credentials() {
    needs!("helm");
    let w = World::start();
    let collate = || {
        w.recipe("collate.rhai").config_yaml(&format!(
            "search: {{auth: false, user: \"\", password: {UNSET}}}\n"
        ))
    };
    collate().succeeds();
    assert!(
        w.kube
            .get("v1", "Secret", "collate", "es-credentials")
            .is_none()
    );
    let c = container(&w, "collate", "openmetadata");
    let env = c["env"].to_string();
    assert!(!env.contains("ELASTICSEARCH_PASSWORD"), "{env}");
    assert!(
        w.secret(
            "collate",
            "openmetadata-search-secret",
            "ELASTICSEARCH_USER"
        )
        .is_none()
    );
    assert!(
        w.secret(
            "collate",
            "openmetadata-search-secret",
            "ELASTICSEARCH_HOST"
        )
        .is_some()
    );
    assert!(collate().succeeds().changed().is_empty());
    // With auth the user must be named.
    w.recipe("collate.rhai")
        .config_yaml("search: {user: \"\"}\n")
        .plan()
        .fails_with(3)
        .stdout_contains("search.user is needed while search.auth is true");
}

/// A search domain behind a private CA: the server gets the truststore of the Secret
/// `search.truststore.secret` (made by the consultant with keytool), mounted where the chart's
/// trustStore path points, its password from the same Secret. A missing Secret stops the run
/// before any change, saying how to make it.
#[test]
fn search_truststore_is_mounted_for_the_server() {
    needs!("helm");
    let w = World::start();
    let ts = "search: {scheme: https, truststore: {secret: search-truststore}}\n";
    let plan = w.recipe("full.rhai").plan().config_yaml(ts).fails_with(3);
    plan.stdout_contains(
        "search.truststore.secret: Secret `collate/search-truststore` does not exist",
    )
    .stdout_contains("keytool -importcert");
    assert!(plan.changed().is_empty());
    w.kube.server.insert(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "search-truststore", "namespace": "collate"},
        "type": "Opaque",
        "data": {"truststore": "AAEC", "password": "Y2hhbmdlaXQ="},
    }));
    w.recipe("collate.rhai").config_yaml(ts).succeeds();
    let d = w.get("apps/v1", "Deployment", "collate", "openmetadata");
    let pod = &d["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "search-truststore")
        .unwrap_or_else(|| panic!("no truststore volume: {pod}"));
    assert_eq!(volume["secret"]["secretName"], "search-truststore");
    let c = &pod["containers"][0];
    assert!(
        c["volumeMounts"]
            .to_string()
            .contains("/etc/collate/search-truststore"),
        "{c}"
    );
    let env = c["env"].as_array().unwrap();
    let password = env
        .iter()
        .find(|e| e["name"] == "ELASTICSEARCH_TRUST_STORE_PASSWORD")
        .unwrap_or_else(|| panic!("no truststore password: {c}"));
    assert_eq!(
        password["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "search-truststore", "key": "password"})
    );
    assert_eq!(
        w.secret(
            "collate",
            "openmetadata-search-secret",
            "ELASTICSEARCH_TRUST_STORE_PATH"
        )
        .as_deref(),
        Some("/etc/collate/search-truststore/truststore")
    );
    // OpenMetadata reads the truststore only with the search credentials.
    w.recipe("collate.rhai")
        .plan()
        .config_yaml(ts)
        .config_yaml("search: {auth: false}\n")
        .fails_with(3)
        .stdout_contains("search.truststore needs search.scheme: https and search.auth: true");
}
