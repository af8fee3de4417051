//! Drover's transport security: the fleet certificate authority, the identities its
//! certificates carry, rustls configurations (TLS 1.3 only) for both ends, and the glue
//! that runs tonic over them with the peer's verified identity on every request.
//!
//! The rules, in one place:
//! - every certificate carries one [`Identity`] (controller, agent NAME, operator
//!   NAME/ROLE) as a URI SAN, and what a peer may do is read from it;
//! - clients accept a server only if it presents the controller identity, signed by the
//!   fleet CA;
//! - private keys are written 0600 and never printed or logged.

mod config;
mod identity;
mod pki;
mod transport;

pub use config::{
    SwappableCert, TlsConfigError, certified_key, client_config, provider, read_pem_file,
    root_store, server_config,
};
pub use identity::{Identity, PeerCertificate, Role, valid_name};
pub use pki::{
    CA_CERT_FILE, CA_KEY_FILE, CONTROLLER_SERVER_NAME, CertificateAuthority, KeyAndCert, PkiError,
    key_and_csr, write_private, write_public,
};
pub use transport::{
    HANDSHAKE_TIMEOUT, KEEP_ALIVE, TlsConnectInfo, TlsConnection, channel, incoming,
    insecure_channel, lazy_channel,
};
