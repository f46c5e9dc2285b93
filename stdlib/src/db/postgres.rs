//! The PostgreSQL side of `db::version`: connects with tokio-postgres over rustls and reads
//! `server_version` and `server_version_num`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::classify::{self, Failure};
use super::tls::{NotesHandshake, pg_tls_config};
use super::{ServerVersion, Target, Tls, major_minor};
use crate::error::HostError;

/// The error for a failed connection attempt; `handshake`: whether TLS was started.
fn connect_error(target: &Target, e: tokio_postgres::Error, handshake: bool) -> HostError {
    let failure = classify::postgres(&e, target.tls, handshake);
    let answer = e.as_db_error().map(|db| match failure {
        Failure::Refused => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        _ => db.message().to_string(),
    });
    target.error(failure, answer.as_deref(), e)
}

pub(super) async fn version(target: &Target) -> Result<ServerVersion, HostError> {
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
    let started = Arc::new(AtomicBool::new(false));
    let tls = NotesHandshake {
        inner: tokio_postgres_rustls::MakeRustlsConnect::new(pg_tls_config(target)?),
        started: started.clone(),
    };
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| connect_error(target, e, started.load(Ordering::Relaxed)))?;
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
            "cannot read the PostgreSQL version at `{}`",
            target.shown()
        ))
        .with_source(e)
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
