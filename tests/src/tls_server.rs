//! A TLS server on 127.0.0.1 and an ephemeral port that stands in for an OIDC issuer: it presents
//! the fixture chain of `tests/it/fixtures/tls/` (leaf for `IP:127.0.0.1`, then the intermediate
//! CA; the root is what clients trust through `SSL_CERT_FILE`) and answers every request `404`.
//! It counts connections and completed handshakes.
//!
//! ```ignore
//! let tls = TlsServer::start();
//! let issuer = format!("{}/id/TEST", tls.url()); // https://127.0.0.1:PORT/id/TEST
//! run.env("SSL_CERT_FILE", TlsServer::root_ca_file().to_str().unwrap());
//! assert_eq!(thumbprint, TlsServer::last_presented_sha1());
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha1::{Digest, Sha1};

use crate::loopback::Loopback;

/// The fixture folder.
fn fixtures() -> PathBuf {
    crate::run::root().join("tests/it/fixtures/tls")
}

fn cert(name: &str) -> CertificateDer<'static> {
    let path = fixtures().join(name);
    CertificateDer::from_pem_file(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    handshakes: AtomicU64,
}

/// A running TLS server; stops when dropped.
pub struct TlsServer {
    server: Loopback,
    counters: Arc<Counters>,
}

impl TlsServer {
    /// Starts the server with the fixture chain (leaf, intermediate).
    pub fn start() -> TlsServer {
        let config = TlsServer::config();
        let counters = Arc::new(Counters::default());
        let counters_in = counters.clone();
        let server = Loopback::serve_blocking("tls-server", 0, move |tcp| {
            counters_in.connections.fetch_add(1, Ordering::SeqCst);
            serve(config.clone(), tcp, &counters_in);
        })
        .expect("start the TLS server on 127.0.0.1");
        TlsServer { server, counters }
    }

    /// The server side of the fixture chain (leaf for `IP:127.0.0.1`, intermediate CA), for any
    /// loopback server that speaks TLS; clients trust [`TlsServer::root_ca_file`].
    pub fn config() -> Arc<rustls::ServerConfig> {
        let chain = vec![cert("leaf.pem"), cert("intermediate-ca.pem")];
        let key_path = fixtures().join("leaf.key");
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", key_path.display()));
        // The provider is given explicitly: the test binaries link more than one.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the fixture chain and key");
        Arc::new(config)
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far (a client that refuses the chain completes none).
    pub fn handshakes(&self) -> u64 {
        self.counters.handshakes.load(Ordering::SeqCst)
    }

    /// The fixture files for another TLS server: the chain it presents (leaf, intermediate) and
    /// the leaf's key.
    pub fn chain_files() -> (Vec<PathBuf>, PathBuf) {
        let f = fixtures();
        (
            vec![f.join("leaf.pem"), f.join("intermediate-ca.pem")],
            f.join("leaf.key"),
        )
    }

    /// The root CA of the chain, for `SSL_CERT_FILE`.
    pub fn root_ca_file() -> PathBuf {
        fixtures().join("root-ca.pem")
    }

    /// The lowercase hex SHA-1 of the DER of the last certificate the server presents (the
    /// intermediate CA): the thumbprint an OIDC provider for this issuer gets.
    pub fn last_presented_sha1() -> String {
        Sha1::digest(cert("intermediate-ca.pem").as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One connection: the handshake, then one request read and answered `404`, then close.
fn serve(config: Arc<rustls::ServerConfig>, mut tcp: TcpStream, counters: &Counters) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(mut conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            return;
        }
    }
    counters.handshakes.fetch_add(1, Ordering::SeqCst);
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ =
        tls.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl x509 -in intermediate-ca.pem -noout -fingerprint -sha1` (see the fixture README).
    const OPENSSL_SHA1: &str = "94a49878766d2392e14311b8e9be06cf87390dd9";

    #[test]
    fn the_thumbprint_matches_openssl() {
        assert_eq!(TlsServer::last_presented_sha1(), OPENSSL_SHA1);
    }

    #[test]
    fn a_client_trusting_the_root_completes_a_handshake_and_sees_the_chain() {
        let server = TlsServer::start();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert("root-ca.pem")).expect("root");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut tcp = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        let _ = tls.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let chain = conn.peer_certificates().unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], cert("intermediate-ca.pem"));
        assert_eq!(server.handshakes(), 1);
    }
}
