//! Helm's release records read straight from the cluster. With helm's default storage driver
//! (`HELM_DRIVER` unset or `secret`), every revision of a release is a Secret
//! `sh.helm.release.v1.<name>.v<revision>` labelled `owner=helm, name=<name>, version=<revision>`,
//! whose `release` key holds the release as base64 of gzipped JSON (the format of helm 3 and 4).
//! One list call then replaces `helm get metadata` + `helm get values` (two helm processes of
//! ~60 ms each). Other drivers (`configmap`, `sql`, `memory`) are read through the helm binary.
//! Nothing is ever written here: installs and upgrades always go through helm.

use std::io::Read as _;
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::error::HostError;
use crate::host::Host;
use crate::k8s::client::{Kube, kube};

/// `true` when helm keeps its releases in Secrets (its default).
pub(crate) fn uses_secrets() -> bool {
    std::env::var("HELM_DRIVER")
        .map(|d| matches!(d.to_ascii_lowercase().as_str(), "" | "secret" | "secrets"))
        .unwrap_or(true)
}

/// The latest revision of `release` in `ns` as helm stores it (`name`, `namespace`, `version`,
/// `info.status`, `chart.metadata`, `config` = the user-supplied values), or `None`.
pub(crate) fn latest(
    host: &Arc<Host>,
    ns: &str,
    release: &str,
) -> Result<Option<Value>, HostError> {
    let kube: Arc<Kube> = kube(host)?;
    let api: Api<Secret> = Api::namespaced(kube.client.clone(), ns);
    let what = format!("list the helm release records of `{release}` in `{ns}`");
    let params = ListParams::default().labels(&format!("owner=helm,name={release}"));
    let list = host.read(&format!("helm: {what}"), async move {
        api.list(&params).await.map_err(|e| kube.err(&what, e))
    })?;
    let newest = list
        .items
        .iter()
        .filter(|s| s.type_.as_deref() == Some("helm.sh/release.v1"))
        .max_by_key(|s| revision(s));
    newest
        .map(|s| {
            let name = s.metadata.name.clone().unwrap_or_default();
            let data = s
                .data
                .as_ref()
                .and_then(|d| d.get("release"))
                .ok_or_else(|| {
                    HostError::api(format!(
                        "helm release record `{ns}/{name}` has no `release` key"
                    ))
                })?;
            decode(&data.0).map_err(|e| {
                HostError::api(format!(
                    "cannot read helm release record `{ns}/{name}`: {e}"
                ))
            })
        })
        .transpose()
}

/// The revision of a record, from its `version` label (else its name's `.v<N>` suffix).
fn revision(s: &Secret) -> i64 {
    let label = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("version"))
        .and_then(|v| v.parse().ok());
    label.unwrap_or_else(|| {
        s.metadata
            .name
            .as_deref()
            .and_then(|n| n.rsplit_once(".v"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0)
    })
}

/// A record's `release` value: base64 text of gzipped (or, from very old helm, plain) JSON.
pub(crate) fn decode(stored: &[u8]) -> Result<Value, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(stored)
        .map_err(|e| format!("not base64: {e}"))?;
    let json = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| format!("not gzip: {e}"))?;
        out
    } else {
        bytes
    };
    serde_json::from_slice(&json).map_err(|e| format!("not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn decodes_gzipped_and_plain_records() {
        let doc = serde_json::json!({"name": "mini", "version": 2, "info": {"status": "deployed"},
            "chart": {"metadata": {"name": "collate-mini", "version": "0.1.0"}}, "config": {"a": 1}});
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(doc.to_string().as_bytes()).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        assert_eq!(decode(b64(&gz.finish().unwrap()).as_bytes()).unwrap(), doc);
        assert_eq!(
            decode(b64(doc.to_string().as_bytes()).as_bytes()).unwrap(),
            doc
        );
        assert!(decode(b"%%%").unwrap_err().starts_with("not base64"));
    }
}
