//! The MySQL/MariaDB side of `db::version`: connects with mysql_async over rustls and reads
//! `SELECT VERSION()`.

use super::classify::{self, Failure};
use super::{ServerVersion, Target, Tls, major_minor};
use crate::error::HostError;

/// The error for a failed connection attempt.
fn connect_error(target: &Target, e: mysql_async::Error) -> HostError {
    let failure = classify::mysql(&e);
    let answer = match &e {
        mysql_async::Error::Server(s) => Some(match failure {
            Failure::Refused => format!("{} (error {})", s.message, s.code),
            _ => s.message.clone(),
        }),
        _ => None,
    };
    target.error(failure, answer.as_deref(), e)
}

async fn connect(target: &Target, tls: bool) -> Result<String, mysql_async::Error> {
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

pub(super) async fn version(target: &Target) -> Result<ServerVersion, HostError> {
    let text =
        match connect(target, target.tls != Tls::Disable).await {
            // `prefer`: a server without TLS is fine, retry in plain text.
            Err(mysql_async::Error::Driver(
                mysql_async::DriverError::NoClientSslFlagFromServer,
            )) if target.tls == Tls::Prefer => connect(target, false).await,
            other => other,
        }
        .map_err(|e| connect_error(target, e))?;
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
