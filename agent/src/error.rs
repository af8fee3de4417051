//! [`CommandFailure`]: why a command failed, in the form the controller receives
//! (`CommandError`): a kind, a message naming the bad value and what to do, the new
//! container's last log lines, and what the host runs after the failure.

use drover_shared::proto::{CommandError, ErrorKind, ServiceState};

use crate::runtime::RuntimeError;

/// A failed command.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CommandFailure {
    /// What kind of failure (drives the controller's reaction).
    pub kind: ErrorKind,
    /// What failed, naming the bad value, and what to do about it.
    pub message: String,
    /// Last log lines of the container that failed to start or become ready.
    pub log_tail: Vec<String>,
    /// What the host runs for the service after the failure.
    pub restored: Option<Box<ServiceState>>,
}

impl CommandFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            log_tail: vec![],
            restored: None,
        }
    }

    /// A refused argument.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// An agent-side bug or unexpected engine answer.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The wire form.
    pub fn into_proto(self) -> CommandError {
        CommandError {
            kind: self.kind as i32,
            message: self.message,
            log_tail: self.log_tail,
            restored: self.restored.map(|s| *s),
        }
    }
}

impl From<RuntimeError> for CommandFailure {
    fn from(e: RuntimeError) -> Self {
        Self::new(e.kind(), e.to_string())
    }
}
