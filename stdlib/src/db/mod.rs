//! The `db` namespace: opens one real connection to the Collate database (PostgreSQL or MySQL)
//! with the credentials the recipes use, and reports the server's product and version. Used by
//! preflight; every failure (authentication, TLS, unreachable host, missing database) is a
//! distinct error kind with a hint, and the password appears in no message. The drivers are in
//! `postgres.rs` and `mysql.rs`, TLS in `tls.rs`, what a failure means in `classify.rs`.

mod classify;
mod mysql;
mod postgres;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use rhai::Map;
use rhai::plugin::*;

use crate::error::{HostError, RhaiResult};
use crate::host::Host;
use crate::secret_value::Secret;
use crate::value::{check_keys, opt};

/// The options `db::version` takes.
const OPTIONS: &[&str] = &[
    "scheme", "host", "port", "database", "user", "password", "tls", "ca_file", "timeout",
];

/// Default connect timeout, seconds.
const DEFAULT_TIMEOUT: i64 = 10;

/// Which server protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Postgres,
    Mysql,
}

/// How to use TLS, with libpq's meanings: `prefer` and `require` encrypt without checking the
/// certificate (as `sslmode=require` does), `verify-full` checks the chain and the host name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl Tls {
    fn parse(s: &str) -> Result<Tls, HostError> {
        Ok(match s {
            "disable" => Tls::Disable,
            "prefer" => Tls::Prefer,
            "require" => Tls::Require,
            "verify-full" => Tls::VerifyFull,
            other => {
                return Err(HostError::input(format!(
                    "option `tls` must be `disable`, `prefer`, `require` or `verify-full`, not `{other}`"
                )));
            }
        })
    }
}

/// A parsed `db::version` call.
struct Target {
    scheme: Scheme,
    host: String,
    port: u16,
    database: String,
    user: String,
    password: Secret,
    tls: Tls,
    ca_file: Option<PathBuf>,
    timeout: Duration,
}

impl Target {
    /// `host:port/database`, as shown in messages.
    fn shown(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.database)
    }

    fn scheme_name(&self) -> &'static str {
        match self.scheme {
            Scheme::Postgres => "postgresql",
            Scheme::Mysql => "mysql",
        }
    }
}

/// What the server says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServerVersion {
    product: &'static str,
    version: String,
    major: i64,
    minor: i64,
}

fn parse_target(host: &Host, ctx: &NativeCallContext, opts: &Map) -> Result<Target, HostError> {
    check_keys("db::version", opts, OPTIONS)?;
    let required = |key: &str| -> Result<String, HostError> {
        match opt::<String>(opts, key)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(HostError::input(format!(
                "`db::version` needs option `{key}`"
            ))),
        }
    };
    let scheme = match required("scheme")?.as_str() {
        "postgresql" | "postgres" => Scheme::Postgres,
        "mysql" => Scheme::Mysql,
        other => {
            return Err(HostError::input(format!(
                "option `scheme` must be `postgresql` or `mysql`, not `{other}`"
            )));
        }
    };
    let default_port = match scheme {
        Scheme::Postgres => 5432,
        Scheme::Mysql => 3306,
    };
    let port = opt::<i64>(opts, "port")?.unwrap_or(default_port);
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| HostError::input(format!("option `port` must be 1..65535, not {port}")))?;
    let password = match opts.get("password") {
        Some(p) if p.is::<Secret>() => p.clone_cast::<Secret>(),
        Some(p) if p.is_string() => Secret::new(p.to_string(), "script"),
        Some(p) if !p.is_unit() => {
            return Err(HostError::input(format!(
                "option `password` must be a Secret or a string, not `{}`",
                p.type_name()
            )));
        }
        _ => return Err(HostError::input("`db::version` needs option `password`")),
    };
    let tls = Tls::parse(opt::<String>(opts, "tls")?.as_deref().unwrap_or("prefer"))?;
    let ca_file = match opt::<String>(opts, "ca_file")? {
        Some(p) if !p.is_empty() => Some(host.check_read(&host.resolve_from(ctx, &p))?),
        _ => None,
    };
    let timeout = opt::<i64>(opts, "timeout")?
        .unwrap_or(DEFAULT_TIMEOUT)
        .max(1);
    Ok(Target {
        scheme,
        host: required("host")?,
        port,
        database: required("database")?,
        user: required("user")?,
        password,
        tls,
        ca_file,
        timeout: Duration::from_secs(timeout as u64),
    })
}

/// Reads the leading `major.minor` of a version string such as `16.4 (Debian 16.4-1)` or
/// `10.11.14-MariaDB-0+deb12u2`.
fn major_minor(version: &str) -> (i64, i64) {
    let mut parts = version
        .trim()
        .trim_start_matches(['v', 'V'])
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<i64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

async fn server_version(target: &Target) -> Result<ServerVersion, HostError> {
    let work = async {
        match target.scheme {
            Scheme::Postgres => postgres::version(target).await,
            Scheme::Mysql => mysql::version(target).await,
        }
    };
    // The drivers' own connect timeouts do not cover a server that accepts and then stalls.
    match tokio::time::timeout(target.timeout + Duration::from_secs(5), work).await {
        Ok(r) => r,
        Err(_) => Err(target.timed_out()),
    }
}

/// The `db` namespace.
#[export_module]
pub mod db_module {
    use super::*;

    /// Connects to a PostgreSQL or MySQL server with the given credentials and returns
    /// `#{product, version, major, minor}` (`product`: `"postgresql"`, `"mysql"` or
    /// `"mariadb"`). Options: `scheme` (`"postgresql"` | `"mysql"`), `host`, `port` (default
    /// 5432/3306), `database`, `user`, `password` (a Secret), `tls` (`"disable"`, `"prefer"`
    /// (default), `"require"`: encrypt without checking the certificate, as libpq's
    /// `sslmode=require`; `"verify-full"`: check it against `ca_file` or the system's roots),
    /// `ca_file` (PEM), `timeout` (seconds, default 10).
    ///
    /// Errors: kind `auth` (wrong user or password), `not_found` (no such database), `config`
    /// (the server requires TLS and `tls` is `disable`, or the server has no TLS and it is
    /// required), `api` (host unreachable, TLS handshake failed), `timeout`.
    ///
    /// ```rhai
    /// let v = db::version(#{
    ///     scheme: "postgresql", host: "collate.abc123.eu-west-1.rds.amazonaws.com", port: 5432,
    ///     database: "openmetadata_db", user: "openmetadata_user",
    ///     password: secret::env("COLLATE_DB_PASSWORD"), tls: "require",
    /// });
    /// print(`${v.product} ${v.version}`);   // postgresql 16.4
    /// if v.major < 12 { throw "PostgreSQL 12 or newer is required"; }
    /// ```
    #[rhai_fn(return_raw)]
    pub fn version(ctx: NativeCallContext, opts: Map) -> RhaiResult<Map> {
        let host = Host::of(&ctx)?;
        let target = parse_target(&host, &ctx, &opts)?;
        let what = format!("db: connect {} {}", target.scheme_name(), target.shown());
        let v = host.read(&what, server_version(&target))?;
        let mut m = Map::new();
        m.insert("product".into(), v.product.into());
        m.insert("version".into(), v.version.into());
        m.insert("major".into(), v.major.into());
        m.insert("minor".into(), v.minor.into());
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_major_minor_of_server_version_strings() {
        assert_eq!(major_minor("16.4 (Debian 16.4-1.pgdg120+1)"), (16, 4));
        assert_eq!(major_minor("8.0.36"), (8, 0));
        assert_eq!(major_minor("10.11.14-MariaDB-0+deb12u2"), (10, 11));
        assert_eq!(major_minor("v3.7.1"), (3, 7));
        assert_eq!(major_minor("garbage"), (0, 0));
    }

    #[test]
    fn tls_modes_parse_and_reject_unknown() {
        assert_eq!(Tls::parse("require").unwrap(), Tls::Require);
        assert_eq!(Tls::parse("verify-full").unwrap(), Tls::VerifyFull);
        let e = Tls::parse("on").unwrap_err();
        assert!(e.message.contains("`on`"), "{}", e.message);
    }
}
