//! Certificates and TLS clients as tests need them, on top of `drover_shared::tls`: files
//! of a PKI directory, operator channels with any certificate (the admin's, one from
//! another CA, an expired one, none), the serial of a certificate file, and a test CA for
//! the in-process hub whose agents get certificates issued directly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::tls::{self, CertificateAuthority, Identity, PeerCertificate, SwappableCert};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tonic::transport::Channel;

/// How long connecting to a controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The files `drover ca init --dir DIR` writes.
#[derive(Debug, Clone)]
pub struct PkiDir {
    /// The directory.
    pub dir: PathBuf,
}

impl PkiDir {
    /// The PKI in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `ca.crt`: what every peer trusts.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join(tls::CA_CERT_FILE)
    }

    /// `admin.crt`: the admin operator's certificate.
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }

    /// `admin.key`.
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        read(&self.ca_cert())
    }

    /// The fleet CA with its key, to issue test certificates from.
    pub fn authority(&self) -> CertificateAuthority {
        CertificateAuthority::load(&self.dir)
            .unwrap_or_else(|e| panic!("load the CA in {}: {e}", self.dir.display()))
    }

    /// An operator channel to `url` (`https://`) presenting the admin certificate.
    pub async fn admin_channel(&self, url: &str) -> Result<Channel, String> {
        let cert = read(&self.admin_cert());
        let key = read(&self.admin_key());
        operator_channel(url, &self.ca_pem(), Some((&cert, &key))).await
    }
}

/// A TLS channel to the controller at `url` trusting `ca_pem`, presenting `cert` (PEM
/// certificate and key) when given.
pub async fn operator_channel(
    url: &str,
    ca_pem: &str,
    cert: Option<(&str, &str)>,
) -> Result<Channel, String> {
    let config = client_config(ca_pem, cert)?;
    tls::channel(url, config, CONNECT_TIMEOUT)
        .await
        .map_err(|e| format!("connect to {url}: {}", error_chain(&e)))
}

/// An operator client over [`operator_channel`].
pub async fn operator_client(
    url: &str,
    ca_pem: &str,
    cert: Option<(&str, &str)>,
) -> Result<OperatorClient<Channel>, String> {
    Ok(OperatorClient::new(
        operator_channel(url, ca_pem, cert).await?,
    ))
}

/// The rustls client configuration Drover's own clients use.
pub fn client_config(
    ca_pem: &str,
    cert: Option<(&str, &str)>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let cert = match cert {
        None => None,
        Some((c, k)) => Some(SwappableCert::from_pem(c, k).map_err(|e| e.to_string())?),
    };
    tls::client_config(ca_pem, cert).map_err(|e| e.to_string())
}

/// What a certificate file says (identity, serial, expiry); `None` when it is missing or
/// unreadable.
pub fn read_certificate(path: &Path) -> Option<PeerCertificate> {
    let pem = std::fs::read(path).ok()?;
    let der = CertificateDer::from_pem_slice(&pem).ok()?;
    PeerCertificate::parse(&der).ok()
}

/// An error with its sources, for messages (tonic's transport errors hide the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A CA made in the test process, its certificate written to a temporary directory,
/// issuing certificates straight into agents' state directories.
pub struct TestCa {
    /// The CA with its key.
    pub authority: CertificateAuthority,
    /// Holds `ca.crt` (and `ca.key`, so the directory is a PKI directory too).
    dir: tempfile::TempDir,
}

impl TestCa {
    /// A new CA, valid for a day.
    pub fn new() -> Self {
        let (authority, pair) = CertificateAuthority::generate(
            &format!("drover test CA {}", crate::unique_name("ca")),
            Duration::from_secs(24 * 3600),
        )
        .expect("generate a test CA");
        let dir = tempfile::Builder::new()
            .prefix("drover-test-ca-")
            .tempdir()
            .expect("create the CA's directory");
        tls::write_public(
            &dir.path().join(tls::CA_CERT_FILE),
            pair.cert_pem.as_bytes(),
        )
        .expect("write ca.crt");
        tls::write_private(&dir.path().join(tls::CA_KEY_FILE), pair.key_pem.as_bytes())
            .expect("write ca.key");
        Self { authority, dir }
    }

    /// The directory holding `ca.crt` and `ca.key`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ca.crt`.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join(tls::CA_CERT_FILE)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.authority.cert_pem()
    }

    /// Issues a certificate for `identity` valid for `ttl`: (certificate, key) PEM.
    pub fn issue(&self, identity: &Identity, ttl: Duration) -> (String, String) {
        let pair = self
            .authority
            .issue(identity, ttl)
            .unwrap_or_else(|e| panic!("issue a certificate for {identity}: {e}"));
        (pair.cert_pem, pair.key_pem)
    }

    /// Writes an agent certificate for `name` (an hour) as `agent.crt` / `agent.key` in
    /// `state_dir`, as enrollment would have.
    pub fn enroll_agent_files(&self, name: &str, state_dir: &Path) {
        let (cert, key) = self.issue(
            &Identity::Agent {
                name: name.to_string(),
            },
            Duration::from_secs(3600),
        );
        std::fs::create_dir_all(state_dir).expect("create the agent's state directory");
        tls::write_public(&state_dir.join("agent.crt"), cert.as_bytes()).expect("agent.crt");
        tls::write_private(&state_dir.join("agent.key"), key.as_bytes()).expect("agent.key");
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
