//! What a deploy is checked against before anything is recorded: the secrets its spec
//! names, and the live fleet (the selector's hosts, all connected, each known to every
//! load balancer).

use super::{DeployError, Deployer, load_balancer};
use crate::spec::ServiceSpec;

impl Deployer {
    /// Refuses a spec that names secrets set neither for its service nor for its
    /// service in `environment`.
    pub(super) async fn check_secrets(
        &self,
        spec: &ServiceSpec,
        environment: &str,
    ) -> Result<(), DeployError> {
        let service = &spec.service.name;
        let missing = self
            .shared
            .vault
            .missing(service, environment, &spec.secrets.names)
            .await?;
        if missing.is_empty() {
            return Ok(());
        }
        let env_flag = if environment.is_empty() {
            String::new()
        } else {
            format!(" --env {environment}")
        };
        let commands: Vec<String> = missing
            .iter()
            .map(|n| format!("`drover secret set {service} {n}{env_flag}`"))
            .collect();
        Err(DeployError::MissingSecrets(format!(
            "service {service}{} needs secrets that are not set: {}; set them first with {} (each value is read from stdin)",
            crate::store::in_environment(environment),
            missing.join(", "),
            commands.join(", ")
        )))
    }

    /// Hosts matching the spec's selector, all connected, known to every load balancer.
    pub(super) async fn targets(&self, spec: &ServiceSpec) -> Result<Vec<String>, DeployError> {
        let selector = &spec.targets.selector;
        let all = self.shared.hub.hosts();
        let matching: Vec<_> = all.iter().filter(|h| selector.matches(&h.labels)).collect();
        let lost: Vec<_> = matching
            .iter()
            .filter(|h| !h.connected)
            .map(|h| h.name.as_str())
            .collect();
        if !lost.is_empty() {
            return Err(DeployError::Targets(format!(
                "selector {:?} matches hosts that are not connected: {}; bring their agents back or narrow the selector",
                selector.to_string(),
                lost.join(", ")
            )));
        }
        if matching.is_empty() {
            let known: Vec<_> = all
                .iter()
                .filter(|h| h.connected)
                .map(|h| h.name.as_str())
                .collect();
            return Err(DeployError::Targets(format!(
                "selector {:?} matches no connected host (connected: {}); check targets.selector and the agents' --label flags",
                selector.to_string(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let names: Vec<String> = matching.iter().map(|h| h.name.clone()).collect();
        if let Some(lb) = load_balancer(spec, &self.shared.settings)? {
            let servers: Vec<String> = names
                .iter()
                .map(|h| {
                    spec.load_balancer
                        .as_ref()
                        .map_or(h.clone(), |l| l.server_for(h))
                })
                .collect();
            lb.validate(&servers).await?;
        }
        Ok(names)
    }
}
