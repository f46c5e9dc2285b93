//! The bad-input corpus (`tests/bad-input/<case>/`): each case is a script (`main.rhai`), an optional
//! `config.yaml` and other files, and `expect.yaml` with the exit code, what stderr must say (and
//! where: `at: main.rhai:LINE:COL`), and what must never be shown. Every case also runs with
//! `--output json` and must end with the same exit code and one `error` object.
//!
//! A case that needs servers says so: `needs: [kube]` (the Kubernetes API test server, and helm),
//! `[moto]` (AWS), or a broken endpoint: `kube-unreachable`, `aws-unreachable` (a closed port),
//! `aws-no-credentials` (moto with the credential chain unset), `aws-expired` (every AWS call
//! answered `403 ExpiredToken` by the fault proxy). Such a case must leave the servers untouched:
//! no mutating Kubernetes request, no IAM role, bucket or OIDC provider on moto. `{root}` in
//! `args` is the workspace root.

use std::path::{Path, PathBuf};

use collate_run_tests::fault_proxy::{Fault, FaultProxy, Faults};
use collate_run_tests::kube::{Cluster, kubeconfig_yaml};
use collate_run_tests::loopback::free_port;
use collate_run_tests::moto::Moto;
use collate_run_tests::{Run, needs, run::root};
use serde_json::Value;

struct Expect {
    exit: i32,
    stderr: Vec<String>,
    never: Vec<String>,
    args: Vec<String>,
    at: Option<String>,
    script: Option<String>,
    needs: Vec<String>,
}

/// The servers a case runs against (kept alive for the run and its JSON twin).
struct Servers {
    kube: Option<Cluster>,
    moto: Option<Moto>,
    proxy: Option<FaultProxy>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Servers {
    fn start(needs: &[String]) -> Servers {
        let mut s = Servers {
            kube: None,
            moto: None,
            proxy: None,
            dir: tempfile::tempdir().expect("temp dir"),
            env: Vec::new(),
        };
        for n in needs {
            match n.as_str() {
                "kube" => {
                    let k = Cluster::start();
                    s.env.extend(k.env());
                    s.kube = Some(k);
                }
                "kube-unreachable" => {
                    let p = s.dir.path().join("kubeconfig");
                    std::fs::write(
                        &p,
                        kubeconfig_yaml(&format!("http://127.0.0.1:{}", free_port())),
                    )
                    .expect("write kubeconfig");
                    s.env.push(("KUBECONFIG".into(), p.display().to_string()));
                }
                "moto" | "aws-no-credentials" | "aws-expired" => {
                    let m = Moto::start();
                    s.env.extend(m.env());
                    if n == "aws-no-credentials" {
                        s.env.retain(|(k, _)| {
                            !k.starts_with("AWS_ACCESS_KEY_ID")
                                && !k.starts_with("AWS_SECRET_ACCESS_KEY")
                        });
                    }
                    if n == "aws-expired" {
                        let proxy = FaultProxy::start(
                            &m.endpoint(),
                            Faults::always(Fault::Status(403)).body(
                                "<ErrorResponse><Error><Type>Sender</Type><Code>ExpiredToken</Code>\
                                 <Message>The security token included in the request is expired</Message></Error></ErrorResponse>",
                            ),
                        );
                        s.env.push(("AWS_ENDPOINT_URL".into(), proxy.url()));
                        s.proxy = Some(proxy);
                    }
                    s.moto = Some(m);
                }
                "aws-unreachable" => {
                    s.env.extend([
                        (
                            "AWS_ENDPOINT_URL".to_string(),
                            format!("http://127.0.0.1:{}", free_port()),
                        ),
                        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
                        ("AWS_REGION".into(), "eu-west-1".into()),
                    ]);
                }
                other => panic!("unknown `needs` entry `{other}`"),
            }
        }
        s
    }

    /// What the case changed on the servers (nothing, for a bad input).
    fn mutations(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(k) = &self.kube {
            out.extend(
                k.server
                    .requests()
                    .into_iter()
                    .filter(|r| r.mutating)
                    .map(|r| format!("kube: {} {}", r.method, r.uri)),
            );
        }
        if let Some(m) = &self.moto {
            out.extend(m.role_names().into_iter().map(|r| format!("aws: role {r}")));
            out.extend(
                m.bucket_names()
                    .into_iter()
                    .map(|b| format!("aws: bucket {b}")),
            );
            out.extend(
                m.oidc_provider_arns()
                    .into_iter()
                    .map(|p| format!("aws: oidc provider {p}")),
            );
        }
        out
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn expect(dir: &Path) -> Expect {
    let text = std::fs::read_to_string(dir.join("expect.yaml")).expect("expect.yaml");
    let v: Value = serde_saphyr::from_str(&text).expect("valid expect.yaml");
    Expect {
        exit: v["exit"].as_i64().expect("exit") as i32,
        stderr: strings(&v, "stderr"),
        never: strings(&v, "never"),
        args: strings(&v, "args"),
        at: v.get("at").and_then(Value::as_str).map(String::from),
        script: v.get("script").and_then(Value::as_str).map(String::from),
        needs: strings(&v, "needs"),
    }
}

fn cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("tests/bad-input"))
        .expect("tests/bad-input")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("expect.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn run_case(dir: &Path, e: &Expect, json: bool, servers: &Servers) -> collate_run_tests::Output {
    let script = dir.join(e.script.as_deref().unwrap_or("main.rhai"));
    let mut run = Run::file(script);
    if dir.join("config.yaml").is_file() {
        run = run.config(dir.join("config.yaml"));
    }
    for a in &e.args {
        run = run.arg(&a.replace("{root}", &root().display().to_string()));
    }
    run = run.envs(servers.env.clone());
    if json {
        run = run.json();
    }
    run.run()
}

#[test]
fn corpus_has_at_least_forty_cases() {
    assert!(
        cases().len() >= 40,
        "only {} bad-input cases",
        cases().len()
    );
}

#[test]
fn every_bad_input_gets_a_clear_error_and_its_exit_code() {
    // Cases run helm (`needs: [kube]`) and moto (`needs: [moto]`).
    needs!("helm", "moto");
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases()
            .into_iter()
            .map(|dir| scope.spawn(move || check_case(&dir)))
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("case thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Runs one case; `Some(report)` when it fails.
fn check_case(dir: &Path) -> Option<String> {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let e = expect(dir);
    let servers = Servers::start(&e.needs);
    let out = run_case(dir, &e, false, &servers);
    let mut problems = Vec::new();
    if out.code != e.exit {
        problems.push(format!("exit code {} (expected {})", out.code, e.exit));
    }
    for s in &e.stderr {
        if !out.stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks {s:?}"));
        }
    }
    if let Some(at) = &e.at
        && !out.stderr.contains(&format!("{at}\n"))
    {
        problems.push(format!("stderr does not point at {at}"));
    }
    for s in &e.never {
        if out.stdout.contains(s.as_str()) || out.stderr.contains(s.as_str()) {
            problems.push(format!("output shows {s:?}"));
        }
    }
    if e.exit != 64 {
        if !out.stderr.starts_with("error: ") {
            problems.push("stderr does not start with `error: `".into());
        }
        let json = run_case(dir, &e, true, &servers);
        if json.code != e.exit {
            problems.push(format!("--output json exit code {}", json.code));
        }
        if !json.json_lines().iter().any(|l| l["type"] == "error") {
            problems.push("--output json printed no error object".into());
        }
    }
    if !e.needs.is_empty() {
        let changed = servers.mutations();
        if !changed.is_empty() {
            problems.push(format!("changed the servers: {changed:?}"));
        }
    }
    (!problems.is_empty()).then(|| format!("{name}: {}\n{out}", problems.join("; ")))
}
