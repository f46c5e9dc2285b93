//! TLS for the database drivers: libpq's `sslmode=require` (encrypt, do not check the
//! certificate) as a rustls verifier, the rustls configuration for PostgreSQL, and a connector
//! wrapper that notes whether the TLS handshake was started (how a server that declined TLS is
//! told apart, without reading error text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Target, Tls};
use crate::error::HostError;

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
pub(super) fn pg_tls_config(target: &Target) -> Result<rustls::ClientConfig, HostError> {
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

/// A PostgreSQL TLS connector that records in `started` when a handshake begins. tokio-postgres
/// calls the connector only after the server agreed to TLS (`src/connect_tls.rs`).
#[derive(Clone)]
pub(super) struct NotesHandshake<T> {
    pub(super) inner: T,
    pub(super) started: Arc<AtomicBool>,
}

impl<S, T: tokio_postgres::tls::MakeTlsConnect<S>> tokio_postgres::tls::MakeTlsConnect<S>
    for NotesHandshake<T>
{
    type Stream = T::Stream;
    type TlsConnect = NotesHandshake<T::TlsConnect>;
    type Error = T::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(NotesHandshake {
            inner: self.inner.make_tls_connect(domain)?,
            started: self.started.clone(),
        })
    }
}

impl<S, T: tokio_postgres::tls::TlsConnect<S>> tokio_postgres::tls::TlsConnect<S>
    for NotesHandshake<T>
{
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: S) -> Self::Future {
        self.started.store(true, Ordering::Relaxed);
        self.inner.connect(stream)
    }
}
