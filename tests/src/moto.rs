//! moto (PyPI `moto[server]`, installed in `.venv-test` by the test set-up script) on
//! 127.0.0.1 and an ephemeral port: the AWS of the integration tests. State is seeded and
//! inspected with boto3 from the same venv, one Python process per call.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::loopback::free_port;

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
/// The region of every test.
pub const REGION: &str = "eu-west-1";

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

fn venv_bin(name: &str) -> PathBuf {
    crate::run::root().join(".venv-test/bin").join(name)
}

/// `true` when moto answers an HTTP request on `port`.
fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf.starts_with(b"HTTP/"))
}

impl Moto {
    /// Starts `moto_server` and waits until it answers (a few seconds at most). The test
    /// declares it first: `needs!("moto")`.
    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    /// [`Moto::start`] with settings for moto itself, e.g. `INITIAL_NO_AUTH_ACTION_COUNT=0`
    /// (moto `core/responses.py`: after that many actions every request is authenticated
    /// against moto's IAM, so unknown access keys are refused as AWS refuses them).
    pub fn start_with_env(vars: &[(&str, &str)]) -> Moto {
        let bin = crate::needs::installed("moto");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("aws-config"), "").expect("write empty aws config");
        std::fs::write(dir.path().join("aws-credentials"), "").expect("write empty credentials");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
                .envs(vars.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if answers(port) {
                    return Moto { child, port, dir };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("moto_server exited with {status} (port {port} taken?)");
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            if last.is_empty() {
                last = format!("moto_server did not answer on port {port} within 30 s");
            }
        }
        panic!("{last}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a run (or boto3) needs to talk to this moto and nothing else.
    pub fn env(&self) -> Vec<(String, String)> {
        let file = |n: &str| self.dir.path().join(n).display().to_string();
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", file("aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", file("aws-credentials")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Runs Python with boto3 against this moto. The code has `boto3`, `json` and a helper
    /// `c(service)` (a client); whatever it assigns to `out` is printed as JSON and returned.
    pub fn python(&self, code: &str) -> Value {
        let program = format!(
            "import boto3, json\n\
             def c(service, region='{REGION}'):\n    return boto3.client(service, region_name=region, endpoint_url='{}')\n\
             out = None\n{code}\nprint(json.dumps(out, default=str))\n",
            self.endpoint()
        );
        let output = Command::new(venv_bin("python"))
            .arg("-c")
            .arg(program)
            .env_clear()
            .envs(self.env())
            .output()
            .expect("run the venv's python");
        assert!(
            output.status.success(),
            "boto3 script failed:\n{code}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("boto3 script printed no JSON ({e}): {stdout}"))
    }

    /// Creates an EKS cluster and returns its OIDC issuer (`https://oidc.eks.REGION...`).
    pub fn create_eks_cluster(&self, name: &str) -> String {
        let v = self.python(&format!(
            "r = c('eks').create_cluster(name='{name}', roleArn='arn:aws:iam::{ACCOUNT}:role/eks', \
             resourcesVpcConfig={{'subnetIds': ['subnet-1', 'subnet-2']}})\n\
             out = r['cluster']['identity']['oidc']['issuer']"
        ));
        v.as_str().expect("issuer").to_string()
    }

    /// Names of the IAM roles (moto's service roles excluded).
    pub fn role_names(&self) -> Vec<String> {
        strings(self.python(
            "out = [r['RoleName'] for r in c('iam').list_roles()['Roles'] if not r['Path'].startswith('/aws-service-role/')]",
        ))
    }

    /// Names of the S3 buckets.
    pub fn bucket_names(&self) -> Vec<String> {
        strings(self.python("out = [b['Name'] for b in c('s3').list_buckets()['Buckets']]"))
    }

    /// ARNs of the IAM OIDC providers.
    pub fn oidc_provider_arns(&self) -> Vec<String> {
        strings(self.python(
            "out = [p['Arn'] for p in c('iam').list_open_id_connect_providers()['OpenIDConnectProviderList']]",
        ))
    }

    /// The ECR password moto hands out for `account` (for secret canaries).
    pub fn ecr_password(&self, account: &str) -> String {
        let v = self.python(&format!(
            "import base64\n\
             t = c('ecr').get_authorization_token(registryIds=['{account}'])['authorizationData'][0]['authorizationToken']\n\
             out = base64.b64decode(t).decode().split(':', 1)[1]"
        ));
        v.as_str().expect("password").to_string()
    }
}

fn strings(v: Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
