//! The service spec: the TOML file an app's repository keeps (`drover.toml`). Parsed with
//! unknown keys refused, then validated as a whole before anything happens, so a typo
//! never reaches a host. See `deploy/drover.example.toml` for every key documented.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_shared::duration;
use drover_shared::image::ImageRef;
use drover_shared::labels::{self, Selector};
use serde::{Deserialize, Serialize};

use crate::rollout::stages::{StageError, StageSize, StageSpec, Stages, StagesSpec};
use crate::schedule::{ScheduleSpec, WindowError};

/// A whole service spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// What runs.
    pub service: ServiceSection,
    /// Which hosts run it.
    pub targets: TargetsSection,
    /// When a new container counts as ready.
    #[serde(default)]
    pub readiness: ReadinessSection,
    /// How the fleet moves to a new version.
    #[serde(default)]
    pub rollout: RolloutSection,
    /// Where traffic comes from; optional (a fleet without a load balancer still rolls).
    pub load_balancer: Option<LoadBalancerSection>,
    /// Registry credentials; the password itself comes from an environment variable.
    pub registry: Option<RegistrySection>,
    /// Thresholds watched during a staged rollout's bakes.
    #[serde(default)]
    pub canary: CanarySection,
    /// Deploy windows and the rule for missed scheduled deploys.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Secrets the container gets (names only: values are set with `drover secret set`).
    #[serde(default, skip_serializing_if = "SecretsSection::is_empty")]
    pub secrets: SecretsSection,
}

/// `[secrets]`: which of the service's secrets its containers get, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// Secret names (`[A-Za-z_][A-Za-z0-9_]*`); every one must be set for the service
    /// before a deploy (`drover secret set SERVICE NAME`).
    #[serde(default)]
    pub names: Vec<String>,
    /// `files` (default: one read-only file per secret under `mount`, on tmpfs) or `env`.
    #[serde(default)]
    pub delivery: SecretDelivery,
    /// Where the files appear in the container (files only).
    #[serde(default = "default_secrets_mount")]
    pub mount: String,
}

impl Default for SecretsSection {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            delivery: SecretDelivery::default(),
            mount: default_secrets_mount(),
        }
    }
}

impl SecretsSection {
    /// No secrets, default delivery: nothing to write back in TOML.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn default_secrets_mount() -> String {
    "/run/secrets".into()
}

/// How a container receives its secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretDelivery {
    /// Read-only files on a tmpfs mount, one per secret, named after it.
    #[default]
    Files,
    /// Environment variables named after the secrets.
    Env,
}

/// `[service]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Service name: `[a-z0-9][a-z0-9_.-]*`, unique in the fleet.
    pub name: String,
    /// Image repository (e.g. `registry:5000/team/web`); `--version TAG` picks the tag.
    pub image: String,
    /// Port the app listens on inside the container.
    pub port: u16,
    /// Host port to publish on (default: the container port).
    pub host_port: Option<u16>,
    /// Host address to publish on: an IP, or `"advertise"` for each agent's advertised
    /// address (default `0.0.0.0`).
    #[serde(default = "default_host_ip")]
    pub host_ip: String,
    /// Environment of the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Overrides the image's command.
    #[serde(default)]
    pub command: Vec<String>,
    /// Docker restart policy: `no`, `on-failure`, `unless-stopped` (default), `always`.
    #[serde(default = "default_restart")]
    pub restart: String,
    /// Extra container labels (`drover.*` is reserved).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Docker network to attach to (default: the engine's bridge).
    #[serde(default)]
    pub network: String,
    /// Bind mounts `host:container[:ro]`.
    #[serde(default)]
    pub mounts: Vec<String>,
}

fn default_host_ip() -> String {
    "0.0.0.0".into()
}
fn default_restart() -> String {
    "unless-stopped".into()
}

/// `[targets]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetsSection {
    /// Label selector over agent labels, e.g. `role=web,zone!=b`.
    pub selector: String,
}

/// `[readiness]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessSection {
    /// `http` (default), `tcp`, or `docker` (the image's HEALTHCHECK).
    #[serde(default = "default_probe_kind")]
    pub kind: String,
    /// HTTP path probed.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Expected HTTP status (0 = any 2xx).
    #[serde(default)]
    pub status: u16,
    /// Pause between checks.
    #[serde(default = "d200ms", with = "duration")]
    pub interval: Duration,
    /// Longest one check may take.
    #[serde(default = "d2s", with = "duration")]
    pub timeout: Duration,
    /// Consecutive passing checks required.
    #[serde(default = "one")]
    pub success_threshold: u32,
    /// Give up on a new container after this long.
    #[serde(default = "d60s", with = "duration")]
    pub deadline: Duration,
}

impl Default for ReadinessSection {
    fn default() -> Self {
        Self {
            kind: default_probe_kind(),
            path: default_probe_path(),
            status: 0,
            interval: d200ms(),
            timeout: d2s(),
            success_threshold: 1,
            deadline: d60s(),
        }
    }
}

fn default_probe_kind() -> String {
    "http".into()
}
fn default_probe_path() -> String {
    "/ready".into()
}
fn d200ms() -> Duration {
    Duration::from_millis(200)
}
fn d2s() -> Duration {
    Duration::from_secs(2)
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
fn one() -> u32 {
    1
}

/// `[rollout]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutSection {
    /// Hosts per batch: a count (`2`) or a share of the targets (`"25%"`).
    #[serde(default = "default_batch")]
    pub batch_size: BatchSize,
    /// Grace between SIGTERM and SIGKILL for the old container.
    #[serde(default = "d10s", with = "duration")]
    pub stop_timeout: Duration,
    /// Longest wait for a drained server's sessions to reach zero.
    #[serde(default = "d30s", with = "duration")]
    pub drain_timeout: Duration,
    /// Longest wait for every load balancer to report a re-enabled server UP.
    #[serde(default = "d60s", with = "duration")]
    pub up_timeout: Duration,
    /// Longest wait for one host's pull.
    #[serde(default = "default_pull_timeout", with = "duration")]
    pub pull_timeout: Duration,
    /// `rollback` (default: every changed host returns to the previous version) or
    /// `pause` (failed hosts are restored, done hosts stay, the deploy waits).
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Stopped containers kept per host for instant rollback.
    #[serde(default = "default_keep")]
    pub keep_previous: u32,
    /// Staged rollout, short form: cumulative share of targets per stage,
    /// e.g. `["1", "10%", "50%", "100%"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSize>>,
    /// Staged rollout, long form: `[[rollout.stage]]` tables with bake and promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage: Vec<StageSpec>,
    /// Agent label whose values every stage is spread over (e.g. `zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

impl Default for RolloutSection {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            stop_timeout: d10s(),
            drain_timeout: d30s(),
            up_timeout: d60s(),
            pull_timeout: default_pull_timeout(),
            on_failure: OnFailure::default(),
            keep_previous: default_keep(),
            stages: None,
            stage: Vec::new(),
            spread_by: None,
        }
    }
}

fn default_batch() -> BatchSize {
    BatchSize::Count(1)
}
fn default_pull_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_keep() -> u32 {
    3
}

impl RolloutSection {
    /// The stage keys of this section.
    pub fn stages_spec(&self) -> StagesSpec {
        StagesSpec {
            stages: self.stages.clone(),
            stage: self.stage.clone(),
            spread_by: self.spread_by.clone(),
        }
    }

    /// The validated stages (one 100% stage when none are configured).
    pub fn stages(&self) -> Result<Stages, StageError> {
        self.stages_spec().validate()
    }
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

/// `[load_balancer]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSection {
    /// Only `haproxy` for now.
    #[serde(default = "default_lb_kind")]
    pub kind: String,
    /// Runtime API addresses, one per HAProxy: `unix:/run/haproxy/admin.sock` or
    /// `127.0.0.1:9999`.
    pub runtime: Vec<String>,
    /// Backend holding this service's servers.
    pub backend: String,
    /// How a host maps to a server name; `{host}` is the agent's name (default `"{host}"`).
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

fn default_lb_kind() -> String {
    "haproxy".into()
}
fn default_server_name() -> String {
    "{host}".into()
}

impl LoadBalancerSection {
    /// The HAProxy server name of `host`.
    pub fn server_for(&self, host: &str) -> String {
        self.server_name.replace("{host}", host)
    }
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

/// `[registry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Registry user.
    pub username: String,
    /// Environment variable (read by the CLI) that holds the password; never the password.
    pub password_env: String,
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
    /// A value that parses but makes no sense.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The key, dotted (`rollout.batch_size`).
        key: &'static str,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

impl ServiceSpec {
    /// Parses and validates a spec from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let spec: Self = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as TOML, for storing with a deployment.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Checks every value that parsing alone cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let invalid = |key, reason: String| Err(SpecError::Invalid { key, reason });
        let s = &self.service;
        if !valid_service_name(&s.name) {
            return invalid(
                "service.name",
                format!(
                    "{:?}: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
                    s.name
                ),
            );
        }
        let image = ImageRef::parse(&s.image).map_err(|e| SpecError::Invalid {
            key: "service.image",
            reason: e.to_string(),
        })?;
        if image.tag.is_some() || image.digest.is_some() {
            return invalid(
                "service.image",
                format!(
                    "{:?} names a tag or digest: give the repository only and pick the version with `drover deploy --version TAG`",
                    s.image
                ),
            );
        }
        if s.port == 0 {
            return invalid(
                "service.port",
                "must be a port number from 1 to 65535".into(),
            );
        }
        if s.host_ip != "advertise" && s.host_ip.parse::<IpAddr>().is_err() {
            return invalid(
                "service.host_ip",
                format!(
                    "{:?} is not an IP address; write an IP or \"advertise\"",
                    s.host_ip
                ),
            );
        }
        if restart_policy(&s.restart).is_none() {
            return invalid(
                "service.restart",
                format!(
                    "{:?}: use no, on-failure, unless-stopped or always",
                    s.restart
                ),
            );
        }
        if let Some(k) = s.labels.keys().find(|k| labels::is_reserved(k)) {
            return invalid(
                "service.labels",
                format!("{k:?}: drover.* labels are set by Drover"),
            );
        }
        for m in &s.mounts {
            if parse_mount(m).is_none() {
                return invalid(
                    "service.mounts",
                    format!(
                        "{m:?}: write /host/path:/container/path or /host/path:/container/path:ro"
                    ),
                );
            }
        }
        Selector::parse(&self.targets.selector).map_err(|e| SpecError::Invalid {
            key: "targets.selector",
            reason: e.to_string(),
        })?;
        let r = &self.readiness;
        if !matches!(r.kind.as_str(), "http" | "tcp" | "docker") {
            return invalid(
                "readiness.kind",
                format!("{:?}: use http, tcp or docker", r.kind),
            );
        }
        if r.kind == "http" && !r.path.starts_with('/') {
            return invalid(
                "readiness.path",
                format!("{:?} must start with '/'", r.path),
            );
        }
        if r.interval.is_zero() || r.timeout.is_zero() || r.deadline < r.interval {
            return invalid(
                "readiness",
                "interval and timeout must be above zero, and deadline at least one interval"
                    .into(),
            );
        }
        if let Some(lb) = &self.load_balancer {
            if lb.kind != "haproxy" {
                return invalid(
                    "load_balancer.kind",
                    format!("{:?}: only haproxy is supported", lb.kind),
                );
            }
            if lb.runtime.is_empty() {
                return invalid(
                    "load_balancer.runtime",
                    "give at least one HAProxy runtime API address".into(),
                );
            }
            if lb.backend.is_empty() {
                return invalid(
                    "load_balancer.backend",
                    "must name the HAProxy backend".into(),
                );
            }
        }
        self.validate_secrets()?;
        self.schedule.validate()?;
        self.rollout.stages()?;
        let c = &self.canary;
        if c.interval.is_zero()
            || !(0.0..=1.0).contains(&c.max_error_rate)
            || c.max_error_ratio < 1.0
            || c.max_response_time_ratio < 1.0
        {
            return invalid(
                "canary",
                "interval must be above zero, max_error_rate within 0..1, and the ratios at least 1".into(),
            );
        }
        if let Some(reg) = &self.registry
            && reg.password_env.is_empty()
        {
            return invalid(
                "registry.password_env",
                "name the environment variable holding the password".into(),
            );
        }
        Ok(())
    }

    fn validate_secrets(&self) -> Result<(), SpecError> {
        let invalid = |key, reason: String| Err(SpecError::Invalid { key, reason });
        let sec = &self.secrets;
        let mut seen = std::collections::BTreeSet::new();
        for name in &sec.names {
            if !crate::secrets::valid_secret_name(name) {
                return invalid(
                    "secrets.names",
                    format!(
                        "{name:?}: use letters, digits and '_', not starting with a digit (like DB_PASSWORD)"
                    ),
                );
            }
            if !seen.insert(name) {
                return invalid("secrets.names", format!("{name:?} is listed twice"));
            }
        }
        match sec.delivery {
            SecretDelivery::Env => {
                if let Some(name) = sec.names.iter().find(|n| self.service.env.contains_key(*n)) {
                    return invalid(
                        "secrets.names",
                        format!(
                            "{name:?} is also set in service.env; a secret delivered as environment must not be"
                        ),
                    );
                }
            }
            SecretDelivery::Files => {
                let m = &sec.mount;
                if !m.starts_with('/')
                    || m == "/"
                    || m.contains(':')
                    || m.split('/').any(|p| p == "..")
                {
                    return invalid(
                        "secrets.mount",
                        format!(
                            "{m:?}: give an absolute directory in the container, like /run/secrets"
                        ),
                    );
                }
                if self
                    .service
                    .mounts
                    .iter()
                    .filter_map(|x| parse_mount(x))
                    .any(|x| x.target.trim_end_matches('/') == m.trim_end_matches('/'))
                {
                    return invalid(
                        "secrets.mount",
                        format!("{m:?} is also the target of an entry in service.mounts"),
                    );
                }
            }
        }
        Ok(())
    }

    /// The secrets delivery of swaps, without values (the rollout engine adds them).
    pub fn secrets_delivery(&self) -> (proto::SecretDelivery, String) {
        match self.secrets.delivery {
            SecretDelivery::Env => (proto::SecretDelivery::Env, String::new()),
            SecretDelivery::Files => (proto::SecretDelivery::Files, self.secrets.mount.clone()),
        }
    }

    /// The readiness probe in wire form.
    pub fn probe(&self) -> proto::ReadinessProbe {
        let r = &self.readiness;
        let port = u32::from(self.service.port);
        let kind = match r.kind.as_str() {
            "tcp" => proto::readiness_probe::Kind::Tcp(proto::TcpProbe { port }),
            "docker" => proto::readiness_probe::Kind::DockerHealth(proto::DockerHealthProbe {}),
            _ => proto::readiness_probe::Kind::Http(proto::HttpProbe {
                path: r.path.clone(),
                expected_status: u32::from(r.status),
                port,
            }),
        };
        proto::ReadinessProbe {
            kind: Some(kind),
            interval_ms: ms(r.interval),
            timeout_ms: ms(r.timeout),
            success_threshold: r.success_threshold,
            deadline_ms: ms(r.deadline),
        }
    }

    /// The container to run on a host advertising `advertise_address`.
    pub fn container(
        &self,
        image: &str,
        version: &str,
        advertise_address: &str,
    ) -> proto::ContainerSpec {
        let s = &self.service;
        let host_ip = if s.host_ip == "advertise" {
            advertise_address.to_string()
        } else {
            s.host_ip.clone()
        };
        proto::ContainerSpec {
            service: s.name.clone(),
            image: image.to_string(),
            version: version.to_string(),
            env: s.env.clone().into_iter().collect(),
            command: s.command.clone(),
            ports: vec![proto::PortMapping {
                container_port: u32::from(s.port),
                host_ip,
                host_port: u32::from(s.host_port.unwrap_or(s.port)),
                protocol: "tcp".into(),
            }],
            labels: s.labels.clone().into_iter().collect(),
            restart_policy: restart_policy(&s.restart).unwrap_or_default() as i32,
            mounts: s.mounts.iter().filter_map(|m| parse_mount(m)).collect(),
            network: s.network.clone(),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// Whether `n` may name a service: `[a-z0-9][a-z0-9_.-]*`, at most 64 characters.
pub fn valid_service_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

fn restart_policy(s: &str) -> Option<proto::RestartPolicy> {
    use proto::RestartPolicy as R;
    Some(match s {
        "no" => R::No,
        "on-failure" => R::OnFailure,
        "unless-stopped" => R::UnlessStopped,
        "always" => R::Always,
        _ => return None,
    })
}

fn parse_mount(m: &str) -> Option<proto::Mount> {
    let parts: Vec<&str> = m.split(':').collect();
    let (source, target, ro) = match parts.as_slice() {
        [s, t] => (s, t, false),
        [s, t, "ro"] => (s, t, true),
        [s, t, "rw"] => (s, t, false),
        _ => return None,
    };
    if !source.starts_with('/') || !target.starts_with('/') {
        return None;
    }
    Some(proto::Mount {
        source: source.to_string(),
        target: target.to_string(),
        read_only: ro,
        kind: proto::MountKind::Bind as i32,
    })
}

#[cfg(test)]
mod tests;
