//! Turning a wire `ContainerSpec` into a checked [`CreateSpec`]: every field validated
//! before anything on the host is touched, the container named
//! `drover-{agent}-{service}-{version}-{6 hex}`, and the drover.* labels set.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use drover_shared::image::ImageRef;
use drover_shared::labels;
use drover_shared::proto::{ContainerSpec, Fence, MountKind, RestartPolicy};

use crate::config::check_token;
use crate::error::CommandFailure;
use crate::runtime::{CreateSpec, MountSpec, MountType, Protocol, PublishedPort, Restart};

/// A validated container spec, before naming and labelling.
#[derive(Debug, Clone)]
pub struct CheckedSpec {
    /// The service.
    pub service: String,
    /// The image, parsed.
    pub image: ImageRef,
    /// The human version (defaulted from the tag or digest when empty).
    pub version: String,
    /// Environment as `KEY=value`.
    pub env: Vec<String>,
    /// CMD override.
    pub cmd: Option<Vec<String>>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// The operator's own labels (no drover.* keys).
    pub labels: HashMap<String, String>,
    /// Restart policy.
    pub restart: Restart,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Network to attach to.
    pub network: Option<String>,
    /// Run Docker's init as PID 1 (`--init`).
    pub init: bool,
}

/// Checks a service name.
pub fn check_service(service: &str) -> Result<(), CommandFailure> {
    check_token(service, 63).map_err(|reason| {
        CommandFailure::invalid(format!("invalid service name {service:?}: {reason}"))
    })
}

/// Validates every field of `spec`.
pub fn check(spec: &ContainerSpec) -> Result<CheckedSpec, CommandFailure> {
    check_service(&spec.service)?;
    let svc = &spec.service;
    let image = ImageRef::parse(&spec.image).map_err(|e| {
        CommandFailure::invalid(format!(
            "service {svc}: {e}: fix the image in the service spec"
        ))
    })?;
    let version = if spec.version.is_empty() {
        match (&image.tag, &image.digest) {
            (Some(t), _) => t.clone(),
            (None, Some(d)) => d.trim_start_matches("sha256:").chars().take(12).collect(),
            (None, None) => "latest".into(),
        }
    } else {
        spec.version.clone()
    };
    if version.len() > 128 || version.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CommandFailure::invalid(format!(
            "service {svc}: invalid version {version:?}: use at most 128 characters without spaces"
        )));
    }
    let mut env: Vec<String> = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(CommandFailure::invalid(format!(
                "service {svc}: invalid environment variable name {k:?}: names may not be empty or contain '='"
            )));
        }
        env.push(format!("{k}={v}"));
    }
    env.sort();
    for k in spec.labels.keys() {
        if labels::is_reserved(k) {
            return Err(CommandFailure::invalid(format!(
                "service {svc}: label {k:?} is reserved: drover.* labels are set by the agent; rename it"
            )));
        }
    }
    let ports = check_ports(svc, spec)?;
    let restart = match RestartPolicy::try_from(spec.restart_policy) {
        Ok(RestartPolicy::Unspecified | RestartPolicy::UnlessStopped) => Restart::UnlessStopped,
        Ok(RestartPolicy::No) => Restart::No,
        Ok(RestartPolicy::OnFailure) => Restart::OnFailure,
        Ok(RestartPolicy::Always) => Restart::Always,
        Err(_) => {
            return Err(CommandFailure::invalid(format!(
                "service {svc}: unknown restart policy {}",
                spec.restart_policy
            )));
        }
    };
    let mut mounts = vec![];
    for m in &spec.mounts {
        let kind = match MountKind::try_from(m.kind) {
            Ok(MountKind::Bind) => MountType::Bind,
            Ok(MountKind::Volume) => MountType::Volume,
            Ok(MountKind::Tmpfs) => MountType::Tmpfs,
            _ => {
                return Err(CommandFailure::invalid(format!(
                    "service {svc}: mount {:?} has no kind: set bind, volume or tmpfs",
                    m.target
                )));
            }
        };
        if !m.target.starts_with('/') {
            return Err(CommandFailure::invalid(format!(
                "service {svc}: mount target {:?} must be an absolute path",
                m.target
            )));
        }
        let source_ok = match kind {
            MountType::Bind => m.source.starts_with('/'),
            MountType::Volume => check_token(&m.source, 255).is_ok(),
            MountType::Tmpfs => true,
        };
        if !source_ok {
            return Err(CommandFailure::invalid(format!(
                "service {svc}: mount source {:?} for {:?}: a bind mount needs an absolute host path, a volume a name",
                m.source, m.target
            )));
        }
        mounts.push(MountSpec {
            kind,
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
        });
    }
    let network = if spec.network.is_empty() {
        None
    } else {
        check_token(&spec.network, 128).map_err(|reason| {
            CommandFailure::invalid(format!(
                "service {svc}: invalid network {:?}: {reason}",
                spec.network
            ))
        })?;
        Some(spec.network.clone())
    };
    Ok(CheckedSpec {
        service: svc.clone(),
        image,
        version,
        env,
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        ports,
        labels: spec.labels.clone().into_iter().collect(),
        restart,
        mounts,
        network,
        init: spec.init,
    })
}

fn check_ports(svc: &str, spec: &ContainerSpec) -> Result<Vec<PublishedPort>, CommandFailure> {
    let mut out: Vec<PublishedPort> = vec![];
    for p in &spec.ports {
        let bad = |what: String| CommandFailure::invalid(format!("service {svc}: {what}"));
        let container_port = u16::try_from(p.container_port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                bad(format!(
                    "container port {} is not in 1-65535",
                    p.container_port
                ))
            })?;
        let host_port = u16::try_from(p.host_port)
            .map_err(|_| bad(format!("host port {} is not in 0-65535", p.host_port)))?;
        let protocol = match p.protocol.as_str() {
            "" | "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(bad(format!(
                    "protocol {other:?} of port {container_port}: use tcp or udp"
                )));
            }
        };
        let host_ip = if p.host_ip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            p.host_ip.parse().map_err(|_| {
                bad(format!(
                    "host address {:?} of port {container_port} is not an IP address",
                    p.host_ip
                ))
            })?
        };
        let port = PublishedPort {
            container_port,
            protocol,
            host_ip,
            host_port,
        };
        let clash = out.iter().any(|o| {
            host_port != 0
                && o.host_port == host_port
                && o.protocol == protocol
                && (o.host_ip == host_ip || o.host_ip.is_unspecified() || host_ip.is_unspecified())
        });
        if clash {
            return Err(bad(format!(
                "host port {host_ip}:{host_port}/{} is published twice",
                protocol.as_str()
            )));
        }
        out.push(port);
    }
    Ok(out)
}

/// `drover-{agent}-{service}-{version}-{suffix}`, with characters Docker refuses in names
/// replaced by '-'.
pub fn container_name(agent: &str, service: &str, version: &str, suffix: &str) -> String {
    let clean = |s: &str, max: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(max)
            .collect()
    };
    format!(
        "drover-{}-{}-{}-{}",
        clean(agent, 63),
        clean(service, 63),
        clean(version, 40),
        clean(suffix, 16)
    )
}

/// Six random hex digits, so a re-deploy of the same version gets a fresh name.
pub fn random_suffix() -> String {
    format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff)
}

/// Who is creating the container, for its labels.
pub struct Origin<'a> {
    /// This agent's name.
    pub agent: &'a str,
    /// The command creating it.
    pub command_id: &'a str,
    /// Its deployment and epoch.
    pub fence: &'a Fence,
    /// The image digest it runs.
    pub digest: &'a str,
}

/// The full create request: user labels plus the drover.* ones.
pub fn create_spec(spec: &CheckedSpec, origin: &Origin<'_>) -> CreateSpec {
    let mut all = spec.labels.clone();
    for (k, v) in [
        (labels::SERVICE, spec.service.as_str()),
        (labels::VERSION, spec.version.as_str()),
        (labels::DEPLOYMENT, origin.fence.deployment_id.as_str()),
        (labels::AGENT, origin.agent),
        (labels::COMMAND, origin.command_id),
        (labels::DIGEST, origin.digest),
    ] {
        all.insert(k.to_string(), v.to_string());
    }
    all.insert(labels::EPOCH.to_string(), origin.fence.epoch.to_string());
    all.insert(labels::IMAGE.to_string(), spec.image.to_string());
    CreateSpec {
        name: container_name(origin.agent, &spec.service, &spec.version, &random_suffix()),
        image: spec.image.to_string(),
        labels: all,
        env: spec.env.clone(),
        secret_env: vec![],
        cmd: spec.cmd.clone(),
        ports: spec.ports.clone(),
        restart: spec.restart,
        mounts: spec.mounts.clone(),
        network: spec.network.clone(),
        init: spec.init,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_shared::proto::PortMapping;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            service: "web".into(),
            image: "127.0.0.1:5000/team/app:v2".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_ip: "127.0.0.2".into(),
                host_port: 18080,
                protocol: String::new(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(
            container_name("h1", "web", "v2", "a1b2c3"),
            "drover-h1-web-v2-a1b2c3"
        );
        assert_eq!(
            container_name("h1", "web", "1.0+build/7", "a1b2c3"),
            "drover-h1-web-1.0-build-7-a1b2c3"
        );
        let s = random_suffix();
        assert_eq!(s.len(), 6);
        assert!(s.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn version_defaults_from_tag_and_labels_are_set() {
        let checked = check(&spec()).unwrap();
        assert_eq!(checked.version, "v2");
        let fence = Fence {
            deployment_id: "d1".into(),
            epoch: 4,
        };
        let origin = Origin {
            agent: "h1",
            command_id: "c1",
            fence: &fence,
            digest: "sha256:ab",
        };
        let c = create_spec(&checked, &origin);
        assert!(c.name.starts_with("drover-h1-web-v2-"));
        assert_eq!(c.labels[labels::EPOCH], "4");
        assert_eq!(c.labels[labels::COMMAND], "c1");
        assert_eq!(c.labels[labels::IMAGE], "127.0.0.1:5000/team/app:v2");
        assert_eq!(c.ports[0].probe_address().to_string(), "127.0.0.2:18080");
    }

    #[test]
    fn bad_specs_are_refused_by_name() {
        type Edit = Box<dyn Fn(&mut ContainerSpec)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|s| s.service = "we b".into()),
                "invalid service name \"we b\"",
            ),
            (Box::new(|s| s.image = "Bad/Image".into()), "\"Bad/Image\""),
            (
                Box::new(|s| {
                    s.labels.insert("drover.version".into(), "x".into());
                }),
                "drover.version",
            ),
            (Box::new(|s| s.ports[0].container_port = 70000), "70000"),
            (Box::new(|s| s.ports[0].protocol = "sctp".into()), "sctp"),
            (
                Box::new(|s| s.ports[0].host_ip = "localhost".into()),
                "localhost",
            ),
            (
                Box::new(|s| {
                    let p = s.ports[0].clone();
                    s.ports.push(p);
                }),
                "published twice",
            ),
            (
                Box::new(|s| {
                    s.env.insert("A=B".into(), "x".into());
                }),
                "A=B",
            ),
        ];
        for (edit, needle) in cases {
            let mut s = spec();
            edit(&mut s);
            let e = check(&s).unwrap_err();
            assert_eq!(e.kind, drover_shared::proto::ErrorKind::InvalidArgument);
            assert!(e.message.contains(needle), "{needle}: {}", e.message);
        }
    }
}
