//! A real PostgreSQL server per test, from the Debian packages (`apt-get install postgresql`,
//! done by `scripts/test-deps.sh`): `initdb` into a temp folder, `pg_ctl start` on an ephemeral
//! 127.0.0.1 port with the socket in that folder, a user with a password and its database.
//! Stopped (and deleted) on drop. When the server runs as root (containers), every PostgreSQL
//! program runs as the `postgres` user through `runuser`.
//!
//! TLS is on when the Debian snake-oil certificate is readable (the `ssl-cert` package); the
//! user [`TLS_ONLY_USER`] may then only connect over TLS, for "TLS required" tests.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::loopback::free_port;

/// The user created with a password (owner of [`Postgres::database`]).
pub const USER: &str = "openmetadata_user";
/// The password of [`USER`] and [`TLS_ONLY_USER`].
pub const PASSWORD: &str = "pg-canary-5d1e";
/// The database created for [`USER`].
pub const DATABASE: &str = "openmetadata_db";
/// A user refused without TLS (`hostnossl ... reject`), when TLS is available.
pub const TLS_ONLY_USER: &str = "openmetadata_tls";

const SNAKEOIL_CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
const SNAKEOIL_KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    tls: bool,
    version: String,
}

/// The folder holding `initdb`, `pg_ctl` and `postgres`: `$PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`, else the folder of `initdb` on `PATH`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PG_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    })
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Postgres {
    /// Starts a server. The test declares it first: `needs!("postgres")`.
    pub fn start() -> Postgres {
        Self::start_with(true)
    }

    /// Starts a server without TLS, even where the snake-oil certificate is readable.
    pub fn start_plain() -> Postgres {
        Self::start_with(false)
    }

    fn start_with(tls: bool) -> Postgres {
        let bin = crate::needs::installed("postgres");
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres = running_as_root();
        let port = free_port();
        let mut pg = Postgres {
            bin,
            dir,
            port,
            as_postgres,
            tls: false,
            version: String::new(),
        };
        if as_postgres {
            run_ok(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(pg.dir.path()),
            );
        }
        let data = pg.data();
        let pwfile = pg.dir.path().join("pw");
        std::fs::write(&pwfile, "superuser-pw\n").expect("write pwfile");
        if as_postgres {
            run_ok(Command::new("chown").arg("postgres:postgres").arg(&pwfile));
        }
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--pwfile",
                &pwfile.display().to_string(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // TLS with the snake-oil certificate when this user can read its key.
        pg.tls = tls && Path::new(SNAKEOIL_CERT).is_file() && pg.can_read(SNAKEOIL_KEY);
        let hba = format!(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all {TLS_ONLY_USER} 127.0.0.1/32 reject\n\
             host all all 127.0.0.1/32 scram-sha-256\n"
        );
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nlog_min_messages = warning\n",
            pg.dir.path().display()
        );
        if pg.tls {
            conf.push_str(&format!(
                "ssl = on\nssl_cert_file = '{SNAKEOIL_CERT}'\nssl_key_file = '{SNAKEOIL_KEY}'\n"
            ));
        }
        let mut auto =
            std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        auto.push_str(&conf);
        std::fs::write(data.join("postgresql.auto.conf"), auto).expect("write config");
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                &data.display().to_string(),
                "-l",
                &log.display().to_string(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        // One statement a call: CREATE DATABASE cannot run in psql's implicit transaction.
        pg.sql(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"));
        pg.sql(&format!(
            "CREATE ROLE {TLS_ONLY_USER} LOGIN PASSWORD '{PASSWORD}'"
        ));
        pg.sql(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"));
        pg.version = pg
            .sql("SHOW server_version")
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        pg
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's version, e.g. `15.14`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server's major version, e.g. 15.
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// `true` when the server accepts TLS (and [`TLS_ONLY_USER`] requires it).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Runs SQL as the superuser over the socket; returns psql's unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = self.run(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                &self.dir.path().display().to_string(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
        );
        out.trim().to_string()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        let exe = if exe.is_file() {
            exe
        } else {
            PathBuf::from(program)
        };
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        let mut cmd = self.command(program);
        cmd.args(args).current_dir(self.dir.path());
        run_ok(&mut cmd)
    }

    fn can_read(&self, path: &str) -> bool {
        if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-r", path])
                .status()
                .is_ok_and(|s| s.success())
        } else {
            std::fs::File::open(path).is_ok()
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data().display().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
