//! What a failed connection attempt means for the user, decided on the drivers' typed errors —
//! SQLSTATE and the reporting server routine (PostgreSQL), server error codes (MySQL/MariaDB),
//! `io::ErrorKind` and a rustls error in the source chain — never on their text; and the error
//! each meaning becomes.

use super::{Target, Tls};
use crate::error::{ErrorKind, HostError, find_cause, root_cause};

/// The meanings of a failed connection attempt that ask for different actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Wrong user or password.
    Auth,
    /// No such database.
    NoDatabase,
    /// The server refuses a connection without TLS, and `tls` is `disable`.
    TlsRequired,
    /// The server offers no TLS, and `tls` requires it.
    TlsUnsupported,
    /// The TLS handshake failed (certificate, protocol).
    TlsFailed,
    /// No answer in time.
    TimedOut,
    /// The host cannot be reached (refused, reset, no route).
    Unreachable,
    /// The server answered with another error.
    Refused,
    /// Anything else the driver reports.
    Other,
}

/// PostgreSQL's answer: SQLSTATE `28P01` is a wrong password, `3D000` a missing database.
/// `28000` (invalid authorization) raised by `ClientAuthentication` is pg_hba.conf refusing the
/// connection — with `tls: disable`, because it came unencrypted (postgres
/// `src/backend/libpq/auth.c`, `ClientAuthentication`: "no pg_hba.conf entry for host ..., no
/// encryption" and "pg_hba.conf rejects connection ..."); `28000` from anywhere else (a role
/// that may not log in, raised by `InitializeSessionUserId`) is an authentication failure. The
/// routine name is not translated; the message is (`lc_messages`).
pub(super) fn postgres_answer(
    code: &tokio_postgres::error::SqlState,
    routine: Option<&str>,
    tls: Tls,
) -> Failure {
    use tokio_postgres::error::SqlState;
    if *code == SqlState::INVALID_PASSWORD {
        Failure::Auth
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        Failure::NoDatabase
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        if tls == Tls::Disable && routine == Some("ClientAuthentication") {
            Failure::TlsRequired
        } else {
            Failure::Auth
        }
    } else {
        Failure::Refused
    }
}

/// A PostgreSQL connection error. `handshake` says whether the TLS handshake was started: with
/// `tls` `require` or `verify-full`, an error before it that is neither the server's answer nor
/// an I/O error is tokio-postgres refusing to go on in plain text because the server declined
/// TLS (tokio-postgres `src/connect_tls.rs`: "server does not support TLS").
pub(super) fn postgres(e: &tokio_postgres::Error, tls: Tls, handshake: bool) -> Failure {
    if let Some(db) = e.as_db_error() {
        return postgres_answer(db.code(), db.routine(), tls);
    }
    transport(e).unwrap_or(
        if matches!(tls, Tls::Require | Tls::VerifyFull) && !handshake {
            Failure::TlsUnsupported
        } else {
            Failure::Other
        },
    )
}

/// MySQL and MariaDB server error codes (`ER_*`) that mean something to the user.
pub(super) mod mysql_code {
    pub const DBACCESS_DENIED: u16 = 1044;
    pub const ACCESS_DENIED: u16 = 1045;
    pub const BAD_DB: u16 = 1049;
    pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
}

/// A MySQL or MariaDB server error code.
pub(super) fn mysql_answer(code: u16) -> Failure {
    match code {
        mysql_code::ACCESS_DENIED | mysql_code::DBACCESS_DENIED => Failure::Auth,
        mysql_code::BAD_DB => Failure::NoDatabase,
        mysql_code::SECURE_TRANSPORT_REQUIRED => Failure::TlsRequired,
        _ => Failure::Refused,
    }
}

/// A MySQL connection error.
pub(super) fn mysql(e: &mysql_async::Error) -> Failure {
    use mysql_async::{DriverError, Error, IoError};
    match e {
        Error::Server(s) => mysql_answer(s.code),
        Error::Driver(DriverError::NoClientSslFlagFromServer) => Failure::TlsUnsupported,
        Error::Io(IoError::Tls(_)) => Failure::TlsFailed,
        other => transport(other).unwrap_or(Failure::Other),
    }
}

/// A failure below the database protocol: a rustls error anywhere in the chain is a failed
/// handshake; otherwise an `io::Error` is a timeout or an unreachable host.
fn transport(e: &(dyn std::error::Error + 'static)) -> Option<Failure> {
    if find_cause::<rustls::Error>(e).is_some() {
        return Some(Failure::TlsFailed);
    }
    let io = find_cause::<std::io::Error>(e)?;
    Some(if io.kind() == std::io::ErrorKind::TimedOut {
        Failure::TimedOut
    } else {
        Failure::Unreachable
    })
}

impl Target {
    /// The error for `failure`, keeping the driver's error as its source. `answer` is the
    /// server's own message, when it answered.
    pub(super) fn error<E>(&self, failure: Failure, answer: Option<&str>, e: E) -> HostError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let answer = answer.map(|m| format!(": {m}")).unwrap_or_default();
        let err = match failure {
            Failure::Auth => HostError::new(
                ErrorKind::Auth,
                format!(
                    "authentication failed for user `{}` on `{}`{answer}",
                    self.user,
                    self.shown()
                ),
            )
            .with_hint(format!(
                "check `database.user` and the password (it comes from {})",
                self.password.source()
            )),
            Failure::NoDatabase => HostError::not_found(format!(
                "database `{}` does not exist on `{}:{}`",
                self.database, self.host, self.port
            ))
            .with_hint(format!(
                "create it (`CREATE DATABASE {} ...` owned by `{}`) or fix `database.name`",
                self.database, self.user
            )),
            Failure::TlsRequired => HostError::config(format!(
                "the server at `{}:{}` requires TLS, and `tls` is `disable`{answer}",
                self.host, self.port
            ))
            .with_hint("set `tls: require` (RDS enforces TLS when `rds.force_ssl` is on)"),
            Failure::TlsUnsupported => HostError::config(format!(
                "the server at `{}:{}` does not offer TLS, and `tls` is `{}`",
                self.host,
                self.port,
                if self.tls == Tls::VerifyFull {
                    "verify-full"
                } else {
                    "require"
                }
            ))
            .with_hint("enable TLS on the server, or set `tls: prefer` to allow a plain connection"),
            Failure::TlsFailed => HostError::api(format!(
                "TLS with `{}:{}` failed: {}",
                self.host,
                self.port,
                root_cause(&e)
            ))
            .with_hint(
                "with `tls: verify-full` give the server's CA bundle as `ca_file` (for RDS: \
                 global-bundle.pem), or use `tls: require` to encrypt without checking the certificate",
            ),
            Failure::TimedOut => self.timed_out(),
            Failure::Unreachable => HostError::api(format!(
                "cannot reach the {} server at `{}:{}`: {}",
                self.scheme_name(),
                self.host,
                self.port,
                root_cause(&e)
            ))
            .with_hint(
                "check `database.host` and `database.port`, the security groups, and that the database \
                 accepts connections from where collate-run runs",
            ),
            Failure::Refused => HostError::api(format!(
                "the {} server at `{}` refused the connection{answer}",
                self.scheme_name(),
                self.shown()
            )),
            Failure::Other => HostError::api(format!(
                "cannot connect to {} at `{}`",
                self.scheme_name(),
                self.shown()
            )),
        };
        err.with_source(e)
    }

    /// No answer within the timeout.
    pub(super) fn timed_out(&self) -> HostError {
        HostError::new(
            ErrorKind::Timeout,
            format!(
                "no answer from the {} server at `{}:{}` within {} s",
                self.scheme_name(),
                self.host,
                self.port,
                self.timeout.as_secs()
            ),
        )
        .with_hint("a firewall or security group may drop the packets; check the host and port")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::error::SqlState;

    #[test]
    fn postgres_pg_hba_refusal_is_told_from_a_role_refusal_by_the_routine_not_the_text() {
        let code = SqlState::INVALID_AUTHORIZATION_SPECIFICATION;
        // pg_hba.conf refusing an unencrypted connection.
        assert_eq!(
            postgres_answer(&code, Some("ClientAuthentication"), Tls::Disable),
            Failure::TlsRequired
        );
        // The same code from the role check: an authentication failure, whatever the message
        // says (the old text match took `role "no encryption" is not permitted to log in` for a
        // TLS refusal).
        assert_eq!(
            postgres_answer(&code, Some("InitializeSessionUserId"), Tls::Disable),
            Failure::Auth
        );
        // Encrypted, a pg_hba refusal is not about TLS.
        assert_eq!(
            postgres_answer(&code, Some("ClientAuthentication"), Tls::Require),
            Failure::Auth
        );
        assert_eq!(
            postgres_answer(&SqlState::INVALID_PASSWORD, None, Tls::Disable),
            Failure::Auth
        );
        assert_eq!(
            postgres_answer(&SqlState::INVALID_CATALOG_NAME, None, Tls::Prefer),
            Failure::NoDatabase
        );
        assert_eq!(
            postgres_answer(&SqlState::TOO_MANY_CONNECTIONS, None, Tls::Prefer),
            Failure::Refused
        );
    }

    #[test]
    fn transport_failures_are_told_by_type_not_text() {
        // An I/O error whose text mentions TLS and certificates is still an unreachable host
        // (the old text match called it a TLS failure).
        let io = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "peer reset while sending the TLS certificate",
        );
        assert_eq!(transport(&io), Some(Failure::Unreachable));
        // A rustls error inside an io::Error (how tokio-postgres-rustls reports a handshake).
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(transport(&tls), Some(Failure::TlsFailed));
        // A timeout is the io kind, not "timed out" in a message.
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline");
        assert_eq!(transport(&slow), Some(Failure::TimedOut));
        let said = std::io::Error::other("timed out");
        assert_eq!(transport(&said), Some(Failure::Unreachable));
    }

    #[test]
    fn mysql_codes_decide() {
        assert_eq!(mysql_answer(1045), Failure::Auth);
        assert_eq!(mysql_answer(1044), Failure::Auth);
        assert_eq!(mysql_answer(1049), Failure::NoDatabase);
        assert_eq!(mysql_answer(3159), Failure::TlsRequired);
        assert_eq!(mysql_answer(1040), Failure::Refused);
    }
}
