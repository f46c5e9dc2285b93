//! Where a chart comes from and what it is: a local folder or packaged `.tgz` (its Chart.yaml,
//! read here, without a helm process), a `repo/chart` reference or an `oci://` reference. A
//! release records the chart's own `name` and `version` (Chart.yaml), never a file name, so
//! that is what a release is compared with.

use std::io::Read as _;
use std::path::Path;

use serde_json::Value;

use crate::error::HostError;

/// A chart's `name` and `version`, as its Chart.yaml says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Meta {
    pub name: String,
    pub version: Option<String>,
}

impl Meta {
    /// From Chart.yaml (or `helm show chart`) text; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Meta, HostError> {
        let meta = crate::yaml::parse_one(text, what)?;
        let g = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        let name = g("name")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| HostError::input(format!("{what} has no `name`")))?;
        Ok(Meta {
            name,
            version: g("version"),
        })
    }
}

/// The metadata of a local chart: `Chart.yaml` in a folder, or `<top>/Chart.yaml` in a packaged
/// chart (`helm package` writes one top folder; subcharts' Chart.yaml files sit deeper).
pub(crate) fn local_meta(path: &Path, shown: &str) -> Result<Meta, HostError> {
    let not_a_chart = |e: String| {
        HostError::input(format!(
            "`{shown}` is not a chart: cannot read Chart.yaml: {e}"
        ))
    };
    let text = if path.is_dir() {
        std::fs::read_to_string(path.join("Chart.yaml")).map_err(|e| not_a_chart(e.to_string()))?
    } else {
        archive_chart_yaml(path).map_err(not_a_chart)?
    };
    Meta::parse(&text, &format!("the Chart.yaml of `{shown}`"))
}

/// The top-level Chart.yaml of a gzipped tar archive.
fn archive_chart_yaml(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzipped tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a gzipped tar archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() == 2 && parts[1].as_os_str() == "Chart.yaml" {
            let mut text = String::new();
            entry.read_to_string(&mut text).map_err(|e| e.to_string())?;
            return Ok(text);
        }
    }
    Err("the archive has no top-level Chart.yaml".into())
}

/// The repository of a `repo/chart` reference (`None` for `oci://` and other URLs).
pub(crate) fn repo_of(chart_ref: &str) -> Option<&str> {
    if chart_ref.contains("://") {
        return None;
    }
    chart_ref
        .split_once('/')
        .map(|(repo, _)| repo)
        .filter(|r| !r.is_empty())
}

/// The chart name of a `repo/chart` or `oci://host/path/chart` reference: its last segment (a
/// repository index lists charts by their Chart.yaml name, and `helm push` stores a chart under
/// its name).
pub(crate) fn name_of(chart_ref: &str) -> String {
    let last = chart_ref.rsplit('/').next().unwrap_or(chart_ref);
    last.split([':', '@']).next().unwrap_or(last).to_string()
}

/// The version a `--version` pins exactly (`1.12.4`, `v1.12.4`, `1.0.0-rc.1`), or `None` for a
/// constraint (`~1.12`, `>=1.0`, `1.x`) that only helm can resolve.
pub(crate) fn exact_version(v: &str) -> Option<&str> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next().unwrap_or(v);
    let parts: Vec<&str> = core.split('.').collect();
    (parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
    .then_some(v)
}

/// helm's repository file, as helm finds it (helm `pkg/cli/environment.go`: `HELM_REPOSITORY_CONFIG`,
/// else `repositories.yaml` under `HELM_CONFIG_HOME`, else `$XDG_CONFIG_HOME/helm`, else
/// `~/.config/helm` on Linux: `pkg/helmpath/lazypath.go`, `lazypath_unix.go`). `None` where the
/// default differs (macOS, Windows): helm is asked instead.
fn repositories_file() -> Option<std::path::PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    if let Some(p) = var("HELM_REPOSITORY_CONFIG") {
        return Some(p);
    }
    if let Some(p) = var("HELM_CONFIG_HOME") {
        return Some(p.join("repositories.yaml"));
    }
    let base = var("XDG_CONFIG_HOME").or_else(|| {
        cfg!(target_os = "linux")
            .then(|| var("HOME").map(|h| h.join(".config")))
            .flatten()
    })?;
    Some(base.join("helm").join("repositories.yaml"))
}

/// The URL of repository `name` in helm's repository file, when the file is readable and lists
/// it (`repositories: [{name, url, ...}]`); `None` otherwise (then ask helm).
pub(crate) fn configured_repo_url(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(repositories_file()?).ok()?;
    let doc = crate::yaml::parse_one(&text, "repositories.yaml").ok()?;
    doc.get("repositories")?
        .as_array()?
        .iter()
        .find(|r| r.get("name").and_then(Value::as_str) == Some(name))?
        .get("url")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn tgz(files: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let gz = flate2::write::GzEncoder::new(f.reopen().unwrap(), Default::default());
        let mut b = tar::Builder::new(gz);
        for (path, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
        f
    }

    #[test]
    fn packaged_chart_metadata_is_its_top_chart_yaml() {
        let f = tgz(&[
            ("om/charts/sub/Chart.yaml", "name: sub\nversion: 9.9.9\n"),
            ("om/values.yaml", "a: 1\n"),
            (
                "om/Chart.yaml",
                "apiVersion: v2\nname: openmetadata\nversion: 1.12.4\n",
            ),
        ]);
        let m = local_meta(f.path(), "om.tgz").unwrap();
        assert_eq!(
            m,
            Meta {
                name: "openmetadata".into(),
                version: Some("1.12.4".into())
            }
        );
        let none = tgz(&[("om/values.yaml", "a: 1\n")]);
        let e = local_meta(none.path(), "x.tgz").unwrap_err();
        assert!(
            e.message.contains("no top-level Chart.yaml"),
            "{}",
            e.message
        );
        let junk = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(junk.path(), "not gzip").unwrap();
        assert!(local_meta(junk.path(), "junk.tgz").is_err());
    }

    #[test]
    fn references_and_versions() {
        assert_eq!(repo_of("open-metadata/openmetadata"), Some("open-metadata"));
        assert_eq!(repo_of("oci://127.0.0.1:5000/charts/openmetadata"), None);
        assert_eq!(repo_of("openmetadata"), None);
        assert_eq!(
            name_of("oci://127.0.0.1:5000/charts/openmetadata"),
            "openmetadata"
        );
        assert_eq!(name_of("argo/argo-workflows"), "argo-workflows");
        assert_eq!(exact_version("1.12.4"), Some("1.12.4"));
        assert_eq!(exact_version("v0.45.23"), Some("0.45.23"));
        assert_eq!(exact_version("1.0.0-rc.1"), Some("1.0.0-rc.1"));
        for range in ["~1.12", ">=1.0.0", "1.x", "1.12", "^1.2.3"] {
            assert_eq!(exact_version(range), None, "{range}");
        }
    }
}
