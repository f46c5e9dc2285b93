//! Per-customer pins for a kube context that is not named by an EKS ARN (eksctl's, an alias, a
//! hand-written kubeconfig): when its server is an EKS API endpoint, it must be the endpoint of
//! `cluster_name` (EKS DescribeCluster, on moto), checked before any change.

use collate_run_tests::moto::Moto;
use collate_run_tests::run::root;
use collate_run_tests::{Run, needs};

/// What a recipe does first: the config, then the pins (with AWS).
const PINS: &str = r#"
import "config" as config_schema;
let cfg = config_schema::load(config, []);
config_schema::verify_pins(cfg, true);
print("pins ok");
"#;

/// A kubeconfig whose one context (`acme`, cluster `acme`: no ARN) reaches `server`.
fn kubeconfig(dir: &tempfile::TempDir, server: &str) -> String {
    let path = dir.path().join(format!("kubeconfig-{}", server.len()));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: acme\n\
             clusters:\n- name: acme\n  cluster: {{server: \"{server}\"}}\n\
             contexts:\n- name: acme\n  context: {{cluster: acme, user: acme}}\n\
             users:\n- name: acme\n  user: {{token: not-used}}\n"
        ),
    )
    .expect("write kubeconfig");
    path.display().to_string()
}

#[test]
fn a_context_at_another_eks_endpoint_is_refused_before_any_change() {
    needs!("moto");
    let moto = Moto::start();
    moto.create_eks_cluster("acme-eks");
    let endpoint = moto
        .python("out = c('eks').describe_cluster(name='acme-eks')['cluster']['endpoint']")
        .as_str()
        .expect("an endpoint")
        .trim_end_matches('/')
        .to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let example = root().join("recipes/customer.example.yaml");
    let pins = |server: &str| {
        Run::script(PINS)
            .cwd(root())
            .arg("--lib")
            .arg(&root().join("recipes/lib").display().to_string())
            .config(&example)
            .envs(moto.env())
            .env("KUBECONFIG", &kubeconfig(&dir, server))
            .json()
    };

    // Another EKS cluster's endpoint: refused, naming both, with the hint.
    let other = "https://0123456789ABCDEF0123456789ABCDEF.gr7.eu-west-1.eks.amazonaws.com";
    pins(other)
        .fails_with(3)
        .stdout_contains(&format!(
            "kube context `acme` reaches {other}, but cluster acme-eks's endpoint is {endpoint}"
        ))
        .stdout_contains("customer.example.yaml:")
        .stdout_contains("use the customer's cluster");
    // The endpoint of cluster_name (as a kubeconfig writes it, without moto's trailing slash).
    pins(&endpoint).succeeds().stdout_contains("pins ok");
    // A cluster_name that does not exist for these credentials.
    pins(&endpoint)
        .set("cluster_name", "nobody-eks")
        .fails_with(3)
        .stdout_contains("but cluster nobody-eks does not exist for these AWS credentials");
    // A server that is no EKS endpoint (a proxy, a local cluster) is not compared.
    pins("https://127.0.0.1:1")
        .succeeds()
        .stdout_contains("pins ok");

    // full.rhai stops there, in a plan too, before anything (no role, no bucket on moto).
    Run::recipe("full.rhai")
        .plan()
        .config(&example)
        .config_yaml("account_id: \"\"\n")
        .envs(crate::recipes::secrets_env())
        .envs(moto.env())
        .env("KUBECONFIG", &kubeconfig(&dir, other))
        .json()
        .fails_with(3)
        .stdout_contains("reaches https://0123456789ABCDEF");
    assert!(moto.role_names().is_empty());
    assert!(moto.bucket_names().is_empty());
}
