//! Reliability and security (issue 8), proved against the loopback servers with the real binary:
//! secrets never leak (stdout, stderr, journal, temp files, helm's argv), transient API faults
//! are retried to convergence, permanent ones stop the run naming the step, the resource and the
//! HTTP status, an interrupted run (SIGINT or SIGKILL after any step) converges when re-run to the
//! same end state as an uninterrupted one, and no host function runs an arbitrary program.
//!
//! Figures are printed with `eprintln!` (`cargo test -p collate-run --test it reliability -- --nocapture`)
//! and reported in `docs/reliability.md`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collate_run_tests::api_server::ApiOptions;
use collate_run_tests::base64::{Engine as _, prelude::BASE64_STANDARD};
use collate_run_tests::fault_proxy::{Fault, FaultProxy, Faults};
use collate_run_tests::kube::kubeconfig_yaml;
use collate_run_tests::moto::Moto;
use collate_run_tests::needs::installed;
use collate_run_tests::run::{binary, root};
use collate_run_tests::world::World as Servers;
use collate_run_tests::{Output, Run, needs};
use serde_json::{Value, json};

const DB: &str = "db-canary-Q7xv93Lk";
const ES: &str = "es-canary-Z4mp28Rw";
const ARGO_DB: &str = "argo-canary-H2tn56Yb";
const ADMIN: &str = "admin-canary-P9kd41Vs";
const ADMIN_PASSWORD: &str = "adminpw-canary-T6wr18Jn";

fn secrets_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("COLLATE_DB_PASSWORD", DB),
        ("COLLATE_ES_PASSWORD", ES),
        ("ARGO_DB_PASSWORD", ARGO_DB),
        ("COLLATE_ADMIN_TOKEN", ADMIN),
        ("COLLATE_ADMIN_PASSWORD", ADMIN_PASSWORD),
    ]
}

/// The canary and the parts of its base64 forms that do not depend on what surrounds it (a
/// secret inside a base64-encoded document shows up at any of three alignments).
fn forms(canary: &str) -> Vec<String> {
    let mut out = vec![canary.to_string()];
    for pad in 0..3 {
        let mut bytes = vec![b'\x01'; pad];
        bytes.extend_from_slice(canary.as_bytes());
        let enc = BASE64_STANDARD.encode(&bytes);
        // Drop the characters touched by the padding prefix and by the end.
        let start = (pad * 4).div_ceil(3) + 1;
        let end = enc.trim_end_matches('=').len().saturating_sub(2);
        if end > start + 8 {
            out.push(enc[start..end].to_string());
        }
    }
    out
}

/// Where a canary (or a base64 form of it) shows up in `text`, if anywhere.
fn leaks(text: &str, canaries: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for c in canaries {
        for f in forms(c) {
            if text.contains(&f) {
                found.push(format!("{c} (as {f})"));
            }
        }
    }
    found
}

/// Writes a `helm` wrapper that records its argv and its /proc cmdline, and where each `-f`
/// takes its values from (stdin, or a file), then execs the real helm. `kubeconfig`: helm talks to this API server
/// (not through a fault proxy), when given.
fn helm_wrapper(dir: &Path, kubeconfig: Option<&Path>) -> (PathBuf, PathBuf) {
    let real = installed("helm");
    let log = dir.join("helm-argv.log");
    let script = dir.join("helm-wrapper.sh");
    let kc = kubeconfig
        .map(|k| format!("export KUBECONFIG='{}'\n", k.display()))
        .unwrap_or_default();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
# One write per call: helm runs side by side (the Argo and Collate installs), and the records
# of two calls must not interleave.
rec=$(
  echo "argv: $*"
  printf 'cmdline: '; tr '\0' ' ' < /proc/$$/cmdline; echo
  prev=
  for a in "$@"; do
    case "$prev" in -f|--values) if [ "$a" = - ]; then echo "values: stdin"; else echo "values-file: $a"; fi;; esac
    prev=$a
  done
)
printf '%s\n' "$rec" >> '{log}'
{kc}exec '{real}' "$@"
"#,
            log = log.display(),
            real = real.display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&script, perm).unwrap();
    (script, log)
}

/// Everything one end-to-end world needs: moto with the EKS cluster, the Kubernetes API test
/// server, the OpenMetadata/Argo test server, helm through a recording wrapper, a private TMPDIR.
struct World {
    /// The servers (the shared test world, with moto).
    servers: Servers,
    dir: tempfile::TempDir,
    helm_log: PathBuf,
    helm_bin: PathBuf,
    /// The kubeconfig collate-run uses (the server's, or a fault proxy's).
    kubeconfig: PathBuf,
    /// The AWS endpoint collate-run uses (moto's, or a fault proxy's).
    aws_endpoint: String,
}

/// The servers' fields and helpers (`kube`, `api`, `moto()`, `get`, `issued_token`, ...).
impl std::ops::Deref for World {
    type Target = Servers;
    fn deref(&self) -> &Servers {
        &self.servers
    }
}

fn start_moto() -> Moto {
    let moto = Moto::start();
    moto.create_eks_cluster("acme-eks");
    moto
}

impl World {
    /// The test declares its tools first: `needs!("helm", "moto")` (and `"kubectl"` for
    /// [`World::snapshot`]).
    fn start_with(moto: Moto) -> World {
        let servers = Servers::start_with(
            ApiOptions {
                token: ADMIN.into(),
                ..ApiOptions::default()
            },
            Some(moto),
        );
        let kube = &servers.kube;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let (helm_bin, helm_log) = helm_wrapper(dir.path(), Some(kube.server.kubeconfig_path()));
        let kubeconfig = kube.server.kubeconfig_path().to_path_buf();
        let aws_endpoint = servers.moto().endpoint();
        World {
            servers,
            dir,
            helm_log,
            helm_bin,
            kubeconfig,
            aws_endpoint,
        }
    }

    fn start() -> World {
        World::start_with(start_moto())
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    /// Points collate-run (not helm) at a fault proxy in front of the API server.
    fn kube_through(&mut self, proxy: &FaultProxy) {
        let path = self.dir.path().join("proxy-kubeconfig");
        std::fs::write(&path, kubeconfig_yaml(&proxy.url())).unwrap();
        self.kubeconfig = path;
    }

    fn overrides(&self) -> String {
        self.servers.overrides(
            "account_id: \"\"\nsteps: {prereqs: true, preflight: false}\n\
             run_lock: {namespace: default, name: collate-run, ttl: 5, wait: 20}",
        )
    }

    fn recipe(&self, name: &str) -> Run {
        let mut env = self.kube.env();
        env.retain(|(k, _)| k != "KUBECONFIG" && k != "HELM_BIN");
        Run::recipe(name)
            .config(root().join("recipes/customer.example.yaml"))
            .config_yaml(&self.overrides())
            // Through a fault proxy in front of the API server a port-forward cannot upgrade.
            .config_yaml(&self.servers.direct_api_urls())
            .envs(secrets_env())
            .envs(env)
            .envs(self.moto().env())
            .env("AWS_ENDPOINT_URL", &self.aws_endpoint)
            .env("KUBECONFIG", &self.kubeconfig.display().to_string())
            .env("HELM_BIN", &self.helm_bin.display().to_string())
            .env("TMPDIR", &self.tmp().display().to_string())
    }

    /// The ECR password inside the pull secret (after an apply).
    fn ecr_password(&self) -> Option<String> {
        let doc: Value = serde_json::from_str(&self.secret(
            "collate",
            "ecr-registry-creds",
            ".dockerconfigjson",
        )?)
        .ok()?;
        let auth = doc["auths"].as_object()?.values().next()?["auth"]
            .as_str()?
            .to_string();
        let plain = String::from_utf8(BASE64_STANDARD.decode(&auth).ok()?).ok()?;
        Some(plain.split_once(':')?.1.to_string())
    }

    /// Every file left in the private TMPDIR, with its text.
    fn temp_files(&self) -> Vec<(PathBuf, String)> {
        fn walk(d: &Path, out: &mut Vec<(PathBuf, String)>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap_or_default())
                        .into_owned();
                    out.push((p, text));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.tmp(), &mut out);
        out
    }

    fn helm_log(&self) -> String {
        std::fs::read_to_string(&self.helm_log).unwrap_or_default()
    }

    /// The end state: Kubernetes objects by `Kind ns/name` (volatile fields removed; pods,
    /// replica sets, events, leases and helm's release records left out), helm releases, and
    /// the AWS objects.
    fn snapshot(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let kubectl = installed("kubectl");
        let kinds = "namespaces,secrets,serviceaccounts,configmaps,services,deployments,statefulsets,roles,rolebindings,clusterroles,clusterrolebindings,customresourcedefinitions,jobs";
        let o = Command::new(kubectl)
            .args(["get", kinds, "-A", "-o", "json"])
            .env("KUBECONFIG", self.kube.server.kubeconfig_path())
            .env("HOME", self.dir.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let list: Value = serde_json::from_slice(&o.stdout).unwrap();
        for mut item in list["items"].as_array().cloned().unwrap_or_default() {
            let kind = item["kind"].as_str().unwrap_or("").to_string();
            let ns = item["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = item["metadata"]["name"].as_str().unwrap_or("").to_string();
            if name.starts_with("sh.helm.release.v1.") {
                continue;
            }
            if let Some(m) = item["metadata"].as_object_mut() {
                for k in [
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "managedFields",
                    "generation",
                    "selfLink",
                ] {
                    m.remove(k);
                }
                if let Some(a) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                    a.retain(|k, _| !k.starts_with("deployment.kubernetes.io/"));
                }
            }
            if let Some(m) = item.as_object_mut() {
                m.remove("status");
            }
            // Issued by the server, different in every world.
            for owner in item["metadata"]["ownerReferences"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                owner["uid"] = json!("<uid>");
            }
            // Allocated by the server in the order Services are created, and the two installs
            // run side by side.
            if kind == "Service" {
                for key in ["clusterIP", "clusterIPs"] {
                    if let Some(v) = item["spec"].get_mut(key) {
                        *v = json!("<allocated>");
                    }
                }
            }
            // A Job's selector and pod labels carry its uid (the API server's generated
            // selector, `controller-uid` and `batch.kubernetes.io/controller-uid`).
            if kind == "Job" {
                for path in [
                    "/spec/selector/matchLabels",
                    "/spec/template/metadata/labels",
                ] {
                    let labels = item.pointer_mut(path).and_then(Value::as_object_mut);
                    for (k, v) in labels.into_iter().flatten() {
                        if k.ends_with("controller-uid") {
                            *v = json!("<uid>");
                        }
                    }
                }
            }
            if item["type"] == "kubernetes.io/service-account-token" {
                item["data"]["token"] = json!("<issued>");
                item["metadata"]["annotations"]["kubernetes.io/service-account.uid"] =
                    json!("<uid>");
            }
            out.insert(format!("{kind} {ns}/{name}"), item);
        }
        let releases: Value =
            serde_json::from_str(&self.kube.helm(&["list", "-A", "-o", "json"])).unwrap();
        for r in releases.as_array().cloned().unwrap_or_default() {
            out.insert(
                format!(
                    "HelmRelease {}/{}",
                    r["namespace"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or("")
                ),
                json!({"status": r["status"], "chart": r["chart"]}),
            );
        }
        let aws = self.moto().python(
            "iam = c('iam')\n\
             roles = {}\n\
             for r in iam.list_roles()['Roles']:\n\
             \x20   if r['Path'].startswith('/aws-service-role/'): continue\n\
             \x20   n = r['RoleName']\n\
             \x20   roles[n] = {'trust': r['AssumeRolePolicyDocument'], \
                     'attached': sorted(p['PolicyArn'] for p in iam.list_attached_role_policies(RoleName=n)['AttachedPolicies']), \
                     'inline': sorted(iam.list_role_policies(RoleName=n)['PolicyNames'])}\n\
             out = {'roles': roles, \
                    'buckets': sorted(b['Name'] for b in c('s3').list_buckets()['Buckets']), \
                    'oidc': sorted(p['Arn'] for p in iam.list_open_id_connect_providers()['OpenIDConnectProviderList'])}",
        );
        // The cluster's OIDC issuer id is random per moto cluster.
        let id = aws["oidc"][0]
            .as_str()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or("")
            .to_string();
        out.insert("AWS".into(), aws);
        if !id.is_empty() {
            for v in out.values_mut() {
                let text = v.to_string().replace(&id, "<oidc-id>");
                *v = serde_json::from_str(&text).unwrap();
            }
        }
        out
    }

    /// Revisions per helm release (`helm history`).
    fn helm_revisions(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for (ns, name) in [
            ("argo-workflows", "argo-workflows"),
            ("collate", "openmetadata"),
        ] {
            let h: Value =
                serde_json::from_str(&self.kube.helm(&["history", name, "-n", ns, "-o", "json"]))
                    .unwrap_or(Value::Null);
            out.insert(
                name.to_string(),
                h.as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| r["status"].as_str().unwrap_or("").to_string())
                    .collect(),
            );
        }
        out
    }
}

/// Differences between two snapshots, for assertion messages.
fn diff(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("missing after re-run: {k}")),
            Some(w) if w != v => out.push(format!("differs: {k}\n  want {v}\n  got  {w}")),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        out.push(format!("extra (orphan or duplicate): {k}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// 4. Secrets

#[test]
fn secrets_never_leak_in_any_mode_or_recipe() {
    needs!("helm", "moto");
    let w = World::start();
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let mut runs = 0;
    // Plan, then apply, both verbose, human and JSON; the API server then accepts only the token
    // the cluster issued, as in production.
    for (label, plan, json) in [
        ("plan -vvv", true, false),
        ("plan json -vvv", true, true),
        ("apply -vvv", false, false),
        ("apply json -vvv (re-run)", false, true),
    ] {
        let mut r = w.recipe("full.rhai").arg("-vvv");
        if plan {
            r = r.plan();
        }
        if json {
            r = r.json();
        }
        let out = r.succeeds();
        runs += 1;
        if !plan && let Some(t) = w.issued_token() {
            w.api.configure(|o| o.argo_token = t);
        }
        outputs.push((label.into(), out));
    }
    let sa = w.issued_token().expect("the om-role token was issued");
    let ecr = w.ecr_password().expect("the ECR pull secret was created");
    assert_eq!(
        ecr,
        w.moto().ecr_password("118146679784"),
        "the pull secret holds moto's ECR token"
    );
    // The same secrets through every other recipe, plan and apply, human and JSON.
    let mut recipes: Vec<String> = Vec::new();
    for sub in ["", "maintenance/"] {
        for e in std::fs::read_dir(root().join("recipes").join(sub))
            .unwrap()
            .flatten()
        {
            let n = e.file_name().to_string_lossy().to_string();
            if n.ends_with(".rhai") && n != "full.rhai" {
                recipes.push(format!("{sub}{n}"));
            }
        }
    }
    recipes.sort();
    for name in &recipes {
        for (plan, json) in [(true, true), (false, false)] {
            let mut r = w
                .recipe(name)
                .arg("-vvv")
                .env("ECR_PASSWORD", &ecr)
                .set("ecr.password.env", "ECR_PASSWORD");
            if plan {
                r = r.plan();
            }
            if json {
                r = r.json();
            }
            outputs.push((format!("{name} plan={plan} json={json}"), r.run()));
            runs += 1;
        }
    }
    // Errors forced after the secrets were read: helm fails on a chart that is not there (the
    // values with the passwords went to its stdin), and the re-index fails with a message.
    let out = w
        .recipe("full.rhai")
        .arg("-vvv")
        .set("charts.openmetadata.chart", "/nonexistent/openmetadata")
        .set("images.server.tag", "om-1.12.4-cl-1.12.4")
        .run();
    assert_ne!(out.code, 0, "{out}");
    outputs.push(("forced helm failure".into(), out));
    w.api
        .fail_reindex(json!({"failure": {"message": format!("boom near {}", "x")}}));
    let out = w
        .recipe("full.rhai")
        .arg("-vvv")
        .json()
        .set("reindex.when", "always")
        .run();
    assert_ne!(out.code, 0, "{out}");
    outputs.push(("forced re-index failure".into(), out));
    runs += 2;

    let canaries: Vec<String> = [
        DB,
        ES,
        ARGO_DB,
        ADMIN,
        ADMIN_PASSWORD,
        sa.as_str(),
        ecr.as_str(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut found = Vec::new();
    for (label, out) in &outputs {
        for l in leaks(&out.stdout, &canaries) {
            found.push(format!("{label}: stdout shows {l}"));
        }
        for l in leaks(&out.stderr, &canaries) {
            found.push(format!("{label}: stderr shows {l}"));
        }
    }
    let temp = w.temp_files();
    for (p, text) in &temp {
        for l in leaks(text, &canaries) {
            found.push(format!("temp file {} left behind shows {l}", p.display()));
        }
    }
    let helm_log = w.helm_log();
    let helm_calls = helm_log.lines().filter(|l| l.starts_with("argv:")).count();
    assert!(helm_calls > 5, "helm ran through the wrapper: {helm_log}");
    for l in leaks(&helm_log, &canaries) {
        found.push(format!("helm argv shows {l}"));
    }
    // Values reach helm on stdin (`-f -`): never a file a killed run could leave behind.
    let files: Vec<&str> = helm_log
        .lines()
        .filter(|l| l.starts_with("values-file:"))
        .collect();
    assert!(files.is_empty(), "helm was given values files: {files:?}");
    let values_files = helm_log.lines().filter(|l| *l == "values: stdin").count();
    assert!(
        values_files > 0,
        "helm was given no values on stdin: {helm_log}"
    );
    for (label, out) in &outputs {
        eprintln!("  {label}: exit {}", out.code);
    }
    eprintln!(
        "secrets: {runs} runs, {values_files} values on stdin (no values file), {} canaries ({} forms each), {helm_calls} helm calls, {} temp files left, {} leaks",
        canaries.len(),
        forms(DB).len(),
        temp.len(),
        found.len()
    );
    assert!(
        found.is_empty(),
        "{} leak(s):\n{}",
        found.len(),
        found.join("\n")
    );
    assert!(
        temp.is_empty(),
        "temp files left behind: {:?}",
        temp.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
}

#[test]
fn base64_forms_find_a_secret_inside_an_encoded_document() {
    for prefix in ["", "a", "ab", "{\"auths\":{\"x\":"] {
        let doc = BASE64_STANDARD.encode(format!("{prefix}{DB}, and more"));
        assert!(!leaks(&doc, &[DB.to_string()]).is_empty(), "{prefix:?}");
    }
    assert!(leaks("nothing here", &[DB.to_string()]).is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. Faults

#[test]
fn transient_faults_are_retried_until_the_recipe_converges() {
    needs!("helm", "moto", "kubectl");
    let mut w = World::start();
    // A quarter of the Kubernetes calls and a fifth of the AWS calls fail: throttled, 5xx, or
    // the connection is reset. helm talks to the API server directly (see docs/reliability.md).
    let kube_proxy = FaultProxy::start(
        &w.kube.server.url(),
        Faults::share(
            0.25,
            &[
                Fault::Status(429),
                Fault::Status(500),
                Fault::Status(503),
                Fault::Reset,
            ],
        )
        .seed(8),
    );
    let aws_proxy = FaultProxy::start(
        &w.moto().endpoint(),
        Faults::share(0.2, &[Fault::Status(500), Fault::Status(503), Fault::Reset]).seed(9),
    );
    w.kube_through(&kube_proxy);
    w.aws_endpoint = aws_proxy.url();
    let started = Instant::now();
    let first = w.recipe("full.rhai").json().succeeds();
    let t = w.issued_token().expect("issued");
    w.api.configure(|o| o.argo_token = t);
    let again = w.recipe("full.rhai").json().succeeds();
    assert_eq!(
        again.changed(),
        Vec::<String>::new(),
        "the re-run under faults changes nothing"
    );
    let (k, a) = (kube_proxy.stats(), aws_proxy.stats());
    eprintln!(
        "faults: kube {} requests, {} faulted {:?}; aws {} requests, {} faulted {:?}; 2 runs converged in {:.1}s",
        k.requests,
        k.injected,
        k.by_fault,
        a.requests,
        a.injected,
        a.by_fault,
        started.elapsed().as_secs_f64()
    );
    assert!(
        k.injected >= 10 && a.injected >= 5,
        "too few faults to prove anything: {k:?} {a:?}"
    );
    assert!(!first.changed().is_empty());
    // The same end state as without faults.
    let faulted = w.snapshot();
    let clean = World::start();
    clean.recipe("full.rhai").json().succeeds();
    let d = diff(&clean.snapshot(), &faulted);
    assert!(
        d.is_empty(),
        "the faulted world differs from a clean one:\n{}",
        d.join("\n")
    );
}

#[test]
fn a_permanent_kubernetes_error_names_the_step_the_resource_and_the_status() {
    needs!("helm", "moto");
    let mut w = World::start();
    let proxy = FaultProxy::start(
        &w.kube.server.url(),
        Faults::always(Fault::Status(500))
            .only("PATCH /api/v1/namespaces/collate/secrets/db-credentials"),
    );
    w.kube_through(&proxy);
    let started = Instant::now();
    let out = w.recipe("full.rhai").fails_with(4);
    out.stderr_contains("db-credentials")
        .stderr_contains("HTTP 500")
        .stderr_contains("after 8 attempts");
    assert!(
        out.stdout.contains("collate") || out.stderr.contains("collate"),
        "{out}"
    );
    let s = proxy.stats();
    assert_eq!(s.injected, 8, "8 attempts in all: {s:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
    eprintln!("permanent kube error after retries:\n{}", out.stderr);
    if let Some(t) = w.issued_token() {
        w.api.configure(|o| o.argo_token = t);
    }
    // Forbidden is final at once: one attempt, the status named.
    proxy.set(
        Faults::always(Fault::Status(403))
            .only("PATCH /api/v1/namespaces/collate/secrets/es-credentials"),
    );
    let out = w.recipe("full.rhai").fails_with(4);
    out.stderr_contains("es-credentials")
        .stderr_contains("HTTP 403");
    assert_eq!(proxy.stats().injected, 9, "403 is not retried");
    eprintln!("permanent kube errors:\n{}", out.stderr);
}

#[test]
fn a_permanent_aws_error_names_the_resource_and_the_status() {
    needs!("helm", "moto");
    let mut w = World::start();
    let proxy = FaultProxy::start(
        &w.moto().endpoint(),
        Faults::always(Fault::Status(403))
            .only("PUT /collate-argo-artifacts-eu-west-1")
            .body("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"),
    );
    w.aws_endpoint = proxy.url();
    let out = w.recipe("full.rhai").run();
    assert_ne!(out.code, 0, "{out}");
    eprintln!("permanent aws error (exit {}):\n{}", out.code, out.stderr);
    // The AWS stdlib names the operation, the bucket, the service error code and the status.
    out.stderr_contains(
        "`s3:CreateBucket` on `collate-argo-artifacts-eu-west-1` failed: AccessDenied (HTTP 403)",
    );
    out.stdout_contains("✗ prereqs");
    // The error points at the failing call inside the `parallel` job, not at `parallel`.
    out.stderr_contains("prereqs.rhai:49:");
    assert!(w.moto().bucket_names().is_empty());
    // The pull secrets run side by side with the AWS work in prereqs (`parallel`), so they may
    // be written; nothing of a later step is.
    let applied: Vec<String> = w
        .kube
        .server
        .requests()
        .into_iter()
        .filter(|r| r.mutating && !r.uri.contains("/leases"))
        .map(|r| format!("{} {}", r.method, r.uri))
        .filter(|r| {
            let path = r.split('?').next().unwrap_or_default();
            !(path.ends_with("/secrets/ecr-registry-creds")
                || path.starts_with("PATCH /api/v1/namespaces/") && path.matches('/').count() == 4)
        })
        .collect();
    assert!(
        applied.is_empty(),
        "applied after the AWS step failed (only the run lock and prereqs' pull secrets may be written): {applied:?}"
    );
    assert!(!out.stdout.contains("argo-db-credentials"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// 1. Interruption

impl World {
    /// Clears moto (every AWS object) and re-creates the EKS cluster, for the next world.
    fn reset_moto(moto: &Moto) {
        moto.python(&format!(
            "import urllib.request\n\
             urllib.request.urlopen(urllib.request.Request('{}/moto-api/reset', method='POST'))",
            moto.endpoint()
        ));
        moto.create_eks_cluster("acme-eks");
    }

    /// Starts `full.rhai` (apply) as a child process, stdout piped.
    fn spawn_full(&self, json: bool) -> std::process::Child {
        let overrides = self.dir.path().join("overrides.yaml");
        std::fs::write(&overrides, self.overrides()).unwrap();
        let direct = self.dir.path().join("direct-api-urls.yaml");
        std::fs::write(&direct, self.servers.direct_api_urls()).unwrap();
        let mut cmd = Command::new(binary());
        cmd.arg(root().join("recipes/full.rhai"))
            .arg("--config")
            .arg(root().join("recipes/customer.example.yaml"))
            .arg("--config")
            .arg(&overrides)
            .arg("--config")
            .arg(&direct);
        if json {
            cmd.args(["--output", "json"]);
        }
        cmd.env_clear();
        for k in ["PATH", "LANG"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        let mut env = self.kube.env();
        env.retain(|(k, _)| k != "KUBECONFIG" && k != "HELM_BIN");
        cmd.env("HOME", self.dir.path())
            .envs(secrets_env())
            .envs(env)
            .envs(self.moto().env())
            .env("AWS_ENDPOINT_URL", &self.aws_endpoint)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_BIN", &self.helm_bin)
            .env("TMPDIR", self.tmp())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().expect("spawn collate-run")
    }

    /// Runs `full.rhai` and signals it once `when(line)` has matched `after` stdout lines.
    /// Returns (exit code, stdout, stderr, lines printed after the signal).
    fn interrupt(
        &self,
        json: bool,
        signal: &str,
        after: usize,
        when: fn(&str) -> bool,
    ) -> (i32, String, String, usize) {
        let mut child = self.spawn_full(json);
        let pid = child.id();
        let stderr = child.stderr.take().unwrap();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let mut stdout = String::new();
        let (mut seen, mut signalled, mut after_signal) = (0, false, 0);
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Ok(line) = line else { break };
            stdout.push_str(&line);
            stdout.push('\n');
            if signalled {
                if when(&line) {
                    after_signal += 1;
                }
                continue;
            }
            if when(&line) {
                seen += 1;
                if seen == after {
                    signalled = true;
                    if signal == "KILL" {
                        let _ = child.kill();
                    } else {
                        let _ = Command::new("kill")
                            .args([&format!("-{signal}"), &pid.to_string()])
                            .status();
                    }
                }
            }
        }
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "collate-run did not stop after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let code = status.code().unwrap_or(-1);
        (code, stdout, err_thread.join().unwrap(), after_signal)
    }

    fn lock_holder(&self) -> Option<String> {
        let l = self
            .kube
            .get("coordination.k8s.io/v1", "Lease", "default", "collate-run")?;
        l["spec"]["holderIdentity"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(String::from)
    }
}

fn is_change(line: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["type"] == "change")
}

#[derive(Default)]
struct Tally {
    problems: Vec<String>,
    survived: usize,
    leftover_temp: usize,
    max_after: usize,
}

/// Waits (bounded) for the server to fill the om-role token, and lets the Argo API accept it.
fn accept_issued_token(w: &World) {
    if w.kube
        .get("v1", "ServiceAccount", "collate", "om-role")
        .is_none()
    {
        return;
    }
    for _ in 0..40 {
        if let Some(t) = w.issued_token().filter(|t| !t.is_empty()) {
            w.api.configure(|o| o.argo_token = t);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_points(
    plan: &[(usize, &str)],
    want: &BTreeMap<String, Value>,
    want_revisions: &BTreeMap<String, Vec<String>>,
) -> Tally {
    let mut t = Tally::default();
    let mut moto = Moto::start();
    for (n, signal) in plan {
        let (n, signal) = (*n, *signal);
        World::reset_moto(&moto);
        let w = World::start_with(moto);
        let (code, stdout, stderr, after) = w.interrupt(true, signal, n, is_change);
        t.max_after = t.max_after.max(after);
        if signal == "INT" {
            if code != 130 && code != 0 {
                t.problems
                    .push(format!("SIGINT after event {n}: exit {code}\n{stderr}"));
            }
            if code == 130 {
                let lines: Vec<Value> = stdout
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect();
                if !lines
                    .iter()
                    .any(|l| l["type"] == "error" && l.to_string().contains("interrupted"))
                {
                    t.problems.push(format!(
                        "SIGINT after event {n}: no `interrupted` error event\n{stdout}"
                    ));
                }
                if !lines.iter().any(|l| l["type"] == "summary") {
                    t.problems.push(format!(
                        "SIGINT after event {n}: no summary of what was done"
                    ));
                }
                // The calls in flight finish and no new one starts. Events printed after the
                // signal are those calls, or changes made before it that `parallel` held back to
                // print in job order: a parallel block prints its events together once its first
                // job is done (prereqs' block: 8). (Which step had started when the signal landed
                // cannot be told from the output: the process runs ahead of this reader.)
                if after > 8 {
                    t.problems.push(format!(
                        "SIGINT after event {n}: {after} more changes after the signal"
                    ));
                }
            }
            if let Some(h) = w.lock_holder() {
                t.problems.push(format!(
                    "SIGINT after event {n}: run lock still held by {h}"
                ));
            }
        }
        t.leftover_temp += w.temp_files().len();
        accept_issued_token(&w);
        // Re-run: converges, then a third run changes nothing.
        let again = w.recipe("full.rhai").json().run();
        if again.code != 0 {
            t.problems.push(format!(
                "SIG{signal} after event {n}: the re-run failed\n{again}"
            ));
        } else {
            accept_issued_token(&w);
            let third = w.recipe("full.rhai").json().run();
            let d = diff(want, &w.snapshot());
            let revisions = w.helm_revisions();
            if third.code != 0 || !third.changed().is_empty() {
                t.problems.push(format!(
                    "SIG{signal} after event {n}: a third run is not a no-op: {:?}\n{third}",
                    third.changed()
                ));
            } else if !d.is_empty() {
                t.problems.push(format!(
                    "SIG{signal} after event {n}: end state differs:\n{}",
                    d.join("\n")
                ));
            } else if revisions
                .values()
                .any(|r| r.last().map(String::as_str) != Some("deployed") || r.len() > 3)
            {
                t.problems.push(format!("SIG{signal} after event {n}: helm history {revisions:?} (uninterrupted: {want_revisions:?})"));
            } else {
                t.survived += 1;
            }
        }
        moto = w.servers.into_moto().expect("the world's moto");
    }
    t
}

#[test]
fn a_run_killed_after_any_step_converges_when_run_again() {
    needs!("helm", "moto", "kubectl");
    let started = Instant::now();
    // The reference: one uninterrupted run.
    let w = World::start();
    let reference = w.recipe("full.rhai").json().succeeds();
    let events = reference.changes().len();
    let want = w.snapshot();
    let want_revisions = w.helm_revisions();
    assert!(events >= 10, "{reference}");
    drop(w);
    // Every kill point, SIGINT at odd ones and SIGKILL at even ones (both at every point with
    // RELIABILITY_ALL_KILL_POINTS=1).
    let all = std::env::var("RELIABILITY_ALL_KILL_POINTS").is_ok_and(|v| v == "1");
    let mut plan: Vec<(usize, &str)> = Vec::new();
    for n in 1..=events {
        if all || n % 2 == 1 {
            plan.push((n, "INT"));
        }
        if all || n % 2 == 0 {
            plan.push((n, "KILL"));
        }
    }
    // Two workers, each with its own moto (most of the time is spent waiting: for an expired
    // run lock after SIGKILL, for helm).
    let results: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let mine: Vec<(usize, &str)> = plan.iter().skip(t).step_by(2).cloned().collect();
                let (want, want_revisions) = (&want, &want_revisions);
                scope.spawn(move || kill_points(&mine, want, want_revisions))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .collect()
    });
    let problems: Vec<String> = results.iter().flat_map(|r| r.problems.clone()).collect();
    let survived: usize = results.iter().map(|r| r.survived).sum();
    let leftover_temp: usize = results.iter().map(|r| r.leftover_temp).sum();
    let max_after = results.iter().map(|r| r.max_after).max().unwrap_or(0);
    eprintln!(
        "interruption: {events} change events; {} kill points ({} SIGINT, {} SIGKILL), {survived} converged; \
         at most {max_after} change(s) after a signal; {leftover_temp} temp file(s) left by killed runs; {:.0}s",
        plan.len(),
        plan.iter().filter(|p| p.1 == "INT").count(),
        plan.iter().filter(|p| p.1 == "KILL").count(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

#[test]
fn sigint_says_what_was_done_and_what_was_not() {
    needs!("helm", "moto");
    let w = World::start();
    let (code, stdout, stderr, _) =
        w.interrupt(false, "INT", 3, |l| l.trim_start().starts_with("+ "));
    assert_eq!(code, 130, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("interrupted: the run stopped between two calls"),
        "{stderr}"
    );
    assert!(stderr.contains("Run it again to converge"), "{stderr}");
    assert!(
        stdout.contains("created"),
        "the summary says what was done: {stdout}"
    );
    assert_eq!(w.lock_holder(), None, "the run lock is released");
}

// ---------------------------------------------------------------------------------------------
// 5. Sandbox

/// No host function runs an arbitrary program: the generated reference (every function the
/// engine registers) has none that executes, spawns or opens a shell.
#[test]
fn no_host_function_runs_an_arbitrary_program() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["docs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir.path().join("definitions"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(e.path()).unwrap();
        let module = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".d.rhai")
            .to_string();
        for line in text.lines() {
            if let Some(rest) = line.trim_start().strip_prefix("fn ") {
                let name = rest.split('(').next().unwrap_or("").trim().to_string();
                names.push(format!("{module}::{name}"));
            }
        }
    }
    assert!(
        names.len() > 50,
        "the reference lists the functions: {names:?}"
    );
    let forbidden = [
        "exec",
        "shell",
        "spawn",
        "system",
        "command",
        "popen",
        "process",
        "run_program",
    ];
    let bad: Vec<&String> = names
        .iter()
        .filter(|n| {
            let f = n.rsplit("::").next().unwrap_or("").to_ascii_lowercase();
            forbidden.iter().any(|w| f.contains(w))
        })
        .collect();
    eprintln!(
        "sandbox: {} functions in the reference, {} that run programs",
        names.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "host functions that look like they run programs: {bad:?}"
    );
}

/// The only program the full recipe runs is HELM_BIN: with PATH holding nothing but stubs that
/// record being run (sh, bash, kubectl, aws, curl, python3, docker, git, env), none is run.
#[test]
fn helm_bin_is_the_only_program_the_full_recipe_runs() {
    needs!("helm", "moto");
    let w = World::start();
    let stubs = w.dir.path().join("stubs");
    std::fs::create_dir(&stubs).unwrap();
    let log = w.dir.path().join("programs.log");
    let write_exe = |p: &Path, text: String| {
        std::fs::write(p, text).unwrap();
        let mut perm = std::fs::metadata(p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(p, perm).unwrap();
    };
    for name in [
        "sh", "bash", "kubectl", "aws", "curl", "python3", "python", "docker", "git", "env", "helm",
    ] {
        write_exe(
            &stubs.join(name),
            format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}'\nexit 1\n",
                log.display()
            ),
        );
    }
    let helm = w.dir.path().join("plain-helm");
    write_exe(
        &helm,
        format!(
            "#!/bin/sh\necho \"HELM_BIN $1\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            installed("helm").display()
        ),
    );
    w.recipe("full.rhai")
        .env("PATH", &stubs.display().to_string())
        .env("HELM_BIN", &helm.display().to_string())
        .succeeds();
    let ran = std::fs::read_to_string(&log).unwrap_or_default();
    let others: Vec<&str> = ran
        .lines()
        .filter(|l| !l.starts_with("HELM_BIN "))
        .collect();
    assert!(
        ran.lines().any(|l| l.starts_with("HELM_BIN ")),
        "helm ran: {ran}"
    );
    assert!(
        others.is_empty(),
        "programs other than HELM_BIN were run: {others:?}"
    );
}

/// Two applies of `full.rhai` started at once on a fresh world, with the example config's own run
/// lock (namespace `collate`, which does not exist yet, `wait: 0`): one takes the lock and
/// converges everything; the other stops before the recipe, naming the holder, having changed at
/// most the lock's namespace (created by both at once, without an error). A third run changes
/// nothing.
#[test]
fn two_applies_at_once_one_converges_the_other_stops_naming_the_holder() {
    needs!("helm", "moto");
    let w = World::start();
    // The world's overrides use a lock in `default`; this test uses the example's.
    let example_lock = "run_lock: {namespace: collate, name: collate-run, ttl: 300, wait: 0}";
    let apply = || {
        let run = w.recipe("full.rhai").config_yaml(example_lock).json();
        std::thread::spawn(move || run.run())
    };
    let (a, b) = (apply(), apply());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let (winner, loser) = match (a.code, b.code) {
        (0, _) => (a, b),
        (_, 0) => (b, a),
        _ => panic!("neither apply succeeded:\n{a}\n{b}"),
    };
    assert_eq!(loser.code, 4, "{loser}");
    loser.stdout_contains("run lock `collate/collate-run` is held by `");
    let loser_changes: Vec<String> = loser
        .changed()
        .into_iter()
        .filter(|c| c != "create k8s.Namespace collate")
        .collect();
    assert!(
        loser_changes.is_empty(),
        "the stopped run changed things: {loser_changes:?}\n{loser}"
    );
    assert!(!winner.changed().is_empty(), "{winner}");
    assert!(
        w.kube
            .get("coordination.k8s.io/v1", "Lease", "collate", "collate-run")
            .is_none(),
        "the lock was not given back"
    );

    accept_issued_token(&w);
    let third = w
        .recipe("full.rhai")
        .config_yaml(example_lock)
        .json()
        .succeeds();
    assert_eq!(third.changed(), Vec::<String>::new(), "{third}");
}
