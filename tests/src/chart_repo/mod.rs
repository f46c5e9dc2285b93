//! A chart server on 127.0.0.1 (HTTPS, with the fixture chain of `tests/it/fixtures/tls`: helm
//! reaches OCI registries over HTTPS unless told `--plain-http`) for the chart forms consultants use besides a local `.tgz`: a Helm
//! chart repository (`GET /index.yaml`, written by `helm repo index --url`, and the archives it
//! lists) and a read-only OCI registry holding the same charts as `helm push` stores them
//! (`oci://127.0.0.1:PORT/charts/NAME`, tag = chart version). What it emulates, and where that is
//! taken from, is in `README.md` beside this file.
//!
//! ```ignore
//! let repo = ChartRepo::start(&[upstream_chart("openmetadata-1.12.4.tgz")]);
//! repo.publish_version(&upstream_chart("openmetadata-1.12.4.tgz"), "1.12.5"); // a newer release
//! ```

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::loopback::{Loopback, Request};
use crate::tls_server::TlsServer;

/// OCI media types of a chart (helm `pkg/registry/constants.go`).
const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";
const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// A running chart server; stops when dropped.
pub struct ChartRepo {
    server: Loopback,
    dir: Arc<tempfile::TempDir>,
    /// The charts the OCI registry serves, read when the index is written.
    oci: Arc<Mutex<Vec<Chart>>>,
}

/// `tests/fixtures/charts/upstream/FILE`: the real charts (see the README there).
pub fn upstream_chart(file: &str) -> PathBuf {
    crate::run::root()
        .join("tests/fixtures/charts/upstream")
        .join(file)
}

fn helm() -> PathBuf {
    crate::needs::installed("helm")
}

fn run_helm(args: &[&str]) {
    let out = Command::new(helm()).args(args).output().expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

impl ChartRepo {
    /// Serves these packaged charts.
    pub fn start(charts: &[PathBuf]) -> ChartRepo {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        for c in charts {
            std::fs::copy(c, dir.path().join(c.file_name().expect("a file"))).expect("copy chart");
        }
        let oci: Arc<Mutex<Vec<Chart>>> = Arc::default();
        let (d, o) = (dir.clone(), oci.clone());
        let tls = TlsServer::config();
        let server = Loopback::serve_blocking("chart-repo", 0, move |tcp| {
            let Ok(conn) = rustls::ServerConnection::new(tls.clone()) else {
                return;
            };
            let _ = serve(rustls::StreamOwned::new(conn, tcp), d.path(), &o);
        })
        .expect("start the chart server on 127.0.0.1");
        let repo = ChartRepo { server, dir, oci };
        repo.index();
        repo
    }

    /// `https://127.0.0.1:PORT`: the chart repository URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// The environment helm needs to trust the server: `SSL_CERT_FILE` (Go's x509 reads it).
    pub fn env() -> Vec<(String, String)> {
        let ca = TlsServer::root_ca_file();
        vec![("SSL_CERT_FILE".into(), ca.display().to_string())]
    }

    /// `oci://127.0.0.1:PORT/charts/NAME`.
    pub fn oci(&self, name: &str) -> String {
        format!("oci://{}/charts/{name}", self.server.addr())
    }

    /// Publishes `chart` repackaged as `version` (as a new upstream release would be), and
    /// rewrites the index.
    pub fn publish_version(&self, chart: &Path, version: &str) {
        let work = tempfile::tempdir().expect("temp dir");
        let unpacked = work.path().join("src");
        std::fs::create_dir(&unpacked).expect("mkdir");
        let status = Command::new("tar")
            .arg("xzf")
            .arg(chart)
            .arg("-C")
            .arg(&unpacked)
            .status()
            .expect("run tar");
        assert!(status.success(), "tar xzf {}", chart.display());
        let top = std::fs::read_dir(&unpacked)
            .expect("unpacked")
            .next()
            .expect("one top folder")
            .expect("entry")
            .path();
        run_helm(&[
            "package",
            top.to_str().expect("utf-8 path"),
            "--version",
            version,
            "-d",
            self.dir.path().to_str().expect("utf-8 path"),
        ]);
        self.index();
    }

    /// `helm repo index --url` over the archives.
    fn index(&self) {
        run_helm(&[
            "repo",
            "index",
            self.dir.path().to_str().expect("utf-8 path"),
            "--url",
            &self.url(),
        ]);
        *self.oci.lock().expect("charts") = charts(self.dir.path());
    }
}

/// A served chart: its Chart.yaml (as JSON) and archive.
struct Chart {
    meta: Value,
    archive: Vec<u8>,
}

impl Chart {
    fn config(&self) -> Vec<u8> {
        self.meta.to_string().into_bytes()
    }

    fn manifest(&self) -> Vec<u8> {
        let desc = |media: &str, bytes: &[u8]| json!({"mediaType": media, "digest": sha256(bytes), "size": bytes.len()});
        json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": desc(CONFIG_MEDIA_TYPE, &self.config()),
            "layers": [desc(CHART_MEDIA_TYPE, &self.archive)],
        })
        .to_string()
        .into_bytes()
    }
}

/// The charts in `dir`, read from their archives (`helm show chart`).
fn charts(dir: &Path) -> Vec<Chart> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "tgz") {
            continue;
        }
        let Ok(shown) = Command::new(helm())
            .arg("show")
            .arg("chart")
            .arg(&path)
            .output()
        else {
            continue;
        };
        let Ok(meta) = serde_saphyr::from_str::<Value>(&String::from_utf8_lossy(&shown.stdout))
        else {
            continue;
        };
        if let Ok(archive) = std::fs::read(&path) {
            out.push(Chart { meta, archive });
        }
    }
    out
}

struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    digest: Option<String>,
}

fn reply(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
    Reply {
        status,
        content_type,
        body,
        digest: None,
    }
}

/// The OCI distribution API error document.
fn oci_error(status: u16, code: &str, message: &str) -> Reply {
    let body = json!({"errors": [{"code": code, "message": message}]});
    reply(status, "application/json", body.to_string().into_bytes())
}

fn route(req: &Request, dir: &Path, served: &Mutex<Vec<Chart>>) -> Reply {
    let path = req.path.as_str();
    if path == "/v2/" || path == "/v2" {
        return reply(200, "application/json", b"{}".to_vec());
    }
    if let Some(rest) = path.strip_prefix("/v2/charts/") {
        return oci(rest, &served.lock().expect("charts"));
    }
    let file = path.trim_start_matches('/');
    if file.is_empty() || file.contains('/') || file.starts_with('.') {
        return reply(404, "text/plain", b"not found".to_vec());
    }
    match std::fs::read(dir.join(file)) {
        Ok(bytes) if file.ends_with(".yaml") => reply(200, "text/yaml", bytes),
        Ok(bytes) => reply(200, "application/gzip", bytes),
        Err(_) => reply(404, "text/plain", b"not found".to_vec()),
    }
}

/// `NAME/manifests/REF`, `NAME/blobs/DIGEST`, `NAME/tags/list`.
fn oci(rest: &str, served: &[Chart]) -> Reply {
    let Some((name, tail)) = rest.split_once('/') else {
        return oci_error(404, "NAME_UNKNOWN", "repository name not known to registry");
    };
    let charts: Vec<&Chart> = served.iter().filter(|c| c.meta["name"] == name).collect();
    if charts.is_empty() {
        return oci_error(404, "NAME_UNKNOWN", "repository name not known to registry");
    }
    // A tag is the version with `+` as `_` (OCI tags cannot hold `+`).
    let version_of = |c: &Chart| {
        c.meta["version"]
            .as_str()
            .unwrap_or_default()
            .replace('+', "_")
    };
    if tail == "tags/list" {
        let tags: Vec<String> = charts.iter().map(|c| version_of(c)).collect();
        let body = json!({"name": format!("charts/{name}"), "tags": tags});
        return reply(200, "application/json", body.to_string().into_bytes());
    }
    if let Some(reference) = tail.strip_prefix("manifests/") {
        let found = charts
            .iter()
            .find(|c| version_of(c) == reference || sha256(&c.manifest()) == reference);
        return match found {
            Some(c) => {
                let body = c.manifest();
                Reply {
                    digest: Some(sha256(&body)),
                    ..reply(200, MANIFEST_MEDIA_TYPE, body)
                }
            }
            None => oci_error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some(digest) = tail.strip_prefix("blobs/") {
        for c in charts {
            for (bytes, media) in [
                (c.config(), "application/octet-stream"),
                (c.archive.clone(), "application/octet-stream"),
            ] {
                if sha256(&bytes) == digest {
                    return Reply {
                        digest: Some(digest.to_string()),
                        ..reply(200, media, bytes)
                    };
                }
            }
        }
        return oci_error(404, "BLOB_UNKNOWN", "blob unknown to registry");
    }
    oci_error(404, "UNSUPPORTED", "the operation is unsupported")
}

fn serve(stream: impl Read + Write, dir: &Path, served: &Mutex<Vec<Chart>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(req) = Request::read(&mut reader)? {
        let stream = reader.get_mut();
        if req.method != "GET" && req.method != "HEAD" {
            let r = oci_error(405, "UNSUPPORTED", "this registry is read-only");
            write_reply(stream, &r, false)?;
            continue;
        }
        let r = route(&req, dir, served);
        write_reply(stream, &r, req.method == "HEAD")?;
    }
    Ok(())
}

fn write_reply(stream: &mut impl Write, r: &Reply, head: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let mut head_text = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\ndocker-distribution-api-version: registry/2.0\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    if let Some(d) = &r.digest {
        head_text.push_str(&format!("docker-content-digest: {d}\r\n"));
    }
    head_text.push_str("\r\n");
    stream.write_all(head_text.as_bytes())?;
    if !head {
        stream.write_all(&r.body)?;
    }
    stream.flush()
}
