//! Preflight (`recipes/preflight.rhai`, the `db` and `preflight` namespaces) against real servers
//! on loopback: PostgreSQL and MariaDB from Debian packages, the Kubernetes API test server with
//! nodes of various sizes, and a JSON server answering like OpenSearch, Argo and ip-ranges.json.

use collate_run_tests::base64::{Engine as _, prelude::BASE64_STANDARD};
use collate_run_tests::json_server::JsonServer;
use collate_run_tests::loopback::free_port;
use collate_run_tests::mariadb::{self, MariaDb};
use collate_run_tests::needs::gate;
use collate_run_tests::postgres::{self, Postgres};
use collate_run_tests::tls_server::TlsServer;
use collate_run_tests::{Run, needs, run::binary, run::root};
use kube_testserver::{Image, KubeTestServer};
use serde_json::json;

const SEARCH_PASSWORD: &str = "es-canary-41c7";
const ARGO_TOKEN: &str = "argo-canary-token-9e2";
/// `Authorization` for user `collate` and [`SEARCH_PASSWORD`].
fn search_auth() -> String {
    format!(
        "Basic {}",
        BASE64_STANDARD.encode(format!("collate:{SEARCH_PASSWORD}"))
    )
}

/// The loopback world a preflight runs against.
struct World {
    pg: Postgres,
    kube: KubeTestServer,
    http: JsonServer,
}

impl World {
    /// A cluster of `version` with `nodes` (name, cpu, memory, storage), OpenSearch `search`
    /// and Argo `argo`.
    fn start(version: &str, nodes: &[(&str, &str, &str, &str)], search: &str, argo: &str) -> World {
        World::on(
            KubeTestServer::builder().version(version).start(),
            nodes,
            search,
            argo,
        )
    }

    /// The same world on a cluster that runs Jobs: the API over TLS (pods reach it so), and
    /// [`IMAGE`] registered as the collate-run binary under test.
    fn running_jobs() -> World {
        World::running_jobs_resolving(&[])
    }

    /// [`World::running_jobs`] whose cluster DNS resolves `names` (to 127.0.0.1) for its pods,
    /// while this machine does not.
    fn running_jobs_resolving(names: &[&str]) -> World {
        let (chain, key) = TlsServer::chain_files();
        let mut builder = KubeTestServer::builder()
            .version("1.31.2")
            .tls(&chain, key, TlsServer::root_ca_file())
            .image(Image::new(IMAGE, binary()));
        for name in names {
            builder = builder.cluster_dns(name, "127.0.0.1");
        }
        World::on(
            builder.start(),
            &[("n1", BIG.0, BIG.1, BIG.2)],
            "3.4.0",
            "v3.7.1",
        )
    }

    fn on(
        kube: KubeTestServer,
        nodes: &[(&str, &str, &str, &str)],
        search: &str,
        argo: &str,
    ) -> World {
        let pg = Postgres::start();
        for (name, cpu, mem, disk) in nodes {
            kube.add_node(name, cpu, mem, disk);
        }
        // The om-role token the Argo check sends.
        kube.insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "om-role.service-account-token", "namespace": "collate"},
            "type": "Opaque",
            "data": {"token": BASE64_STANDARD.encode(ARGO_TOKEN)},
        }));
        let http = JsonServer::start();
        http.route_with_auth(
            "/",
            &search_auth(),
            json!({"name": "node-1", "cluster_name": "collate",
                   "version": {"distribution": "opensearch", "number": search}, "tagline": "The OpenSearch Project"}),
        );
        http.route_with_auth(
            "/api/v1/version",
            &format!("Bearer {ARGO_TOKEN}"),
            json!({"version": argo, "gitCommit": "test"}),
        );
        World { pg, kube, http }
    }

    /// The customer config pointing at these servers, plus `extra` YAML (a `preflight:` section).
    fn config(&self, extra: &str) -> String {
        let port = self.http.port();
        format!(
            "cluster_name: test\nregion: eu-west-1\naccount_id: \"123456789012\"\n\
             s3: {{artifacts_bucket: artifacts}}\n\
             images: {{server: {{tag: om-1.12.3-cl-1.12.3}}, ingestion: {{tag: om-1.12.3-cl-1.12.3}}}}\n\
             database: {{host: 127.0.0.1, port: {pg}, name: {db}, user: {user}, password: {{env: COLLATE_DB_PASSWORD}}}}\n\
             search: {{host: 127.0.0.1, port: {port}, scheme: http, type: opensearch, user: collate, password: {{env: COLLATE_ES_PASSWORD}}}}\n\
             argo:\n  archive: false\n  api_url: http://127.0.0.1:{port}\n  database: {{host: 127.0.0.1, name: argo, user: argo, password: {{env: ARGO_DB_PASSWORD}}}}\n\
             auth: {{admins: [ops], principal_domain: test.example}}\n\
             {extra}",
            pg = self.pg.port(),
            db = postgres::DATABASE,
            user = postgres::USER,
        )
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "KUBECONFIG".into(),
                self.kube.kubeconfig_path().display().to_string(),
            ),
            ("COLLATE_DB_PASSWORD".into(), postgres::PASSWORD.into()),
            ("COLLATE_ES_PASSWORD".into(), SEARCH_PASSWORD.into()),
            ("ARGO_DB_PASSWORD".into(), "argo-db-canary".into()),
        ]
    }
}

const BIG: (&str, &str, &str) = ("4", "16Gi", "128Gi");

/// What full.rhai does: preflight first, then the first change.
const LIKE_FULL: &str = r#"
const RUN_BY_FULL = true;
import "config" as config_schema;
import "preflight" as preflight;
let raw = config;
let section = raw.remove("preflight");
let cfg = config_schema::load(raw, preflight::SECRETS);
if section != () { cfg.preflight = section; }
step("preflight", || preflight::run(cfg));
k8s::ensure_namespace("collate-after-preflight");
print("applied");
"#;

fn like_full() -> Run {
    Run::script(LIKE_FULL)
        .cwd(root())
        .arg("--lib")
        .arg(&root().join("recipes/lib").display().to_string())
        .arg("--lib")
        .arg(&root().join("recipes").display().to_string())
}

#[test]
fn preflight_passes_and_prints_one_table() {
    needs!("postgres");
    let nodes = [
        ("n1", BIG.0, BIG.1, BIG.2),
        ("n2", BIG.0, BIG.1, BIG.2),
        ("n3", "8", "32Gi", "200Gi"),
    ];
    let w = World::start("1.31.2", &nodes, "3.4.0", "v3.7.1");
    let out = Run::recipe("preflight.rhai")
        .config_yaml(&w.config(""))
        .envs(w.env())
        .succeeds();
    out.stdout_contains("requirement")
        .stdout_contains("how to fix")
        .stdout_contains("kubernetes >= 1.24")
        .stdout_contains("v1.31.2")
        .stdout_contains("3 of 3 nodes big enough")
        .stdout_contains(&format!("postgresql {}", w.pg.version()))
        .stdout_contains("opensearch 3.4.0")
        .stdout_contains("v3.7.1")
        .stdout_contains("every requirement is met")
        .stdout_contains(
            "administrators ops@test.example; initial password: OpenMetadata's default",
        )
        .stdout_contains("set `auth.admin_password`")
        .never_shows(postgres::PASSWORD)
        .never_shows(SEARCH_PASSWORD)
        .never_shows(ARGO_TOKEN);
    assert_eq!(
        out.stdout.matches("how to fix").count(),
        1,
        "one table\n{out}"
    );
    // With an initial password for the administrators, no warning.
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(""))
        .config_yaml("auth: {admin_password: {env: ADMIN_PW}}\n")
        .envs(w.env())
        .env("ADMIN_PW", "pw-canary-1")
        .succeeds()
        .never_shows("initial password: OpenMetadata's default")
        .never_shows("pw-canary-1");
    assert!(!out.stdout.contains("FAIL"), "{out}");
    // The search and Argo calls carried the configured credentials.
    let seen = w.http.seen();
    assert!(
        seen.iter()
            .any(|(p, a)| p == "/" && a.as_deref() == Some(search_auth().as_str()))
    );
    assert!(
        seen.iter().any(|(p, a)| p == "/api/v1/version"
            && a.as_deref() == Some(&*format!("Bearer {ARGO_TOKEN}")))
    );
    assert_eq!(w.kube.mutating_requests(), 0);
}

#[test]
fn every_failing_requirement_has_its_row_and_the_apply_does_not_start() {
    needs!("postgres");
    let nodes = [("n1", BIG.0, BIG.1, BIG.2), ("small", "2", "8Gi", "50Gi")];
    let w = World::start("1.23.17", &nodes, "2.11.0", "v3.3.9");
    let minimum = w.pg.major() + 1;
    let extra = format!("preflight:\n  database:\n    min_postgresql: \"{minimum}\"\n");
    let out = like_full()
        .config_yaml(&w.config(&extra))
        .envs(w.env())
        .fails_with(5);
    for row in [
        "kubernetes >= 1.24",
        "3 worker nodes with 4 vCPU, 16 GiB memory, 128 GiB storage",
        &format!("database: PostgreSQL >= {minimum} or MySQL >= 8.0"),
        "search: opensearch >= 3.4",
        "argo workflows >= 3.4",
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}\n{out}"));
        assert!(
            line.contains("FAIL"),
            "row {row:?} should fail: {line}\n{out}"
        );
    }
    out.stdout_contains("v1.23.17")
        .stdout_contains("1 of 2 nodes big enough; too small: small (2 vCPU, 8 GiB, 50 GiB)")
        .stdout_contains("opensearch 2.11.0")
        .stdout_contains("v3.3.9")
        .stderr_contains("preflight: 5 of 7 requirements not met")
        .stderr_contains("--skip-preflight")
        .never_shows(postgres::PASSWORD);
    assert_eq!(
        out.stdout.matches("how to fix").count(),
        1,
        "one table\n{out}"
    );
    assert!(!out.stdout.contains("applied"), "{out}");
    assert_eq!(w.kube.mutating_requests(), 0, "nothing changed\n{out}");
    assert!(
        w.kube
            .get("v1", "Namespace", "", "collate-after-preflight")
            .is_none()
    );

    // The same run goes on with --skip-preflight.
    let out = like_full()
        .config_yaml(&w.config(&extra))
        .envs(w.env())
        .arg("--skip-preflight")
        .succeeds();
    out.stderr_contains("going on because of --skip-preflight")
        .stdout_contains("applied");
    assert!(
        w.kube
            .get("v1", "Namespace", "", "collate-after-preflight")
            .is_some()
    );
}

#[test]
fn plan_runs_preflight_and_a_lowered_sizing_passes_a_small_cluster() {
    needs!("postgres");
    let nodes = [("n1", "2", "4Gi", "20Gi")];
    let w = World::start("1.30", &nodes, "3.4.1", "v3.7.1");
    // The guide's sizing: fails, also in a plan.
    let out = Run::recipe("preflight.rhai")
        .config_yaml(&w.config(""))
        .envs(w.env())
        .plan()
        .fails_with(5);
    out.stderr_contains("1 of 7 requirements not met (3 worker nodes");
    // A test cluster lowers the numbers in the config.
    let small = "preflight:\n  nodes: {min_count: 1, cpu: 2, memory_gib: 4, storage_gib: 20}\n";
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(small))
        .envs(w.env())
        .plan()
        .succeeds()
        .stdout_contains("1 of 1 nodes big enough");
    // A misspelt preflight key is a config error naming it.
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config("preflight:\n  nodes: {min_cout: 1}\n"))
        .envs(w.env())
        .fails_with(3)
        .stderr_contains("unknown config key `preflight.nodes.min_cout`");
}

#[test]
fn database_version_is_compared_with_the_configured_minimum() {
    needs!("postgres");
    let nodes = [("n1", BIG.0, BIG.1, BIG.2)];
    let w = World::start("1.31", &nodes, "3.4.0", "v3.7.1");
    let major = w.pg.major();
    let at = |min: u32| {
        format!(
            "preflight:\n  nodes: {{min_count: 1}}\n  database: {{min_postgresql: \"{min}\"}}\n"
        )
    };
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(&at(major)))
        .envs(w.env())
        .succeeds();
    let out = Run::recipe("preflight.rhai")
        .config_yaml(&w.config(&at(major + 1)))
        .envs(w.env())
        .fails_with(5);
    out.stdout_contains(&format!("upgrade to PostgreSQL {} or newer", major + 1));
}

/// `db::version` with one option changed from the working set, printing `kind|message|hint`.
fn db_attempt(port: u16, change: &str, envs: &[(&str, &str)]) -> String {
    let script = format!(
        r#"let o = #{{ scheme: "postgresql", host: "127.0.0.1", port: {port}, database: "{db}",
                      user: "{user}", password: secret::env("PW"), tls: "prefer", timeout: 5 }};
           {change}
           try {{ let v = db::version(o); print(`ok|${{v.product}}|${{v.major}}`); }}
           catch (e) {{ print(`${{e.kind}}|${{e.message}}|${{e.hint}}`); }}"#,
        db = postgres::DATABASE,
        user = postgres::USER,
    );
    let mut run = Run::script(&script).env("PW", postgres::PASSWORD);
    for (k, v) in envs {
        run = run.env(k, v);
    }
    let out = run.succeeds();
    out.never_shows(postgres::PASSWORD);
    out.stdout.trim().to_string()
}

#[test]
fn postgres_errors_are_distinct_and_never_show_the_password() {
    needs!("postgres");
    let pg = Postgres::start();
    let ok = db_attempt(pg.port(), "", &[]);
    assert_eq!(ok, format!("ok|postgresql|{}", pg.major()));

    let auth = db_attempt(
        pg.port(),
        r#"o.password = secret::env("WRONG");"#,
        &[("WRONG", "not-the-password")],
    );
    assert!(
        auth.starts_with(&format!(
            "auth|authentication failed for user `{}`",
            postgres::USER
        )),
        "{auth}"
    );
    assert!(
        auth.contains("env WRONG"),
        "the hint names the secret's source: {auth}"
    );

    let db = db_attempt(pg.port(), r#"o.database = "nope";"#, &[]);
    assert!(
        db.starts_with("not_found|database `nope` does not exist"),
        "{db}"
    );

    let closed = free_port();
    let down = db_attempt(closed, "", &[]);
    assert!(
        down.starts_with(&format!(
            "api|cannot reach the postgresql server at `127.0.0.1:{closed}`"
        )),
        "{down}"
    );

    let bad = db_attempt(pg.port(), r#"o.tls = "on";"#, &[]);
    assert!(bad.starts_with("input|option `tls` must be"), "{bad}");

    // TLS needs the snake-oil key readable by the server (Debian's `ssl-cert`).
    if gate("ssl-cert", pg.tls().then_some(())).is_some() {
        let tls = db_attempt(pg.port(), r#"o.tls = "require";"#, &[]);
        assert_eq!(tls, format!("ok|postgresql|{}", pg.major()));
        let required = db_attempt(
            pg.port(),
            &format!(
                r#"o.user = "{}"; o.tls = "disable";"#,
                postgres::TLS_ONLY_USER
            ),
            &[],
        );
        assert!(required.starts_with("config|the server at"), "{required}");
        assert!(required.contains("requires TLS"), "{required}");
        // Encrypted, the same user gets in.
        let over_tls = db_attempt(
            pg.port(),
            &format!(r#"o.user = "{}";"#, postgres::TLS_ONLY_USER),
            &[],
        );
        assert!(over_tls.starts_with("ok|"), "{over_tls}");
    } else {
        let unsupported = db_attempt(pg.port(), r#"o.tls = "require";"#, &[]);
        assert!(
            unsupported.starts_with("config|the server at"),
            "{unsupported}"
        );
        assert!(unsupported.contains("does not offer TLS"), "{unsupported}");
    }
}

/// A server that declines TLS (it answers `N` to the SSLRequest) is told apart from a failed
/// handshake by whether the handshake started, not by the driver's text.
#[test]
fn postgres_without_tls_is_a_config_error_when_tls_is_required() {
    needs!("postgres");
    let pg = Postgres::start_plain();
    for mode in ["require", "verify-full"] {
        let out = db_attempt(pg.port(), &format!(r#"o.tls = "{mode}";"#), &[]);
        assert!(out.starts_with("config|the server at"), "{out}");
        assert!(out.contains("does not offer TLS"), "{out}");
    }
    // `prefer` connects in plain text.
    let plain = db_attempt(pg.port(), "", &[]);
    assert_eq!(plain, format!("ok|postgresql|{}", pg.major()));
}

#[test]
fn mariadb_speaks_the_mysql_scheme() {
    needs!("mariadb");
    let my = MariaDb::start();
    let attempt = |change: &str, pw: &str| {
        let script = format!(
            r#"let o = #{{ scheme: "mysql", host: "127.0.0.1", port: {port}, database: "{db}",
                          user: "{user}", password: secret::env("PW"), tls: "prefer", timeout: 5 }};
               {change}
               try {{ let v = db::version(o); print(`ok|${{v.product}}|${{v.version}}|${{v.major}}`); }}
               catch (e) {{ print(`${{e.kind}}|${{e.message}}`); }}"#,
            port = my.port(),
            db = mariadb::DATABASE,
            user = mariadb::USER,
        );
        let out = Run::script(&script).env("PW", pw).succeeds();
        out.never_shows(mariadb::PASSWORD);
        out.stdout.trim().to_string()
    };
    let ok = attempt("", mariadb::PASSWORD);
    let version = my.version();
    let short = version.split('-').next().unwrap_or_default();
    assert_eq!(
        ok.split('|').take(3).collect::<Vec<_>>(),
        ["ok", "mariadb", short],
        "{ok}"
    );
    let auth = attempt("", "wrong-password");
    assert!(
        auth.starts_with("auth|authentication failed for user `collate`"),
        "{auth}"
    );
    let db = attempt(r#"o.database = "nope";"#, mariadb::PASSWORD);
    // MariaDB answers "access denied" for a database the user has no grant on.
    assert!(
        db.starts_with("not_found|") || db.starts_with("auth|"),
        "{db}"
    );
    let plain = attempt(r#"o.tls = "disable";"#, mariadb::PASSWORD);
    assert!(plain.starts_with("ok|mariadb"), "{plain}");
}

#[test]
fn ecr_ip_ranges_prints_the_regions_cidr_blocks() {
    let http = JsonServer::start();
    http.route(
        "/ip-ranges.json",
        json!({
            "syncToken": "1", "createDate": "2026-11-01-00-00-00",
            "prefixes": [
                {"ip_prefix": "3.248.0.0/13", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"},
                {"ip_prefix": "3.248.0.0/15", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1"},
                {"ip_prefix": "52.94.0.0/22", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
                {"ip_prefix": "52.95.0.0/16", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}
            ],
            "ipv6_prefixes": [
                {"ipv6_prefix": "2a05:d000::/25", "region": "eu-west-1", "service": "AMAZON", "network_border_group": "eu-west-1"}
            ]
        }),
    );
    let config = format!(
        "ecr:\n  registry: 118146679784.dkr.ecr.eu-west-1.amazonaws.com\npreflight:\n  ecr:\n    ip_ranges_url: {}/ip-ranges.json\n",
        http.url()
    );
    let out = Run::recipe("maintenance/ecr-ip-ranges.rhai")
        .config_yaml(&config)
        .succeeds();
    out.stdout_contains("3 AMAZON CIDR blocks in eu-west-1")
        .stdout_contains("3.248.0.0/13\n")
        .stdout_contains("52.95.0.0/16\n")
        .stdout_contains("2a05:d000::/25");
    assert!(
        !out.stdout.contains("3.248.0.0/15"),
        "EC2 is another service\n{out}"
    );
    assert!(
        !out.stdout.contains("52.94.0.0/22"),
        "another region\n{out}"
    );
}

#[test]
fn argo_row_needs_a_token_and_prefers_argo_token_from_the_config() {
    needs!("postgres");
    let nodes = [
        ("n1", BIG.0, BIG.1, BIG.2),
        ("n2", BIG.0, BIG.1, BIG.2),
        ("n3", BIG.0, BIG.1, BIG.2),
    ];
    let w = World::start("1.31.2", &nodes, "3.4.0", "v3.7.1");
    // No token yet (another ingestion service account, whose token is not issued): a clear
    // "not checked", not a 401 from a call without a token.
    let out = Run::recipe("preflight.rhai")
        .config_yaml(&w.config("service_accounts: {ingestion: not-issued-role}\n"))
        .envs(w.env())
        .succeeds();
    out.stdout_contains("not checked (no token for the Argo API)")
        .stdout_contains("set argo.token");
    assert!(
        w.http.seen().iter().all(|(p, _)| p != "/api/v1/version"),
        "the Argo API was called without a token"
    );

    // `argo.token` wins over the om-role token: a wrong one fails the row, naming it.
    let out = Run::recipe("preflight.rhai")
        .config_yaml(&w.config(""))
        .config_yaml("argo: {token: {env: ARGO_API_TOKEN}}\n")
        .envs(w.env())
        .env("ARGO_API_TOKEN", "argo-wrong-canary")
        .fails_with(5);
    out.stdout_contains("HTTP 401 from")
        .stdout_contains("check argo.token")
        .never_shows("argo-wrong-canary");
}

/// A search domain without auth (`search.auth: false`): no password is needed, the check sends
/// no credentials and passes; a domain that does ask for them fails the row saying so.
#[test]
fn search_without_auth_needs_no_password_and_sends_none() {
    needs!("postgres");
    let nodes = [("n1", BIG.0, BIG.1, BIG.2)];
    let w = World::start("1.31.2", &nodes, "3.4.0", "v3.7.1");
    let open = JsonServer::start();
    open.route(
        "/",
        json!({"version": {"distribution": "opensearch", "number": "3.4.0"}}),
    );
    let env: Vec<_> = w
        .env()
        .into_iter()
        .filter(|(k, _)| k != "COLLATE_ES_PASSWORD")
        .collect();
    let lowered = "preflight: {nodes: {min_count: 1}}\n";
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(lowered))
        .config_yaml(&format!(
            "search: {{auth: false, port: {}, user: \"\"}}\n",
            open.port()
        ))
        .envs(env.clone())
        .succeeds()
        .stdout_contains("opensearch 3.4.0")
        .stdout_contains("every requirement is met");
    assert!(
        open.seen().iter().all(|(p, a)| p != "/" || a.is_none()),
        "no credentials sent: {:?}",
        open.seen()
    );
    // The domain of the world asks for credentials: the row fails and says how to give them.
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(lowered))
        .config_yaml("search: {auth: false}\n")
        .envs(env)
        .fails_with(5)
        .stdout_contains("HTTP 401")
        .stdout_contains("set search.auth: true");
}

/// A search domain behind a private CA (the test chain of `tls_server.rs`): without
/// `search.ca_file` the TLS handshake fails on the unknown issuer; with the CA's PEM the check
/// gets through TLS and reads the answer (the stand-in answers 404, so the row names that).
#[test]
fn search_behind_a_private_ca_is_reached_with_search_ca_file() {
    needs!("postgres");
    let nodes = [("n1", BIG.0, BIG.1, BIG.2)];
    let w = World::start("1.31.2", &nodes, "3.4.0", "v3.7.1");
    let tls = collate_run_tests::tls_server::TlsServer::start();
    let config = |extra: &str| format!("search: {{scheme: https, port: {}{extra}}}\n", tls.port());
    let lowered = "preflight: {nodes: {min_count: 1}}\n";
    let run = |extra: &str| {
        Run::recipe("preflight.rhai")
            .config_yaml(&w.config(lowered))
            .config_yaml(&config(extra))
            .envs(w.env())
    };
    let out = run("").fails_with(5);
    out.stdout_contains("a private CA: search.ca_file");
    assert!(
        out.stdout.contains("certificate") || out.stdout.contains("UnknownIssuer"),
        "{out}"
    );
    let root = collate_run_tests::tls_server::TlsServer::root_ca_file();
    run(&format!(", ca_file: \"{}\"", root.display()))
        .fails_with(5)
        .stdout_contains(&format!(
            "HTTP 404 from https://127.0.0.1:{}/ without a version",
            tls.port()
        ));
    assert!(tls.handshakes() >= 1);
    // A file that is no PEM bundle: a clear error naming it.
    run(", ca_file: /etc/hostname")
        .fails_with(5)
        .stdout_contains("holds no PEM certificate");
}

// --- From inside the cluster (recipes/lib/in_cluster.rhai) ---------------------------------------

const JOB: &str = "collate-run-preflight";
const IMAGE: &str = "registry.test/collate-run:0.1.0";

/// A preflight section for one node and short waits.
fn in_cluster(start_timeout: u32) -> String {
    format!(
        "preflight:\n  nodes: {{min_count: 1}}\n  job: {{timeout: 60, start_timeout: {start_timeout}}}\n"
    )
}

/// The preflight recipe with the in-cluster Job's image set.
fn preflight_with_image(w: &World, extra: &str) -> Run {
    Run::recipe("preflight.rhai")
        .config_yaml(&w.config(extra))
        .config_yaml(&format!("images: {{collate_run: \"{IMAGE}\"}}\n"))
        .envs(w.env())
}

/// The Job's objects while they exist; the objects seen last.
fn job_objects(kube: &KubeTestServer) -> Option<[serde_json::Value; 3]> {
    Some([
        kube.get("batch/v1", "Job", "collate", JOB)?,
        kube.get("v1", "ConfigMap", "collate", JOB)?,
        kube.get("v1", "ServiceAccount", "collate", JOB)?,
    ])
}

/// Runs `run` while watching the cluster for the Job's objects; returns the run's output and
/// the objects as first seen complete.
fn watching_the_job(
    kube: &KubeTestServer,
    run: Run,
) -> (
    collate_run_tests::run::Output,
    Option<[serde_json::Value; 3]>,
) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let runner = s.spawn(|| {
            let out = run.run();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            out
        });
        let mut seen = None;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            if seen.is_none() {
                seen = job_objects(kube);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        (runner.join().unwrap(), seen)
    })
}

fn assert_gone(kube: &KubeTestServer) {
    for (v, kind) in [
        ("batch/v1", "Job"),
        ("v1", "ConfigMap"),
        ("v1", "ServiceAccount"),
    ] {
        assert!(
            kube.get(v, kind, "collate", JOB).is_none(),
            "{kind} {JOB} left behind"
        );
    }
}

/// A Job that never starts (no node runs its pod) fails the database and search rows, naming
/// the Job and its state; its objects carry no secret and are removed; the server's Secrets it
/// reads by reference are the recipes' own (collate.rhai's ensure finds them unchanged).
#[test]
fn the_in_cluster_job_reads_the_servers_secrets_by_reference_and_is_removed_when_it_never_starts() {
    needs!("postgres");
    let w = World::start("1.31.2", &[("n1", BIG.0, BIG.1, BIG.2)], "3.4.0", "v3.7.1");
    let (out, seen) = watching_the_job(&w.kube, preflight_with_image(&w, &in_cluster(2)));
    assert_eq!(out.code, 5, "{out}");
    let line = |row: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row:?}\n{out}"))
            .to_string()
    };
    for row in ["database: PostgreSQL", "search: opensearch"] {
        let l = line(row);
        assert!(l.contains("FAIL"), "{l}");
        assert!(
            l.contains(&format!(
                "from the cluster: not checked: job `collate/{JOB}` did not start within 2s"
            )),
            "{l}"
        );
    }
    // The pod and why it waits (the test kubelet does not run an unregistered image).
    let db = line("database: PostgreSQL");
    assert!(
        db.contains(&format!("pod `{JOB}-"))
            && db.contains("is Pending; container `check` waiting: ImagePullBackOff"),
        "{db}"
    );
    assert!(
        db.contains(&format!("kubectl -n collate describe pod {JOB}-")),
        "{db}"
    );
    assert!(
        line("database: PostgreSQL")
            .contains(&format!("from here: ok, postgresql {}", w.pg.version()))
    );
    assert!(line("search: opensearch").contains("from here: ok, opensearch 3.4.0"));
    out.stdout_contains("transient: removed again by the same call")
        .never_shows(postgres::PASSWORD)
        .never_shows(SEARCH_PASSWORD);

    // What the cluster got: passwords only as references to the server's Secrets.
    let [job, config_map, account] = seen.expect("the Job's objects were never seen");
    for obj in [&job, &config_map, &account] {
        let text = obj.to_string();
        assert!(!text.contains(postgres::PASSWORD), "{text}");
        assert!(!text.contains(SEARCH_PASSWORD), "{text}");
    }
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], JOB);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(account["automountServiceAccountToken"], false);
    let c = &pod["containers"][0];
    assert_eq!(c["image"], IMAGE);
    let env = c["env"].as_array().unwrap();
    for (name, secret) in [
        ("DB_PASSWORD", "db-credentials"),
        ("SEARCH_PASSWORD", "es-credentials"),
    ] {
        let e = env.iter().find(|e| e["name"] == name).unwrap();
        assert_eq!(
            e["valueFrom"]["secretKeyRef"],
            json!({"name": secret, "key": "password"}),
            "{e}"
        );
        assert!(e.get("value").is_none(), "{e}");
    }
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "/etc/collate-run/in-cluster-check.rhai",
            "--config",
            "/etc/collate-run/config.yaml",
            "--output",
            "json"
        ]
    );
    let pod_config = config_map["data"]["config.yaml"].as_str().unwrap();
    assert!(pod_config.contains("env: DB_PASSWORD"), "{pod_config}");
    assert!(pod_config.contains("env: SEARCH_PASSWORD"), "{pod_config}");
    assert_gone(&w.kube);
    // The server's Secrets hold the passwords the server will use.
    let db = w
        .kube
        .get("v1", "Secret", "collate", "db-credentials")
        .unwrap();
    assert_eq!(
        db["data"]["password"],
        BASE64_STANDARD.encode(postgres::PASSWORD)
    );

    // A second run: the Job comes and goes again, no change is counted.
    let out = preflight_with_image(&w, &in_cluster(1))
        .json()
        .fails_with(5);
    assert_eq!(out.changed(), Vec::<String>::new(), "{out}");
    let s = out.summary();
    assert_eq!(
        (&s["create"], &s["update"], &s["delete"]),
        (&json!(0), &json!(0), &json!(0)),
        "{out}"
    );
    assert!(
        out.changes()
            .iter()
            .any(|c| c["kind"] == "k8s.Job" && c["action"] == "create" && c["transient"] == true),
        "{out}"
    );
    // Both vantage points in the report.
    let db_row = report_row(&out, "database:");
    assert_eq!(db_row["from_here"]["ok"], true, "{db_row}");
    assert_eq!(db_row["from_here"]["product"], "postgresql", "{db_row}");
    assert!(
        db_row["from_cluster"]["failed"]
            .as_str()
            .unwrap()
            .contains("did not start within 1s"),
        "{db_row}"
    );
    assert_gone(&w.kube);
}

#[test]
fn a_plan_runs_the_in_cluster_job_only_when_asked_and_in_cluster_false_keeps_the_old_check() {
    needs!("postgres");
    let w = World::start("1.31.2", &[("n1", BIG.0, BIG.1, BIG.2)], "3.4.0", "v3.7.1");
    let config = in_cluster(1);
    // Not asked: nothing is created, the rows say why.
    preflight_with_image(&w, &config)
        .plan()
        .succeeds()
        .stdout_contains("from the cluster: not checked (a plan runs the Job only with --set preflight.in_cluster=true)");
    assert_eq!(w.kube.mutating_requests(), 0);
    // Asked, before the server's Secrets exist: a plan does not create them.
    preflight_with_image(&w, &config)
        .plan()
        .set("preflight.in_cluster", "true")
        .succeeds()
        .stdout_contains("not checked (Secret collate/db-credentials does not exist yet");
    assert_eq!(w.kube.mutating_requests(), 0);
    // With them, a plan asked to runs the Job (here it never starts) and removes it.
    w.kube
        .insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "collate"}}));
    for (name, pw) in [
        ("db-credentials", postgres::PASSWORD),
        ("es-credentials", SEARCH_PASSWORD),
    ] {
        w.kube.insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "collate"},
            "type": "Opaque", "data": {"password": BASE64_STANDARD.encode(pw)},
        }));
    }
    let (out, seen) = watching_the_job(
        &w.kube,
        preflight_with_image(&w, &config)
            .plan()
            .set("preflight.in_cluster", "true"),
    );
    assert_eq!(out.code, 5, "{out}");
    assert!(seen.is_some(), "the Job was not created\n{out}");
    out.stdout_contains(&format!("job `collate/{JOB}` did not start within 1s"));
    assert_gone(&w.kube);
    let before = w.kube.mutating_requests();
    // `preflight.in_cluster: false`: from here only, as before.
    let out = preflight_with_image(&w, &config)
        .config_yaml("preflight: {in_cluster: false}\n")
        .succeeds();
    assert!(!out.stdout.contains("from the cluster"), "{out}");
    out.stdout_contains(&format!("postgresql {}", w.pg.version()));
    assert_eq!(w.kube.mutating_requests(), before);
}

/// Whether pods run here (root with `unshare -m`, the test kubelet's container runtime).
fn runs_pods() -> bool {
    gate(
        "unshare -m with tmpfs and overlay mounts (root)",
        kube_testserver::kubelet_supported().then_some(()),
    )
    .is_some()
}

/// The server's Secrets as a cluster would hold them, with these passwords.
fn insert_server_secrets(kube: &KubeTestServer, db: &str, search: &str) {
    kube.insert(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "collate"}}));
    for (name, pw) in [("db-credentials", db), ("es-credentials", search)] {
        kube.insert(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": "collate"},
            "type": "Opaque", "data": {"password": BASE64_STANDARD.encode(pw)},
        }));
    }
}

/// The row of the `preflight` report line whose requirement starts with `prefix`
/// (`database:`, `search:`).
fn report_row(out: &collate_run_tests::run::Output, prefix: &str) -> serde_json::Value {
    let report = out
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "report" && l["name"] == "preflight")
        .unwrap_or_else(|| panic!("no preflight report\n{out}"));
    report["data"]["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| {
            r["requirement"]
                .as_str()
                .is_some_and(|q| q.starts_with(prefix))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no row {prefix}: {report}"))
}

fn row_line(out: &collate_run_tests::run::Output, row: &str) -> String {
    out.stdout
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no row {row:?}\n{out}"))
        .to_string()
}

/// End to end: the test cluster's kubelet runs the Job (collate-run under test, as uid 65532,
/// passwords from the Secrets), which reaches the loopback PostgreSQL and search server; the
/// table shows both vantage points, the JSON report carries both, and the objects are gone.
#[test]
fn the_in_cluster_job_really_runs_and_reaches_postgres_and_search() {
    needs!("postgres");
    if !runs_pods() {
        return;
    }
    let w = World::running_jobs();
    let out = preflight_with_image(&w, &in_cluster(30)).json().succeeds();
    let db = report_row(&out, "database:");
    assert_eq!(db["verdict"], "ok", "{db}");
    for vantage in ["from_here", "from_cluster"] {
        assert_eq!(db[vantage]["ok"], true, "{db}");
        assert_eq!(db[vantage]["product"], "postgresql", "{db}");
        assert_eq!(db[vantage]["version"], w.pg.version(), "{db}");
        assert!(db[vantage]["latency_ms"].as_i64().is_some(), "{db}");
    }
    let found = db["found"].as_str().unwrap();
    assert!(
        found.starts_with(&format!(
            "from the cluster: ok, postgresql {} in ",
            w.pg.version()
        )),
        "{found}"
    );
    let search = report_row(&out, "search:");
    assert_eq!(search["verdict"], "ok", "{search}");
    assert_eq!(search["from_cluster"]["product"], "opensearch", "{search}");
    assert_eq!(search["from_cluster"]["version"], "3.4.0", "{search}");
    out.never_shows(postgres::PASSWORD)
        .never_shows(SEARCH_PASSWORD);
    // What stays: the namespace and the server's Secrets (collate.rhai's, made first).
    assert_eq!(
        out.changed(),
        [
            "create k8s.Namespace collate",
            "create k8s.Secret collate/db-credentials",
            "create k8s.Secret collate/es-credentials"
        ],
        "{out}"
    );
    // The search server saw the pod's request with the password from es-credentials.
    let calls = w
        .http
        .seen()
        .iter()
        .filter(|(p, a)| p == "/" && a.as_deref() == Some(search_auth().as_str()))
        .count();
    assert_eq!(calls, 2, "one from here, one from the pod");
    assert_gone(&w.kube);
}

/// The customer's case: the database and search have names only the VPC's DNS resolves (the
/// cluster's, here `kube-testserver --cluster-dns`): from here they are unreachable, from the
/// cluster they answer, and both rows pass on the cluster's view, showing both.
#[test]
fn reachable_from_the_cluster_only_is_a_pass() {
    needs!("postgres");
    if !runs_pods() {
        return;
    }
    // `.invalid` never resolves outside (RFC 6761).
    let (db, search) = ("collate-db.vpc.invalid", "collate-search.vpc.invalid");
    let w = World::running_jobs_resolving(&[db, search]);
    let out = preflight_with_image(&w, &in_cluster(30))
        .config_yaml(&format!(
            "database: {{host: {db}}}\nsearch: {{host: {search}}}\n"
        ))
        .json()
        .succeeds();
    for prefix in ["database:", "search:"] {
        let row = report_row(&out, prefix);
        assert_eq!(row["verdict"], "ok", "{row}");
        assert_eq!(row["from_cluster"]["ok"], true, "{row}");
        assert_eq!(row["from_here"]["ok"], false, "{row}");
        let found = row["found"].as_str().unwrap();
        assert!(found.starts_with("from the cluster: ok, "), "{found}");
        assert!(found.contains("; from here: "), "{found}");
    }
    out.never_shows(postgres::PASSWORD)
        .never_shows(SEARCH_PASSWORD);
    assert_gone(&w.kube);
}

/// A search domain without auth, checked from the cluster too: the Job reads no search password
/// (no `es-credentials`, no `SEARCH_PASSWORD`), neither vantage point sends credentials, and the
/// row passes.
#[test]
fn the_in_cluster_job_reaches_search_without_auth() {
    needs!("postgres");
    if !runs_pods() {
        return;
    }
    let w = World::running_jobs();
    let open = JsonServer::start();
    open.route(
        "/",
        json!({"version": {"distribution": "opensearch", "number": "3.4.0"}}),
    );
    let out = preflight_with_image(&w, &in_cluster(30))
        .config_yaml(&format!(
            "search: {{auth: false, port: {}, user: \"\"}}\n",
            open.port()
        ))
        .json()
        .succeeds();
    let search = report_row(&out, "search:");
    assert_eq!(search["verdict"], "ok", "{search}");
    assert_eq!(search["from_cluster"]["ok"], true, "{search}");
    assert_eq!(
        out.changed(),
        [
            "create k8s.Namespace collate",
            "create k8s.Secret collate/db-credentials"
        ],
        "{out}"
    );
    let calls: Vec<_> = open.seen().into_iter().filter(|(p, _)| p == "/").collect();
    assert_eq!(calls.len(), 2, "one from here, one from the pod: {calls:?}");
    assert!(calls.iter().all(|(_, auth)| auth.is_none()), "{calls:?}");
    assert_gone(&w.kube);
}

/// What decides a row is the cluster's view: with the operator's own credentials wrong, "from
/// here" fails and the row still passes; with the server's Secret wrong, the cluster's auth
/// failure fails it (named, no password shown). A plan asked to run the Job uses the Secrets as
/// they are.
#[test]
fn the_clusters_view_decides_the_row() {
    needs!("postgres");
    if !runs_pods() {
        return;
    }
    let w = World::running_jobs();
    insert_server_secrets(&w.kube, postgres::PASSWORD, SEARCH_PASSWORD);
    let out = preflight_with_image(&w, &in_cluster(30))
        .env("COLLATE_DB_PASSWORD", "wrong-here-canary")
        .env("COLLATE_ES_PASSWORD", "wrong-es-canary")
        .plan()
        .set("preflight.in_cluster", "true")
        .succeeds();
    let db = row_line(&out, "database:");
    assert!(db.contains("from the cluster: ok, postgresql"), "{db}");
    assert!(
        db.contains("from here: failed: authentication failed for user"),
        "{db}"
    );
    assert!(db.trim_end().ends_with(" ok"), "the row passes: {db}");
    let search = row_line(&out, "search:");
    assert!(
        search.contains("from the cluster: ok, opensearch 3.4.0"),
        "{search}"
    );
    assert!(search.contains("from here: failed: HTTP 401"), "{search}");
    out.never_shows("wrong-here-canary")
        .never_shows(postgres::PASSWORD);
    assert_gone(&w.kube);

    // The server's Secret is wrong: the cluster's failure fails the row.
    insert_server_secrets(&w.kube, "stale-db-canary", SEARCH_PASSWORD);
    let out = preflight_with_image(&w, &in_cluster(30))
        .plan()
        .set("preflight.in_cluster", "true")
        .fails_with(5);
    let db = row_line(&out, "database:");
    assert!(db.contains("FAIL"), "{db}");
    assert!(
        db.contains(&format!(
            "from the cluster: failed: authentication failed for user `{}`",
            postgres::USER
        )),
        "{db}"
    );
    assert!(db.contains("from here: ok, postgresql"), "{db}");
    out.never_shows("stale-db-canary")
        .never_shows(postgres::PASSWORD);
    assert_gone(&w.kube);
}

/// The Job reaches MariaDB with the mysql scheme.
#[test]
fn the_in_cluster_job_reaches_mariadb() {
    needs!("postgres", "mariadb");
    if !runs_pods() {
        return;
    }
    let w = World::running_jobs();
    let my = MariaDb::start();
    let out = preflight_with_image(&w, &in_cluster(30))
        .config_yaml(&format!(
            "database: {{scheme: mysql, port: {}, name: {}, user: {}, password: {{env: MY_PW}}}}\n",
            my.port(),
            mariadb::DATABASE,
            mariadb::USER
        ))
        .env("MY_PW", mariadb::PASSWORD)
        .succeeds();
    let db = row_line(&out, "database:");
    let short = my.version();
    let short = short.split('-').next().unwrap_or_default();
    assert!(
        db.contains(&format!("from the cluster: ok, mariadb {short}")),
        "{db}"
    );
    assert!(
        db.contains("warn"),
        "MariaDB is not in the guide's list: {db}"
    );
    out.never_shows(mariadb::PASSWORD);
    assert_gone(&w.kube);
}

/// A cluster that cannot be reached fails its own row; the database and search rows are then
/// checked from here only, saying why.
#[test]
fn an_unreachable_cluster_checks_the_database_from_here_only() {
    needs!("postgres");
    let w = World::start("1.31.2", &[("n1", BIG.0, BIG.1, BIG.2)], "3.4.0", "v3.7.1");
    let run = preflight_with_image(&w, &in_cluster(5)).with_file(
        "unreachable.kubeconfig",
        &kube_testserver::kubeconfig_yaml(&format!("http://127.0.0.1:{}", free_port())),
    );
    let kubeconfig = run.dir().join("unreachable.kubeconfig");
    let out = run
        .env("KUBECONFIG", &kubeconfig.display().to_string())
        .fails_with(5);
    out.stderr_contains("2 of 7 requirements not met (kubernetes >= 1.24; argo workflows");
    let db = row_line(&out, "database:");
    assert!(
        db.contains("from here: ok, postgresql")
            && db.contains("from the cluster: not checked (the cluster is unreachable)"),
        "{db}"
    );
}

/// Ctrl-C while waiting for the Job: the run stops, and the Job's objects are removed first.
#[test]
fn an_interrupted_preflight_removes_its_job() {
    needs!("postgres");
    let w = World::start("1.31.2", &[("n1", BIG.0, BIG.1, BIG.2)], "3.4.0", "v3.7.1");
    let running = preflight_with_image(&w, &in_cluster(60)).spawn();
    let started = std::time::Instant::now();
    while job_objects(&w.kube).is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the Job never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    running.interrupt();
    let out = running.wait();
    assert_ne!(out.code, 0, "{out}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "it waited for the start timeout"
    );
    out.stdout_contains(&format!("- k8s.Job collate/{JOB}  deleted"));
    assert_gone(&w.kube);
}
