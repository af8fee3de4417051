//! The agent's words for what a container engine holds: containers ([`ContainerInfo`]),
//! what to create ([`CreateSpec`]), ports, mounts, images, and registry credentials
//! (whose secret never prints).

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use drover_shared::labels;

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

/// A secret environment variable: `name=value` in the container's environment. `Debug`
/// shows the name only.
#[derive(Clone)]
pub struct SecretEnv {
    /// The variable's name (not secret).
    pub name: String,
    /// Its value. Only the Docker layer reads it, to build the create request.
    pub value: Secret,
}

impl SecretEnv {
    /// The `NAME=value` form the engine takes. Never log it.
    pub fn expose_pair(&self) -> String {
        format!("{}={}", self.name, self.value.expose())
    }
}

impl fmt::Debug for SecretEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=***", self.name)
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
    /// The host's process id of its main process while it runs.
    pub pid: Option<u32>,
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
    /// Secret environment variables, added to `env` by the engine layer only; `Debug`
    /// hides their values.
    pub secret_env: Vec<SecretEnv>,
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
    /// Run Docker's init as PID 1 (`--init`): signals reach an app that would ignore
    /// SIGTERM as PID 1.
    pub init: bool,
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
