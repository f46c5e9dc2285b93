//! The thumbprint of an OIDC issuer as eksctl computes it: the SHA-1 of the last certificate of
//! the TLS chain the issuer's host presents (verified against the system's roots).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use sha1::{Digest, Sha1};

/// Connects to `host:443` and returns the lowercase hex SHA-1 of the last certificate of the
/// chain it presents. Blocking; call it from `spawn_blocking`.
pub fn of_host(host: &str) -> Result<String, String> {
    let timeout = Duration::from_secs(5);
    let addr = (host, 443)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve `{host}`"))?;
    let tcp = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to `{host}:443`: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();

    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        return Err("no system root certificates to verify the issuer with".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("`{host}` is not a valid host name: {e}"))?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A request completes the handshake; the answer does not matter.
    tls.write_all(
        format!("HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("TLS handshake with `{host}` failed: {e}"))?;
    let mut buf = [0u8; 1];
    let _ = tls.read(&mut buf);
    let certs = tls
        .conn
        .peer_certificates()
        .ok_or_else(|| format!("`{host}` presented no certificate"))?;
    let last = certs
        .last()
        .ok_or_else(|| format!("`{host}` presented no certificate"))?;
    Ok(hex(&Sha1::digest(last.as_ref())))
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
    #[test]
    fn hex_and_validation() {
        use sha1::Digest;
        let h = super::hex(&sha1::Sha1::digest(b"abc"));
        assert_eq!(h, "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert!(super::is_valid(&h));
        assert!(!super::is_valid("xyz"));
    }
}
