//! rustls configurations for both ends: TLS 1.3 only, ALPN `h2`, the ring provider.
//!
//! - The **server** (controller) verifies any client certificate against the fleet CA,
//!   and also lets clients without one finish the handshake: enrollment (an agent that
//!   has only a join token) and API-token operators need that. What each connection may
//!   do is then decided per request from [`super::TlsConnectInfo`]; a connection with no
//!   certificate gets nothing that needs one.
//! - The **client** (agent, CLI) verifies the server against the fleet CA *and* requires
//!   the controller identity in it, so an agent's certificate, also signed by the CA,
//!   cannot pose as the controller.
//!
//! Both ends' own certificates sit behind [`SwappableCert`], so a renewed certificate
//! is used from the next handshake on without a restart.
//!
//! TLS sessions are never resumed, at either end: a resumed TLS 1.3 session carries the
//! client certificate of the session it resumes, so a renewed, expired or revoked
//! certificate would go on being accepted. Every connection is a full handshake.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use super::identity::{Identity, PeerCertificate};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA could not be used as a trust anchor.
    #[error("the CA certificate cannot be used to verify peers: {0}")]
    Verifier(String),
}

/// The crypto provider every Drover TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM file into a string, with an error naming the file.
pub fn read_pem_file(path: &Path) -> Result<String, TlsConfigError> {
    std::fs::read_to_string(path).map_err(|source| TlsConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The trust anchors: the fleet CA certificate(s) in `ca_pem`.
pub fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| TlsConfigError::Pem(format!("CA certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TlsConfigError::Pem(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsConfigError::Pem(
            "the CA file holds no certificate".to_owned(),
        ));
    }
    Ok(roots)
}

/// Builds a rustls certified key from PEM certificate chain and private key.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsConfigError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsConfigError::Pem(
            "the certificate file holds no certificate".to_owned(),
        ));
    }
    // The key's own error text never includes key material.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsConfigError::Pem(format!("private key: {e}")))?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsConfigError::Rustls)?;
    Ok(Arc::new(CertifiedKey::new(chain, key)))
}

/// A certificate and key that can be replaced while connections keep using the old one;
/// new handshakes pick up the new one.
#[derive(Clone, Debug)]
pub struct SwappableCert {
    current: Arc<RwLock<Arc<CertifiedKey>>>,
}

impl SwappableCert {
    /// Starts with `key`.
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        Self {
            current: Arc::new(RwLock::new(key)),
        }
    }

    /// From PEM strings.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsConfigError> {
        Ok(Self::new(certified_key(cert_pem, key_pem)?))
    }

    /// Replaces the certificate for every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }

    /// The certificate in use now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// What the current leaf certificate says (identity, serial, expiry).
    pub fn peer_certificate(&self) -> Option<PeerCertificate> {
        let key = self.current();
        key.end_entity_cert()
            .ok()
            .and_then(|c| PeerCertificate::parse(c).ok())
    }
}

impl ResolvesClientCert for SwappableCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The controller's server configuration: TLS 1.3, `h2`, client certificates verified
/// against `ca_pem` when presented.
pub fn server_config(
    ca_pem: &str,
    cert: SwappableCert,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"h2".to_vec()];
    // No resumption: neither tickets nor a session cache (see the module docs).
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// A client configuration that trusts only a controller certified by `ca_pem`, and
/// presents `cert` when given.
pub fn client_config(
    ca_pem: &str,
    cert: Option<SwappableCert>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(ca_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControllerVerifier { inner }));
    let mut config = match cert {
        Some(cert) => builder.with_client_cert_resolver(Arc::new(cert)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Verifies the server's chain against the fleet CA (standard WebPKI checks, including
/// expiry), then requires the controller identity in the certificate itself.
#[derive(Debug)]
struct ControllerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ControllerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let peer = PeerCertificate::parse(end_entity).map_err(rustls::Error::General)?;
        match peer.identity {
            Some(Identity::Controller) => Ok(verified),
            Some(other) => Err(rustls::Error::General(format!(
                "the server presented a certificate for {other}, not the controller"
            ))),
            None => Err(rustls::Error::General(
                "the server's certificate carries no Drover controller identity".to_owned(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
