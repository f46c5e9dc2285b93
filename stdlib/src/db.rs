//! The `db` namespace: opens one real connection to the Collate database (PostgreSQL or MySQL)
//! with the credentials the recipes use, and reports the server's product and version. Used by
//! preflight; every failure (authentication, TLS, unreachable host, missing database) is a
//! distinct error kind with a hint, and the password appears in no message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rhai::Map;
use rhai::plugin::*;

use crate::error::{ErrorKind, HostError, RhaiResult};
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

// ---------------------------------------------------------------------------------------------
// TLS

/// libpq's `sslmode=require`: the connection is encrypted, the certificate is not checked (RDS
/// certificates are signed by Amazon's own CA). The handshake signature is still verified.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for PostgreSQL.
fn pg_tls_config(target: &Target) -> Result<rustls::ClientConfig, HostError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::io(format!("cannot set up TLS: {e}")))?;
    if target.tls != Tls::VerifyFull {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &target.ca_file {
        Some(path) => {
            use rustls::pki_types::pem::PemObject;
            let shown = crate::host::display_path(path);
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| HostError::io(format!("cannot read CA file `{shown}`: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| HostError::io(format!("cannot read CA file `{shown}`: {e}")))?;
                roots.add(cert).map_err(|e| {
                    HostError::input(format!("CA file `{shown}` holds a bad certificate: {e}"))
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The errors of a connection attempt, in the terms a user acts on.
fn unreachable(target: &Target, cause: &str) -> HostError {
    HostError::api(format!(
        "cannot reach the {} server at `{}:{}`: {cause}",
        target.scheme_name(),
        target.host,
        target.port
    ))
    .with_hint(
        "check `database.host` and `database.port`, the security groups, and that the database \
         accepts connections from where collate-run runs",
    )
}

fn timed_out(target: &Target) -> HostError {
    HostError::new(
        ErrorKind::Timeout,
        format!(
            "no answer from the {} server at `{}:{}` within {} s",
            target.scheme_name(),
            target.host,
            target.port,
            target.timeout.as_secs()
        ),
    )
    .with_hint("a firewall or security group may drop the packets; check the host and port")
}

fn auth_failed(target: &Target, detail: &str) -> HostError {
    HostError::new(
        ErrorKind::Auth,
        format!(
            "authentication failed for user `{}` on `{}`: {detail}",
            target.user,
            target.shown()
        ),
    )
    .with_hint(format!(
        "check `database.user` and the password (it comes from {})",
        target.password.source()
    ))
}

fn no_database(target: &Target) -> HostError {
    HostError::not_found(format!(
        "database `{}` does not exist on `{}:{}`",
        target.database, target.host, target.port
    ))
    .with_hint(format!(
        "create it (`CREATE DATABASE {} ...` owned by `{}`) or fix `database.name`",
        target.database, target.user
    ))
}

fn tls_required(target: &Target, detail: &str) -> HostError {
    HostError::config(format!(
        "the server at `{}:{}` requires TLS, and `tls` is `disable`: {detail}",
        target.host, target.port
    ))
    .with_hint("set `tls: require` (RDS enforces TLS when `rds.force_ssl` is on)")
}

fn tls_unsupported(target: &Target) -> HostError {
    HostError::config(format!(
        "the server at `{}:{}` does not offer TLS, and `tls` is `{}`",
        target.host,
        target.port,
        if target.tls == Tls::VerifyFull {
            "verify-full"
        } else {
            "require"
        }
    ))
    .with_hint("enable TLS on the server, or set `tls: prefer` to allow a plain connection")
}

fn tls_failed(target: &Target, detail: &str) -> HostError {
    HostError::api(format!(
        "TLS with `{}:{}` failed: {detail}",
        target.host, target.port
    ))
    .with_hint(
        "with `tls: verify-full` give the server's CA bundle as `ca_file` (for RDS: \
         global-bundle.pem), or use `tls: require` to encrypt without checking the certificate",
    )
}

/// The first `io::Error` in an error's source chain.
fn io_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    crate::error::causes(e).find_map(|err| err.downcast_ref::<std::io::Error>())
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

fn pg_error(target: &Target, e: &tokio_postgres::Error) -> HostError {
    use tokio_postgres::error::SqlState;
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let msg = db.message();
        if *code == SqlState::INVALID_PASSWORD {
            return auth_failed(target, msg);
        }
        if *code == SqlState::INVALID_CATALOG_NAME {
            return no_database(target);
        }
        if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            if msg.contains("no encryption") && target.tls == Tls::Disable {
                return tls_required(target, msg);
            }
            return auth_failed(target, msg);
        }
        return HostError::api(format!(
            "the PostgreSQL server at `{}` refused the connection: {msg} (SQLSTATE {})",
            target.shown(),
            code.code()
        ));
    }
    let text = crate::error::error_chain(e);
    if text.contains("server does not support TLS") {
        return tls_unsupported(target);
    }
    if text.contains("TLS") || text.contains("certificate") {
        return tls_failed(target, &text);
    }
    if text.contains("timed out") {
        return timed_out(target);
    }
    if let Some(io) = io_cause(e) {
        return unreachable(target, &io.to_string());
    }
    HostError::api(format!(
        "cannot connect to PostgreSQL at `{}`: {text}",
        target.shown()
    ))
}

async fn pg_version(target: &Target) -> Result<ServerVersion, HostError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .user(&target.user)
        .password(target.password.expose())
        .dbname(&target.database)
        .application_name("collate-run preflight")
        .connect_timeout(target.timeout)
        .ssl_mode(match target.tls {
            Tls::Disable => tokio_postgres::config::SslMode::Disable,
            Tls::Prefer => tokio_postgres::config::SslMode::Prefer,
            Tls::Require | Tls::VerifyFull => tokio_postgres::config::SslMode::Require,
        });
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(pg_tls_config(target)?);
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| pg_error(target, &e))?;
    let driver = tokio::spawn(connection);
    let query = async {
        let text: String = client
            .query_one("SHOW server_version", &[])
            .await?
            .try_get(0)?;
        let num: String = client
            .query_one("SHOW server_version_num", &[])
            .await?
            .try_get(0)?;
        Ok::<_, tokio_postgres::Error>((text, num))
    }
    .await;
    drop(client);
    let _ = driver.await;
    let (text, num) = query.map_err(|e| {
        HostError::api(format!(
            "cannot read the PostgreSQL version at `{}`: {e}",
            target.shown()
        ))
    })?;
    let version = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    // `server_version_num` is MMmmpp since 10 (160004), MMmmpp with a two-part major before.
    let (major, minor) = match num.trim().parse::<i64>() {
        Ok(n) if n >= 100_000 => (n / 10_000, n % 10_000),
        Ok(n) => (n / 10_000, (n / 100) % 100),
        Err(_) => major_minor(&version),
    };
    Ok(ServerVersion {
        product: "postgresql",
        version,
        major,
        minor,
    })
}

// ---------------------------------------------------------------------------------------------
// MySQL

/// MySQL and MariaDB server error codes (`ER_*`) that mean something to the user.
mod mysql_code {
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
}

fn mysql_error(target: &Target, e: &mysql_async::Error) -> HostError {
    use mysql_async::{DriverError, Error, IoError};
    match e {
        Error::Server(s) => match s.code {
            mysql_code::ACCESS_DENIED | mysql_code::DBACCESS_DENIED => {
                auth_failed(target, &s.message)
            }
            mysql_code::BAD_DB => no_database(target),
            mysql_code::SECURE_TRANSPORT_REQUIRED => tls_required(target, &s.message),
            code => HostError::api(format!(
                "the MySQL server at `{}` refused the connection: {} (error {code})",
                target.shown(),
                s.message
            )),
        },
        Error::Driver(DriverError::NoClientSslFlagFromServer) => tls_unsupported(target),
        Error::Io(IoError::Tls(t)) => tls_failed(target, &t.to_string()),
        Error::Io(IoError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => {
            timed_out(target)
        }
        Error::Io(IoError::Io(io)) => {
            let text = crate::error::error_chain(io);
            if text.contains("certificate") || text.contains("TLS") {
                tls_failed(target, &text)
            } else {
                unreachable(target, &text)
            }
        }
        other => HostError::api(format!(
            "cannot connect to MySQL at `{}`: {}",
            target.shown(),
            crate::error::error_chain(other)
        )),
    }
}

async fn mysql_connect(target: &Target, tls: bool) -> Result<String, mysql_async::Error> {
    use mysql_async::prelude::Queryable;
    let ssl = tls.then(|| {
        let opts = mysql_async::SslOpts::default();
        if target.tls == Tls::VerifyFull {
            match &target.ca_file {
                Some(ca) => opts.with_root_certs(vec![ca.clone().into()]),
                None => opts,
            }
        } else {
            opts.with_danger_accept_invalid_certs(true)
                .with_danger_skip_domain_validation(true)
        }
    });
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(target.host.clone())
        .tcp_port(target.port)
        .user(Some(target.user.clone()))
        .pass(Some(target.password.expose().to_string()))
        .db_name(Some(target.database.clone()))
        .prefer_socket(false)
        .ssl_opts(ssl);
    let mut conn = mysql_async::Conn::new(opts).await?;
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    let _ = conn.disconnect().await;
    Ok(version.unwrap_or_default())
}

async fn mysql_version(target: &Target) -> Result<ServerVersion, HostError> {
    let text =
        match mysql_connect(target, target.tls != Tls::Disable).await {
            // `prefer`: a server without TLS is fine, retry in plain text.
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if target.tls == Tls::Prefer => mysql_connect(target, false).await,
            other => other,
        }
        .map_err(|e| mysql_error(target, &e))?;
    let (major, minor) = major_minor(&text);
    let product = if text.to_ascii_lowercase().contains("mariadb") {
        "mariadb"
    } else {
        "mysql"
    };
    // MariaDB 10.x reports `5.5.5-10.11.6-MariaDB` over old clients; keep the real version.
    let version = text
        .strip_prefix("5.5.5-")
        .unwrap_or(&text)
        .split('-')
        .next()
        .unwrap_or_default()
        .to_string();
    let (major, minor) = if text.starts_with("5.5.5-") {
        major_minor(&version)
    } else {
        (major, minor)
    };
    Ok(ServerVersion {
        product,
        version,
        major,
        minor,
    })
}

async fn server_version(target: &Target) -> Result<ServerVersion, HostError> {
    let work = async {
        match target.scheme {
            Scheme::Postgres => pg_version(target).await,
            Scheme::Mysql => mysql_version(target).await,
        }
    };
    // The drivers' own connect timeouts do not cover a server that accepts and then stalls.
    match tokio::time::timeout(target.timeout + Duration::from_secs(5), work).await {
        Ok(r) => r,
        Err(_) => Err(timed_out(target)),
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
