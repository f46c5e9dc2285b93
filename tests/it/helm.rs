//! The `helm` namespace with real helm 3 and helm 4 against the Kubernetes API test server:
//! plan, install, no new revision when unchanged, a values change as revision 2, schema
//! validation by `helm::template`, secrets in values never shown.

use std::path::Path;

use collate_run_tests::chart_repo::{ChartRepo, upstream_chart};
use collate_run_tests::kube::{Cluster, chart, helm_binaries};
use collate_run_tests::{Run, needs};
use serde_json::Value;

const CANARY: &str = "canary-helm-9d2b7e";

fn script(greeting: &str) -> String {
    format!(
        r#"
        let r = helm::upgrade_install("mini", "{chart}", #{{
            namespace: "collate", create_namespace: true, disable_openapi_validation: true,
            values: #{{ greeting: "{greeting}", password: secret::env("MINI_PASSWORD") }},
        }});
        print(`changed=${{r.changed}} revision=${{r.object.revision}} status=${{r.object.status}} chart=${{r.object.chart}}-${{r.object.version}}`);
        "#,
        chart = chart("collate-mini").display()
    )
}

fn revisions(c: &Cluster) -> usize {
    let h: Value =
        serde_json::from_str(&c.helm(&["history", "mini", "-n", "collate", "-o", "json"])).unwrap();
    h.as_array().unwrap().len()
}

fn lifecycle(bin: &Path, driver: Option<&str>) {
    let mut c = Cluster::start().with_helm(bin);
    if let Some(d) = driver {
        c = c.with_helm_driver(d);
    }
    let run = |greeting: &str| {
        Run::script(&script(greeting))
            .envs(c.env())
            .env("MINI_PASSWORD", CANARY)
    };

    // Plan: a creation with the chart and the keys; nothing installed.
    let out = run("hello").plan().json().succeeds();
    out.never_shows(CANARY);
    let ch = out.changes();
    assert_eq!(ch.len(), 1, "{out}");
    assert_eq!(
        (
            ch[0]["kind"].as_str(),
            ch[0]["name"].as_str(),
            ch[0]["action"].as_str()
        ),
        (Some("helm.release"), Some("collate/mini"), Some("create"))
    );
    let fields = ch[0]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["path"] == "chart" && f["after"] == "collate-mini-0.1.0"),
        "{out}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f["path"] == "values.password" && f["after"] == "***"),
        "{out}"
    );
    assert!(
        c.get("v1", "ConfigMap", "collate", "mini-settings")
            .is_none()
    );

    // Install: revision 1; the chart's objects exist with the secret value inside.
    run("hello")
        .succeeds()
        .never_shows(CANARY)
        .stdout_contains("changed=created revision=1 status=deployed chart=collate-mini-0.1.0");
    assert_eq!(
        c.get("v1", "ConfigMap", "collate", "mini-settings")
            .unwrap()["data"]["greeting"],
        "hello"
    );
    assert_eq!(revisions(&c), 1);

    // Unchanged: no new revision, in plan and apply.
    run("hello")
        .plan()
        .succeeds()
        .stdout_contains("changed=unchanged revision=1");
    run("hello")
        .succeeds()
        .stdout_contains("changed=unchanged revision=1");
    assert_eq!(revisions(&c), 1);

    // A values change: the plan names the key; apply makes revision 2.
    let out = run("bonjour").plan().json().succeeds();
    out.never_shows(CANARY);
    let ch = &out.changes()[0];
    assert_eq!(ch["action"], "update");
    let fields = ch["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2, "{ch}");
    assert_eq!(fields[0]["path"], "values.greeting");
    assert_eq!(
        (fields[0]["before"].as_str(), fields[0]["after"].as_str()),
        (Some("hello"), Some("bonjour"))
    );
    // And what that changes in the rendered manifests (from the release record, or from
    // `helm get manifest` with another storage driver).
    assert_eq!(
        fields[1]["path"],
        "manifest[\"ConfigMap collate/mini-settings\"].data.greeting"
    );
    assert_eq!(fields[1]["after"], "bonjour");
    assert_eq!(revisions(&c), 1);
    run("bonjour")
        .succeeds()
        .never_shows(CANARY)
        .stdout_contains("changed=updated revision=2");
    assert_eq!(revisions(&c), 2);
    assert_eq!(
        c.get("v1", "ConfigMap", "collate", "mini-settings")
            .unwrap()["data"]["greeting"],
        "bonjour"
    );

    // A changed secret value is a change, shown masked.
    let out = Run::script(&script("bonjour"))
        .envs(c.env())
        .env("MINI_PASSWORD", "canary-helm-other-1")
        .plan()
        .json()
        .succeeds();
    out.never_shows("canary-helm-other-1").never_shows(CANARY);
    let f = &out.changes()[0]["fields"][0];
    assert_eq!(
        (
            f["path"].as_str(),
            f["before"].as_str(),
            f["after"].as_str()
        ),
        (Some("values.password"), Some("***"), Some("***"))
    );

    // status
    Run::script(r#"let s = helm::status("mini", "collate"); print(`rev=${s.revision} ${s.status}`); print(`none=${helm::status("nope", "collate") == ()}`);"#)
        .envs(c.env())
        .succeeds()
        .stdout_contains("rev=2 deployed")
        .stdout_contains("none=true");
    // collate-run reads the release (from helm's records through the API with the default
    // driver, through `helm get` with another) as helm itself reports it.
    let ours = Run::eval(r#"helm::status("mini", "collate")"#)
        .envs(c.env())
        .json()
        .succeeds()
        .value();
    let helms: Value =
        serde_json::from_str(&c.helm(&["get", "metadata", "mini", "-n", "collate", "-o", "json"]))
            .unwrap();
    for (a, b) in [
        ("name", "name"),
        ("namespace", "namespace"),
        ("revision", "revision"),
        ("status", "status"),
        ("chart", "chart"),
        ("version", "version"),
        ("app_version", "appVersion"),
    ] {
        assert_eq!(ours[a], helms[b], "{a}: {ours} vs {helms}");
    }
    // When the revision was deployed, in epoch milliseconds (whole seconds, as helm prints it).
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let deployed = ours["deployed_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("no deployed_at in {ours}"));
    assert!(
        deployed % 1000 == 0 && deployed <= now_ms && now_ms - deployed < 600_000,
        "deployed_at {deployed} (now {now_ms}); helm says {}",
        helms["deployedAt"]
    );
}

#[test]
fn release_lifecycle_helm4() {
    let bin = needs!("helm");
    lifecycle(&bin, None);
}

/// Another storage driver: collate-run reads releases through `helm get`, not the API.
#[test]
fn release_lifecycle_helm4_configmap_driver() {
    let bin = needs!("helm");
    lifecycle(&bin, Some("configmap"));
}

#[test]
fn release_lifecycle_helm3() {
    let bin = needs!("helm3");
    lifecycle(&bin, None);
}

#[test]
fn template_enforces_the_values_schema_and_masks() {
    needs!("helm");
    let c = Cluster::start();
    let chart = chart("collate-mini");
    let ok = format!(
        r#"let t = helm::template("mini", "{}", #{{namespace: "collate", values: #{{greeting: "hi"}}}}); print(t);"#,
        chart.display()
    );
    Run::script(&ok)
        .envs(c.env())
        .succeeds()
        .stdout_contains("greeting: \"hi\"");
    let typo = format!(
        r#"helm::template("mini", "{}", #{{values: #{{greting: "hi", password: secret::env("P")}}}});"#,
        chart.display()
    );
    let out = Run::script(&typo)
        .envs(c.env())
        .env("P", CANARY)
        .fails_with(1);
    out.never_shows(CANARY).stderr_contains("greting");
}

#[test]
fn ensure_repo_plan_and_apply() {
    needs!("helm");
    let c = Cluster::start();
    // A loopback chart repository serving an empty index, so no network is needed.
    let repo = ChartRepo::start(&[]);
    let url = repo.url();
    let script = format!(
        r#"let r = helm::ensure_repo("local", "{url}"); print(`repo=${{r.changed}}`); print(`oci=${{helm::ensure_repo("reg", "oci://r.example/charts").changed}}`);"#
    );
    Run::script(&script)
        .envs(c.env())
        .envs(ChartRepo::env())
        .plan()
        .succeeds()
        .stdout_contains("repo=created");
    Run::script(&script)
        .envs(c.env())
        .envs(ChartRepo::env())
        .succeeds()
        .stdout_contains("repo=created")
        .stdout_contains("oci=unchanged");
    // A configured repository is read from helm's repository file: no helm process.
    let dir = tempfile::tempdir().unwrap();
    let (wrapper, log) = (dir.path().join("helm"), dir.path().join("helm.log"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            c.helm_bin().unwrap().display()
        ),
    )
    .unwrap();
    let mut perm = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&wrapper, perm).unwrap();
    Run::script(&script)
        .envs(c.env())
        .envs(ChartRepo::env())
        .env("HELM_BIN", wrapper.to_str().unwrap())
        .succeeds()
        .stdout_contains("repo=unchanged");
    let ran = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(ran, "", "helm ran for a configured repository");
    assert!(c.helm(&["repo", "list"]).contains("local"));
}

/// `helm::upgrade_install` of the real openmetadata chart from `chart` at `version`, with
/// `values` (Rhai), printing `changed chart-version revision`.
fn install_om(chart: &str, version: &str, values: &str, repo: Option<&str>) -> String {
    let add = repo
        .map(|url| format!(r#"helm::ensure_repo("om", "{url}");"#))
        .unwrap_or_default();
    format!(
        r#"{add}
        let r = helm::upgrade_install("openmetadata", "{chart}", #{{
            namespace: "collate", create_namespace: true, disable_openapi_validation: true,
            version: "{version}", values: {values},
        }});
        print(`${{r.changed}} ${{r.object.chart}}-${{r.object.version}} revision=${{r.object.revision}}`);"#
    )
}

const SERVER_TAG: &str = r#"#{ image: #{ tag: "om-1.12.4-cl-1.12.4" } }"#;
const BAD_KEY: &str = r#"#{ openmetadata: #{ config: #{ bogusKey: true } } }"#;

/// A chart repository on 127.0.0.1 (the example config's form): a plan checks the values
/// against the chart's schema (also while the repository is only planned), a version published
/// after helm cached the repository's index is found in plan and apply (the index is
/// refreshed), and a converged release plans and applies no change.
#[test]
fn repo_chart_schema_check_index_refresh_and_rerun() {
    needs!("helm");
    let c = Cluster::start();
    let om = upstream_chart("openmetadata-1.12.4.tgz");
    let repo = ChartRepo::start(std::slice::from_ref(&om));
    let run = |version: &str, values: &str| {
        Run::script(&install_om(
            "om/openmetadata",
            version,
            values,
            Some(&repo.url()),
        ))
        .envs(c.env())
        .envs(ChartRepo::env())
    };

    // A plan on a fresh machine (the repository not added yet) already checks the schema.
    run("1.12.4", BAD_KEY)
        .plan()
        .fails_with(1)
        .stderr_contains("additional properties 'bogusKey' not allowed");
    run("1.12.4", SERVER_TAG)
        .plan()
        .succeeds()
        .stdout_contains("created openmetadata-1.12.4 revision=1");
    run("1.12.4", SERVER_TAG)
        .succeeds()
        .stdout_contains("created openmetadata-1.12.4 revision=1");
    run("1.12.4", SERVER_TAG)
        .succeeds()
        .stdout_contains("unchanged openmetadata-1.12.4 revision=1");

    // 1.12.5 is published; helm's cached index still lists only 1.12.4.
    repo.publish_version(&om, "1.12.5");
    run("1.12.5", BAD_KEY)
        .plan()
        .fails_with(1)
        .stderr_contains("additional properties 'bogusKey' not allowed");
    let plan = run("1.12.5", SERVER_TAG).plan().json().succeeds();
    plan.stdout_contains("updated openmetadata-1.12.5 revision=2");
    // The plan shows what changes in the rendered manifests too, object by object.
    let change = plan
        .changes()
        .into_iter()
        .find(|c| c["kind"] == "helm.release")
        .expect("the release's change");
    let label = change["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["path"]
                == "manifest[\"Deployment collate/openmetadata\"].metadata.labels[\"helm.sh/chart\"]"
        })
        .unwrap_or_else(|| panic!("no manifest field: {change}"));
    assert_eq!(label["before"], "openmetadata-1.12.4");
    assert_eq!(label["after"], "openmetadata-1.12.5");
    run("1.12.5", SERVER_TAG)
        .succeeds()
        .stdout_contains("updated openmetadata-1.12.5 revision=2");
    let again = run("1.12.5", SERVER_TAG).json().succeeds();
    again.stdout_contains("unchanged openmetadata-1.12.5 revision=2");
    assert!(again.changed().is_empty(), "{again}");

    // Back to revision 1: a new revision running 1.12.4; a second rollback changes nothing.
    let rollback = || {
        Run::script(
            r#"let r = helm::rollback("openmetadata", "collate", 1, #{ wait: true });
            print(`${r.changed} ${r.object.chart}-${r.object.version} revision=${r.object.revision}`);
            print(`history=${helm::history("openmetadata", "collate").len()}`);"#,
        )
        .envs(c.env())
    };
    rollback()
        .plan()
        .succeeds()
        .stdout_contains("updated openmetadata-1.12.4 revision=3")
        .stdout_contains("history=2");
    rollback()
        .succeeds()
        .stdout_contains("updated openmetadata-1.12.4 revision=3")
        .stdout_contains("history=3");
    rollback()
        .succeeds()
        .stdout_contains("unchanged openmetadata-1.12.4 revision=3")
        .stdout_contains("history=3");
    Run::script(r#"helm::rollback("openmetadata", "collate", 9, #{});"#)
        .envs(c.env())
        .fails_with(4)
        .stderr_contains("has no revision 9");
}

/// A packaged chart (air-gapped): the release is the chart's own name and version, so a rerun
/// changes nothing; a `version` the archive is not is refused before anything changes.
#[test]
fn packaged_chart_reruns_without_changes() {
    needs!("helm");
    let c = Cluster::start();
    let om = upstream_chart("openmetadata-1.12.4.tgz");
    let run = |version: &str| {
        Run::script(&install_om(om.to_str().unwrap(), version, SERVER_TAG, None)).envs(c.env())
    };
    run("1.12.4")
        .succeeds()
        .stdout_contains("created openmetadata-1.12.4 revision=1");
    run("1.12.4")
        .plan()
        .succeeds()
        .stdout_contains("unchanged openmetadata-1.12.4 revision=1");
    run("1.12.4")
        .succeeds()
        .stdout_contains("unchanged openmetadata-1.12.4 revision=1");
    run("1.12.5")
        .plan()
        .fails_with(1)
        .stderr_contains("is version 1.12.4, not the `version` 1.12.5 asked for");
}

/// An OCI reference served on 127.0.0.1: installed, and a rerun changes nothing (helm 3 and 4).
#[test]
fn oci_chart_installs_and_reruns_without_changes() {
    needs!("helm", "helm3");
    let repo = ChartRepo::start(&[upstream_chart("openmetadata-1.12.4.tgz")]);
    let oci = repo.oci("openmetadata");
    for bin in helm_binaries() {
        let c = Cluster::start().with_helm(&bin);
        let run = || {
            Run::script(&install_om(&oci, "1.12.4", SERVER_TAG, None))
                .envs(c.env())
                .envs(ChartRepo::env())
        };
        run()
            .plan()
            .succeeds()
            .stdout_contains("created openmetadata-1.12.4 revision=1");
        run()
            .succeeds()
            .stdout_contains("created openmetadata-1.12.4 revision=1");
        run()
            .succeeds()
            .stdout_contains("unchanged openmetadata-1.12.4 revision=1");
    }
}

/// An upgrade that fails (without `atomic`) names the last deployed revision and how to roll
/// back to it.
#[test]
fn a_failed_upgrade_names_the_rollback() {
    needs!("helm");
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("collate-mini");
    std::fs::create_dir_all(broken.join("templates")).unwrap();
    let src = chart("collate-mini");
    for f in [
        "values.yaml",
        "values.schema.json",
        "templates/configmap.yaml",
        "templates/secret.yaml",
    ] {
        std::fs::copy(src.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(
        broken.join("Chart.yaml"),
        std::fs::read_to_string(src.join("Chart.yaml"))
            .unwrap()
            .replace("version: 0.1.0", "version: 0.2.0"),
    )
    .unwrap();
    // A template helm cannot render: the upgrade fails after the release was deployed once.
    std::fs::write(
        broken.join("templates/broken.yaml"),
        "{{ .Values.nope.deeper }}\n",
    )
    .unwrap();
    let install = |chart: &Path| {
        Run::script(&format!(
            r#"helm::upgrade_install("mini", "{}", #{{
                namespace: "collate", create_namespace: true, disable_openapi_validation: true,
                values: #{{ greeting: "hi", password: secret::env("MINI_PASSWORD") }},
            }});"#,
            chart.display()
        ))
        .envs(c.env())
        .env("MINI_PASSWORD", CANARY)
    };
    install(&src).succeeds();
    install(&broken)
        .fails_with(4)
        .stderr_contains("revision 1 was the last deployed")
        .stderr_contains(r#"helm::rollback("mini", "collate", 1)"#)
        .stderr_contains("helm rollback mini 1 -n collate")
        .never_shows(CANARY);
}
