//! `[readiness]`: when a new container counts as ready, and the probe the agent runs.

use std::num::NonZeroU16;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_shared::duration;
use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};

/// `[readiness]`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessSection {
    /// What is probed.
    pub kind: ReadinessKind,
    /// Pause between checks (above zero).
    pub interval: Duration,
    /// Longest one check may take (above zero).
    pub timeout: Duration,
    /// Consecutive passing checks required.
    pub success_threshold: u32,
    /// Give up on a new container after this long (at least one interval).
    pub deadline: Duration,
}

/// What a readiness check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadinessKind {
    /// `http` (default): a GET on the published port.
    Http {
        /// Path probed, starting with `/` (default `/ready`).
        path: String,
        /// Status expected; `None` accepts any 2xx.
        status: Option<u16>,
    },
    /// `tcp`: a connection to the published port.
    Tcp,
    /// `docker`: the image's HEALTHCHECK.
    Docker,
}

impl ReadinessKind {
    fn name(&self) -> &'static str {
        match self {
            Self::Http { .. } => "http",
            Self::Tcp => "tcp",
            Self::Docker => "docker",
        }
    }
}

/// `[readiness]` as written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default = "d200ms", with = "duration")]
    interval: Duration,
    #[serde(default = "d2s", with = "duration")]
    timeout: Duration,
    #[serde(default = "one")]
    success_threshold: u32,
    #[serde(default = "d60s", with = "duration")]
    deadline: Duration,
}

impl Default for RawReadiness {
    fn default() -> Self {
        Self {
            kind: default_kind(),
            path: None,
            status: None,
            interval: d200ms(),
            timeout: d2s(),
            success_threshold: one(),
            deadline: d60s(),
        }
    }
}

fn default_kind() -> String {
    "http".into()
}
fn d200ms() -> Duration {
    Duration::from_millis(200)
}
fn d2s() -> Duration {
    Duration::from_secs(2)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}
fn one() -> u32 {
    1
}

impl ReadinessSection {
    pub(super) fn from_raw(raw: RawReadiness) -> Result<Self, SpecError> {
        let kind = match raw.kind.as_str() {
            "http" => {
                let path = raw.path.unwrap_or_else(|| "/ready".into());
                if !path.starts_with('/') {
                    return Err(invalid(
                        "readiness.path",
                        format!("{path:?} must start with '/'"),
                    ));
                }
                let status = match raw.status {
                    None | Some(0) => None,
                    Some(s @ 100..=599) => Some(s),
                    Some(s) => {
                        return Err(invalid(
                            "readiness.status",
                            format!("{s} is not an HTTP status; give 100 to 599, or 0 for any 2xx"),
                        ));
                    }
                };
                ReadinessKind::Http { path, status }
            }
            "tcp" => ReadinessKind::Tcp,
            "docker" => ReadinessKind::Docker,
            other => {
                return Err(invalid(
                    "readiness.kind",
                    format!("{other:?}: use http, tcp or docker"),
                ));
            }
        };
        if raw.interval.is_zero() || raw.timeout.is_zero() || raw.deadline < raw.interval {
            return Err(invalid(
                "readiness",
                "interval and timeout must be above zero, and deadline at least one interval",
            ));
        }
        Ok(Self {
            kind,
            interval: raw.interval,
            timeout: raw.timeout,
            success_threshold: raw.success_threshold,
            deadline: raw.deadline,
        })
    }

    pub(super) fn to_raw(&self) -> RawReadiness {
        let (path, status) = match &self.kind {
            ReadinessKind::Http { path, status } => (Some(path.clone()), *status),
            ReadinessKind::Tcp | ReadinessKind::Docker => (None, None),
        };
        RawReadiness {
            kind: self.kind.name().into(),
            path,
            status,
            interval: self.interval,
            timeout: self.timeout,
            success_threshold: self.success_threshold,
            deadline: self.deadline,
        }
    }

    /// The probe in wire form, against the container's `port`.
    pub(super) fn probe(&self, port: NonZeroU16) -> proto::ReadinessProbe {
        let port = u32::from(port.get());
        let kind = match &self.kind {
            ReadinessKind::Tcp => proto::readiness_probe::Kind::Tcp(proto::TcpProbe { port }),
            ReadinessKind::Docker => {
                proto::readiness_probe::Kind::DockerHealth(proto::DockerHealthProbe {})
            }
            ReadinessKind::Http { path, status } => {
                proto::readiness_probe::Kind::Http(proto::HttpProbe {
                    path: path.clone(),
                    expected_status: status.map_or(0, u32::from),
                    port,
                })
            }
        };
        proto::ReadinessProbe {
            kind: Some(kind),
            interval_ms: ms(self.interval),
            timeout_ms: ms(self.timeout),
            success_threshold: self.success_threshold,
            deadline_ms: ms(self.deadline),
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}
