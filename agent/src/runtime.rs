//! The narrow interface between the agent's commands and a container engine.
//!
//! [`ContainerRuntime`] is everything prepare, swap, rollback and inspect need from
//! Docker, in the agent's own terms ([`ContainerInfo`], [`CreateSpec`], [`RuntimeError`]).
//! [`crate::docker::DockerRuntime`] implements it with bollard; a simulated runtime can
//! implement it for scale benchmarks. End-to-end tests always use real Docker.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_shared::image::ImageRef;
use drover_shared::labels;
use drover_shared::proto::ErrorKind;

/// Credentials for one registry. `Debug` hides the password; never log or format it.
#[derive(Clone)]
pub struct RegistryCredentials {
    /// User name (not secret; appears in error messages).
    pub username: String,
    /// Password or token. Only the Docker layer reads it, to build the auth header.
    pub password: Secret,
    /// Registry host the credentials are for, e.g. `127.0.0.1:5000`.
    pub server: String,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &self.password)
            .field("server", &self.server)
            .finish()
    }
}

/// A secret string whose `Debug` and `Display` print `***`.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(value)
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name Docker uses in port keys (`80/tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPort {
    /// Port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Host address it is published on (0.0.0.0 = every address).
    pub host_ip: IpAddr,
    /// Host port (0 = Docker picks one).
    pub host_port: u16,
}

impl PublishedPort {
    /// The address to probe it on: an unspecified host address means loopback.
    pub fn probe_address(&self) -> SocketAddr {
        let ip = if self.host_ip.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.host_ip
        };
        SocketAddr::new(ip, self.host_port)
    }
}

/// Lifecycle state of a container, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Being restarted by its restart policy.
    Restarting,
    /// Stopped (by us, or it exited).
    Exited,
    /// Paused.
    Paused,
    /// Dead (engine could not stop or remove it cleanly).
    Dead,
    /// Being removed.
    Removing,
}

/// Health reported by the image's HEALTHCHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// The image has no HEALTHCHECK.
    None,
    /// Checks are still in their start period.
    Starting,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
}

/// What the agent knows about one container.
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    /// Engine container id.
    pub id: String,
    /// Container name, without Docker's leading '/'.
    pub name: String,
    /// The image the container was created from (as referenced at create).
    pub image: String,
    /// Container labels.
    pub labels: HashMap<String, String>,
    /// Lifecycle state.
    pub state: RunState,
    /// Exit code of the last run (0 while running).
    pub exit_code: i64,
    /// HEALTHCHECK state.
    pub health: HealthState,
    /// Output of the last HEALTHCHECK run, if any.
    pub health_output: Option<String>,
    /// How often the engine restarted it.
    pub restart_count: u32,
    /// Creation time.
    pub created: Option<SystemTime>,
    /// Last start time.
    pub started_at: Option<SystemTime>,
    /// Last stop time.
    pub finished_at: Option<SystemTime>,
    /// Published ports (actual bindings while running, else the configured ones).
    pub ports: Vec<PublishedPort>,
    /// Addresses of the container on its networks.
    pub addresses: Vec<IpAddr>,
}

impl ContainerInfo {
    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }
    /// The drover.service label.
    pub fn service(&self) -> &str {
        self.label(labels::SERVICE)
    }
    /// The drover.version label.
    pub fn version(&self) -> &str {
        self.label(labels::VERSION)
    }
    /// The drover.deployment label.
    pub fn deployment(&self) -> &str {
        self.label(labels::DEPLOYMENT)
    }
    /// The drover.epoch label (0 when absent or unreadable).
    pub fn epoch(&self) -> u64 {
        self.label(labels::EPOCH).parse().unwrap_or(0)
    }
    /// The drover.command label: the command that created the container.
    pub fn command(&self) -> &str {
        self.label(labels::COMMAND)
    }
    /// The drover.digest label.
    pub fn digest(&self) -> &str {
        self.label(labels::DIGEST)
    }
    /// The image as the operator wrote it (drover.image label, else the engine's).
    pub fn image_ref(&self) -> &str {
        match self.label(labels::IMAGE) {
            "" => &self.image,
            l => l,
        }
    }
    /// Running or being restarted: the container holds the service's slot.
    pub fn is_active(&self) -> bool {
        matches!(self.state, RunState::Running | RunState::Restarting)
    }
    /// When the container last ran (its stop, else start, else creation time), for
    /// picking the most recently run kept container.
    pub fn last_run(&self) -> SystemTime {
        [self.finished_at, self.started_at, self.created]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Restart policy of a created container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Never restart.
    No,
    /// Restart when it exits non-zero.
    OnFailure,
    /// Restart unless stopped by us (the default).
    UnlessStopped,
    /// Always restart (note: also after a dockerd restart, even if we stopped it).
    Always,
}

/// Kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// A host path.
    Bind,
    /// A named volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount of a created container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Bind, volume or tmpfs.
    pub kind: MountType,
    /// Host path or volume name (empty for tmpfs).
    pub source: String,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Everything needed to create a container.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// Container name.
    pub name: String,
    /// Image reference (pinned by digest when the controller sends one).
    pub image: String,
    /// All labels, drover.* included.
    pub labels: HashMap<String, String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Replaces the image's CMD when set.
    pub cmd: Option<Vec<String>>,
    /// Ports to publish.
    pub ports: Vec<PublishedPort>,
    /// Restart policy.
    pub restart: Restart,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Docker network to attach to, if not the default bridge.
    pub network: Option<String>,
}

/// An image present on the host.
#[derive(Debug, Clone, Default)]
pub struct LocalImage {
    /// Engine image id.
    pub id: String,
    /// `repo@sha256:...` references the image is known by.
    pub repo_digests: Vec<String>,
}

/// Pull progress, summed over layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Bytes done.
    pub current: u64,
    /// Bytes expected (0 when unknown).
    pub total: u64,
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
    #[error("Docker did not finish {op} within {after:?}")]
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
    fn probe_address(&self, info: &ContainerInfo, container_port: u16) -> Option<SocketAddr> {
        (**self).probe_address(info, container_port)
    }
}
