//! Running the `helm` binary: found through `HELM_BIN` or `PATH`; its major version is detected
//! only when a flag that differs between helm 3 and 4 is needed (`--atomic`), once per process.
//! Values reach helm on stdin (`-f -`), never through argv or a file; stderr is masked before it
//! reaches an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::error::{ErrorKind, HostError};
use crate::host::Host;
use crate::secret_value::mask_text;

/// A helm binary.
#[derive(Debug, Clone)]
pub(crate) struct Helm {
    pub bin: PathBuf,
    /// `--kube-context`, from `--context`.
    pub context: Option<String>,
}

static VERSIONS: Mutex<Option<HashMap<PathBuf, u32>>> = Mutex::new(None);

/// What a helm process printed.
pub(crate) struct Out {
    pub stdout: String,
}

/// What a failed helm command said, in the cases collate-run acts on. helm reports these only
/// as text on stderr (its exit status is 1 for every error), so this is the one place that reads
/// it; each case names the helm source line it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Said {
    /// `release: not found`: helm `pkg/storage/driver/driver.go`, `ErrReleaseNotFound`.
    ReleaseNotFound,
    /// `chart "x" matching 1.2.3 not found in repo index. (try 'helm repo update')`: helm
    /// `pkg/downloader/chart_downloader.go`, `ResolveChartVersion` — the cached index is older
    /// than the chart version asked for.
    StaleIndex,
    /// `no repositories to show`: helm `cmd/helm/repo_list.go` (`helm repo list` with none).
    NoRepositories,
    /// `values don't meet the specifications of the schema(s)`: helm
    /// `pkg/chartutil/values.go`, `ToRenderValues` (the chart's `values.schema.json`).
    SchemaMismatch,
    /// `unknown command` / `unknown flag`: cobra's usage errors — not the helm 3 or 4 we need.
    UnknownCommand,
    /// Anything else.
    Other,
}

/// Reads helm's stderr (without the `Error: ` prefix) into a [`Said`].
pub(crate) fn classify(text: &str) -> Said {
    if text.contains("release: not found") {
        Said::ReleaseNotFound
    } else if text.contains("not found in") && text.contains("index") {
        Said::StaleIndex
    } else if text.contains("no repositories to show") {
        Said::NoRepositories
    } else if text.contains("don't meet the specifications of the schema") {
        Said::SchemaMismatch
    } else if text.contains("unknown command") || text.contains("unknown flag") {
        Said::UnknownCommand
    } else {
        Said::Other
    }
}

/// A failed helm command, the source of its [`HostError`]: what helm said, classified once.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{stderr}")]
pub(crate) struct HelmFailed {
    pub said: Said,
    /// helm's stderr, masked.
    stderr: String,
}

/// What helm said when `e` is a failed helm command.
pub(crate) fn said(e: &HostError) -> Said {
    crate::error::find_cause::<HelmFailed>(e).map_or(Said::Other, |f| f.said)
}

/// A failed helm command: its masked stderr, classified.
pub(crate) fn failure(args: &[String], stderr: &str) -> HostError {
    let shown: Vec<&str> = args.iter().take(3).map(String::as_str).collect();
    let text = mask_text(stderr.trim());
    let text = text.strip_prefix("Error: ").unwrap_or(&text).to_string();
    let said = classify(&text);
    let kind = if said == Said::ReleaseNotFound {
        ErrorKind::NotFound
    } else {
        ErrorKind::Api
    };
    let err = HostError::new(kind, format!("`helm {}` failed: {text}", shown.join(" ")));
    let err = match said {
        Said::UnknownCommand => {
            err.with_hint("collate-run needs helm 3 or 4: check `helm version` (or HELM_BIN)")
        }
        _ => err,
    };
    err.with_source(HelmFailed { said, stderr: text })
}

impl Helm {
    /// The helm of this run: `HELM_BIN`, else `helm` on `PATH`.
    pub fn find(host: &Host) -> Result<Helm, HostError> {
        let bin = std::env::var_os("HELM_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("helm"));
        Ok(Helm {
            bin,
            context: host.settings().kube_context.clone(),
        })
    }

    /// Roll back a failed upgrade: `--atomic` in helm 3, `--rollback-on-failure` in helm 4
    /// (where `--atomic` is deprecated). (`--wait` is the same flag in both.)
    pub async fn atomic_flag(&self) -> Result<&'static str, HostError> {
        let bin = self.bin.clone();
        let major = tokio::task::spawn_blocking(move || version_of(&bin))
            .await
            .map_err(|e| HostError::api(format!("helm version check failed: {e}")))??;
        Ok(if major >= 4 {
            "--rollback-on-failure"
        } else {
            "--atomic"
        })
    }

    /// Runs helm with `args` (plus `--kube-context` when `cluster` is set); fails on a non-zero exit.
    pub async fn run(&self, args: Vec<String>, cluster: bool) -> Result<Out, HostError> {
        self.run_with_input(args, cluster, None).await
    }

    /// Like `run`, with `input` written to helm's stdin (for `-f -`: values never touch argv or
    /// the disk, so a killed run leaves nothing behind).
    pub async fn run_with_input(
        &self,
        args: Vec<String>,
        cluster: bool,
        input: Option<Vec<u8>>,
    ) -> Result<Out, HostError> {
        use std::process::Stdio;
        use tokio::io::AsyncWriteExt as _;

        let mut all = args.clone();
        if let Some(c) = self.context.as_ref().filter(|_| cluster) {
            all.push("--kube-context".into());
            all.push(c.clone());
        }
        let mut child = tokio::process::Command::new(&self.bin)
            .args(&all)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| not_runnable(&self.bin, &e))?;
        // Written concurrently with reading the output, so a large input cannot deadlock.
        let writer = match (input, child.stdin.take()) {
            (Some(bytes), Some(mut stdin)) => Some(tokio::spawn(async move {
                // helm may exit before reading everything (a bad flag): its stderr says why.
                let _ = stdin.write_all(&bytes).await;
            })),
            _ => None,
        };
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| not_runnable(&self.bin, &e))?;
        if let Some(w) = writer {
            let _ = w.await;
        }
        if !out.status.success() {
            return Err(failure(&args, &String::from_utf8_lossy(&out.stderr)));
        }
        Ok(Out {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        })
    }

    /// Like `run_with_input`, for a command that reads a chart from the configured repository
    /// `repo`: when helm says the cached index lacks the chart or version (a version published
    /// since the index was fetched), refreshes that repository's index (`helm repo update`, a
    /// read of the repository) and runs the command once more.
    pub async fn run_fresh(
        &self,
        args: Vec<String>,
        cluster: bool,
        input: Option<Vec<u8>>,
        repo: Option<&str>,
    ) -> Result<Out, HostError> {
        let first = self
            .run_with_input(args.clone(), cluster, input.clone())
            .await;
        match (first, repo) {
            (Err(e), Some(repo)) if said(&e) == Said::StaleIndex => {
                self.run(
                    vec!["repo".into(), "update".into(), repo.to_string()],
                    false,
                )
                .await?;
                self.run_with_input(args, cluster, input).await
            }
            (other, _) => other,
        }
    }

    /// Runs helm and parses its JSON output; `Ok(None)` when helm says the release is not found.
    pub async fn json(&self, args: Vec<String>) -> Result<Option<Value>, HostError> {
        match self.run(args.clone(), true).await {
            Ok(out) => serde_json::from_str(out.stdout.trim())
                .map(Some)
                .map_err(|e| {
                    HostError::api(format!(
                        "`helm {}` printed something that is not JSON: {e}",
                        args.join(" ")
                    ))
                }),
            Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn not_runnable(bin: &Path, e: &std::io::Error) -> HostError {
    HostError::config(format!("cannot run helm `{}`: {e}", bin.display()))
        .with_hint("install helm 3 or 4 on PATH, or set HELM_BIN to its path")
}

/// The major version of a helm binary (`helm version --template {{.Version}}`), cached; refuses
/// helm 2 and older.
fn version_of(bin: &Path) -> Result<u32, HostError> {
    if let Some(v) = VERSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|m| m.get(bin))
    {
        return Ok(*v);
    }
    let out = std::process::Command::new(bin)
        .args(["version", "--template", "{{.Version}}"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| not_runnable(bin, &e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let major = parse_major(&text).ok_or_else(|| {
        HostError::config(format!(
            "cannot tell the version of helm `{}` from `{}`",
            bin.display(),
            text.trim()
        ))
    })?;
    if major < 3 {
        return Err(HostError::config(format!(
            "helm `{}` is version {}, collate-run needs helm 3 or 4",
            bin.display(),
            text.trim()
        )));
    }
    VERSIONS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(bin.to_path_buf(), major);
    Ok(major)
}

pub(crate) fn parse_major(v: &str) -> Option<u32> {
    v.trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_failures() {
        assert_eq!(parse_major("v3.18.0"), Some(3));
        assert_eq!(parse_major("v4.1.4\n"), Some(4));
        assert_eq!(parse_major("garbage"), None);
        let e = failure(
            &["status".into(), "x".into()],
            "Error: release: not found\n",
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.message, "`helm status x` failed: release: not found");
    }

    #[test]
    fn helm_stderr_is_classified_in_one_place() {
        let said = |stderr: &str| super::said(&failure(&["x".into()], stderr));
        assert_eq!(said("Error: release: not found"), Said::ReleaseNotFound);
        assert_eq!(
            said(
                "Error: chart \"openmetadata\" matching 1.12.5 not found in om index. (try 'helm repo update')"
            ),
            Said::StaleIndex
        );
        assert_eq!(said("Error: no repositories to show"), Said::NoRepositories);
        assert_eq!(
            said(
                "Error: values don't meet the specifications of the schema(s) in the following chart(s):\nx:\n- a: b"
            ),
            Said::SchemaMismatch
        );
        assert_eq!(
            said("Error: unknown flag: --rollback-on-failure"),
            Said::UnknownCommand
        );
        // A template error ending in "not found" is not a missing release (the old
        // `ends_with("not found")` made it one), nor is a value named `schema` a schema mismatch.
        let e = failure(
            &["template".into()],
            "Error: template: om/templates/x.yaml:3:4: function \"lookups\" not found",
        );
        assert_eq!(e.kind, ErrorKind::Api);
        assert_eq!(super::said(&e), Said::Other);
        assert_eq!(
            said("Error: template: x.yaml:1: executing at <.Values.schema.url>: nil pointer"),
            Said::Other
        );
        // A plain host error is not a helm failure.
        assert_eq!(super::said(&HostError::api("x")), Said::Other);
    }
}
