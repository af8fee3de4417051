//! Who may open an agent stream. Decided per stream from the TLS connection it came on,
//! before the stream is accepted:
//!
//! - [`Admission::Enrolled`] (`drover serve`): an agent certificate from the fleet CA,
//!   whose serial this controller issued and has not revoked, bound to the name the
//!   agent's hello gives; the host's labels from its join token override its own;
//! - [`Admission::Certificate`] (in-process test controllers): any agent certificate
//!   from the fleet CA, bound to the hello's name;
//! - [`Admission::Open`] (`--insecure-dev`, plaintext test controllers): anyone.

use std::collections::BTreeMap;

use drover_shared::tls::{Identity, TlsConnectInfo};
use tonic::Status;

use crate::store::{Store, now_ms};

/// The rule for accepting agent streams.
#[derive(Clone)]
pub enum Admission {
    /// Anyone may connect under any name (plaintext; development and tests only).
    Open,
    /// An agent certificate signed by the fleet CA, for the name in the hello.
    Certificate,
    /// An agent certificate this controller issued (recorded in the store), not revoked,
    /// for the name in the hello; labels from enrollment override the agent's.
    Enrolled(Store),
}

/// An agent whose certificate passed.
#[derive(Debug, Clone)]
pub(super) struct CertifiedAgent {
    /// The name the certificate is bound to.
    pub name: String,
    /// Labels from its enrollment, which override the hello's.
    pub labels: Option<BTreeMap<String, String>>,
}

/// The message a removed agent gets when it reconnects (or its stream is closed).
pub fn removed_message(host: &str) -> String {
    format!("agent {host} was removed from the fleet; enroll it again with a new join token")
}

impl Admission {
    /// Checks the connection before any message is read. `Ok(None)`: no certificate is
    /// needed (open admission).
    pub(super) async fn certificate(
        &self,
        tls: Option<&TlsConnectInfo>,
    ) -> Result<Option<CertifiedAgent>, Status> {
        if matches!(self, Admission::Open) {
            return Ok(None);
        }
        let Some(peer) = tls.and_then(|t| t.peer.as_ref()) else {
            return Err(Status::unauthenticated(
                "the agent channel needs an agent certificate: enroll this agent with a join token from `drover token create`",
            ));
        };
        let name = match &peer.identity {
            Some(Identity::Agent { name }) => name.clone(),
            Some(other) => {
                return Err(Status::permission_denied(format!(
                    "the client certificate is for {other}, not an agent"
                )));
            }
            None => {
                return Err(Status::permission_denied(
                    "the client certificate carries no Drover identity",
                ));
            }
        };
        let Admission::Enrolled(store) = self else {
            return Ok(Some(CertifiedAgent { name, labels: None }));
        };
        let unavailable = |e: crate::store::StoreError| {
            tracing::error!(error = %e, "cannot check an agent certificate");
            Status::unavailable("the controller cannot check certificates right now; retrying")
        };
        let issued = store.certificate(&peer.serial).await.map_err(unavailable)?;
        match issued {
            Some(c) if c.host == name && c.revoked_ms.is_none() && c.not_after_ms > now_ms() => {}
            Some(c) if c.host == name && c.revoked_ms.is_some() => {
                return Err(Status::permission_denied(removed_message(&name)));
            }
            _ => {
                return Err(Status::permission_denied(format!(
                    "agent {name}'s certificate (serial {}) was not issued by this controller or is no longer valid; enroll it again with a new join token",
                    peer.serial
                )));
            }
        }
        let labels = store.enrolled_labels(&name).await.map_err(unavailable)?;
        Ok(Some(CertifiedAgent { name, labels }))
    }
}

/// Whether the hello's name is the one the certificate is bound to.
pub(super) fn check_name(
    certified: Option<&CertifiedAgent>,
    hello_name: &str,
) -> Result<(), Status> {
    match certified {
        Some(c) if c.name != hello_name => Err(Status::permission_denied(format!(
            "the certificate is for agent {} but the hello names {hello_name:?}; an agent connects only under the name it enrolled with",
            c.name
        ))),
        _ => Ok(()),
    }
}
