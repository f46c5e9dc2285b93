//! The thumbprint of an OIDC issuer as eksctl computes it: the SHA-1 of the last certificate of
//! the TLS chain the issuer's host presents (verified against the system's roots, which
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` replace).

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

/// Why no thumbprint could be computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The host could not be resolved or reached, or did not answer in time (no network path
    /// to it, as in tests).
    Unreachable(String),
    /// The host answered, but its chain could not be verified (an unknown CA, a wrong name, no
    /// TLS at all) or there are no roots to verify it with: its certificates cannot be trusted.
    Untrusted(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Unreachable(why) | Failure::Untrusted(why) => f.write_str(why),
        }
    }
}

/// `host`, `host:port`, `1.2.3.4:port`, `[::1]:port` → host (no brackets) and port (443 when
/// none is given).
pub fn host_port(authority: &str) -> Result<(String, u16), String> {
    let bad = || format!("`{authority}` is not a host with an optional port");
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, port(p)?),
            None if after.is_empty() => (host, 443),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            // A bare IPv6 address has more than one colon and no port.
            Some((host, p)) if !host.contains(':') => (host, port(p)?),
            _ => (authority, 443),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

/// The thumbprint of the issuer `host_path` (`oidc.eks.REGION.amazonaws.com/id/X`,
/// `127.0.0.1:8443/id/X`): connects to its host (port 443 unless the issuer names one),
/// completes a TLS handshake verified with the system's roots, and returns the lowercase hex
/// SHA-1 of the last certificate of the presented chain. Blocking; call it from
/// `spawn_blocking`.
pub fn of_issuer(host_path: &str) -> Result<String, Failure> {
    let authority = host_path.split('/').next().unwrap_or(host_path);
    let (host, port) = host_port(authority).map_err(Failure::Unreachable)?;
    let timeout = Duration::from_secs(5);
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| Failure::Unreachable(format!("cannot resolve `{host}`: {e}")))?
        .next()
        .ok_or_else(|| Failure::Unreachable(format!("cannot resolve `{host}`")))?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| Failure::Unreachable(format!("cannot connect to `{authority}`: {e}")))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();

    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err(Failure::Untrusted(
            "no root certificates to verify it with (system store empty, or `SSL_CERT_FILE` holds none)"
                .into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::Untrusted(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // An IP address is verified against the certificate's IP subjectAltNames.
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| Failure::Unreachable(format!("`{host}` is not a valid host name: {e}")))?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| Failure::Untrusted(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| {
            let tls = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>());
            match tls {
                Some(tls) => Failure::Untrusted(format!(
                    "the TLS handshake with `{authority}` failed: {tls}"
                )),
                None => Failure::Unreachable(format!("no TLS handshake with `{authority}`: {e}")),
            }
        })?;
    }
    let last = conn
        .peer_certificates()
        .and_then(|certs| certs.last())
        .map(|cert| hex(&Sha1::digest(cert.as_ref())))
        .ok_or_else(|| Failure::Untrusted(format!("`{authority}` presented no certificate")))?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    Ok(last)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `true` for a SHA-1 thumbprint as IAM takes it (40 hex digits).
pub fn is_valid(t: &str) -> bool {
    t.len() == 40 && t.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_validation() {
        let h = hex(&Sha1::digest(b"abc"));
        assert_eq!(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(is_valid(&h));
        assert!(!is_valid("xyz"));
    }

    #[test]
    fn the_port_comes_from_the_issuer() {
        let hp = |a: &str| host_port(a);
        assert_eq!(
            hp("oidc.eks.eu-west-1.amazonaws.com"),
            Ok(("oidc.eks.eu-west-1.amazonaws.com".into(), 443))
        );
        assert_eq!(hp("127.0.0.1:8443"), Ok(("127.0.0.1".into(), 8443)));
        assert_eq!(hp("[::1]:8443"), Ok(("::1".into(), 8443)));
        assert_eq!(hp("[::1]"), Ok(("::1".into(), 443)));
        assert_eq!(hp("::1"), Ok(("::1".into(), 443)));
        for bad in [
            "host:",
            "host:abc",
            "host:0",
            "host:70000",
            ":443",
            "[::1",
            "[::1]x",
        ] {
            assert!(hp(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_closed_port_is_unreachable_not_untrusted() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        match of_issuer(&format!("127.0.0.1:{port}/id/X")) {
            Err(Failure::Unreachable(why)) => assert!(why.contains("cannot connect"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
