//! The narrow interface between the agent's commands and a container engine.
//!
//! [`ContainerRuntime`] is everything prepare, swap, rollback and inspect need from
//! Docker (and deploy hooks, `exec` included), in the agent's own terms ([`ContainerInfo`], [`CreateSpec`], [`RuntimeError`]).
//! [`crate::docker::DockerRuntime`] implements it with bollard; a simulated runtime can
//! implement it for scale benchmarks. End-to-end tests always use real Docker.

mod model;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_shared::image::ImageRef;
use drover_shared::proto::ErrorKind;

pub use model::{
    ContainerInfo, CreateSpec, HealthState, LocalImage, MountSpec, MountType, Protocol,
    PublishedPort, PullProgress, RegistryCredentials, Restart, RunState, Secret, SecretEnv,
};

/// Which output of the container a log frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Bytes a container wrote, as the engine hands them over (not split into lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFrame {
    /// stdout or stderr.
    pub output: LogOutput,
    /// What was written.
    pub bytes: Vec<u8>,
}

/// Which part of a container's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogsQuery {
    /// Lines from the end of the log; `None` = all.
    pub tail: Option<u32>,
    /// Only what was written at or after this Unix time (seconds).
    pub since_unix_s: Option<u64>,
    /// Keep reading what the container writes from now on.
    pub follow: bool,
}

/// A container's log as a stream of frames; ends when the log does (or, following, when
/// the container stops).
pub type LogFrames =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogFrame, RuntimeError>> + Send>>;

/// A command to run inside a running container (`docker exec`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecSpec {
    /// The argv, run as is (no shell, no entrypoint).
    pub argv: Vec<String>,
    /// `KEY=value` pairs added to the container's own environment.
    pub env: Vec<String>,
}

/// An exec that was started with its output attached.
pub struct ExecRun {
    /// The engine's id of the exec, for [`ContainerRuntime::exec_status`].
    pub id: String,
    /// What the process writes; ends when it exits (or the engine drops the stream).
    pub output: LogFrames,
}

/// How an exec is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecStatus {
    /// The process still runs.
    pub running: bool,
    /// Its exit code, once it has exited.
    pub exit_code: Option<i64>,
    /// Its process id inside the container's PID namespace, when the engine's host
    /// process table can be read (the agent runs beside dockerd): what a `kill` run by a
    /// second exec needs, since Docker cannot signal an exec itself.
    pub container_pid: Option<u32>,
}

/// A failure of the engine or of a registry behind it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The engine itself cannot be reached.
    #[error(
        "Docker engine at {endpoint} is unreachable: {detail}; check that dockerd runs and this user may use the socket"
    )]
    Unavailable {
        /// The engine URL.
        endpoint: String,
        /// The connection error.
        detail: String,
    },
    /// The registry refused the credentials (or demanded some).
    #[error(
        "registry {registry} refused the credentials for user '{user}': check the username/password ({detail})"
    )]
    RegistryAuth {
        /// Registry host.
        registry: String,
        /// User name tried (empty when none was sent).
        user: String,
        /// The registry's answer.
        detail: String,
    },
    /// The registry does not have the image (repository or tag unknown).
    #[error("image {image} was not found in its registry ({detail}): check the repository and tag")]
    ImageNotFound {
        /// The reference.
        image: String,
        /// The registry's answer.
        detail: String,
    },
    /// The registry cannot be reached.
    #[error("registry {registry} is unreachable: {detail}")]
    RegistryUnavailable {
        /// Registry host.
        registry: String,
        /// The connection error.
        detail: String,
    },
    /// A host port is already taken.
    #[error("a published port is already in use on this host: {detail}")]
    PortInUse {
        /// The engine's message.
        detail: String,
    },
    /// The object does not exist (any more).
    #[error("{what} does not exist")]
    NotFound {
        /// What was looked up.
        what: String,
    },
    /// The engine did not answer in time.
    #[error("Docker did not finish {op} within {}", drover_shared::duration::human(*.after))]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The limit.
        after: Duration,
    },
    /// Any other refusal from the engine.
    #[error("Docker refused to {op}: {message}")]
    Engine {
        /// The operation, e.g. "create container web-1".
        op: String,
        /// The engine's message.
        message: String,
    },
}

impl RuntimeError {
    /// The wire error kind for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unavailable { .. } => ErrorKind::DockerUnavailable,
            Self::RegistryAuth { .. } => ErrorKind::RegistryAuth,
            Self::ImageNotFound { .. } => ErrorKind::ImageNotFound,
            Self::RegistryUnavailable { .. } => ErrorKind::RegistryUnavailable,
            Self::PortInUse { .. } => ErrorKind::PortInUse,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::NotFound { .. } | Self::Engine { .. } => ErrorKind::Internal,
        }
    }
}

/// The container engine, as the commands see it. Every method is one engine operation;
/// policy (what to stop, when to restore) lives in the commands.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// The engine URL, for messages.
    fn endpoint(&self) -> &str;

    /// Checks that the engine answers.
    fn ping(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Asks the registry (through the engine, with `creds`) which digest `image` names.
    fn resolve_digest(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Pulls `image` (normally pinned by digest), reporting progress as it goes.
    fn pull(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Gives the local image `source` the name `repo:tag`.
    fn tag(
        &self,
        source: &str,
        repo: &str,
        tag: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The local image `reference` names, if present.
    fn image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, RuntimeError>> + Send;

    /// Every container labelled `drover.agent=<agent>`, in any state.
    fn list_managed(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// One container, or `None` when it does not exist.
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send;

    /// Creates (does not start) a container; returns its id.
    fn create(
        &self,
        spec: &CreateSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts a container.
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops a container: SIGTERM, then SIGKILL after `grace`. Stopping a stopped
    /// container succeeds.
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a stopped container (and its anonymous volumes). A missing one succeeds.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The last `lines` lines of the container's stdout and stderr.
    fn logs_tail(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// The container's stdout and stderr as `query` asks.
    fn logs(
        &self,
        id: &str,
        query: LogsQuery,
    ) -> impl Future<Output = Result<LogFrames, RuntimeError>> + Send;

    /// Starts `spec` inside the running container `container` with its stdout and
    /// stderr attached. Dropping the output abandons the exec; the process runs on.
    fn exec(
        &self,
        container: &str,
        spec: &ExecSpec,
    ) -> impl Future<Output = Result<ExecRun, RuntimeError>> + Send;

    /// How the exec `exec_id` (from [`ContainerRuntime::exec`]) is doing.
    fn exec_status(
        &self,
        exec_id: &str,
    ) -> impl Future<Output = Result<ExecStatus, RuntimeError>> + Send;

    /// Where a readiness probe reaches `container_port` of `info` (0 = its first published
    /// port): the published host address, else the container's own address.
    fn probe_address(&self, info: &ContainerInfo, container_port: u16) -> Option<SocketAddr> {
        let published = info.ports.iter().find(|p| {
            p.protocol == Protocol::Tcp
                && p.host_port != 0
                && (container_port == 0 || p.container_port == container_port)
        });
        match published {
            Some(p) => Some(p.probe_address()),
            None if container_port != 0 => info
                .addresses
                .first()
                .map(|ip| SocketAddr::new(*ip, container_port)),
            None => None,
        }
    }
}

/// A shared runtime is a runtime (so a benchmark or test can keep a handle on it).
impl<T: ContainerRuntime> ContainerRuntime for Arc<T> {
    fn endpoint(&self) -> &str {
        (**self).endpoint()
    }
    fn ping(&self) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).ping()
    }
    fn resolve_digest(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        (**self).resolve_digest(image, creds)
    }
    fn pull(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).pull(image, creds, progress)
    }
    fn tag(
        &self,
        source: &str,
        repo: &str,
        tag: &str,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).tag(source, repo, tag)
    }
    fn image(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<LocalImage>, RuntimeError>> + Send {
        (**self).image(reference)
    }
    fn list_managed(
        &self,
        agent: &str,
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send {
        (**self).list_managed(agent)
    }
    fn inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send {
        (**self).inspect(id)
    }
    fn create(
        &self,
        spec: &CreateSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send {
        (**self).create(spec)
    }
    fn start(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).start(id)
    }
    fn stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).stop(id, grace)
    }
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send {
        (**self).remove(id)
    }
    fn logs_tail(
        &self,
        id: &str,
        lines: usize,
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send {
        (**self).logs_tail(id, lines)
    }
    fn logs(
        &self,
        id: &str,
        query: LogsQuery,
    ) -> impl Future<Output = Result<LogFrames, RuntimeError>> + Send {
        (**self).logs(id, query)
    }
    fn exec(
        &self,
        container: &str,
        spec: &ExecSpec,
    ) -> impl Future<Output = Result<ExecRun, RuntimeError>> + Send {
        (**self).exec(container, spec)
    }
    fn exec_status(
        &self,
        exec_id: &str,
    ) -> impl Future<Output = Result<ExecStatus, RuntimeError>> + Send {
        (**self).exec_status(exec_id)
    }
    fn probe_address(&self, info: &ContainerInfo, container_port: u16) -> Option<SocketAddr> {
        (**self).probe_address(info, container_port)
    }
}
