//! `[rollout]`: how the fleet moves to a new version (batches, timeouts, what a failure
//! does, and the stages of a canary rollout, see [`super::stages`]).

use std::time::Duration;

use drover_shared::duration;
use serde::{Deserialize, Serialize};

use super::SpecError;
use super::stages::{StageSize, StageSpec, Stages, StagesSpec};

/// `[rollout]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutSection {
    /// Hosts per batch.
    pub batch_size: BatchSize,
    /// Grace between SIGTERM and SIGKILL for the old container.
    pub stop_timeout: Duration,
    /// Longest wait for a drained server's sessions to reach zero.
    pub drain_timeout: Duration,
    /// Longest wait for every load balancer to report a re-enabled server UP.
    pub up_timeout: Duration,
    /// Longest wait for one host's pull.
    pub pull_timeout: Duration,
    /// What a failed rollout does.
    pub on_failure: OnFailure,
    /// Stopped containers kept per host for instant rollback.
    pub keep_previous: u32,
    /// The stages of a staged rollout; `None` when the spec gives none, and the fleet
    /// moves in plain batches, as one stage of every host.
    pub staging: Option<Stages>,
    /// How a host hands over from the old container to the new one.
    pub order: Order,
}

/// `rollout.order`: how a host hands over from the old container to the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Drain the host, stop the old container, start the new one, re-enable: the host is
    /// out of rotation for the whole swap.
    #[default]
    StopFirst,
    /// Start the new container next to the old one on the service's other host port,
    /// point the load balancer at it once ready, then drain and stop the old one: the
    /// host never leaves rotation. Needs `service.host_ports`.
    StartFirst,
}

impl Order {
    /// The order's name in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StopFirst => "stop-first",
            Self::StartFirst => "start-first",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::StopFirst, Self::StartFirst]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

impl RolloutSection {
    /// The stages hosts move in: the configured ones, or one stage of every host.
    pub fn stages(&self) -> Stages {
        match &self.staging {
            Some(stages) => stages.clone(),
            None => Stages::default(),
        }
    }

    pub(super) fn from_raw(raw: RawRollout) -> Result<Self, SpecError> {
        let spec = StagesSpec {
            stages: raw.stages,
            stage: raw.stage,
            spread_by: raw.spread_by,
        };
        let stages = spec.validate()?;
        let order = Order::parse(&raw.order).ok_or_else(|| {
            super::invalid(
                "rollout.order",
                format!("{:?}: use \"stop-first\" or \"start-first\"", raw.order),
            )
        })?;
        Ok(Self {
            order,
            batch_size: raw.batch_size,
            stop_timeout: raw.stop_timeout,
            drain_timeout: raw.drain_timeout,
            up_timeout: raw.up_timeout,
            pull_timeout: raw.pull_timeout,
            on_failure: raw.on_failure,
            keep_previous: raw.keep_previous,
            staging: spec.is_staged().then_some(stages),
        })
    }

    pub(super) fn to_raw(&self) -> RawRollout {
        let stages = match &self.staging {
            Some(stages) => stages.to_spec(),
            None => StagesSpec::default(),
        };
        RawRollout {
            batch_size: self.batch_size,
            stop_timeout: self.stop_timeout,
            drain_timeout: self.drain_timeout,
            up_timeout: self.up_timeout,
            pull_timeout: self.pull_timeout,
            on_failure: self.on_failure,
            keep_previous: self.keep_previous,
            order: self.order.as_str().into(),
            stages: stages.stages,
            stage: stages.stage,
            spread_by: stages.spread_by,
        }
    }
}

/// `[rollout]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    #[serde(default = "default_batch")]
    batch_size: BatchSize,
    #[serde(default = "d10s", with = "duration")]
    stop_timeout: Duration,
    #[serde(default = "d30s", with = "duration")]
    drain_timeout: Duration,
    #[serde(default = "d60s", with = "duration")]
    up_timeout: Duration,
    #[serde(default = "default_pull_timeout", with = "duration")]
    pull_timeout: Duration,
    #[serde(default)]
    on_failure: OnFailure,
    #[serde(default = "default_keep")]
    keep_previous: u32,
    #[serde(default = "default_order", skip_serializing_if = "is_stop_first")]
    order: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stages: Option<Vec<StageSize>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    stage: Vec<StageSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    spread_by: Option<String>,
}

impl Default for RawRollout {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            stop_timeout: d10s(),
            drain_timeout: d30s(),
            up_timeout: d60s(),
            pull_timeout: default_pull_timeout(),
            on_failure: OnFailure::default(),
            keep_previous: default_keep(),
            order: default_order(),
            stages: None,
            stage: Vec::new(),
            spread_by: None,
        }
    }
}

fn default_order() -> String {
    Order::StopFirst.as_str().into()
}
fn is_stop_first(order: &str) -> bool {
    order == Order::StopFirst.as_str()
}
fn default_batch() -> BatchSize {
    BatchSize::Count(1)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
fn default_pull_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_keep() -> u32 {
    3
}

/// What a failed rollout does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Every host changed by this deploy returns to its previous version.
    #[default]
    Rollback,
    /// Failed hosts are restored; hosts already done stay; the deploy stops.
    Pause,
}

/// A batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "toml::Value", into = "String")]
pub enum BatchSize {
    /// A fixed number of hosts.
    Count(u32),
    /// A percentage of the target hosts, rounded up, at least one.
    Percent(u32),
}

impl BatchSize {
    /// Parses `3` or `"25%"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!("invalid batch size {s:?}: write a host count (2) or a percentage (\"25%\")")
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| bad())?;
            if p == 0 || p > 100 {
                return Err(bad());
            }
            Ok(Self::Percent(p))
        } else {
            let n: u32 = s.parse().map_err(|_| bad())?;
            if n == 0 {
                return Err(bad());
            }
            Ok(Self::Count(n))
        }
    }

    /// Hosts per batch for a fleet of `total` targets.
    pub fn hosts_per_batch(self, total: usize) -> usize {
        match self {
            Self::Count(n) => n as usize,
            Self::Percent(p) => (total * p as usize).div_ceil(100),
        }
        .clamp(1, total.max(1))
    }
}

impl TryFrom<toml::Value> for BatchSize {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) if n > 0 && n <= u32::MAX as i64 => Ok(Self::Count(n as u32)),
            toml::Value::String(s) => Self::parse(&s),
            other => Err(format!(
                "invalid batch size {other}: write a host count (2) or a percentage (\"25%\")"
            )),
        }
    }
}

impl From<BatchSize> for String {
    fn from(b: BatchSize) -> String {
        b.to_string()
    }
}

impl std::fmt::Display for BatchSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}
