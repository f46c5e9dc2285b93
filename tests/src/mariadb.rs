//! A real MariaDB server per test, from the Debian packages (`apt-get install mariadb-server`,
//! done by `scripts/test-deps.sh`): `mariadb-install-db` into a temp folder, `mariadbd` on an
//! ephemeral 127.0.0.1 port with its socket in that folder, a user with a password and its
//! database. Killed on drop. MariaDB speaks the MySQL protocol, so it exercises the `mysql`
//! scheme of `db::version` (the product it reports is `mariadb`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user created with a password (all privileges on [`DATABASE`]).
pub const USER: &str = "collate";
/// Its password.
pub const PASSWORD: &str = "my-canary-83b0";
/// The database created for [`USER`].
pub const DATABASE: &str = "openmetadata_db";

pub(crate) const SERVER: &str = "/usr/sbin/mariadbd";
pub(crate) const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const CLIENT: &str = "/usr/bin/mariadb";

/// A running MariaDB server.
pub struct MariaDb {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl MariaDb {
    /// Starts a server. The test declares it first: `needs!("mariadb")`.
    pub fn start() -> MariaDb {
        crate::needs::installed("mariadb");
        let dir = tempfile::tempdir().expect("temp dir");
        let data = dir.path().join("data");
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let user = if root { "--user=root" } else { "--no-defaults" };
        let out = Command::new(INSTALL_DB)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(root.then_some(user))
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = crate::loopback::free_port();
        let socket = dir.path().join("mysqld.sock");
        let mut cmd = Command::new(SERVER);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!(
                "--pid-file={}",
                dir.path().join("mysqld.pid").display()
            ))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--skip-log-bin")
            .arg("--innodb-buffer-pool-size=16M")
            .arg(format!(
                "--log-error={}",
                dir.path().join("error.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            cmd.arg("--user=root");
        }
        let child = cmd.spawn().expect("start mariadbd");
        let db = MariaDb { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while db.client("SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(db.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        db.sql(&format!(
            "CREATE DATABASE {DATABASE}; \
             CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON {DATABASE}.* TO '{USER}'@'%';"
        ));
        db
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL as root over the socket; panics on failure.
    pub fn sql(&self, sql: &str) -> String {
        self.client(sql)
            .unwrap_or_else(|e| panic!("mariadb {sql:?} failed: {e}"))
    }

    /// The server's version, e.g. `10.11.14-MariaDB-0+deb12u2`.
    pub fn version(&self) -> String {
        self.sql("SELECT VERSION()")
    }

    fn client(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(client_bin())
            .arg("--no-defaults")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

fn client_bin() -> PathBuf {
    if Path::new(CLIENT).is_file() {
        PathBuf::from(CLIENT)
    } else {
        PathBuf::from("mysql")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
