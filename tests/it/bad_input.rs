//! The bad-input corpus (`tests/bad-input/<case>/`): each case is a script (`main.rhai`), an optional
//! `config.yaml` and other files, and `expect.yaml` with the exit code, what stderr must say (and
//! where: `at: main.rhai:LINE:COL`), and what must never be shown. Every case also runs with
//! `--output json` and must end with the same exit code and one `error` object.

use std::path::{Path, PathBuf};

use collate_run_tests::{Run, run::root};
use serde_json::Value;

struct Expect {
    exit: i32,
    stderr: Vec<String>,
    never: Vec<String>,
    args: Vec<String>,
    at: Option<String>,
    script: Option<String>,
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

fn run_case(dir: &Path, e: &Expect, json: bool) -> collate_run_tests::Output {
    let script = dir.join(e.script.as_deref().unwrap_or("main.rhai"));
    let mut run = Run::file(script);
    if dir.join("config.yaml").is_file() {
        run = run.config(dir.join("config.yaml"));
    }
    for a in &e.args {
        run = run.arg(a);
    }
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
    let out = run_case(dir, &e, false);
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
        let json = run_case(dir, &e, true);
        if json.code != e.exit {
            problems.push(format!("--output json exit code {}", json.code));
        }
        if !json.json_lines().iter().any(|l| l["type"] == "error") {
            problems.push("--output json printed no error object".into());
        }
    }
    (!problems.is_empty()).then(|| format!("{name}: {}\n{out}", problems.join("; ")))
}
