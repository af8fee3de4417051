//! The bakes of a deployment: one row per stage, rewritten by each round of the bake
//! with the canary's and the baseline's figures, the limits they were judged by, and the
//! verdict, so `drover status` and the deployment page show a bake as it runs and how
//! it ended, without reading them back from the event log.

use super::sql::params;

use super::{Store, StoreError};
use crate::spec::CanarySection;

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS bakes (
    deployment_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    ends_ms INTEGER NOT NULL,
    measured_ms INTEGER NOT NULL,
    canary_hosts TEXT NOT NULL,
    baseline_hosts INTEGER NOT NULL,
    canary_requests INTEGER NOT NULL,
    canary_errors INTEGER NOT NULL,
    canary_response_ms INTEGER NOT NULL,
    canary_restarts INTEGER NOT NULL,
    baseline_requests INTEGER NOT NULL,
    baseline_errors INTEGER NOT NULL,
    baseline_response_ms INTEGER NOT NULL,
    limits TEXT NOT NULL,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (deployment_id, stage)
);
"#;

/// Where a bake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BakeVerdict {
    /// Still watching; no breach so far.
    Watching,
    /// Baked its full time without a breach.
    Passed,
    /// A threshold was breached: the stage failed.
    Breached,
    /// An operator aborted the deployment during the bake.
    Aborted,
}

impl BakeVerdict {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Watching => "watching",
            Self::Passed => "passed",
            Self::Breached => "breached",
            Self::Aborted => "aborted",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "passed" => Self::Passed,
            "breached" => Self::Breached,
            "aborted" => Self::Aborted,
            _ => Self::Watching,
        }
    }

    /// The wire form.
    pub fn to_proto(self) -> drover_proto::v1::BakeVerdict {
        use drover_proto::v1::BakeVerdict as P;
        match self {
            Self::Watching => P::Watching,
            Self::Passed => P::Passed,
            Self::Breached => P::Breached,
            Self::Aborted => P::Aborted,
        }
    }
}

/// What one side of a bake (the canary hosts, or the baseline) did since it began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BakeSignals {
    /// Requests answered or failed.
    pub requests: u64,
    /// 5xx responses and connection errors.
    pub errors: u64,
    /// Average response time over recent requests (the worst host), ms.
    pub response_time_ms: u64,
    /// Container restarts during the bake (the worst host; canary only).
    pub restarts: u32,
}

impl BakeSignals {
    /// Errors over requests, 0 without requests.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

/// One stage's bake as its latest round saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bake {
    /// The stage (from 0).
    pub stage: u32,
    /// Unix ms.
    pub started_ms: u64,
    /// When it passes if nothing breaches, Unix ms.
    pub ends_ms: u64,
    /// When the figures were read, Unix ms (the start until the first round).
    pub measured_ms: u64,
    /// The hosts watched.
    pub canary_hosts: Vec<String>,
    /// How many hosts the canary is compared with.
    pub baseline_hosts: u32,
    /// The canary hosts, summed.
    pub canary: BakeSignals,
    /// The baseline hosts, summed.
    pub baseline: BakeSignals,
    /// The thresholds it is judged by (the spec's `[canary]`).
    pub limits: CanarySection,
    /// Where it stands.
    pub verdict: BakeVerdict,
    /// What breached, with the values, or why it stopped (empty while watching or passed).
    pub reason: String,
}

impl Store {
    /// Records the latest round of deployment `id`'s bake (replacing the stage's row).
    pub async fn record_bake(&self, id: &str, bake: Bake) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let hosts = serde_json::to_string(&bake.canary_hosts).unwrap_or_default();
            let limits = serde_json::to_string(&bake.limits).unwrap_or_default();
            c.prepare_cached(
                "INSERT INTO bakes (deployment_id, stage, started_ms, ends_ms, measured_ms,
                    canary_hosts, baseline_hosts, canary_requests, canary_errors, canary_response_ms,
                    canary_restarts, baseline_requests, baseline_errors, baseline_response_ms,
                    limits, verdict, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                 ON CONFLICT (deployment_id, stage) DO UPDATE SET started_ms = excluded.started_ms,
                    ends_ms = excluded.ends_ms, measured_ms = excluded.measured_ms,
                    canary_hosts = excluded.canary_hosts, baseline_hosts = excluded.baseline_hosts,
                    canary_requests = excluded.canary_requests, canary_errors = excluded.canary_errors,
                    canary_response_ms = excluded.canary_response_ms,
                    canary_restarts = excluded.canary_restarts,
                    baseline_requests = excluded.baseline_requests,
                    baseline_errors = excluded.baseline_errors,
                    baseline_response_ms = excluded.baseline_response_ms, limits = excluded.limits,
                    verdict = excluded.verdict, reason = excluded.reason",
            )?
            .execute(params![
                id,
                bake.stage,
                bake.started_ms,
                bake.ends_ms,
                bake.measured_ms,
                hosts,
                bake.baseline_hosts,
                bake.canary.requests,
                bake.canary.errors,
                bake.canary.response_time_ms,
                bake.canary.restarts,
                bake.baseline.requests,
                bake.baseline.errors,
                bake.baseline.response_time_ms,
                limits,
                bake.verdict.as_str(),
                bake.reason,
            ])?;
            Ok(())
        })
        .await
    }

    /// The bakes of deployment `id`, by stage.
    pub async fn bakes(&self, id: &str) -> Result<Vec<Bake>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT stage, started_ms, ends_ms, measured_ms, canary_hosts, baseline_hosts,
                    canary_requests, canary_errors, canary_response_ms, canary_restarts,
                    baseline_requests, baseline_errors, baseline_response_ms, limits, verdict, reason
                 FROM bakes WHERE deployment_id = ?1 ORDER BY stage",
            )?;
            let rows = stmt.query_map(params![id], |r| {
                Ok(Bake {
                    stage: r.get(0)?,
                    started_ms: r.get(1)?,
                    ends_ms: r.get(2)?,
                    measured_ms: r.get(3)?,
                    canary_hosts: serde_json::from_str(&r.get::<_, String>(4)?)
                        .unwrap_or_default(),
                    baseline_hosts: r.get(5)?,
                    canary: BakeSignals {
                        requests: r.get(6)?,
                        errors: r.get(7)?,
                        response_time_ms: r.get(8)?,
                        restarts: r.get(9)?,
                    },
                    baseline: BakeSignals {
                        requests: r.get(10)?,
                        errors: r.get(11)?,
                        response_time_ms: r.get(12)?,
                        restarts: 0,
                    },
                    limits: serde_json::from_str(&r.get::<_, String>(13)?).unwrap_or_default(),
                    verdict: BakeVerdict::parse(&r.get::<_, String>(14)?),
                    reason: r.get(15)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }
}
