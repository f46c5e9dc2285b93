//! The one rule for tests that need an installed tool (helm, helm3, kubectl, moto, PostgreSQL,
//! MariaDB, the snake-oil certificate): under `CI` a missing tool fails the test with the command
//! that installs it; elsewhere the test is skipped with one line on the terminal (written past
//! libtest's output capture, so it shows without `--nocapture`). `scripts/test-deps.sh` installs
//! them all.
//!
//! ```ignore
//! #[test]
//! fn installs_a_release() {
//!     let helm = needs!("helm"); // returns from the test when helm is missing outside CI
//!     needs!("moto", "kubectl");
//!     ...
//! }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

/// The command that installs every test tool.
pub const INSTALL: &str = "scripts/test-deps.sh";

/// What a test does about one tool.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The tool is there: the test runs.
    Run,
    /// Missing outside CI: the test returns after printing this line.
    Skip(String),
    /// Missing under CI: the test fails with this message.
    Fail(String),
}

/// The rule itself: `found` — is `tool` installed; `ci` — does this run count as CI.
pub fn decide(tool: &str, found: bool, ci: bool) -> Decision {
    if found {
        Decision::Run
    } else if ci {
        Decision::Fail(format!(
            "`{tool}` is not installed and `CI` is set: run {INSTALL} ({})",
            what(tool)
        ))
    } else {
        Decision::Skip(format!(
            "`{tool}` is not installed ({}); run {INSTALL}",
            what(tool)
        ))
    }
}

/// Whether this run is CI: `CI` set to anything but empty, `0` or `false` (CI runs
/// `CI=true bash .ci/run`).
pub fn in_ci() -> bool {
    ci_value(std::env::var("CI").ok().as_deref())
}

fn ci_value(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// What stands for `tool` on disk (for the messages).
fn what(tool: &str) -> String {
    match tool {
        "helm" | "helm3" | "kubectl" => format!(".tools/bin/{tool}"),
        "moto" => ".venv-test/bin/moto_server".into(),
        "postgres" => "initdb/pg_ctl under /usr/lib/postgresql/*/bin or $PG_BIN".into(),
        "mariadb" => format!(
            "{} and {}",
            crate::mariadb::SERVER,
            crate::mariadb::INSTALL_DB
        ),
        "ssl-cert" => "/etc/ssl/private/ssl-cert-snakeoil.key readable by PostgreSQL".into(),
        other => panic!("unknown test tool `{other}`"),
    }
}

/// Where `tool` is installed, if it is (no rule applied: [`needs`] does that).
pub fn locate(tool: &str) -> Option<PathBuf> {
    what(tool); // refuses unknown names
    let file = |p: PathBuf| p.is_file().then_some(p);
    match tool {
        "helm" | "helm3" | "kubectl" => file(crate::run::root().join(".tools/bin").join(tool)),
        "moto" => file(crate::run::root().join(".venv-test/bin/moto_server")),
        "postgres" => crate::postgres::bin_dir().filter(|d| d.join("initdb").is_file()),
        "mariadb" => Path::new(crate::mariadb::INSTALL_DB)
            .is_file()
            .then(|| file(PathBuf::from(crate::mariadb::SERVER)))
            .flatten(),
        other => panic!("`{other}` cannot be located: use `gate` with what the test found"),
    }
}

/// Applies the rule to something a test found (or not) itself, e.g. a server's TLS support:
/// `Some` when it is there; `None` after the skip line outside CI; a panic under CI.
pub fn gate<T>(tool: &str, found: Option<T>) -> Option<T> {
    match decide(tool, found.is_some(), in_ci()) {
        Decision::Run => found,
        Decision::Fail(message) => panic!("{message}"),
        Decision::Skip(line) => {
            let test = std::thread::current()
                .name()
                .unwrap_or("a test")
                .to_string();
            // Straight to the process's stderr: `eprintln!` would be captured by libtest.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {line}");
            None
        }
    }
}

/// The path of `tool` under the rule (see [`gate`]).
pub fn needs(tool: &str) -> Option<PathBuf> {
    gate(tool, locate(tool))
}

/// Where `tool` is installed, for the servers' own start functions: tests declare their tools
/// with [`needs!`] first, so a panic here means a test forgot to.
pub fn installed(tool: &str) -> PathBuf {
    locate(tool).unwrap_or_else(|| {
        panic!(
            "`{tool}` is not installed: run {INSTALL} ({}); tests declare it with `needs!(\"{tool}\")`",
            what(tool)
        )
    })
}

/// `needs!("helm")`: the tool's path, or a return from the calling test when it is missing
/// outside CI (a failure under CI). `needs!("moto", "kubectl")` checks several (every missing
/// one is named).
#[macro_export]
macro_rules! needs {
    ($tool:expr) => {
        match $crate::needs::needs($tool) {
            Some(path) => path,
            None => return,
        }
    };
    ($($tool:expr),+ $(,)?) => {{
        let mut missing = false;
        $( missing |= $crate::needs::needs($tool).is_none(); )+
        if missing {
            return;
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_fails_under_ci_and_skips_elsewhere() {
        assert_eq!(decide("helm", true, true), Decision::Run);
        assert_eq!(decide("helm", true, false), Decision::Run);
        let Decision::Fail(m) = decide("helm", false, true) else {
            panic!("not a failure under CI")
        };
        assert!(m.contains("`helm`") && m.contains(INSTALL), "{m}");
        let Decision::Skip(m) = decide("postgres", false, false) else {
            panic!("not a skip outside CI")
        };
        assert!(m.contains("`postgres`") && m.contains(INSTALL), "{m}");
    }

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        assert!(ci_value(Some("true")));
        assert!(ci_value(Some("1")));
        assert!(!ci_value(None));
        assert!(!ci_value(Some("")));
        assert!(!ci_value(Some("false")));
        assert!(!ci_value(Some("0")));
    }

    #[test]
    fn every_tool_has_a_name_on_disk() {
        for tool in [
            "helm", "helm3", "kubectl", "moto", "postgres", "mariadb", "ssl-cert",
        ] {
            assert!(!what(tool).is_empty());
        }
    }

    #[test]
    #[should_panic(expected = "unknown test tool `hlem`")]
    fn a_misspelt_tool_is_refused() {
        let _ = needs("hlem");
    }
}
