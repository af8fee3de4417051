//! What runs per service, derived from container labels alone: the active container and
//! the kept (stopped) ones, newest first, and their wire form (`ServiceState`). Docker
//! holds this state; the agent adds only which containers became ready once
//! ([`super::record`]), which Docker cannot record on a container.

use std::collections::BTreeMap;

use drover_shared::proto::{ContainerState, Health, KeptContainer, ServiceState};

use crate::runtime::{ContainerInfo, HealthState, RunState};

/// One service's containers on this host.
#[derive(Debug, Clone, Default)]
pub struct ServiceContainers {
    /// The service name.
    pub service: String,
    /// Running (or restarting) containers, most recently started first. Normally one.
    pub active: Vec<ContainerInfo>,
    /// Every other container, most recently run first: the rollback candidates.
    pub kept: Vec<ContainerInfo>,
}

impl ServiceContainers {
    /// Splits `containers` (all of one service) into active and kept.
    pub fn new(service: &str, containers: Vec<ContainerInfo>) -> Self {
        let (mut active, mut kept): (Vec<_>, Vec<_>) =
            containers.into_iter().partition(ContainerInfo::is_active);
        active.sort_by_key(|c| std::cmp::Reverse(c.started_at));
        kept.sort_by_key(|c| std::cmp::Reverse(c.last_run()));
        Self {
            service: service.to_string(),
            active,
            kept,
        }
    }

    /// The container holding the service now, if any.
    pub fn current(&self) -> Option<&ContainerInfo> {
        self.active.first()
    }

    /// The wire form: the active container (or, when none runs, the newest) as current,
    /// the rest as `previous`, newest first.
    pub fn to_proto(&self) -> ServiceState {
        let mut rest: Vec<&ContainerInfo> = self.active.iter().chain(self.kept.iter()).collect();
        if rest.is_empty() {
            return ServiceState {
                service: self.service.clone(),
                state: ContainerState::Absent as i32,
                ..Default::default()
            };
        }
        let current = rest.remove(0);
        ServiceState {
            service: self.service.clone(),
            container_id: current.id.clone(),
            container_name: current.name.clone(),
            image: current.image_ref().to_string(),
            digest: current.digest().to_string(),
            version: current.version().to_string(),
            state: container_state(current.state) as i32,
            health: health(current.health) as i32,
            deployment_id: current.deployment().to_string(),
            epoch: current.epoch(),
            restart_count: current.restart_count,
            previous: rest
                .into_iter()
                .map(|c| KeptContainer {
                    container_id: c.id.clone(),
                    container_name: c.name.clone(),
                    image: c.image_ref().to_string(),
                    version: c.version().to_string(),
                })
                .collect(),
        }
    }
}

/// Groups managed containers by their drover.service label (unlabelled ones are skipped).
pub fn group(containers: Vec<ContainerInfo>) -> BTreeMap<String, ServiceContainers> {
    let mut by_service: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
    for c in containers {
        if !c.service().is_empty() {
            by_service
                .entry(c.service().to_string())
                .or_default()
                .push(c);
        }
    }
    by_service
        .into_iter()
        .map(|(s, cs)| {
            let grouped = ServiceContainers::new(&s, cs);
            (s, grouped)
        })
        .collect()
}

/// The containers of one service (empty when it has none).
pub fn of_service(containers: Vec<ContainerInfo>, service: &str) -> ServiceContainers {
    let mine = containers
        .into_iter()
        .filter(|c| c.service() == service)
        .collect();
    ServiceContainers::new(service, mine)
}

fn container_state(s: RunState) -> ContainerState {
    match s {
        RunState::Created => ContainerState::Created,
        RunState::Running => ContainerState::Running,
        RunState::Restarting => ContainerState::Restarting,
        RunState::Exited | RunState::Removing => ContainerState::Exited,
        RunState::Paused => ContainerState::Paused,
        RunState::Dead => ContainerState::Dead,
    }
}

fn health(h: HealthState) -> Health {
    match h {
        HealthState::None => Health::None,
        HealthState::Starting => Health::Starting,
        HealthState::Healthy => Health::Healthy,
        HealthState::Unhealthy => Health::Unhealthy,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use drover_shared::labels;
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    /// A container as the runtime would report it, for pure tests.
    pub(crate) fn container(
        id: &str,
        service: &str,
        version: &str,
        state: RunState,
        at: u64,
    ) -> ContainerInfo {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + at);
        ContainerInfo {
            id: id.into(),
            name: format!("drover-h1-{service}-{version}-000000"),
            image: format!("app:{version}"),
            labels: HashMap::from([
                (labels::SERVICE.to_string(), service.to_string()),
                (labels::VERSION.to_string(), version.to_string()),
                (labels::AGENT.to_string(), "h1".to_string()),
            ]),
            state,
            exit_code: 0,
            health: HealthState::None,
            health_output: None,
            restart_count: 0,
            created: Some(t),
            started_at: Some(t),
            finished_at: (state != RunState::Running).then_some(t + Duration::from_secs(1)),
            ports: vec![],
            addresses: vec![],
            pid: None,
        }
    }

    #[test]
    fn groups_current_and_kept_newest_first() {
        let all = vec![
            container("a", "web", "v1", RunState::Exited, 10),
            container("b", "web", "v3", RunState::Running, 30),
            container("c", "web", "v2", RunState::Exited, 20),
            container("d", "db", "v1", RunState::Exited, 5),
        ];
        let g = group(all);
        let web = g["web"].to_proto();
        assert_eq!(web.container_id, "b");
        assert_eq!(web.state, ContainerState::Running as i32);
        let prev: Vec<_> = web.previous.iter().map(|k| k.version.as_str()).collect();
        assert_eq!(prev, ["v2", "v1"]);
        // Nothing runs: the newest stopped one is shown as current.
        let db = g["db"].to_proto();
        assert_eq!(db.container_id, "d");
        assert_eq!(db.state, ContainerState::Exited as i32);
        assert!(g["db"].current().is_none());
        let none = of_service(vec![], "api").to_proto();
        assert_eq!(none.state, ContainerState::Absent as i32);
    }
}
