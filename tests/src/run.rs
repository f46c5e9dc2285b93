//! The integration-test builder: runs the real `collate-run` binary as a user would.
//!
//! ```ignore
//! Run::script("print(1 + 1);").plan().succeeds().stdout_contains("2");
//! Run::recipe("full.rhai").config_yaml("cluster_name: x").envs(moto.env()).fails_with(3);
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `collate-run` binary, built by cargo for this test run (debug profile).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("COLLATE_RUN_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("target"));
    target.join("debug").join("collate-run")
}

enum What {
    Eval(String),
    Script(String),
    File(PathBuf),
    Check(PathBuf),
}

/// One invocation of `collate-run`.
pub struct Run {
    what: What,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    files: Vec<(String, String)>,
    configs: usize,
    cwd: Option<PathBuf>,
}

/// A run started with [`Run::spawn`].
pub struct Running {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Sends SIGINT (Ctrl-C) to this run's process.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {} failed", self.child.id());
    }

    /// Waits for the run to end.
    pub fn wait(self) -> Output {
        let out = self.child.wait_with_output().expect("wait for collate-run");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn new(what: What) -> Run {
        Run {
            what,
            args: Vec::new(),
            env: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            files: Vec::new(),
            configs: 0,
            cwd: None,
        }
    }

    /// `collate-run -e EXPR`.
    pub fn eval(expr: &str) -> Run {
        Run::new(What::Eval(expr.into()))
    }

    /// A script given as text, written to `main.rhai` in a temp folder.
    pub fn script(text: &str) -> Run {
        Run::new(What::Script(text.into()))
    }

    /// A recipe under `recipes/`, e.g. `full.rhai` or `maintenance/refresh-ecr.rhai`.
    pub fn recipe(name: &str) -> Run {
        Run::new(What::File(root().join("recipes").join(name)))
    }

    /// Any script file.
    pub fn file(path: impl Into<PathBuf>) -> Run {
        Run::new(What::File(path.into()))
    }

    /// `collate-run check PATH`.
    pub fn check(path: impl Into<PathBuf>) -> Run {
        Run::new(What::Check(path.into()))
    }

    /// Writes another file next to the script (for imports and templates).
    pub fn with_file(mut self, rel: &str, text: &str) -> Run {
        self.files.push((rel.into(), text.into()));
        self
    }

    /// A config file given as YAML text (repeatable; later ones override).
    pub fn config_yaml(mut self, yaml: &str) -> Run {
        self.configs += 1;
        let name = format!("config-{}.yaml", self.configs);
        let path = self.dir.path().join(&name);
        std::fs::write(&path, yaml).expect("write config");
        self.args.push("--config".into());
        self.args.push(path.display().to_string());
        self
    }

    /// A config file by path.
    pub fn config(mut self, path: impl AsRef<Path>) -> Run {
        self.args.push("--config".into());
        self.args.push(path.as_ref().display().to_string());
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> Run {
        self.args.push("--set".into());
        self.args.push(format!("{key}={value}"));
        self
    }

    pub fn plan(self) -> Run {
        self.arg("--plan")
    }

    pub fn json(self) -> Run {
        self.arg("--output").arg("json")
    }

    pub fn arg(mut self, a: &str) -> Run {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Run {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Run
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The working directory of the run (default: the temp folder).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Run {
        self.cwd = Some(dir.into());
        self
    }

    /// The temp folder of this run (configs, the script, extra files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn run(self) -> Output {
        let out = self
            .command()
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts the run without waiting for it (to signal it while it runs).
    pub fn spawn(self) -> Running {
        let child = self
            .command()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
        Running {
            child,
            _dir: self.dir,
        }
    }

    /// The command line and environment of the run (its files written).
    fn command(&self) -> Command {
        let mut cmd = Command::new(binary());
        for (rel, text) in &self.files {
            let p = self.dir.path().join(rel);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).expect("mkdir");
            }
            std::fs::write(p, text).expect("write file");
        }
        match &self.what {
            What::Eval(e) => {
                cmd.arg("-e").arg(e);
            }
            What::Script(text) => {
                let p = self.dir.path().join("main.rhai");
                std::fs::write(&p, text).expect("write script");
                cmd.arg(p);
            }
            What::File(p) => {
                cmd.arg(p);
            }
            What::Check(p) => {
                cmd.arg("check").arg(p);
            }
        }
        cmd.args(&self.args);
        // A clean, isolated environment: no user AWS config or kubeconfig leaks into tests.
        cmd.env_clear();
        for k in ["PATH", "LANG", "TMPDIR", "RUST_BACKTRACE"] {
            if let Ok(v) = std::env::var(k) {
                cmd.env(k, v);
            }
        }
        cmd.env("HOME", self.dir.path());
        cmd.env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"));
        cmd.env(
            "AWS_SHARED_CREDENTIALS_FILE",
            self.dir.path().join("no-aws-credentials"),
        );
        cmd.env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.env("KUBECONFIG", self.dir.path().join("no-kubeconfig"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.current_dir(
            self.cwd
                .clone()
                .unwrap_or_else(|| self.dir.path().to_path_buf()),
        );
        cmd
    }

    /// Runs and asserts exit code 0.
    pub fn succeeds(self) -> Output {
        self.fails_with(0)
    }

    /// Runs and asserts the exit code.
    pub fn fails_with(self, code: i32) -> Output {
        let out = self.run();
        assert_eq!(out.code, code, "unexpected exit code\n{out}");
        out
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Output {
    /// Every stdout line that parses as JSON (with `--output json`).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The value `-e EXPR` printed in a JSON run (`Null` when there is none).
    pub fn value(&self) -> Value {
        self.json_lines()
            .into_iter()
            .find(|v| v["type"] == "value")
            .map(|v| v["value"].clone())
            .unwrap_or(Value::Null)
    }

    /// The `change` events of a JSON run.
    pub fn changes(&self) -> Vec<Value> {
        self.json_lines()
            .into_iter()
            .filter(|v| v["type"] == "change")
            .collect()
    }

    /// The changes of a JSON run that are not `unchanged` (nor transient: made and removed in
    /// the same call, like preflight's Job), as `"ACTION KIND NAME"` lines.
    pub fn changed(&self) -> Vec<String> {
        self.changes()
            .iter()
            .filter(|c| c["action"] != "unchanged" && c["transient"] != true)
            .map(|c| {
                format!(
                    "{} {} {}",
                    c["action"].as_str().unwrap_or(""),
                    c["kind"].as_str().unwrap_or(""),
                    c["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// The final `summary` event of a JSON run.
    pub fn summary(&self) -> Value {
        self.json_lines()
            .into_iter()
            .rfind(|v| v["type"] == "summary")
            .unwrap_or(Value::Null)
    }

    pub fn stdout_contains(&self, s: &str) -> &Output {
        assert!(self.stdout.contains(s), "stdout lacks {s:?}\n{self}");
        self
    }

    pub fn stderr_contains(&self, s: &str) -> &Output {
        assert!(self.stderr.contains(s), "stderr lacks {s:?}\n{self}");
        self
    }

    /// Asserts `s` appears nowhere in stdout or stderr (for secret canaries).
    pub fn never_shows(&self, s: &str) -> &Output {
        assert!(
            !self.stdout.contains(s) && !self.stderr.contains(s),
            "output shows {s:?}\n{self}"
        );
        self
    }
}
