//! `[service]`: what runs, and the container it becomes on a host.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;

use drover_proto::v1 as proto;
use drover_shared::image::ImageRef;
use drover_shared::labels;
use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};

/// `[service]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSection {
    /// Service name: `[a-z0-9][a-z0-9_.-]*`, unique in the fleet.
    pub name: String,
    /// Image repository without tag or digest (e.g. `registry:5000/team/web`);
    /// `--version TAG` picks the tag.
    pub image: String,
    /// Port the app listens on inside the container.
    pub port: NonZeroU16,
    /// Host port to publish on (default: the container port).
    pub host_port: Option<u16>,
    /// The two host ports a start-first rollout alternates between (`host_ports`); each
    /// deploy's new container takes the one the running container does not publish.
    pub host_ports: Option<[u16; 2]>,
    /// Host address to publish on.
    pub host_ip: HostIp,
    /// Environment of the container.
    pub env: BTreeMap<String, String>,
    /// Overrides the image's command.
    pub command: Vec<String>,
    /// Docker restart policy.
    pub restart: RestartPolicy,
    /// Extra container labels (never `drover.*`, which Drover sets).
    pub labels: BTreeMap<String, String>,
    /// Docker network to attach to (empty: the engine's bridge).
    pub network: String,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// Run Docker's init as PID 1 (`--init`), for apps that ignore SIGTERM as PID 1
    /// and would otherwise be killed at the end of `rollout.stop_timeout`.
    pub init: bool,
}

/// Where a host publishes the service's port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIp {
    /// Each agent's advertised address (`"advertise"`).
    Advertise,
    /// One address on every host (default `0.0.0.0`).
    Ip(IpAddr),
}

impl HostIp {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "advertise" => Some(Self::Advertise),
            ip => ip.parse().ok().map(Self::Ip),
        }
    }

    /// The address on a host advertising `advertise_address`.
    pub fn on_host(self, advertise_address: &str) -> String {
        match self {
            Self::Advertise => advertise_address.to_string(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

impl fmt::Display for HostIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Advertise => f.write_str("advertise"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Docker's restart policy for the service's containers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// `no`: never restarted.
    No,
    /// `on-failure`: restarted when it exits with an error.
    OnFailure,
    /// `unless-stopped` (default): restarted unless stopped on purpose.
    #[default]
    UnlessStopped,
    /// `always`: restarted whenever it stops.
    Always,
}

impl RestartPolicy {
    const ALL: [Self; 4] = [Self::No, Self::OnFailure, Self::UnlessStopped, Self::Always];

    /// The policy's name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::No => "no",
            Self::OnFailure => "on-failure",
            Self::UnlessStopped => "unless-stopped",
            Self::Always => "always",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The policy in wire form.
    pub fn to_proto(self) -> proto::RestartPolicy {
        match self {
            Self::No => proto::RestartPolicy::No,
            Self::OnFailure => proto::RestartPolicy::OnFailure,
            Self::UnlessStopped => proto::RestartPolicy::UnlessStopped,
            Self::Always => proto::RestartPolicy::Always,
        }
    }
}

/// A bind mount, `/host/path:/container/path[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute path on the host.
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Mounted read-only (`:ro`).
    pub read_only: bool,
}

impl Mount {
    /// Parses `/host:/container`, `/host:/container:ro` or `/host:/container:rw`.
    fn parse(m: &str) -> Option<Self> {
        let parts: Vec<&str> = m.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [s, t] => (*s, *t, false),
            [s, t, "ro"] => (*s, *t, true),
            [s, t, "rw"] => (*s, *t, false),
            _ => return None,
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return None;
        }
        Some(Self {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    }

    /// The mount in wire form.
    pub fn to_proto(&self) -> proto::Mount {
        proto::Mount {
            source: self.source.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
            kind: proto::MountKind::Bind as i32,
        }
    }
}

impl fmt::Display for Mount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.target)?;
        if self.read_only {
            f.write_str(":ro")?;
        }
        Ok(())
    }
}

/// `[service]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    name: String,
    image: String,
    port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    host_ports: Vec<u16>,
    #[serde(default = "default_host_ip")]
    host_ip: String,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    command: Vec<String>,
    #[serde(default = "default_restart")]
    restart: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    network: String,
    #[serde(default)]
    mounts: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    init: bool,
}

fn default_host_ip() -> String {
    "0.0.0.0".into()
}
fn default_restart() -> String {
    RestartPolicy::default().as_str().into()
}

impl ServiceSection {
    pub(super) fn from_raw(raw: RawService) -> Result<Self, SpecError> {
        if !valid_service_name(&raw.name) {
            return Err(invalid(
                "service.name",
                format!(
                    "{:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
                    raw.name
                ),
            ));
        }
        let image =
            ImageRef::parse(&raw.image).map_err(|e| invalid("service.image", e.to_string()))?;
        if image.tag.is_some() || image.digest.is_some() {
            return Err(invalid(
                "service.image",
                format!(
                    "{:?} names a tag or digest: give the repository only and pick the version with `drover deploy --version TAG`",
                    raw.image
                ),
            ));
        }
        let port = NonZeroU16::new(raw.port)
            .ok_or_else(|| invalid("service.port", "must be a port number from 1 to 65535"))?;
        let host_ports = match raw.host_ports[..] {
            [] => None,
            [a, b] if a != 0 && b != 0 && a != b => Some([a, b]),
            _ => {
                return Err(invalid(
                    "service.host_ports",
                    format!(
                        "{:?}: give two different host ports, e.g. [8080, 8081] (a start-first rollout alternates between them)",
                        raw.host_ports
                    ),
                ));
            }
        };
        if host_ports.is_some() && raw.host_port.is_some() {
            return Err(invalid(
                "service.host_ports",
                "set either host_port or host_ports, not both",
            ));
        }
        let host_ip = HostIp::parse(&raw.host_ip).ok_or_else(|| {
            invalid(
                "service.host_ip",
                format!(
                    "{:?} is not an IP address; write an IP or \"advertise\"",
                    raw.host_ip
                ),
            )
        })?;
        let restart = RestartPolicy::parse(&raw.restart).ok_or_else(|| {
            invalid(
                "service.restart",
                format!(
                    "{:?}: use no, on-failure, unless-stopped or always",
                    raw.restart
                ),
            )
        })?;
        if let Some(k) = raw.labels.keys().find(|k| labels::is_reserved(k)) {
            return Err(invalid(
                "service.labels",
                format!("{k:?}: drover.* labels are set by Drover"),
            ));
        }
        let mounts = raw
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| {
                Mount::parse(m).ok_or_else(|| {
                    invalid(
                        format!("service.mounts[{i}]"),
                        format!(
                            "{m:?}: write /host/path:/container/path or /host/path:/container/path:ro"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            name: raw.name,
            image: raw.image,
            port,
            host_port: raw.host_port,
            host_ports,
            host_ip,
            env: raw.env,
            command: raw.command,
            restart,
            labels: raw.labels,
            network: raw.network,
            mounts,
            init: raw.init,
        })
    }

    pub(super) fn to_raw(&self) -> RawService {
        RawService {
            name: self.name.clone(),
            image: self.image.clone(),
            port: self.port.get(),
            host_port: self.host_port,
            host_ports: self.host_ports.map(Vec::from).unwrap_or_default(),
            host_ip: self.host_ip.to_string(),
            env: self.env.clone(),
            command: self.command.clone(),
            restart: self.restart.as_str().into(),
            labels: self.labels.clone(),
            network: self.network.clone(),
            mounts: self.mounts.iter().map(Mount::to_string).collect(),
            init: self.init,
        }
    }

    /// The container to run on a host advertising `advertise_address`.
    pub(super) fn container(
        &self,
        image: &str,
        version: &str,
        advertise_address: &str,
    ) -> proto::ContainerSpec {
        let port = self.port.get();
        proto::ContainerSpec {
            service: self.name.clone(),
            image: image.to_string(),
            version: version.to_string(),
            env: self.env.clone().into_iter().collect(),
            command: self.command.clone(),
            ports: vec![proto::PortMapping {
                container_port: u32::from(port),
                host_ip: self.host_ip.on_host(advertise_address),
                host_port: u32::from(
                    self.host_ports
                        .map(|[first, _]| first)
                        .or(self.host_port)
                        .unwrap_or(port),
                ),
                protocol: "tcp".into(),
            }],
            labels: self.labels.clone().into_iter().collect(),
            restart_policy: self.restart.to_proto() as i32,
            mounts: self.mounts.iter().map(Mount::to_proto).collect(),
            network: self.network.clone(),
            init: self.init,
        }
    }
}

/// Whether `n` may name a service: `[a-z0-9][a-z0-9_.-]*`, at most 64 characters.
pub fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}
