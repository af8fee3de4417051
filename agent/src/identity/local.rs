//! The state directory: the agent's certificate and key (`agent.crt` 0644, `agent.key`
//! 0600), what they say, whether they are usable under the fleet CA, and replacing them
//! as a pair.
//!
//! [`store`] writes both new files under `.next` names first, then renames them; a crash
//! between the renames is repaired by the next [`load_local`]. The key never appears in a
//! log, a message or a `Debug` output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_shared::tls::{self, Identity, PeerCertificate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use tracing::warn;

use super::IdentityError;

/// The certificate's file name in the state directory (mode 0644).
pub const CERT_FILE: &str = "agent.crt";
/// The private key's file name in the state directory (mode 0600).
pub const KEY_FILE: &str = "agent.key";
/// Suffix of a file written but not yet renamed into place.
const NEXT_SUFFIX: &str = ".next";

/// What a certificate says, as far as the agent cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The Drover identity in it.
    pub identity: Option<Identity>,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Reads the first certificate of `cert_pem`.
    pub fn parse(cert_pem: &str) -> Result<Self, String> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| format!("no certificate in PEM: {e}"))?;
        let peer = PeerCertificate::parse(&der)?;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        Ok(Self {
            identity: peer.identity,
            serial: peer.serial,
            not_before: unix(cert.validity().not_before.timestamp()),
            not_after: unix(peer.not_after_unix),
        })
    }

    /// The agent name the certificate is bound to, if it is an agent certificate.
    pub fn agent_name(&self) -> Option<&str> {
        match &self.identity {
            Some(Identity::Agent { name }) => Some(name),
            _ => None,
        }
    }
}

fn unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// RFC 3339 form of a time, for messages.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A certificate and its private key, known to belong together. `Debug` hides the key.
#[derive(Clone)]
pub struct Credentials {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM.
    pub(super) key_pem: String,
    /// What the certificate says.
    pub info: CertInfo,
    /// When this host got the certificate: where its renewal schedule starts (the CA
    /// backdates `not_before` to absorb clock skew, so that is earlier).
    pub received: SystemTime,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("info", &self.info)
            .field("received", &self.received)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Pairs a certificate received now with its key; refuses a key that is not the
    /// certificate's.
    pub fn new(cert_pem: String, key_pem: String) -> Result<Self, String> {
        let info = CertInfo::parse(&cert_pem)?;
        let key = tls::certified_key(&cert_pem, &key_pem).map_err(|e| e.to_string())?;
        key.keys_match()
            .map_err(|_| "the private key does not belong to the certificate".to_string())?;
        Ok(Self {
            cert_pem,
            key_pem,
            info,
            received: SystemTime::now(),
        })
    }

    /// The rustls form, for a [`tls::SwappableCert`].
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, String> {
        tls::certified_key(&self.cert_pem, &self.key_pem).map_err(|e| e.to_string())
    }
}

/// What the state directory holds.
#[derive(Debug)]
pub enum Local {
    /// A valid certificate for this agent with its key.
    Usable(Credentials),
    /// Nothing yet.
    Missing,
    /// Files that cannot be used, and why (expired, from another CA, ...).
    Unusable(String),
}

/// Loads the certificate and key from `state_dir`, if they are usable for agent `name`
/// under the CA in `ca_pem`. A certificate for another name is an error, not a reason to
/// enroll over it.
pub fn load_local(state_dir: &Path, ca_pem: &str, name: &str) -> Result<Local, IdentityError> {
    recover(state_dir)?;
    let cert_path = state_dir.join(CERT_FILE);
    let key_path = state_dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (false, false) => {
            return Ok(Local::Missing);
        }
        (true, false) | (false, true) => {
            return Ok(Local::Unusable(format!(
                "only one of {} and {} exists",
                cert_path.display(),
                key_path.display()
            )));
        }
        (true, true) => {}
    }
    let cert_pem = read(&cert_path)?;
    let key_pem = read(&key_path)?;
    let mut creds = match Credentials::new(cert_pem, key_pem) {
        Ok(c) => c,
        Err(why) => return Ok(Local::Unusable(format!("{}: {why}", cert_path.display()))),
    };
    // Written when received (renewals and enrollments store it at once).
    if let Ok(modified) = std::fs::metadata(&cert_path).and_then(|m| m.modified()) {
        creds.received = modified;
    }
    match creds.info.agent_name() {
        Some(n) if n == name => {}
        Some(other) => {
            return Err(IdentityError::NameMismatch {
                path: cert_path,
                cert_name: other.to_string(),
                configured: name.to_string(),
            });
        }
        None => {
            return Ok(Local::Unusable(format!(
                "{} is not an agent certificate",
                cert_path.display()
            )));
        }
    }
    if let Err(why) = verify(&creds.cert_pem, ca_pem) {
        return Ok(Local::Unusable(format!("{} {why}", cert_path.display())));
    }
    Ok(Local::Usable(creds))
}

/// Checks `cert_pem` chains to the CA in `ca_pem` and is valid now.
pub fn verify(cert_pem: &str, ca_pem: &str) -> Result<(), String> {
    let roots = tls::root_store(ca_pem).map_err(|e| e.to_string())?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .map_err(|e| e.to_string())?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    match verifier.verify_client_cert(&der, &[], UnixTime::now()) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => {
            use rustls::CertificateError as E;
            Err(match e {
                E::Expired | E::ExpiredContext { .. } => match CertInfo::parse(cert_pem) {
                    Ok(i) => format!("expired at {}", rfc3339(i.not_after)),
                    Err(_) => "has expired".into(),
                },
                E::NotValidYet | E::NotValidYetContext { .. } => {
                    "is not valid yet: check this host's clock".into()
                }
                E::UnknownIssuer | E::BadSignature => {
                    "was not issued by the fleet CA in --ca-cert".into()
                }
                other => format!("is invalid: {other:?}"),
            })
        }
        Err(e) => Err(format!("is invalid: {e}")),
    }
}

fn read(path: &Path) -> Result<String, IdentityError> {
    std::fs::read_to_string(path).map_err(|source| IdentityError::Files {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn next(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(NEXT_SUFFIX);
    PathBuf::from(name)
}

/// Writes `creds` into `state_dir` as `agent.key` (0600) and `agent.crt` (0644), replacing
/// the previous pair. Blocking.
pub fn store(state_dir: &Path, creds: &Credentials) -> Result<(), IdentityError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let files = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Files {
            action,
            path,
            source,
        }
    };
    if !state_dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(files("create", state_dir))?;
    }
    let cert = state_dir.join(CERT_FILE);
    let key = state_dir.join(KEY_FILE);
    let pki = |path: &Path| {
        let path = path.to_path_buf();
        move |e: tls::PkiError| IdentityError::Files {
            action: "write",
            path,
            source: std::io::Error::other(e.to_string()),
        }
    };
    tls::write_private(&next(&key), creds.key_pem.as_bytes()).map_err(pki(&key))?;
    tls::write_public(&next(&cert), creds.cert_pem.as_bytes()).map_err(pki(&cert))?;
    // Explicit, whatever the umask did to the mode the file was created with.
    std::fs::set_permissions(next(&cert), std::fs::Permissions::from_mode(0o644))
        .map_err(files("set the mode of", &cert))?;
    std::fs::rename(next(&key), &key).map_err(files("replace", &key))?;
    std::fs::rename(next(&cert), &cert).map_err(files("replace", &cert))?;
    if let Ok(dir) = std::fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Finishes or discards a [`store`] that a crash interrupted.
fn recover(state_dir: &Path) -> Result<(), IdentityError> {
    let cert = state_dir.join(CERT_FILE);
    let key = state_dir.join(KEY_FILE);
    let (cert_next, key_next) = (next(&cert), next(&key));
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to).map_err(|source| IdentityError::Files {
            action: "replace",
            path: to.to_path_buf(),
            source,
        })
    };
    let pairs = |c: &Path, k: &Path| -> bool {
        match (std::fs::read_to_string(c), std::fs::read_to_string(k)) {
            (Ok(c), Ok(k)) => Credentials::new(c, k).is_ok(),
            _ => false,
        }
    };
    if cert_next.exists() {
        if key_next.exists() && pairs(&cert_next, &key_next) {
            rename(&key_next, &key)?;
            rename(&cert_next, &cert)?;
            warn!(dir = %state_dir.display(), "finished replacing the certificate interrupted earlier");
        } else if pairs(&cert_next, &key) {
            rename(&cert_next, &cert)?;
            warn!(dir = %state_dir.display(), "finished replacing the certificate interrupted earlier");
        }
    }
    for leftover in [cert_next, key_next] {
        if leftover.exists() {
            let _ = std::fs::remove_file(leftover);
        }
    }
    Ok(())
}
