//! The service spec: the TOML file an app's repository keeps (`drover.toml`). Parsed
//! once, with unknown keys refused, into typed fields (restart policy, mounts, selector,
//! probe, stages, windows), so a typo never reaches a host and nothing downstream parses
//! a string again. [`ServiceSpec::to_toml`] writes the canonical form a deployment
//! stores, which parses back to the same spec. See `deploy/drover.example.toml` for every
//! key documented.
//!
//! A section with keys that need parsing beyond their TOML type keeps its form as
//! written (`Raw*`, private) next to its parsed form and the conversion both ways, in its
//! own module; sections whose keys are typed as written (`[canary]`, `[secrets]`,
//! `[registry]`) are used as they are. This module checks what spans sections.

mod environments;
mod hooks;
mod readiness;
mod rollout;
mod secrets;
mod service;
pub mod stages;
mod traffic;

use drover_proto::v1 as proto;
use drover_shared::labels::Selector;
use serde::{Deserialize, Serialize};

pub use self::environments::{Environment, Gates, IMPLICIT, SpecFile, UnknownEnvironment};
pub use self::hooks::{Hook, HookAction, HookPhase, HttpCheck, RunIn, parse_http_url};
pub use self::readiness::{ReadinessKind, ReadinessSection};
pub use self::rollout::{BatchSize, OnFailure, Order, RolloutSection};
pub use self::secrets::{RegistrySection, SecretDelivery, SecretsSection};
pub use self::service::{HostIp, Mount, RestartPolicy, ServiceSection, valid_service_name};
pub use self::stages::{StageError, Stages};
pub use self::traffic::{CanarySection, LoadBalancerKind, LoadBalancerSection};
use crate::schedule::{Schedule, ScheduleSpec, WindowError};

/// A whole service spec, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    /// What runs.
    pub service: ServiceSection,
    /// Which hosts run it.
    pub targets: TargetsSection,
    /// When a new container counts as ready.
    pub readiness: ReadinessSection,
    /// How the fleet moves to a new version.
    pub rollout: RolloutSection,
    /// Where traffic comes from; optional (a fleet without a load balancer still rolls).
    pub load_balancer: Option<LoadBalancerSection>,
    /// Registry credentials; the password itself comes from an environment variable.
    pub registry: Option<RegistrySection>,
    /// Thresholds watched during a staged rollout's bakes.
    pub canary: CanarySection,
    /// Deploy windows and the rule for missed scheduled deploys.
    pub schedule: Schedule,
    /// Secrets the container gets (names only: values are set with `drover secret set`).
    pub secrets: SecretsSection,
    /// Commands run at fixed points of a deploy (`[[hooks]]`), in the order written.
    pub hooks: Vec<Hook>,
}

/// `[targets]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetsSection {
    /// Label selector over agent labels, e.g. `role=web,zone!=b`.
    pub selector: Selector,
}

/// The spec as written: every key, with strings where the file has strings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    service: service::RawService,
    targets: RawTargets,
    #[serde(default)]
    readiness: readiness::RawReadiness,
    #[serde(default)]
    rollout: rollout::RawRollout,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    load_balancer: Option<traffic::RawLoadBalancer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry: Option<RegistrySection>,
    #[serde(default)]
    canary: CanarySection,
    #[serde(default)]
    schedule: ScheduleSpec,
    #[serde(default, skip_serializing_if = "SecretsSection::is_empty")]
    secrets: SecretsSection,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    hooks: Vec<hooks::RawHook>,
}

/// `[targets]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    selector: String,
}

/// Why a spec was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error("{0}")]
    Parse(String),
    /// A stage list that makes no sense.
    #[error(transparent)]
    Stages(#[from] StageError),
    /// A `[schedule]` value that makes no sense.
    #[error(transparent)]
    Schedule(#[from] WindowError),
    /// Something wrong in one environment's overlay (`[env.NAME]`).
    #[error("in [env.{name}]: {source}")]
    Environment {
        /// The environment.
        name: String,
        /// What is wrong there.
        #[source]
        source: Box<SpecError>,
    },
    /// A value of the right type that makes no sense.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`rollout.batch_size`, `service.mounts[1]`).
        key: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// A [`SpecError::Invalid`] for `key`.
fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl ServiceSpec {
    /// Parses a spec from TOML text; every value is checked here, once.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Parses a spec from a TOML table (an environment's overlay already applied).
    fn from_table(table: toml::Table) -> Result<Self, SpecError> {
        let raw: RawSpec = table
            .try_into()
            .map_err(|e: toml::de::Error| SpecError::Parse(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// The canonical TOML of the spec, stored with a deployment and sent by the CLI:
    /// every default written out, and `from_toml(&s.to_toml()) == Ok(s)`.
    pub fn to_toml(&self) -> String {
        // Every raw value is a string, number, bool, array or table with string keys.
        toml::to_string(&self.to_raw()).expect("a raw spec always serializes to TOML")
    }

    fn from_raw(raw: RawSpec) -> Result<Self, SpecError> {
        let service = ServiceSection::from_raw(raw.service)?;
        let selector = Selector::parse(&raw.targets.selector)
            .map_err(|e| invalid("targets.selector", e.to_string()))?;
        let readiness = ReadinessSection::from_raw(raw.readiness)?;
        let says_none = raw
            .load_balancer
            .as_ref()
            .is_some_and(traffic::RawLoadBalancer::says_none);
        let load_balancer = raw
            .load_balancer
            .map(LoadBalancerSection::from_raw)
            .transpose()?
            .flatten();
        raw.secrets.check(&service)?;
        let schedule = raw.schedule.validate()?;
        let rollout = RolloutSection::from_raw(raw.rollout)?;
        check_order(&service, &rollout, says_none)?;
        raw.canary.check()?;
        if let Some(registry) = &raw.registry {
            registry.check()?;
        }
        let hooks = Hook::from_raw_all(raw.hooks)?;
        Ok(Self {
            service,
            targets: TargetsSection { selector },
            readiness,
            rollout,
            load_balancer,
            registry: raw.registry,
            canary: raw.canary,
            schedule,
            secrets: raw.secrets,
            hooks,
        })
    }

    fn to_raw(&self) -> RawSpec {
        RawSpec {
            service: self.service.to_raw(),
            targets: RawTargets {
                selector: self.targets.selector.to_string(),
            },
            readiness: self.readiness.to_raw(),
            rollout: self.rollout.to_raw(),
            load_balancer: self.load_balancer.as_ref().map(LoadBalancerSection::to_raw),
            registry: self.registry.clone(),
            canary: self.canary.clone(),
            schedule: self.schedule.to_spec(),
            secrets: self.secrets.clone(),
            hooks: self.hooks.iter().map(Hook::to_raw).collect(),
        }
    }

    /// The secrets delivery of swaps, without values (the rollout engine adds them).
    pub fn secrets_delivery(&self) -> (proto::SecretDelivery, String) {
        self.secrets.delivery()
    }

    /// The readiness probe in wire form.
    pub fn probe(&self) -> proto::ReadinessProbe {
        self.readiness.probe(self.service.port)
    }

    /// The container to run on a host advertising `advertise_address`.
    pub fn container(
        &self,
        image: &str,
        version: &str,
        advertise_address: &str,
    ) -> proto::ContainerSpec {
        self.service.container(image, version, advertise_address)
    }
}

/// Start-first runs two containers of the service on one host at once: each needs its
/// own host port, and a load balancer to point at the new one (`no_load_balancer`: the
/// spec says `load_balancer.kind = "none"`).
fn check_order(
    service: &ServiceSection,
    rollout: &RolloutSection,
    no_load_balancer: bool,
) -> Result<(), SpecError> {
    match rollout.order {
        Order::StopFirst if service.host_ports.is_some() => Err(invalid(
            "service.host_ports",
            "is for rollout.order = \"start-first\"; a stop-first rollout publishes one port: set service.host_port",
        )),
        Order::StopFirst => Ok(()),
        Order::StartFirst if no_load_balancer => Err(invalid(
            "rollout.order",
            "\"start-first\" hands each host over by pointing the load balancer at the new container's port, and load_balancer.kind = \"none\" has none: use rollout.order = \"stop-first\" (the default)",
        )),
        Order::StartFirst if service.network == "host" => Err(invalid(
            "service.network",
            "\"host\": with host networking two containers cannot listen on one host at once; use a bridge network or rollout.order = \"stop-first\"",
        )),
        Order::StartFirst if service.host_ports.is_none() => Err(invalid(
            "rollout.order",
            "\"start-first\" starts the new container next to the old one and needs a second host port: set service.host_ports = [PORT, ALTERNATE] (instead of host_port)",
        )),
        Order::StartFirst => Ok(()),
    }
}

#[cfg(test)]
mod tests;
