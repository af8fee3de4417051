//! The `Enrollment` gRPC service: agents get their certificates here.
//!
//! - `Enroll` is the one call a client without a certificate may make. It proves itself
//!   with a one-time join token; the controller signs the agent's CSR as
//!   `Identity::Agent { name }` for `--agent-cert-ttl`, consuming the token in the same
//!   transaction that records the certificate.
//! - `Renew` needs the agent's current certificate, issued here and not revoked; the new
//!   certificate is for the same name.
//!
//! Successes are logged with host, serial and expiry; refusals at warn with the peer and
//! the reason. The token never appears in either.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1::enrollment_server::{Enrollment, EnrollmentServer};
use drover_proto::v1::{EnrollRequest, EnrollResponse, RenewRequest};
use drover_shared::tls::{
    CertificateAuthority, Identity, PeerCertificate, TlsConnectInfo, valid_name,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use crate::hub::removed_message;
use crate::store::{IssuedCertificate, JoinRefusal, Store, StoreError, now_ms};
use crate::tokens::{self, TokenKind};

/// What signs agent certificates.
#[derive(Clone)]
pub struct Issuer {
    /// The fleet CA.
    pub ca: Arc<CertificateAuthority>,
    /// Lifetime of agent certificates (`--agent-cert-ttl`).
    pub agent_cert_ttl: Duration,
}

/// The enrollment service.
pub struct EnrollmentService {
    /// `None` on an `--insecure-dev` controller: it has no CA.
    issuer: Option<Issuer>,
    store: Store,
}

impl EnrollmentService {
    /// The tonic service; `issuer` is `None` when the controller has no CA.
    pub fn server(issuer: Option<Issuer>, store: Store) -> EnrollmentServer<Self> {
        EnrollmentServer::new(Self { issuer, store })
    }

    fn issuer(&self) -> Result<&Issuer, Status> {
        self.issuer.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this controller runs with --insecure-dev: it has no CA and issues no certificates; start the agent with --insecure-dev too",
            )
        })
    }
}

/// The peer address of `request`, for logs.
fn peer<T>(request: &Request<T>) -> (String, Option<TlsConnectInfo>) {
    let tls = request.extensions().get::<TlsConnectInfo>().cloned();
    let addr = tls
        .as_ref()
        .and_then(|t| t.remote_addr)
        .or_else(|| request.remote_addr());
    (
        addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
        tls,
    )
}

fn join_status(refusal: &JoinRefusal) -> Status {
    match refusal {
        JoinRefusal::Unknown => Status::unauthenticated(
            "the join token is not valid: create one with `drover token create`",
        ),
        JoinRefusal::AlreadyUsed { .. } => Status::unauthenticated(
            "the join token was already used (a join token enrolls one agent, once): create a new one with `drover token create`",
        ),
        JoinRefusal::Expired { at } => Status::unauthenticated(format!(
            "the join token expired at {at}: create a new one with `drover token create`"
        )),
        JoinRefusal::NameTaken { host } => Status::already_exists(format!(
            "host {host} is already enrolled; `drover hosts remove {host}` first"
        )),
    }
}

fn store_failed(e: StoreError) -> Status {
    error!(error = %e, "enrollment: store failure");
    Status::unavailable(
        "the controller's state database failed; retry, and see the controller's log",
    )
}

/// Signs `csr_pem` for agent `name`; returns the certificate and what it says.
fn sign(issuer: &Issuer, csr_pem: &str, name: &str) -> Result<(String, PeerCertificate), String> {
    let identity = Identity::Agent {
        name: name.to_owned(),
    };
    let cert_pem = issuer
        .ca
        .sign_csr(csr_pem, &identity, issuer.agent_cert_ttl)
        .map_err(|e| e.to_string())?;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let parsed = PeerCertificate::parse(&der)?;
    Ok((cert_pem, parsed))
}

fn rfc3339_unix(secs: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
    )
    .to_string()
}

fn issued(host: &str, parsed: &PeerCertificate) -> IssuedCertificate {
    IssuedCertificate {
        serial: parsed.serial.clone(),
        host: host.to_owned(),
        not_after_ms: u64::try_from(parsed.not_after_unix).unwrap_or(0) * 1000,
        revoked_ms: None,
    }
}

#[tonic::async_trait]
impl Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let (peer, _) = peer(&request);
        let r = request.into_inner();
        let host = r.name.trim().to_owned();
        let refuse = |reason: &str, status: Status| {
            warn!(%peer, host = %host, reason = %reason, "refused an enrollment");
            status
        };
        let issuer = self
            .issuer()
            .map_err(|s| refuse("no CA (--insecure-dev)", s))?;
        let token = tokens::parse(TokenKind::Join, &r.token).map_err(|e| {
            refuse(
                "join token malformed",
                Status::unauthenticated(e.to_string()),
            )
        })?;
        if !valid_name(&host) {
            return Err(refuse(
                "invalid host name",
                Status::invalid_argument(format!(
                    "invalid host name {host:?}: 1 to 128 letters, digits, '.', '-', '_' or '@', starting with a letter or digit"
                )),
            ));
        }
        let hash = token.secret_hash();
        // A cheap read first: no signing for a token that cannot be used.
        if let Err(refusal) = self
            .store
            .check_join_token(&token.id, &hash)
            .await
            .map_err(store_failed)?
        {
            return Err(refuse(&refusal.to_string(), join_status(&refusal)));
        }
        let (cert_pem, parsed) = sign(issuer, &r.csr_pem, &host).map_err(|e| {
            refuse(
                &format!("bad CSR: {e}"),
                Status::invalid_argument(format!(
                    "the certificate signing request was refused: {e}"
                )),
            )
        })?;
        match self
            .store
            .enroll(&token.id, &hash, issued(&host, &parsed))
            .await
            .map_err(store_failed)?
        {
            Ok(labels) => {
                info!(%peer, host = %host, serial = %parsed.serial, expires = %rfc3339_unix(parsed.not_after_unix), token = %token.id, ?labels, "enrolled an agent");
            }
            Err(refusal) => return Err(refuse(&refusal.to_string(), join_status(&refusal))),
        }
        Ok(Response::new(EnrollResponse {
            cert_pem,
            ca_pem: issuer.ca.cert_pem().to_owned(),
            not_after_ms: u64::try_from(parsed.not_after_unix).unwrap_or(0) * 1000,
        }))
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let (peer, tls) = peer(&request);
        let current = tls.and_then(|t| t.peer);
        let host = match current.as_ref().and_then(|c| c.identity.clone()) {
            Some(Identity::Agent { name }) => name,
            _ => String::new(),
        };
        let refuse = |reason: &str, status: Status| {
            warn!(%peer, host = %host, reason = %reason, "refused a certificate renewal");
            status
        };
        let issuer = self
            .issuer()
            .map_err(|s| refuse("no CA (--insecure-dev)", s))?;
        let Some(current) = current else {
            return Err(refuse(
                "no client certificate",
                Status::unauthenticated(
                    "renewal needs the agent's current certificate; an agent without one enrolls with a join token",
                ),
            ));
        };
        if host.is_empty() {
            return Err(refuse(
                "not an agent certificate",
                Status::permission_denied("only an agent certificate can be renewed"),
            ));
        }
        match self
            .store
            .certificate(&current.serial)
            .await
            .map_err(store_failed)?
        {
            Some(c) if c.host == host && c.revoked_ms.is_none() && c.not_after_ms > now_ms() => {}
            Some(c) if c.host == host && c.revoked_ms.is_some() => {
                return Err(refuse(
                    "certificate revoked",
                    Status::permission_denied(removed_message(&host)),
                ));
            }
            _ => {
                return Err(refuse(
                    "certificate not issued by this controller",
                    Status::permission_denied(format!(
                        "agent {host}'s certificate (serial {}) was not issued by this controller; enroll it again with a new join token",
                        current.serial
                    )),
                ));
            }
        }
        let csr_pem = request.into_inner().csr_pem;
        let (cert_pem, parsed) = sign(issuer, &csr_pem, &host).map_err(|e| {
            refuse(
                &format!("bad CSR: {e}"),
                Status::invalid_argument(format!(
                    "the certificate signing request was refused: {e}"
                )),
            )
        })?;
        self.store
            .record_certificate(issued(&host, &parsed))
            .await
            .map_err(store_failed)?;
        info!(%peer, host = %host, serial = %parsed.serial, previous = %current.serial, expires = %rfc3339_unix(parsed.not_after_unix), "renewed an agent certificate");
        Ok(Response::new(EnrollResponse {
            cert_pem,
            ca_pem: issuer.ca.cert_pem().to_owned(),
            not_after_ms: u64::try_from(parsed.not_after_unix).unwrap_or(0) * 1000,
        }))
    }
}
