//! Runs `collate-run` the way a pod of a rendered CronJob runs it: the container's `args` and
//! `env` (secretKeyRefs resolved from the cluster), what the kubelet adds
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`, the service-account token, CA and namespace at
//! `/var/run/secrets/kubernetes.io/serviceaccount`), the ConfigMap and emptyDir volumes at their
//! `mountPath`s, the pod's user, and the working directory `/`.
//!
//! kube-rs reads the service account from fixed paths, so the binary runs in a private mount
//! namespace (`unshare -m`, root only) where a fresh tmpfs is mounted on `/run` and the files are
//! bind-mounted at the real paths; a mount path whose parent does not exist (`/etc/collate-run`)
//! is created on an overlay of its nearest existing ancestor. Nothing changes outside the
//! namespace, and the product has no test-only switch for the service-account directory.
//!
//! Differences from a real pod, all for the loopback world: the binary is the one under test,
//! not the image's `command[0]`; `extra_env` adds what only a test needs (`AWS_ENDPOINT_URL` for
//! moto, `AWS_EC2_METADATA_DISABLED` so nothing leaves 127.0.0.1) and what EKS's pod identity
//! webhook would inject for IRSA; the root filesystem is the host's, not read-only.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde_json::Value;

use crate::kube::Cluster;
use crate::run::{Output, binary};
use crate::tls_server::TlsServer;

/// Where the kubelet mounts the service account.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where EKS's pod identity webhook mounts the projected IRSA token.
pub const IRSA_TOKEN_DIR: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount";

/// Whether pods can be emulated here (root, `unshare`, overlay and tmpfs mounts), for the
/// harness's `needs::gate`.
pub fn supported() -> Option<()> {
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("d=$(mktemp -d) && mkdir $d/u $d/w && mount -t tmpfs tmpfs /run && mount -t overlay overlay -o lowerdir=/etc,upperdir=$d/u,workdir=$d/w /etc")
        .output()
        .ok()?;
    probe.status.success().then_some(())
}

/// One pod run.
pub struct Pod<'a> {
    cluster: &'a Cluster,
    namespace: String,
    pod_spec: Value,
    token: String,
    extra_env: Vec<(String, String)>,
    irsa_token: Option<String>,
}

impl<'a> Pod<'a> {
    /// The pod of `pod_spec` (a PodSpec: the CronJob's `jobTemplate.spec.template.spec`) in
    /// `namespace`, authenticating with the service-account `token` the server accepts.
    pub fn new(cluster: &'a Cluster, namespace: &str, pod_spec: &Value, token: &str) -> Pod<'a> {
        Pod {
            cluster,
            namespace: namespace.into(),
            pod_spec: pod_spec.clone(),
            token: token.into(),
            extra_env: Vec::new(),
            irsa_token: None,
        }
    }

    /// Adds an environment variable the test world needs (see the module docs).
    pub fn env(mut self, k: &str, v: &str) -> Pod<'a> {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// What EKS's pod identity webhook injects for a service account annotated with `role_arn`:
    /// `AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE` and the projected token file.
    pub fn irsa(mut self, role_arn: &str, token: &str) -> Pod<'a> {
        self.irsa_token = Some(token.into());
        self.extra_env
            .push(("AWS_ROLE_ARN".into(), role_arn.into()));
        self.extra_env.push((
            "AWS_WEB_IDENTITY_TOKEN_FILE".into(),
            format!("{IRSA_TOKEN_DIR}/token"),
        ));
        self
    }

    /// Runs the pod's one container to completion.
    pub fn run(self) -> Output {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let mut mounts: Vec<(PathBuf, String)> = Vec::new();

        let sa = root.join("serviceaccount");
        write(&sa.join("token"), &self.token);
        std::fs::copy(TlsServer::root_ca_file(), sa.join("ca.crt")).expect("copy the CA");
        write(&sa.join("namespace"), &self.namespace);
        mounts.push((sa, SERVICE_ACCOUNT_DIR.into()));
        if let Some(t) = &self.irsa_token {
            let d = root.join("irsa");
            write(&d.join("token"), t);
            mounts.push((d, IRSA_TOKEN_DIR.into()));
        }

        let container = &self.pod_spec["containers"][0];
        let volumes = self.pod_spec["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (i, m) in container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = m["name"].as_str().unwrap_or_default();
            let volume = volumes
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("volume `{name}` is not defined"));
            let d = root.join(format!("volume-{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            if let Some(cm) = volume["configMap"]["name"].as_str() {
                let obj = self
                    .cluster
                    .get("v1", "ConfigMap", &self.namespace, cm)
                    .unwrap_or_else(|| panic!("ConfigMap `{cm}` does not exist"));
                for (key, text) in obj["data"].as_object().into_iter().flatten() {
                    write(&d.join(key), text.as_str().unwrap_or_default());
                }
            } else if volume.get("emptyDir").is_none() {
                panic!("volume `{name}`: only configMap and emptyDir volumes are emulated");
            }
            mounts.push((d, m["mountPath"].as_str().expect("mountPath").into()));
        }
        // The pod's user must be able to reach the files.
        chmod_tree(root);

        // A mount over a folder holding our sources (an emptyDir on `/tmp`) goes last.
        mounts.sort_by_key(|(_, to)| root.starts_with(to));
        // The binary is bind-mounted into the fresh `/run` first: a volume on `/tmp` would hide a
        // checkout under `/tmp`, and the pod's user may not traverse the checkout's folders.
        let mut script = String::from(
            "set -e\nmount -t tmpfs tmpfs /run\n\
             mkdir -p /run/pod-bin && : > /run/pod-bin/collate-run && mount --bind \"$1\" /run/pod-bin/collate-run\n\
             shift\nset -- /run/pod-bin/collate-run \"$@\"\n",
        );
        for (i, (from, to)) in mounts.iter().enumerate() {
            let to_path = Path::new(to);
            let mut existing = to_path.parent().expect("absolute mount path");
            while !existing.exists() {
                existing = existing.parent().expect("/ exists");
            }
            let existing = existing.canonicalize().expect("canonical path");
            if !to_path.exists() && !existing.starts_with("/run") {
                let (u, w) = (
                    root.join(format!("upper-{i}")),
                    root.join(format!("work-{i}")),
                );
                script += &format!(
                    "mkdir -p '{u}' '{w}'\nmount -t overlay overlay -o lowerdir='{e}',upperdir='{u}',workdir='{w}' '{e}'\n",
                    u = u.display(),
                    w = w.display(),
                    e = existing.display()
                );
            }
            script += &format!(
                "mkdir -p '{to}'\nmount --bind '{}' '{to}'\n",
                from.display()
            );
        }
        let user = &self.pod_spec["securityContext"];
        if let (Some(uid), Some(gid)) = (user["runAsUser"].as_i64(), user["runAsGroup"].as_i64()) {
            script += &format!(
                "exec setpriv --reuid {uid} --regid {gid} --clear-groups --no-new-privs \"$@\"\n"
            );
        } else {
            script += "exec \"$@\"\n";
        }

        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "pod"])
            .arg(binary())
            .args(strings(&container["args"]))
            .env_clear()
            .current_dir(container["workingDir"].as_str().unwrap_or("/"));
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        cmd.env("KUBERNETES_SERVICE_HOST", "127.0.0.1");
        cmd.env(
            "KUBERNETES_SERVICE_PORT",
            self.cluster.server.port().to_string(),
        );
        for e in container["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().expect("env name");
            let value = match e["valueFrom"]["secretKeyRef"].as_object() {
                Some(r) => {
                    self.secret_value(r["name"].as_str().unwrap(), r["key"].as_str().unwrap())
                }
                None => e["value"].as_str().unwrap_or_default().to_string(),
            };
            cmd.env(name, value);
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run unshare");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// A secretKeyRef as the kubelet resolves it (a missing Secret fails the pod's start).
    fn secret_value(&self, name: &str, key: &str) -> String {
        let s = self
            .cluster
            .get("v1", "Secret", &self.namespace, name)
            .unwrap_or_else(|| panic!("Secret `{name}` does not exist: the pod would not start"));
        let b = BASE64_STANDARD
            .decode(s["data"][key].as_str().expect("secret key"))
            .expect("base64");
        String::from_utf8(b).expect("UTF-8")
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

fn chmod_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if dir.is_dir() { 0o755 } else { 0o644 };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    if dir.is_dir() {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            chmod_tree(&e.path());
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}
