//! `[load_balancer]` and `[canary]`: where the service's traffic comes from, and what a
//! canary's share of it may look like during a bake.

use std::time::Duration;

use drover_shared::duration;
use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};

/// `[load_balancer]`, parsed: an HAProxy the rollout drains and re-enables hosts on.
/// `kind = "none"` parses to no section at all (`ServiceSpec::load_balancer` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancerSection {
    /// Which load balancer.
    pub kind: LoadBalancerKind,
    /// Runtime API addresses, at least one, one per HAProxy:
    /// `unix:/run/haproxy/admin.sock` or `127.0.0.1:9999`.
    pub runtime: Vec<String>,
    /// Backend holding this service's servers (not empty).
    pub backend: String,
    /// How a host maps to a server name; `{host}` is the agent's name.
    pub server_name: String,
}

/// The load balancers Drover drives. A service without one says `kind = "none"`
/// ([`NO_LOAD_BALANCER`]), which has no section and so no variant here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadBalancerKind {
    /// HAProxy, through its runtime API.
    #[default]
    Haproxy,
}

/// `load_balancer.kind` of a service without a load balancer (queue workers, batch
/// consumers): hosts are not drained, and a batch's hosts stop serving while they swap.
pub const NO_LOAD_BALANCER: &str = "none";

impl LoadBalancerKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Haproxy => "haproxy",
        }
    }
}

impl LoadBalancerSection {
    /// The HAProxy server name of `host`.
    pub fn server_for(&self, host: &str) -> String {
        self.server_name.replace("{host}", host)
    }

    /// The section as written; `None` for `kind = "none"`, which refuses every key that
    /// only means something to a load balancer.
    pub(super) fn from_raw(raw: RawLoadBalancer) -> Result<Option<Self>, SpecError> {
        let kind = match raw.kind.as_str() {
            NO_LOAD_BALANCER => {
                let given = [
                    ("runtime", raw.runtime.is_some()),
                    ("backend", raw.backend.is_some()),
                    ("server_name", raw.server_name.is_some()),
                ];
                if let Some((key, _)) = given.into_iter().find(|(_, given)| *given) {
                    return Err(invalid(
                        format!("load_balancer.{key}"),
                        "not used with kind = \"none\" (no load balancer): remove it, or set kind = \"haproxy\"",
                    ));
                }
                return Ok(None);
            }
            "haproxy" => LoadBalancerKind::Haproxy,
            other => {
                return Err(invalid(
                    "load_balancer.kind",
                    format!("{other:?}: only \"haproxy\" and \"none\" are supported"),
                ));
            }
        };
        let runtime = raw.runtime.unwrap_or_default();
        if runtime.is_empty() {
            return Err(invalid(
                "load_balancer.runtime",
                "give at least one HAProxy runtime API address",
            ));
        }
        let backend = raw.backend.unwrap_or_default();
        if backend.is_empty() {
            return Err(invalid(
                "load_balancer.backend",
                "must name the HAProxy backend",
            ));
        }
        Ok(Some(Self {
            kind,
            runtime,
            backend,
            server_name: raw.server_name.unwrap_or_else(default_server_name),
        }))
    }

    pub(super) fn to_raw(&self) -> RawLoadBalancer {
        RawLoadBalancer {
            kind: self.kind.as_str().into(),
            runtime: Some(self.runtime.clone()),
            backend: Some(self.backend.clone()),
            server_name: Some(self.server_name.clone()),
        }
    }
}

/// `[load_balancer]` as written. The keys of a load balancer are optional here so that
/// `kind = "none"` can refuse them by name.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLoadBalancer {
    #[serde(default = "default_lb_kind")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    runtime: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
}

impl RawLoadBalancer {
    /// Whether it says `kind = "none"`.
    pub(super) fn says_none(&self) -> bool {
        self.kind == NO_LOAD_BALANCER
    }
}

/// The `kind` of a `[load_balancer]` that names none.
pub(super) fn default_lb_kind() -> String {
    LoadBalancerKind::default().as_str().into()
}
fn default_server_name() -> String {
    "{host}".into()
}

/// `[canary]`: what a bake watches, canary hosts against the rest of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySection {
    /// How often the bake reads HAProxy's counters and the canary containers.
    #[serde(default = "d5s", with = "duration")]
    pub interval: Duration,
    /// A canary's error share (5xx and connection errors over requests) above this fails
    /// the stage, when it is also above `max_error_ratio` times the baseline's.
    #[serde(default = "default_max_error_rate")]
    pub max_error_rate: f64,
    /// See `max_error_rate`.
    #[serde(default = "default_max_error_ratio")]
    pub max_error_ratio: f64,
    /// A canary's average response time above this many times the baseline's fails the
    /// stage (only above `min_response_time_ms`).
    #[serde(default = "default_rt_ratio")]
    pub max_response_time_ratio: f64,
    /// Response times under this are never judged slow.
    #[serde(default = "default_min_rt")]
    pub min_response_time_ms: u64,
    /// Fewer requests than this on a canary are not judged yet.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Container restarts tolerated on a canary during a bake.
    #[serde(default)]
    pub max_restarts: u32,
}

impl Default for CanarySection {
    fn default() -> Self {
        Self {
            interval: d5s(),
            max_error_rate: default_max_error_rate(),
            max_error_ratio: default_max_error_ratio(),
            max_response_time_ratio: default_rt_ratio(),
            min_response_time_ms: default_min_rt(),
            min_requests: default_min_requests(),
            max_restarts: 0,
        }
    }
}

impl CanarySection {
    /// Refuses thresholds no bake could judge by.
    pub(super) fn check(&self) -> Result<(), SpecError> {
        if self.interval.is_zero()
            || !(0.0..=1.0).contains(&self.max_error_rate)
            || !(1.0..).contains(&self.max_error_ratio)
            || !(1.0..).contains(&self.max_response_time_ratio)
        {
            return Err(invalid(
                "canary",
                "interval must be above zero, max_error_rate within 0..1, and the ratios at least 1",
            ));
        }
        Ok(())
    }
}

fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_error_ratio() -> f64 {
    2.0
}
fn default_rt_ratio() -> f64 {
    3.0
}
fn default_min_rt() -> u64 {
    50
}
fn default_min_requests() -> u64 {
    20
}
