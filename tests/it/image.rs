//! The container image assembled without a container engine (`scripts/image.py`): an OCI image
//! layout whose digests hold, whose config runs the binary as a non-root user, and whose root
//! filesystem runs `collate-run` under `chroot` (as the image's user) with nothing of the host.

use std::path::Path;
use std::process::Command;

use collate_run_tests::needs;
use collate_run_tests::run::{binary, root};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let data = std::fs::read(layout.join("blobs/sha256").join(hex)).expect("the blob exists");
    assert_eq!(
        format!("{:x}", Sha256::digest(&data)),
        hex,
        "blob {digest} does not match its digest"
    );
    data
}

fn json(data: &[u8]) -> Value {
    serde_json::from_slice(data).expect("JSON")
}

#[test]
fn image_layout_is_valid_non_root_and_runs_under_chroot() {
    let Some(()) = needs::gate("root, for chroot", (effective_uid() == 0).then_some(())) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("image");
    let out = Command::new("python3")
        .arg(root().join("scripts/image.py"))
        .arg("--binary")
        .arg(binary())
        .arg("--out")
        .arg(&layout)
        .arg("--tag")
        .arg("test")
        .output()
        .expect("run scripts/image.py");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let oci_layout = json(&std::fs::read(layout.join("oci-layout")).unwrap());
    assert_eq!(oci_layout["imageLayoutVersion"], "1.0.0");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["org.opencontainers.image.ref.name"],
        "test"
    );
    let manifest_bytes = read_blob(&layout, m["digest"].as_str().unwrap());
    assert_eq!(m["size"], manifest_bytes.len());
    let manifest = json(&manifest_bytes);
    let config_bytes = read_blob(&layout, manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["size"], config_bytes.len());
    let config = json(&config_bytes);
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/collate-run"])
    );
    let env = config["config"]["Env"].to_string();
    assert!(
        env.contains("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"),
        "{env}"
    );

    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let gz = read_blob(&layout, layer["digest"].as_str().unwrap());
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let tar_path = dir.path().join("layer.tar.gz");
    std::fs::write(&tar_path, &gz).unwrap();
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(&tar_path)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap();
    assert!(untar.success());
    // The diff_id is the digest of the uncompressed layer.
    let raw = Command::new("gzip")
        .arg("-dc")
        .arg(&tar_path)
        .output()
        .unwrap()
        .stdout;
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{:x}", Sha256::digest(&raw))
    );
    for f in [
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/collate-run/recipes/maintenance/refresh-ecr.rhai",
        "usr/share/collate-run/recipes/lib/ecr_refresh.rhai",
    ] {
        assert!(rootfs.join(f).is_file(), "{f} is not in the image");
    }

    // The image's binary, as the image's user, with only the image's files.
    let chroot = |args: &[&str]| {
        // Looked up before the child's PATH (the image's) is set.
        let chroot = ["/usr/sbin/chroot", "/usr/bin/chroot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("chroot");
        let out = Command::new(chroot)
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .arg("/usr/local/bin/collate-run")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&rootfs)
            .output()
            .expect("run chroot");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "collate-run {args:?} in the image: {text}"
        );
        text
    };
    assert!(chroot(&["--version"]).contains("collate-run "));
    let check = chroot(&[
        "check",
        "/usr/share/collate-run/recipes/maintenance/refresh-ecr.rhai",
        "--config",
        "/usr/share/collate-run/recipes/customer.example.yaml",
    ]);
    assert!(check.starts_with("ok:"), "{check}");
}

/// The effective user id (root may chroot).
fn effective_uid() -> u32 {
    // `id -u` rather than libc: the harness has no libc dependency.
    let out = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(u32::MAX)
}
