//! The runtime: CLI, config, errors, secrets, templates, docs.

use collate_run_tests::{Run, run::root};

#[test]
fn eval_prints_the_value() {
    Run::eval("1 + 1").succeeds().stdout_contains("2");
    let out = Run::eval("#{a: [1, 2]}").json().succeeds();
    assert_eq!(out.value()["a"][1], 2);
}

#[test]
fn config_files_merge_in_order_then_set() {
    let out = Run::script(
        r#"print(`${config.db.host}:${config.db.port} ${config.region} ${config.flags.fast}`);"#,
    )
    .config_yaml("db:\n  host: first\n  port: 5432\nregion: eu-west-1\n")
    .config_yaml("db:\n  host: second\n")
    .set("flags.fast", "true")
    .set("region", "us-east-1")
    .succeeds();
    out.stdout_contains("second:5432 us-east-1 true");
}

#[test]
fn missing_config_key_is_a_config_error_before_any_call() {
    let out = Run::script(
        "require(config, [\"cluster_name\", \"db.host\"]);\nprint(\"after\");\naws::account_id();\n",
    )
    .config_yaml("db:\n  host: x\n")
    .fails_with(3);
    out.stderr_contains("missing config key `cluster_name`");
    out.stderr_contains("config-1.yaml");
    out.stderr_contains("main.rhai:1:1");
    assert!(!out.stdout.contains("after"), "{out}");
}

#[test]
fn unknown_config_key_names_file_line_col_and_suggests() {
    let out = Run::script(
        "let cfg = validate_config(config, #{\"db.host\": \"string\", \"db.port\": #{type: \"int\", \"default\": 5432}});\n",
    )
    .config_yaml("db:\n  host: x\n  prot: 1\n")
    .fails_with(3);
    out.stderr_contains("unknown config key `db.prot`");
    out.stderr_contains("config-1.yaml:3:3");
    out.stderr_contains("did you mean `db.port`?");
}

#[test]
fn invalid_yaml_config_is_a_config_error_with_position() {
    let out = Run::eval("1")
        .config_yaml("db:\n  host: [x\n")
        .fails_with(3);
    out.stderr_contains("invalid YAML");
    out.stderr_contains("config-1.yaml");
    out.stderr_contains("line");
}

#[test]
fn syntax_error_in_imported_script_points_into_that_file() {
    let out = Run::script("import \"lib/helper\" as h;\nh::f();\n")
        .with_file("lib/helper.rhai", "fn f() {\n    let x = ;\n}\n")
        .fails_with(1);
    out.stderr_contains("syntax error");
    out.stderr_contains("helper.rhai:2:13");
    out.stderr_contains("let x = ;");
}

#[test]
fn runtime_error_shows_the_call_chain_through_imports() {
    let out = Run::script("import \"helper\" as h;\n\nh::outer(1);\n")
        .with_file(
            "helper.rhai",
            "fn inner(x) {\n  throw `bad ${x}`;\n}\nfn outer(x) { inner(x) }\n",
        )
        .fails_with(1);
    out.stderr_contains("error: script error: bad 1");
    out.stderr_contains("helper.rhai:2:3");
    out.stderr_contains("in call to `outer` at ");
    out.stderr_contains("main.rhai:3:4");
}

#[test]
fn imports_fall_back_to_recipes_lib() {
    Run::script("import \"shared\" as s;\nprint(s::hello());\n")
        .with_file("lib/shared.rhai", "fn hello() { \"from lib\" }\n")
        .succeeds()
        .stdout_contains("from lib");
}

#[test]
fn unknown_function_suggests_the_closest_name() {
    Run::eval("yaml::pars(\"a: 1\")")
        .fails_with(1)
        .stderr_contains("did you mean `yaml::parse`?");
}

#[test]
fn host_errors_are_catchable_with_kind_and_message() {
    Run::script(
        "try { yaml::parse(\"a: [\"); } catch (e) { print(`caught ${e.kind}: ${e.message.contains(\"line\")}`); }",
    )
    .succeeds()
    .stdout_contains("caught input: true");
}

#[test]
fn secrets_never_reach_output() {
    let canary = "canary-d1b7c0ffee";
    let script = r#"
        let pw = secret::env("CANARY_PW");
        print(pw);
        print(`interpolated ${pw}`);
        debug(pw);
        log::info(pw);
        let m = #{password: pw, user: "admin"};
        print(m);
        print(json::to_string(m));
        print(yaml::to_string(m));
        print(template::render("pw={{ p }}", #{p: pw}));
        let plain = secret::from("canary-d1b7c0ffee");
        log::warn(`plain copy: canary-d1b7c0ffee`);
        throw `failing with canary-d1b7c0ffee and ${pw}`;
    "#;
    for json in [false, true] {
        let mut run = Run::script(script).env("CANARY_PW", canary).arg("-v");
        if json {
            run = run.json();
        }
        let out = run.fails_with(1);
        out.never_shows(canary);
        out.stdout_contains("***");
    }
}

#[test]
fn plain_text_secret_in_config_is_refused() {
    let out = Run::script("validate_config(config, #{\"db.password\": \"secret\"});")
        .config_yaml("db:\n  password: hunter2-canary\n")
        .fails_with(3);
    out.stderr_contains("plain-text secret");
    out.never_shows("hunter2-canary");
}

#[test]
fn template_undefined_variable_names_template_and_line() {
    let out = Run::script("template::render_file(\"templates/v.yaml.j2\", #{a: 1});")
        .with_file("templates/v.yaml.j2", "a: {{ a }}\nb: {{ db.host }}\n")
        .fails_with(1);
    out.stderr_contains("v.yaml.j2:2");
    out.stderr_contains("db.host");
    out.stderr_contains("main.rhai:1:11");
}

#[test]
fn plan_mode_is_seen_by_host_functions() {
    Run::eval("is_plan()")
        .plan()
        .succeeds()
        .stdout_contains("true");
    Run::eval("is_plan()").succeeds().stdout_contains("false");
}

#[test]
fn check_mode_stops_at_the_first_remote_call() {
    let out = Run::check(root().join("tests/it/fixtures/check-stop.rhai")).succeeds();
    out.stdout_contains("before");
    assert!(!out.stdout.contains("after"), "{out}");
}

#[test]
fn runaway_scripts_stop_at_the_operation_limit() {
    Run::eval("loop { }")
        .fails_with(1)
        .stderr_contains("too many operations");
}

#[test]
fn usage_errors_exit_64() {
    Run::eval("1").arg("--no-such-flag").fails_with(64);
}

#[test]
fn docs_reference_is_up_to_date() {
    let dir = tempfile::tempdir().unwrap();
    Run::eval("1").arg("--version").succeeds();
    let out = std::process::Command::new(collate_run_tests::run::binary())
        .args(["docs", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = root().join("docs/reference");
    let mut stale = Vec::new();
    for entry in walk(dir.path()) {
        let rel = entry.strip_prefix(dir.path()).unwrap();
        let fresh = std::fs::read_to_string(&entry).unwrap();
        signatures_are_in_rhai_types(&rel.display().to_string(), &fresh);
        let old = std::fs::read_to_string(committed.join(rel)).unwrap_or_default();
        if fresh != old {
            stale.push(rel.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "docs/reference is stale ({stale:?}): run `cargo run -p collate-run -- docs --out docs/reference`"
    );
}

/// Every signature (a Markdown `###` heading, a `.d.rhai` `fn` line) names Rhai types, not Rust
/// ones, and every function in the Markdown reference has a ```rhai example.
fn signatures_are_in_rhai_types(file: &str, text: &str) {
    const RUST: [&str; 12] = [
        "RhaiResult",
        "Result<",
        "EvalAltResult",
        "Box<",
        "Vec<",
        "Dynamic",
        "&str",
        "&mut",
        "alloc::",
        "core::",
        "rhai::",
        "ImmutableString",
    ];
    for line in text.lines() {
        let sig = if let Some(h) = line.strip_prefix("### ") {
            h
        } else if line.starts_with("fn ") {
            line
        } else {
            continue;
        };
        if let Some(bad) = RUST.iter().find(|r| sig.contains(*r)) {
            panic!("{file}: `{bad}` is a Rust type in the signature {sig}");
        }
    }
    if file.ends_with(".md") {
        for section in text.split("\n### ").skip(1) {
            let head = section.lines().next().unwrap_or_default();
            assert!(
                section.contains("```rhai"),
                "{file}: {head} has no ```rhai example in its doc comment"
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn scripts_cannot_read_files_outside_the_recipes_folder() {
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(outside.path(), "outside-canary-value").unwrap();
    let script = format!("secret::file(\"{}\");", outside.path().display());
    let out = Run::script(&script).fails_with(1);
    out.stderr_contains("outside the recipes folder");
    out.stderr_contains("--allow-exec");
    out.never_shows("outside-canary-value");
    Run::script(&script).arg("--allow-exec").succeeds();
    // Files next to the script are readable.
    Run::script("secret::file(\"pw.txt\").len")
        .with_file("pw.txt", "abc\n")
        .succeeds();
}

#[test]
fn repl_keeps_going_after_an_error() {
    use std::io::Write;
    let mut child = std::process::Command::new(collate_run_tests::run::binary())
        .arg("repl")
        .env("HOME", tempfile::tempdir().unwrap().path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"let x = 40;\nno_such_fn(1)\nx + 2\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("unknown function `no_such_fn"), "{stderr}");
    assert!(stdout.contains("42"), "{stdout}");
}

#[test]
fn completions_are_generated() {
    Run::eval("1")
        .arg("--version")
        .succeeds()
        .stdout_contains("collate-run");
    let out = std::process::Command::new(collate_run_tests::run::binary())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--detailed-exitcode"));
}

#[test]
fn detailed_exitcode_tells_whether_the_plan_has_changes() {
    let cluster = collate_run_tests::kube::Cluster::start();
    let script = "k8s::ensure_namespace(\"exitcode-demo\");";
    // Plan on an empty world: changes → 2, and nothing was created.
    let out = Run::script(script)
        .envs(cluster.env())
        .plan()
        .arg("--detailed-exitcode")
        .fails_with(2);
    out.stdout_contains("+ k8s.Namespace exitcode-demo");
    assert!(
        cluster
            .get("v1", "Namespace", "", "exitcode-demo")
            .is_none()
    );
    // Apply (without the flag a change is still exit 0), then the plan has no changes → 0.
    Run::script(script).envs(cluster.env()).succeeds();
    assert!(
        cluster
            .get("v1", "Namespace", "", "exitcode-demo")
            .is_some()
    );
    Run::script(script)
        .envs(cluster.env())
        .plan()
        .arg("--detailed-exitcode")
        .succeeds()
        .stdout_contains("= k8s.Namespace exitcode-demo");
}

#[test]
fn parallel_runs_closures_and_raises_the_first_error() {
    let out = Run::eval("parallel([|| 1 + 1, || \"b\", || [3]])")
        .json()
        .succeeds();
    assert_eq!(out.value(), serde_json::json!([2, "b", [3]]));
    Run::script("parallel([|| 1, || throw \"job two failed\", || throw \"job three failed\"]);")
        .fails_with(1)
        .stderr_contains("job two failed");
}

#[test]
fn parallel_with_a_limit_keeps_the_order_and_checks_the_limit() {
    let out = Run::eval("parallel([|| 1, || 2, || 3, || 4, || 5, || 6, || 7], 2)")
        .json()
        .succeeds();
    assert_eq!(out.value(), serde_json::json!([1, 2, 3, 4, 5, 6, 7]));
    Run::eval("parallel([|| 1], 0)")
        .fails_with(1)
        .stderr_contains("`parallel` takes a limit from 1 to 64, not 0");
}

/// Jobs finish in any order; their changes and log lines come out in job order (nested
/// `parallel` included), as a sequential run would print them.
#[test]
fn parallel_output_follows_the_job_order_not_the_finish_order() {
    let cluster = collate_run_tests::kube::Cluster::start();
    let script = r#"
        fn slow() { let n = 0; for x in 0..100000 { n += x; } n }
        parallel([
            || parallel([|| { slow(); k8s::ensure_namespace("order-0") }, || k8s::ensure_namespace("order-1")]),
            || k8s::ensure_namespace("order-2"),
            || log::info("job three"),
        ]);
    "#;
    let out = Run::script(script).envs(cluster.env()).json().succeeds();
    let events: Vec<String> = out
        .json_lines()
        .iter()
        .filter_map(|l| match l["type"].as_str() {
            Some("change") => l["name"].as_str().map(str::to_string),
            Some("log") => l["message"].as_str().map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        ["order-0", "order-1", "order-2", "job three"],
        "{out}"
    );
}

/// The first unfinished job streams: its changes show while it still runs (here: waits), only
/// the later jobs' output waits for it.
#[test]
fn parallel_streams_the_first_job_live() {
    use std::io::BufRead as _;
    let cluster = collate_run_tests::kube::Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("live.rhai");
    std::fs::write(
        &script,
        r#"parallel([
            || { k8s::ensure_namespace("live-0");
                 try { k8s::wait("ConfigMap", "default", "never", "exists", 3); } catch { } },
            || k8s::ensure_namespace("live-1"),
        ]);"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut child = std::process::Command::new(collate_run_tests::run::binary())
        .arg(&script)
        .args(["--output", "json"])
        .envs(cluster.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap_or_default();
        if v["type"] == "change" {
            seen.push((
                v["name"].as_str().unwrap_or_default().to_string(),
                started.elapsed(),
            ));
        }
    }
    assert!(child.wait().unwrap().success());
    let total = started.elapsed();
    assert_eq!(
        seen.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["live-0", "live-1"]
    );
    assert!(total >= std::time::Duration::from_secs(3), "{total:?}");
    assert!(
        seen[0].1 + std::time::Duration::from_millis(1500) < total,
        "the first job's change came only at the end: {seen:?} of {total:?}"
    );
    assert!(
        seen[1].1 + std::time::Duration::from_millis(500) > total,
        "{seen:?}"
    );
}

/// Steps can run side by side: each change names its own step, and each step's events come
/// out together, in job order.
#[test]
fn steps_in_parallel_jobs_keep_their_own_names_and_sections() {
    let cluster = collate_run_tests::kube::Cluster::start();
    let script = r#"
        fn slow() { let n = 0; for x in 0..100000 { n += x; } n }
        step("outer", || parallel([
            || step("a", || { slow(); k8s::ensure_namespace("step-a") }),
            || step("b", || k8s::ensure_namespace("step-b")),
        ]));
    "#;
    let out = Run::script(script).envs(cluster.env()).json().succeeds();
    let events: Vec<String> = out
        .json_lines()
        .iter()
        .filter_map(|l| match l["type"].as_str() {
            Some("change") => Some(format!(
                "{} in {}",
                l["name"].as_str()?,
                l["step"].as_str()?
            )),
            Some("step_start") => Some(format!("start {}", l["name"].as_str()?)),
            Some("step_end") => Some(format!("end {}", l["name"].as_str()?)),
            _ => None,
        })
        .collect();
    assert_eq!(
        events,
        [
            "start outer",
            "start a",
            "step-a in outer / a",
            "end a",
            "start b",
            "step-b in outer / b",
            "end b",
            "end outer"
        ],
        "{out}"
    );
}

/// A step that starts right after one of the same name ended (full.rhai's Collate install, then
/// its ECR refresh and health wait) continues under the same header; another name, or a line in
/// between, gets its own.
#[test]
fn a_repeated_step_right_after_itself_continues_under_its_header() {
    let script = r#"
        step("collate", || log::info("install"));
        step("collate", || log::info("finish"));
        step("argo", || log::info("check"));
        log::info("between");
        step("argo", || log::info("again"));
    "#;
    let out = Run::script(script).succeeds();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines,
        [
            "▸ collate",
            "  install",
            "  finish",
            "▸ argo",
            "  check",
            "between",
            "▸ argo",
            "  again"
        ],
        "{out}"
    );
}

#[test]
fn parallel_journals_every_job() {
    let cluster = collate_run_tests::kube::Cluster::start();
    let script = "let ids = [];\nfor i in 0..12 { ids.push(i); }\nparallel(ids.map(|i| || k8s::ensure_namespace(`par-${i}`)));";
    let out = Run::script(script).envs(cluster.env()).json().succeeds();
    assert_eq!(out.summary()["create"], 12, "{out}");
    for i in 0..12 {
        assert!(
            cluster
                .get("v1", "Namespace", "", &format!("par-{i}"))
                .is_some()
        );
    }
    let again = Run::script(script).envs(cluster.env()).json().succeeds();
    assert_eq!(again.summary()["unchanged"], 12, "{again}");
}

#[test]
fn run_lock_from_config_is_taken_and_given_back() {
    let cluster = collate_run_tests::kube::Cluster::start();
    let lock = "run_lock: {namespace: default, name: deploy, ttl: 60}\n";
    // The first run takes the lock before its first change (a Secret) and holds it while it
    // waits (for a ConfigMap that never comes).
    let slow = "k8s::ensure_secret(\"default\", \"first\", #{ data: #{ a: \"1\" } }); \
                try { k8s::wait(\"ConfigMap\", \"default\", \"never\", \"exists\", 4); } catch (e) { print(e.kind); }";
    let first = {
        let run = Run::script(slow).envs(cluster.env()).config_yaml(lock);
        std::thread::spawn(move || run.run())
    };
    // Wait until the lease exists, then a second run is refused, naming the holder.
    let mut held = false;
    for _ in 0..100 {
        if cluster
            .get("coordination.k8s.io/v1", "Lease", "default", "deploy")
            .is_some_and(|l| {
                l["spec"]["holderIdentity"]
                    .as_str()
                    .is_some_and(|h| !h.is_empty())
            })
        {
            held = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(held, "the first run did not take the lock");
    // Reads go on; the first change waits for the lock (here: is refused, `wait` is 0).
    let second = Run::script(
        "print(\"reads run\"); k8s::server_version(); \
         k8s::ensure_secret(\"default\", \"second\", #{ data: #{ a: \"2\" } }); print(\"should not run\");",
    )
    .envs(cluster.env())
    .config_yaml(lock)
    .fails_with(4);
    second.stderr_contains("deploy");
    assert!(!second.stdout.contains("should not run"), "{second}");
    second.stdout_contains("reads run");
    assert!(
        cluster.get("v1", "Secret", "default", "second").is_none(),
        "the refused run changed something"
    );
    // A one-off `-e` expression (a read, typically) does not lock, so it is not refused.
    Run::eval("k8s::server_version().git_version")
        .envs(cluster.env())
        .config_yaml(lock)
        .succeeds();
    let first = first.join().unwrap();
    assert_eq!(first.code, 0, "{first}");
    // Given back at the end: a third run takes it at once; plan runs never lock.
    Run::script("print(1);")
        .envs(cluster.env())
        .config_yaml(lock)
        .succeeds();
    Run::script("print(1);")
        .envs(cluster.env())
        .config_yaml(lock)
        .plan()
        .succeeds();
}

#[test]
fn a_failing_remote_call_prints_its_cause_chain_masked() {
    let canary = "tok-canary-5e1f";
    let closed = collate_run_tests::loopback::free_port();
    // The URL carries a secret's value, so the library's own error text does too.
    let script = format!(
        r#"let t = secret::env("TOK"); http::get("http://127.0.0.1:{closed}/status?k={canary}");"#
    );
    let out = Run::script(&script).env("TOK", canary).fails_with(4);
    let causes: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("caused by: "))
        .collect();
    assert!(
        causes
            .last()
            .is_some_and(|c| c.contains("Connection refused")),
        "the root cause is the last `caused by:` line\n{out}"
    );
    assert!(causes.len() >= 2, "the chain, not only its root\n{out}");
    out.never_shows(canary).never_shows("os error");
    for dump in ["Error {", "kind:", "ConnectError("] {
        out.never_shows(dump);
    }

    let out = Run::script(&script).env("TOK", canary).json().fails_with(4);
    let error = out
        .json_lines()
        .into_iter()
        .find(|l| l["type"] == "error")
        .unwrap_or_else(|| panic!("no error line\n{out}"));
    let causes = error["causes"].as_array().cloned().unwrap_or_default();
    assert!(
        causes
            .last()
            .and_then(|c| c.as_str())
            .is_some_and(|c| c.contains("Connection refused")),
        "{error}"
    );
    out.never_shows(canary);
}

#[test]
fn caught_errors_are_typed_values_and_scripts_throw_their_own() {
    let closed = collate_run_tests::loopback::free_port();
    let script = format!(
        r#"try {{ http::get("http://127.0.0.1:{closed}/"); }}
           catch (e) {{
               print(`type=${{type_of(e)}} kind=${{e.kind}} index=${{e["kind"]}} hint=${{e.hint != ()}}`);
               print(`causes=${{e.causes.len() > 0}} in=${{"kind" in e}} shown=${{e.to_string() == e.message}}`);
           }}
           throw error("conflict", "somebody holds `x`", "wait for it");"#
    );
    let out = Run::script(&script).fails_with(4);
    out.stdout_contains("type=error kind=api index=api hint=false")
        .stdout_contains("causes=true in=true shown=true")
        .stderr_contains("error: somebody holds `x`")
        .stderr_contains("= hint: wait for it");
    // An unknown kind is a script error naming the kinds.
    Run::script(r#"throw error("oops", "x");"#)
        .fails_with(1)
        .stderr_contains("unknown error kind `oops`");
    // A map with a known kind, as scripts threw errors before the `error` type, still counts.
    Run::script(r#"throw #{ kind: "precondition", message: "not ready" };"#)
        .fails_with(5)
        .stderr_contains("error: not ready");
}
