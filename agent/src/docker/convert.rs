//! Conversions between bollard's models and the agent's: the create request from a
//! [`CreateSpec`], and a [`ContainerInfo`] from a container inspect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use bollard::models::{
    self, ContainerCreateBody, ContainerInspectResponse, HealthStatusEnum, HostConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use crate::runtime::{
    ContainerInfo, CreateSpec, HealthState, MountType, Protocol, PublishedPort, Restart, RunState,
    SecretEnv,
};

pub(super) fn create_body(spec: &CreateSpec) -> ContainerCreateBody {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol.as_str());
        bindings
            .entry(key)
            .or_insert_with(|| Some(vec![]))
            .get_or_insert_default()
            .push(PortBinding {
                host_ip: Some(p.host_ip.to_string()),
                host_port: Some(if p.host_port == 0 {
                    String::new()
                } else {
                    p.host_port.to_string()
                }),
            });
    }
    let restart = match spec.restart {
        Restart::No => RestartPolicyNameEnum::NO,
        Restart::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
        Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        Restart::Always => RestartPolicyNameEnum::ALWAYS,
    };
    let mounts = spec
        .mounts
        .iter()
        .map(|m| models::Mount {
            target: Some(m.target.clone()),
            source: (m.kind != MountType::Tmpfs).then(|| m.source.clone()),
            typ: Some(match m.kind {
                MountType::Bind => models::MountType::BIND,
                MountType::Volume => models::MountType::VOLUME,
                MountType::Tmpfs => models::MountType::TMPFS,
            }),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        labels: Some(spec.labels.clone()),
        env: Some(
            spec.env
                .iter()
                .cloned()
                .chain(spec.secret_env.iter().map(SecretEnv::expose_pair))
                .collect(),
        ),
        cmd: spec.cmd.clone(),
        exposed_ports: Some(bindings.keys().cloned().collect()),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            mounts: Some(mounts),
            network_mode: spec.network.clone(),
            init: spec.init.then_some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn time(s: Option<&String>) -> Option<SystemTime> {
    s.and_then(|s| humantime::parse_rfc3339(s).ok())
}

fn ports(map: Option<&models::PortMap>) -> Vec<PublishedPort> {
    let mut out = vec![];
    for (key, bindings) in map.into_iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let Ok(container_port) = port.parse::<u16>() else {
            continue;
        };
        let protocol = if proto == "udp" {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        for b in bindings.iter().flatten() {
            let host_ip = b
                .host_ip
                .as_deref()
                .filter(|s| !s.is_empty())
                .and_then(|s| s.parse::<IpAddr>().ok())
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            let host_port = b
                .host_port
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            out.push(PublishedPort {
                container_port,
                protocol,
                host_ip,
                host_port,
            });
        }
    }
    out.sort_by_key(|p| (p.container_port, p.host_port));
    out
}

pub(super) fn container_info(c: ContainerInspectResponse) -> ContainerInfo {
    let state = c.state.unwrap_or_default();
    use models::ContainerStateStatusEnum as S;
    let run_state = match state.status {
        Some(S::RUNNING) => RunState::Running,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::DEAD) => RunState::Dead,
        Some(S::REMOVING) => RunState::Removing,
        Some(S::CREATED) => RunState::Created,
        _ => RunState::Exited,
    };
    let (health, health_output) = match &state.health {
        Some(h) => {
            let status = match h.status {
                Some(HealthStatusEnum::STARTING) => HealthState::Starting,
                Some(HealthStatusEnum::HEALTHY) => HealthState::Healthy,
                Some(HealthStatusEnum::UNHEALTHY) => HealthState::Unhealthy,
                _ => HealthState::None,
            };
            let output = h
                .log
                .as_ref()
                .and_then(|l| l.last())
                .and_then(|r| r.output.clone())
                .map(|o| o.trim().to_string());
            (status, output)
        }
        None => (HealthState::None, None),
    };
    let config = c.config.unwrap_or_default();
    let network = c.network_settings.unwrap_or_default();
    let mut published = ports(network.ports.as_ref());
    if published.is_empty() {
        published = ports(
            c.host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref()),
        );
    }
    let addresses = network
        .networks
        .iter()
        .flat_map(|n| n.values())
        .filter_map(|e| e.ip_address.as_deref().and_then(|ip| ip.parse().ok()))
        .collect();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default(),
        state: run_state,
        exit_code: state.exit_code.unwrap_or(0),
        health,
        health_output,
        restart_count: u32::try_from(c.restart_count.unwrap_or(0)).unwrap_or(u32::MAX),
        created: time(c.created.as_ref()),
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0),
        started_at: time(state.started_at.as_ref()),
        finished_at: time(state.finished_at.as_ref()),
        ports: published,
        addresses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_environment_reaches_the_engine_only() {
        use crate::runtime::{Secret, SecretEnv};
        let spec = CreateSpec {
            name: "drover-h1-web-v1-abc123".into(),
            image: "app:v1".into(),
            labels: HashMap::new(),
            env: vec!["PORT=8080".into()],
            secret_env: vec![SecretEnv {
                name: "DB_PASSWORD".into(),
                value: Secret::new("hunter2".into()),
            }],
            cmd: None,
            ports: vec![],
            restart: Restart::UnlessStopped,
            mounts: vec![],
            network: None,
            init: true,
        };
        let body = create_body(&spec);
        assert_eq!(body.host_config.as_ref().and_then(|h| h.init), Some(true));
        assert_eq!(
            body.env.unwrap(),
            ["PORT=8080".to_string(), "DB_PASSWORD=hunter2".to_string()]
        );
        assert!(!format!("{spec:?}").contains("hunter2"));
    }

    #[test]
    fn port_maps_are_read() {
        let map: models::PortMap = HashMap::from([
            (
                "8080/tcp".to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.2".into()),
                    host_port: Some("18080".into()),
                }]),
            ),
            ("53/udp".to_string(), None),
        ]);
        let p = ports(Some(&map));
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].probe_address().to_string(), "127.0.0.2:18080");
    }
}
