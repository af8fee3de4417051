//! The fleet's certificate authority: create it, issue identity certificates from it,
//! sign agents' certificate signing requests, and make keys and CSRs on the agent side.
//!
//! Keys are ECDSA P-256. Private keys only ever travel as PEM strings to files written
//! with mode 0600 ([`write_private`]); nothing here prints or logs them.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use super::identity::Identity;

/// The DNS name every controller certificate carries and every client verifies, whatever
/// address it dialled: the identity check is the URI, not the address.
pub const CONTROLLER_SERVER_NAME: &str = "controller.drover.internal";

/// Slack for clocks that disagree: certificates start being valid this long before issue.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Generating, parsing or signing failed.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// The request asked for something the CA does not grant.
    #[error("{0}")]
    Refused(String),
    /// Reading or writing a file failed. The I/O error is part of the message, not a
    /// source, so a chain printed with `{:#}` says it once.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        error: std::io::Error,
    },
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Rcgen { what, source }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct KeyAndCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM. Never logged; write with [`write_private`].
    pub key_pem: String,
}

impl std::fmt::Debug for KeyAndCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyAndCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The fleet's certificate authority, loaded with its private key.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Creates a new self-signed CA valid for `validity`.
    pub fn generate(name: &str, validity: Duration) -> Result<(Self, KeyAndCert), PkiError> {
        let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "Drover");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(rc("self-signing the CA"))?;
        let pair = KeyAndCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let ca = Self::from_pem(&pair.cert_pem, &pair.key_pem)?;
        Ok((ca, pair))
    }

    /// Loads a CA from its certificate and private key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(rc("reading the CA key"))?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(rc("reading the CA certificate"))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// Loads `ca.crt` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert = read(&dir.join(CA_CERT_FILE))?;
        let key = read(&dir.join(CA_KEY_FILE))?;
        Self::from_pem(&cert, &key)
    }

    /// The CA certificate, PEM: what every peer trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate and a fresh key for `identity`, valid for `validity`.
    pub fn issue(&self, identity: &Identity, validity: Duration) -> Result<KeyAndCert, PkiError> {
        let key = KeyPair::generate().map_err(rc("generating a key"))?;
        let params = leaf_params(identity, &[], validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rc("signing a certificate"))?;
        Ok(KeyAndCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate valid exactly from `not_before` to `not_after`: for tooling
    /// and tests that need a certificate not yet valid or already expired.
    pub fn issue_valid_between(
        &self,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<KeyAndCert, PkiError> {
        let key = KeyPair::generate().map_err(rc("generating a key"))?;
        let mut params = leaf_params(identity, &[], Duration::ZERO)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rc("signing a certificate"))?;
        Ok(KeyAndCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues the controller's serving certificate; `extra_names` are further DNS names or
    /// IP addresses it should also be valid for (for clients that verify the address).
    pub fn issue_controller(
        &self,
        extra_names: &[String],
        validity: Duration,
    ) -> Result<KeyAndCert, PkiError> {
        let key = KeyPair::generate().map_err(rc("generating a key"))?;
        let params = leaf_params(&Identity::Controller, extra_names, validity)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(rc("signing a certificate"))?;
        Ok(KeyAndCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a CSR for `identity`, whatever names the CSR asked for: the CA decides the
    /// identity, the CSR only proves possession of the key. Returns the certificate (PEM).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(rc("reading the certificate signing request"))?;
        let params = leaf_params(identity, &[], validity)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rc("signing the certificate request"))?;
        Ok(cert.pem())
    }
}

/// A new private key and a certificate signing request for `identity` (both PEM). The key
/// stays with the caller; only the CSR is sent.
pub fn key_and_csr(identity: &Identity) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(rc("generating a key"))?;
    // Only the subject and names: the CA sets everything else.
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.common_name());
    params.distinguished_name = dn;
    let csr = params
        .serialize_request(&key)
        .map_err(rc("making a certificate signing request"))?;
    let csr_pem = csr.pem().map_err(rc("encoding the request"))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// The CA certificate's file name in a PKI directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA private key's file name in a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";

fn leaf_params(
    identity: &Identity,
    extra_names: &[String],
    validity: Duration,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, identity.common_name());
    dn.push(DnType::OrganizationName, "Drover");
    params.distinguished_name = dn;
    let uri = identity
        .to_uri()
        .try_into()
        .map_err(|_| PkiError::Refused(format!("{identity} cannot be named in a certificate")))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    match identity {
        Identity::Controller => {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
            let mut names = vec![CONTROLLER_SERVER_NAME.to_owned()];
            names.extend(extra_names.iter().cloned());
            for name in names {
                let san = match name.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(name.clone().try_into().map_err(|_| {
                        PkiError::Refused(format!("{name:?} is not a valid DNS name"))
                    })?),
                };
                params.subject_alt_names.push(san);
            }
        }
        Identity::Agent { .. } | Identity::Operator { .. } => params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth),
    }
    set_validity(&mut params, validity);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, so it round-trips through DER unchanged.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|error| PkiError::Io {
        path: path.display().to_string(),
        error,
    })
}

/// Writes `contents` to `path` with mode 0600, atomically (a temporary file in the same
/// directory, then a rename), so a reader never sees half a key.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o600)
}

/// Writes `contents` to `path` with mode 0644, atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> Result<(), PkiError> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error| PkiError::Io {
        path: path.display().to_string(),
        error,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::{PeerCertificate, Role};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn issued_certificates_carry_their_identity_serial_and_expiry() {
        let (ca, _) = CertificateAuthority::generate("test", Duration::from_secs(3600)).unwrap();
        let id = Identity::Operator {
            name: "alice".into(),
            role: Role::Viewer,
        };
        let issued = ca.issue(&id, Duration::from_secs(600)).unwrap();
        let peer = PeerCertificate::parse(&der(&issued.cert_pem)).unwrap();
        assert_eq!(peer.identity, Some(id));
        assert_eq!(peer.serial.len(), 32);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((peer.not_after_unix - now - 600).abs() < 5);
        assert!(!format!("{issued:?}").contains(&issued.key_pem));
    }

    #[test]
    fn a_csr_is_signed_for_the_identity_the_ca_chooses() {
        let (ca, pair) = CertificateAuthority::generate("test", Duration::from_secs(3600)).unwrap();
        let reloaded = CertificateAuthority::from_pem(&pair.cert_pem, &pair.key_pem).unwrap();
        // The CSR claims to be the controller; the CA signs it as agent web-1.
        let (_key, csr) = key_and_csr(&Identity::Controller).unwrap();
        let agent = Identity::Agent {
            name: "web-1".into(),
        };
        let cert = reloaded
            .sign_csr(&csr, &agent, Duration::from_secs(60))
            .unwrap();
        let peer = PeerCertificate::parse(&der(&cert)).unwrap();
        assert_eq!(peer.identity, Some(agent));
        assert!(
            ca.sign_csr("garbage", &Identity::Controller, Duration::from_secs(1))
                .is_err()
        );
    }

    #[test]
    fn private_files_are_written_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_private(&path, b"secret").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
    }
}
