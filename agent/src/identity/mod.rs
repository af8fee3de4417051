//! The agent's identity: its certificate and private key in `--state-dir`, and how it gets
//! them.
//!
//! At start, [`establish`] uses `agent.crt` + `agent.key` when they hold a certificate
//! for this agent's name, from the fleet CA, not expired, matching the key. Otherwise it
//! enrolls: a new key and CSR made here, sent with the one-time join token to
//! `Enrollment.Enroll`; an unreachable controller is retried with jittered backoff, a
//! refusal ends the agent with [`EXIT_ENROLL_REFUSED`] and a message saying what to do.
//!
//! Files are replaced as a pair ([`store`]): both new files are written under `.next`
//! names first, then renamed; a crash between the renames is repaired on the next load.
//! The private key never leaves this host and never appears in a log or message.

mod local;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drover_shared::backoff::Backoff;
use drover_shared::proto::EnrollRequest;
use drover_shared::proto::enrollment_client::EnrollmentClient;
use drover_shared::tls::{self, Identity};
use rustls::ClientConfig;
use tonic::transport::Channel;
use tracing::{info, warn};

use crate::config::{AgentConfig, ConfigError, EXIT_CONFIG, EXIT_ENROLL_REFUSED, JoinToken};

pub use local::{
    CERT_FILE, CertInfo, Credentials, KEY_FILE, Local, load_local, rfc3339, store, verify,
};

/// How long a connection attempt to the controller may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an enrollment or renewal call may take once connected.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent cannot get an identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The fleet CA certificate is not there (yet).
    #[error(
        "the fleet CA certificate {path} does not exist: copy ca.crt from the controller's PKI directory \
         (written by `drover ca init`) to {path}, or point --ca-cert at it"
    )]
    CaMissing {
        /// The file.
        path: PathBuf,
    },
    /// The fleet CA certificate cannot be read or used.
    #[error(
        "cannot use the fleet CA certificate {path}: {reason}; copy ca.crt from the controller's PKI directory \
         (written by `drover ca init`) to {path}, or point --ca-cert at it"
    )]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate on disk is for another host name.
    #[error(
        "the certificate {path} is for agent {cert_name}, but this agent is configured as {configured}: \
         use --name {cert_name}, or remove {path} and {KEY_FILE} and enroll again with a new join token"
    )]
    NameMismatch {
        /// The certificate file.
        path: PathBuf,
        /// The name in it.
        cert_name: String,
        /// The configured name.
        configured: String,
    },
    /// No usable certificate and no token to enroll with.
    #[error(
        "this agent has no usable certificate ({why}) and no join token: create one on the controller with \
         `drover token create`, then start the agent with --token-file FILE (or --token, or {env})",
        env = crate::config::TOKEN_ENV
    )]
    NeedToken {
        /// Why there is no usable certificate.
        why: String,
    },
    /// The token file cannot be read or the token is malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory cannot be read or written.
    #[error("cannot {action} {path}: {source}; check --state-dir and its permissions")]
    Files {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The controller refused to enroll this host.
    #[error("the controller refused to enroll host {name}: {message}; {hint}")]
    Refused {
        /// The host name.
        name: String,
        /// The gRPC code.
        code: tonic::Code,
        /// The controller's message.
        message: String,
        /// What to do.
        hint: &'static str,
    },
    /// Generating a key or reading the controller's answer failed.
    #[error("enrollment failed: {0}")]
    Internal(String),
}

impl IdentityError {
    /// Whether something is merely not installed yet (the CA certificate, a join token)
    /// rather than wrong: `--check` reports these as warnings.
    pub fn not_provisioned(&self) -> bool {
        matches!(
            self,
            IdentityError::CaMissing { .. } | IdentityError::NeedToken { .. }
        )
    }

    /// The process exit code for this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            IdentityError::Refused { .. } => EXIT_ENROLL_REFUSED,
            IdentityError::Internal(_) => 1,
            _ => EXIT_CONFIG,
        }
    }
}

/// Reads the fleet CA certificate and checks it can anchor verification.
pub fn read_ca(path: &Path) -> Result<String, IdentityError> {
    let ca_error = |reason: String| IdentityError::CaCert {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => IdentityError::CaMissing {
            path: path.to_path_buf(),
        },
        _ => ca_error(e.to_string()),
    })?;
    tls::root_store(&pem).map_err(|e| ca_error(e.to_string()))?;
    Ok(pem)
}

/// The agent's identity, ready for the link.
#[derive(Debug)]
pub struct Established {
    /// The fleet CA certificate, PEM.
    pub ca_pem: String,
    /// The certificate and key in use.
    pub creds: Credentials,
}

/// Loads or enrolls the agent's identity. `Ok(None)` when `shutdown` completed first.
pub async fn establish(
    config: &AgentConfig,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<Established>, IdentityError> {
    let (ca_pem, local) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let ca_pem = read_ca(&config.ca_cert)?;
            let local = load_local(&config.state_dir, &ca_pem, &config.name)?;
            Ok::<_, IdentityError>((ca_pem, local))
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))??
    };
    let why = match local {
        Local::Usable(creds) => {
            info!(
                serial = %creds.info.serial,
                not_after = %rfc3339(creds.info.not_after),
                dir = %config.state_dir.display(),
                "using this agent's certificate"
            );
            if config.join_token != crate::config::TokenSource::None {
                info!("a join token is configured but not needed: this agent is enrolled already");
            }
            return Ok(Some(Established { ca_pem, creds }));
        }
        Local::Missing => format!("none in {}", config.state_dir.display()),
        Local::Unusable(why) => why,
    };
    let token = match config.join_token.read()? {
        Some(t) => t,
        None => return Err(IdentityError::NeedToken { why }),
    };
    info!(reason = %why, controller = %config.controller, "enrolling with the join token");
    let Some(creds) = enroll(config, &ca_pem, &token, shutdown).await? else {
        return Ok(None);
    };
    let dir = config.state_dir.clone();
    let stored = creds.clone();
    tokio::task::spawn_blocking(move || store(&dir, &stored))
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))??;
    info!(
        serial = %creds.info.serial,
        not_after = %rfc3339(creds.info.not_after),
        dir = %config.state_dir.display(),
        "enrolled: certificate issued"
    );
    Ok(Some(Established { ca_pem, creds }))
}

/// Whether the controller's answer is a refusal that retrying will not change.
pub fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::AlreadyExists
            | Code::InvalidArgument
    )
}

/// A client of the Enrollment service over TLS with `client`.
pub async fn enrollment_client(
    controller: &str,
    client: Arc<ClientConfig>,
) -> Result<EnrollmentClient<Channel>, String> {
    tls::channel(controller, client, CONNECT_TIMEOUT)
        .await
        .map(EnrollmentClient::new)
        .map_err(|e| format!("cannot connect to {controller}: {}", source_chain(&e)))
}

/// Sends the CSR with `token` until the controller answers; `Ok(None)` on shutdown.
async fn enroll(
    config: &AgentConfig,
    ca_pem: &str,
    token: &JoinToken,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Result<Option<Credentials>, IdentityError> {
    let identity = Identity::Agent {
        name: config.name.clone(),
    };
    let (key_pem, csr_pem) =
        tls::key_and_csr(&identity).map_err(|e| IdentityError::Internal(e.to_string()))?;
    let client = tls::client_config(ca_pem, None).map_err(|e| IdentityError::CaCert {
        path: config.ca_cert.clone(),
        reason: e.to_string(),
    })?;
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let url = config.targets.current();
        let attempt = async {
            let mut enrollment = match enrollment_client(&url, client.clone()).await {
                Ok(e) => e,
                Err(e) => {
                    config.targets.unreachable(&url);
                    return Err(e);
                }
            };
            let request = EnrollRequest {
                token: token.expose().to_string(),
                name: config.name.clone(),
                csr_pem: csr_pem.clone(),
            };
            match tokio::time::timeout(RPC_TIMEOUT, enrollment.enroll(request)).await {
                Ok(Ok(r)) => Ok(Ok(r.into_inner())),
                Ok(Err(status)) if is_refusal(status.code()) => Ok(Err(status)),
                Ok(Err(status)) if config.targets.redirected(&url, &status).is_some() => Err(
                    format!("{url} is a standby controller: {}", status.message()),
                ),
                Ok(Err(status)) => Err(format!(
                    "the controller answered {:?}: {}",
                    status.code(),
                    status.message()
                )),
                Err(_) => Err(format!(
                    "no answer within {}",
                    drover_shared::duration::human(RPC_TIMEOUT)
                )),
            }
        };
        let outcome = tokio::select! {
            o = attempt => o,
            _ = &mut *shutdown => return Ok(None),
        };
        match outcome {
            Ok(Ok(response)) => {
                let creds = accept(response.cert_pem, key_pem, &config.name)
                    .map_err(IdentityError::Internal)?;
                return Ok(Some(creds));
            }
            Ok(Err(status)) => {
                return Err(IdentityError::Refused {
                    name: config.name.clone(),
                    code: status.code(),
                    message: status.message().to_string(),
                    hint: refusal_hint(status.code()),
                });
            }
            Err(why) => {
                let delay = backoff.next_delay();
                warn!(controller = %url, error = %why, retry_in_ms = delay.as_millis() as u64, "enrollment: controller unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = &mut *shutdown => return Ok(None),
                }
            }
        }
    }
}

fn refusal_hint(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::AlreadyExists => {
            "remove the host first (`drover hosts remove NAME`), then start this agent with a new token from `drover token create`"
        }
        Code::InvalidArgument => {
            "fix this agent's --name, then start it with a new token from `drover token create`"
        }
        _ => {
            "the join token is unknown, spent or expired: create a new one with `drover token create` and start the agent with it"
        }
    }
}

/// Checks a certificate the controller issued for `name` against the key it was requested for.
pub fn accept(cert_pem: String, key_pem: String, name: &str) -> Result<Credentials, String> {
    let creds = Credentials::new(cert_pem, key_pem)
        .map_err(|e| format!("the controller's certificate is unusable: {e}"))?;
    match creds.info.agent_name() {
        Some(n) if n == name => Ok(creds),
        _ => Err(format!(
            "the controller issued a certificate for {:?}, not for agent {name}",
            creds.info.identity
        )),
    }
}

/// An error with its causes, e.g. "transport error: tcp connect error: Connection refused".
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        // Wrappers often repeat their source's text; say each thing once.
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// For `--check`: what the agent would do about its identity, or why it could not start.
pub fn check(config: &AgentConfig) -> Result<String, IdentityError> {
    let ca_pem = read_ca(&config.ca_cert)?;
    match load_local(&config.state_dir, &ca_pem, &config.name)? {
        Local::Usable(c) => Ok(format!(
            "certificate for agent {} valid until {} (serial {})",
            config.name,
            rfc3339(c.info.not_after),
            c.info.serial
        )),
        Local::Missing | Local::Unusable(_) if config.join_token.read()?.is_some() => Ok(format!(
            "not enrolled yet: will enroll with the join token {}",
            config.join_token.describe()
        )),
        Local::Missing => Err(IdentityError::NeedToken {
            why: format!("none in {}", config.state_dir.display()),
        }),
        Local::Unusable(why) => Err(IdentityError::NeedToken { why }),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
