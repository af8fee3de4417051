//! What can go wrong talking to HAProxy, with enough context (which HAProxy, backend,
//! server, command) for an operator to act on the message alone.

use std::time::Duration;

use super::stats::{OpStatus, ParseError};

/// Errors of the load balancer driver.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A runtime API address in the config could not be read.
    #[error(
        "invalid HAProxy runtime address {input:?}: {reason}; use unix:/path/to/admin.sock, \
         /path/to/admin.sock, 127.0.0.1:9999 or tcp:127.0.0.1:9999"
    )]
    InvalidAddr {
        /// The text as configured.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A backend or server name HAProxy would not accept, or that would inject commands.
    #[error(
        "invalid HAProxy {what} name {name:?}: use only letters, digits, '-', '_', '.' and ':'"
    )]
    InvalidName {
        /// "backend" or "server".
        what: &'static str,
        /// The rejected name.
        name: String,
    },

    /// This controller no longer leads (a replica that lost its lease): it changes
    /// nothing on HAProxy.
    #[error(
        "refused to {step} on HAProxy backend {backend}: this controller is no longer the leader \
         (its lease was lost or it was stalled past it); the leader carries the deployment on"
    )]
    NotLeader {
        /// The backend.
        backend: String,
        /// What it would have changed.
        step: String,
    },

    /// No connection to the runtime API.
    #[error(
        "cannot connect to HAProxy runtime API at {haproxy}: {source}; check that HAProxy runs \
         and has `stats socket {haproxy} level admin`, and that drover may open it"
    )]
    Connect {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },

    /// The connection broke while sending a command or reading the answer.
    #[error("HAProxy at {haproxy} broke the connection during `{command}`: {source}")]
    Io {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command sent.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// No full answer within the command timeout.
    #[error(
        "HAProxy at {haproxy} did not answer `{command}` within {}; check that it is \
         not overloaded, or raise the LB command timeout",
        drover_shared::duration::human(*.timeout)
    )]
    Timeout {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command sent.
        command: String,
        /// The limit that passed.
        timeout: Duration,
    },

    /// The backend is not configured on this HAProxy.
    #[error(
        "HAProxy at {haproxy} has no backend {backend}: add it to that HAProxy's config or fix \
         `backend` in the spec"
    )]
    NoSuchBackend {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The backend asked for.
        backend: String,
    },

    /// The server is not in the backend on this HAProxy.
    #[error(
        "HAProxy at {haproxy} does not know server {backend}/{server}: add it to backend \
         {backend} or set `server_name` in the spec"
    )]
    NoSuchServer {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The backend.
        backend: String,
        /// The server asked for.
        server: String,
    },

    /// The stats socket's level is too low for the command.
    #[error(
        "HAProxy at {haproxy} refused `{command}`: permission denied; give that stats socket \
         `level admin`"
    )]
    PermissionDenied {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command refused.
        command: String,
    },

    /// This HAProxy does not have the command.
    #[error(
        "HAProxy at {haproxy} does not know `{command}`: upgrade it (drover is tested with \
         HAProxy 2.6)"
    )]
    UnknownCommand {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command sent.
        command: String,
    },

    /// HAProxy answered something other than success to a command that changes state.
    #[error("HAProxy at {haproxy} rejected `{command}`: {answer}")]
    Rejected {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command sent.
        command: String,
        /// HAProxy's answer, trimmed.
        answer: String,
    },

    /// The answer did not have the expected format.
    #[error("cannot read HAProxy's answer to `{command}` at {haproxy}: {source}")]
    Parse {
        /// The HAProxy runtime address.
        haproxy: String,
        /// The command sent.
        command: String,
        /// What was wrong.
        #[source]
        source: ParseError,
    },

    /// The server did not become UP in time after being enabled.
    #[error(
        "server {}/{} is not UP on HAProxy at {} after {} (last status {}, check {}); check \
         that the app answers the health check",
        .0.backend, .0.server, .0.haproxy, drover_shared::duration::human(.0.waited), .0.status, .0.check
    )]
    NotUp(Box<NotUp>),
}

impl LbError {
    /// The HAProxy could not be reached or did not answer in time: it may be restarting,
    /// and asking again may work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LbError::Connect { .. } | LbError::Io { .. } | LbError::Timeout { .. }
        )
    }
}

/// Where and how a server failed to come UP (boxed: it keeps [`LbError`] small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUp {
    /// The HAProxy runtime address.
    pub haproxy: String,
    /// The backend.
    pub backend: String,
    /// The server.
    pub server: String,
    /// Last status seen.
    pub status: OpStatus,
    /// Last health check status and description.
    pub check: String,
    /// How long we waited.
    pub waited: Duration,
}
