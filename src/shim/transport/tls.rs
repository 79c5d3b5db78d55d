//! TLS: a rustls (ring) server configuration whose certificate is read at every handshake from a slot that
//! `certificate::keeper` refills, and a client-certificate request that proves key possession but leaves the
//! chain check to `access::front_proxy`, per request (so a foreign certificate gets 401, not a TLS alert).

use std::sync::{Arc, RwLock};

use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    DigitallySignedStruct, DistinguishedName, Error as TlsError, ServerConfig, SignatureScheme,
};

/// Why a serving certificate and key cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertLoadError {
    #[error("failed to read the serving certificate's PEM")]
    ReadCertificate(#[source] pem::Error),
    #[error("the serving certificate's PEM holds no certificate")]
    NoCertificate,
    #[error("failed to read the serving key's PEM")]
    ReadKey(#[source] pem::Error),
    #[error("failed to load the serving key")]
    LoadKey(#[source] TlsError),
    #[error("the serving certificate and key do not match")]
    Mismatch(#[source] TlsError),
}

/// Why the TLS server configuration cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("failed to configure TLS 1.2 and 1.3 with ring")]
pub struct TlsConfigError(#[source] TlsError);

/// The serving certificate of the moment; empty until the first one is loaded (handshakes fail meanwhile).
#[derive(Debug, Default)]
pub struct CertSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertSlot {
    /// Serves `cert_pem` (leaf first, then its chain) with `key_pem` from the next handshake on.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<(), CertLoadError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(CertLoadError::ReadCertificate)?;
        if chain.is_empty() {
            return Err(CertLoadError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(CertLoadError::ReadKey)?;
        let key = default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(CertLoadError::LoadKey)?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match().map_err(CertLoadError::Mismatch)?;
        *self.current.write().expect("cert slot") = Some(Arc::new(certified));
        Ok(())
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().expect("cert slot").clone()
    }
}

/// Asks every client for a certificate and checks that it holds the certificate's key; whether the certificate
/// is one to trust is decided per request (`access::front_proxy`), like Go's `RequestClientCert` with the API server's
/// request-header authenticator.
#[derive(Debug)]
struct RequestClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequestClientCert {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    /// No hints: Go clients then send their certificate whatever CA issued it.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, TlsError> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The server configuration: TLS 1.2 and 1.3 with ring, HTTP/2 and HTTP/1.1, the certificate from `slot`.
pub fn server_config(slot: Arc<CertSlot>) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(default_provider());
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError)?
        .with_client_cert_verifier(Arc::new(RequestClientCert { provider }))
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shim::certificate::generated::{issue_serving, new_ca, serving_names};

    #[test]
    fn certificates_load_and_mismatches_are_refused() {
        let now = time::OffsetDateTime::now_utc();
        let ca = new_ca(now).unwrap();
        let names = serving_names("claimsync", "ns");
        let a = issue_serving(&ca, &names, now).unwrap();
        let b = issue_serving(&ca, &names, now).unwrap();
        let slot = CertSlot::default();
        slot.load(&a.cert, &a.key).unwrap();
        let err = slot.load(&a.cert, &b.key).unwrap_err();
        assert!(err.to_string().contains("do not match"), "{err}");
        assert!(slot.load("", &a.key).is_err());
        assert!(server_config(Arc::new(slot)).is_ok());
    }
}
