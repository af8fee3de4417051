//! The controller's side of the fleet PKI: the CA and secrets key loaded from the PKI
//! directory at start, and the controller's own serving certificate, minted in memory
//! (never written to disk) for 30 days and re-minted daily while the controller runs,
//! so it never expires under a long-running controller.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_shared::tls::{
    CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority, PkiError, SwappableCert, TlsConfigError,
    certified_key, server_config,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::secrets::{SECRETS_KEY_FILE, SecretsError, SecretsKey};

/// Lifetime of each serving certificate.
pub const SERVING_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often a new serving certificate is minted.
pub const SERVING_CERT_RENEW_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Retry delay after a failed re-mint.
const RENEW_RETRY: Duration = Duration::from_secs(3600);

/// What the controller needs for mTLS.
#[derive(Clone, Debug)]
pub struct TlsSettings {
    /// The fleet CA, with its key: signs the serving certificate and agents' CSRs.
    pub ca: Arc<CertificateAuthority>,
    /// Extra DNS names or IP addresses for the serving certificate (`--tls-name`).
    pub tls_names: Vec<String>,
    /// Lifetime of agent certificates (`--agent-cert-ttl`).
    pub agent_cert_ttl: Duration,
    /// The key that seals secrets at rest.
    pub secrets_key: SecretsKey,
}

/// Why the PKI directory could not be used. `drover serve` exits 64 on any of these.
#[derive(Debug, thiserror::Error)]
pub enum PkiLoadError {
    /// No CA at all.
    #[error(
        "no fleet CA in {dir}: run `drover ca init --dir {dir}` first (or --insecure-dev for a plaintext development controller)"
    )]
    NoCa {
        /// The PKI directory.
        dir: String,
    },
    /// A CA that does not load.
    #[error("cannot load the fleet CA from {dir}: {source}")]
    Ca {
        /// The PKI directory.
        dir: String,
        /// Why.
        #[source]
        source: PkiError,
    },
    /// No secrets key.
    #[error(
        "no secrets key at {path}: `drover ca init` writes it next to the CA. Restore it from your backup (secrets stored under another key cannot be read); a fleet that never stored secrets can make one with `(umask 077; head -c 32 /dev/urandom > {path})`"
    )]
    NoSecretsKey {
        /// Where it should be.
        path: String,
    },
    /// A secrets key that does not load.
    #[error(transparent)]
    SecretsKey(#[from] SecretsError),
    /// A `--tls-name` that cannot go in a certificate.
    #[error("invalid --tls-name: {0}")]
    TlsName(PkiError),
}

impl TlsSettings {
    /// Loads `ca.crt`, `ca.key` and `secrets.key` from `pki_dir`, and checks that a
    /// serving certificate with `tls_names` can be minted.
    pub fn load(
        pki_dir: &Path,
        tls_names: Vec<String>,
        agent_cert_ttl: Duration,
    ) -> Result<Self, PkiLoadError> {
        let dir = pki_dir.display().to_string();
        if let Some(bad) = tls_names.iter().find(|n| !valid_tls_name(n)) {
            return Err(PkiLoadError::TlsName(PkiError::Refused(format!(
                "{bad:?} is neither an IP address nor a DNS name"
            ))));
        }
        if !pki_dir.join(CA_CERT_FILE).exists() || !pki_dir.join(CA_KEY_FILE).exists() {
            return Err(PkiLoadError::NoCa { dir });
        }
        let ca = CertificateAuthority::load(pki_dir).map_err(|source| PkiLoadError::Ca {
            dir: dir.clone(),
            source,
        })?;
        let key_path: PathBuf = pki_dir.join(SECRETS_KEY_FILE);
        if !key_path.exists() {
            return Err(PkiLoadError::NoSecretsKey {
                path: key_path.display().to_string(),
            });
        }
        let secrets_key = SecretsKey::load(&key_path)?;
        let settings = Self {
            ca: Arc::new(ca),
            tls_names,
            agent_cert_ttl,
            secrets_key,
        };
        ServingCert::mint(&settings).map_err(|e| match e {
            ServingError::Pki(p) => PkiLoadError::TlsName(p),
            ServingError::Config(c) => PkiLoadError::TlsName(PkiError::Refused(c.to_string())),
        })?;
        Ok(settings)
    }
}

/// Whether `name` can go in the serving certificate: an IP address or a DNS name.
fn valid_tls_name(name: &str) -> bool {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why the serving certificate could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    /// The CA refused to issue it.
    #[error("cannot mint the controller's serving certificate: {0}")]
    Pki(#[from] PkiError),
    /// rustls refused it.
    #[error("cannot use the controller's serving certificate: {0}")]
    Config(#[from] TlsConfigError),
}

/// The controller's serving certificate, replaceable while connections use it.
pub struct ServingCert {
    cert: SwappableCert,
}

impl ServingCert {
    /// Mints a new serving certificate (controller identity, `tls_names`, 30 days).
    pub fn mint(tls: &TlsSettings) -> Result<Self, ServingError> {
        Ok(Self {
            cert: SwappableCert::new(fresh_key(tls)?),
        })
    }

    /// The rustls server configuration presenting this certificate.
    pub fn server_config(
        &self,
        tls: &TlsSettings,
    ) -> Result<Arc<rustls::ServerConfig>, ServingError> {
        Ok(server_config(tls.ca.cert_pem(), self.cert.clone())?)
    }

    /// The certificate as a resolver that follows every renewal (the web interface
    /// presents it too).
    pub fn resolver(&self) -> SwappableCert {
        self.cert.clone()
    }

    /// When the certificate in use expires (Unix seconds).
    pub fn not_after_unix(&self) -> Option<i64> {
        self.cert.peer_certificate().map(|p| p.not_after_unix)
    }

    /// Re-mints the certificate every day until `stop` is cancelled; new handshakes use
    /// the new one. `on_renew` hears each new expiry.
    pub async fn renew_daily(
        self,
        tls: TlsSettings,
        stop: CancellationToken,
        on_renew: impl Fn(i64) + Send,
    ) {
        let mut wait = SERVING_CERT_RENEW_EVERY;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
            match fresh_key(&tls) {
                Ok(key) => {
                    self.cert.replace(key);
                    let expires = self.not_after_unix().unwrap_or_default();
                    on_renew(expires);
                    info!(
                        expires_unix = expires,
                        "re-minted the controller's serving certificate"
                    );
                    wait = SERVING_CERT_RENEW_EVERY;
                }
                Err(e) => {
                    error!(error = %e, retry_in = ?RENEW_RETRY, "cannot re-mint the controller's serving certificate; the current one stays in use");
                    wait = RENEW_RETRY;
                }
            }
        }
    }
}

fn fresh_key(tls: &TlsSettings) -> Result<Arc<rustls::sign::CertifiedKey>, ServingError> {
    let pair = tls
        .ca
        .issue_controller(&tls.tls_names, SERVING_CERT_VALIDITY)?;
    Ok(certified_key(&pair.cert_pem, &pair.key_pem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pki_dir_without_a_ca_names_the_command_that_makes_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = TlsSettings::load(dir.path(), vec![], Duration::from_secs(60)).unwrap_err();
        let d = dir.path().display();
        assert_eq!(
            err.to_string(),
            format!(
                "no fleet CA in {d}: run `drover ca init --dir {d}` first (or --insecure-dev for a plaintext development controller)"
            )
        );
    }

    #[test]
    fn a_pki_dir_loads_and_mints_with_extra_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pair) = CertificateAuthority::generate("t", Duration::from_secs(3600)).unwrap();
        std::fs::write(dir.path().join(CA_CERT_FILE), &pair.cert_pem).unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), &pair.key_pem).unwrap();
        let err = TlsSettings::load(dir.path(), vec![], Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, PkiLoadError::NoSecretsKey { .. }), "{err}");
        SecretsKey::generate()
            .write(&dir.path().join(SECRETS_KEY_FILE))
            .unwrap();
        let names = vec!["ctl.example.com".to_owned(), "10.0.0.1".to_owned()];
        let tls = TlsSettings::load(dir.path(), names, Duration::from_secs(60)).unwrap();
        let serving = ServingCert::mint(&tls).unwrap();
        let peer = serving.cert.peer_certificate().unwrap();
        assert_eq!(
            peer.identity,
            Some(drover_shared::tls::Identity::Controller)
        );
        let bad = TlsSettings::load(
            dir.path(),
            vec!["not a name".into()],
            Duration::from_secs(60),
        );
        assert!(matches!(bad, Err(PkiLoadError::TlsName(_))));
    }
}
