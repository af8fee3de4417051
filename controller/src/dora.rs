//! Delivery metrics (the four DORA keys) computed from Drover's own deploy history,
//! per service and environment, over a window. Pure: the store reads the records
//! ([`crate::store::Store::dora_records`]), the operator API, the CLI and `/metrics`
//! show what [`compute`] returns.
//!
//! Definitions, all over the window `[start, end)` and one (service, environment):
//!
//! - **Deployment frequency**: deployments of kind `deploy` that *succeeded* (finished)
//!   in the window, and that count per day of the window.
//! - **Lead time for changes**: for each of those deployments, from its release's commit
//!   time to its success. Median and p90 (nearest rank). Deployments whose release has no
//!   commit time are left out and counted apart.
//! - **Change failure rate**: *failed changes* over *finished deploys*. A finished deploy
//!   is a deployment of kind `deploy` that finished in the window as succeeded, failed or
//!   rolled back (cancelled and skipped ones never ran and are left out). It is a failed
//!   change when it failed or was rolled back, or when it succeeded and was *reverted*:
//!   within the rollback window after its finish, while it was still the last success
//!   in the environment, a deployment ran (anything but cancelled, skipped, pending or
//!   scheduled) that was an explicit rollback, or a deploy of an *older digest*: one
//!   first deployed in that environment before this deployment's digest was.
//! - **Time to restore**: for each failed change, from its start (`created_ms`) to the
//!   finish of the next deployment in the environment that succeeded (whatever its
//!   kind): the environment is healthy again. Median (nearest rank). A failed change with
//!   no such success before the window's end is counted as unrestored.
//!
//! "Older digest" needs each digest's first deployment in the environment, which may be
//! long before the window: the records given to [`compute`] must include it (the store
//! query does). Records that finish before the window are history only, never counted.

use std::collections::{BTreeMap, HashMap};

use crate::state::{DeploymentKind, DeploymentState};

/// One deployment as the metrics need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The deployment id (ties in time are ordered by it).
    pub id: String,
    /// The service.
    pub service: String,
    /// The environment ('' for a spec without environments).
    pub environment: String,
    /// Deploy or rollback.
    pub kind: DeploymentKind,
    /// Where it stands.
    pub state: DeploymentState,
    /// The release's digest (`sha256:...`); empty when never resolved.
    pub digest: String,
    /// When it was recorded (its start), Unix ms.
    pub created_ms: u64,
    /// When it ended, Unix ms.
    pub finished_ms: Option<u64>,
    /// When its release's commit was made, Unix ms, if known.
    pub commit_ms: Option<u64>,
}

/// What [`compute`] measures over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// The window's start, Unix ms (inclusive).
    pub start_ms: u64,
    /// The window's end, Unix ms (exclusive): usually now.
    pub end_ms: u64,
    /// How soon after a success a revert makes it a failed change.
    pub rollback_window_ms: u64,
}

/// The default rollback window: one hour. A bad change is usually noticed and reverted
/// within minutes of going live; a revert a day later is more likely a new decision.
pub const DEFAULT_ROLLBACK_WINDOW_MS: u64 = 3_600_000;

/// The default window: the last 30 days.
pub const DEFAULT_WINDOW_MS: u64 = 30 * 86_400_000;

/// Median and 90th percentile (nearest rank) of durations, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spread {
    /// Half of the values are at or below it.
    pub median_ms: u64,
    /// 90% of the values are at or below it.
    pub p90_ms: u64,
}

/// The four metrics of one (service, environment), with the counts behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct Dora {
    /// The service.
    pub service: String,
    /// The environment ('' for a spec without environments).
    pub environment: String,
    /// Deploys that succeeded in the window.
    pub deploys: u64,
    /// `deploys` per day of the window.
    pub deploys_per_day: f64,
    /// Commit to success of those deploys; `None` when none had a commit time.
    pub lead_time: Option<Spread>,
    /// Deploys whose lead time was measured.
    pub lead_time_measured: u64,
    /// Deploys left out of the lead time: no commit time.
    pub lead_time_unknown: u64,
    /// Deploys that finished in the window (succeeded, failed or rolled back).
    pub finished_deploys: u64,
    /// Of those, the failed changes.
    pub failed_changes: u64,
    /// `failed_changes / finished_deploys`; `None` without finished deploys.
    pub change_failure_rate: Option<f64>,
    /// Median time to restore of the restored failed changes.
    pub time_to_restore_ms: Option<u64>,
    /// Failed changes restored before the window's end.
    pub restored: u64,
    /// Failed changes not restored by the window's end.
    pub unrestored: u64,
}

/// The metrics of every (service, environment) with a deployment finished in the
/// window, ordered by service then environment.
pub fn compute(records: &[Record], settings: &Settings) -> Vec<Dora> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.service.as_str(), r.environment.as_str()))
            .or_default()
            .push(r);
    }
    groups
        .into_values()
        .filter_map(|mut g| {
            g.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
            environment(&g, settings)
        })
        .collect()
}

/// The metrics of one environment's deployments, in the order they were made.
fn environment(history: &[&Record], s: &Settings) -> Option<Dora> {
    let in_window = |r: &Record| {
        r.finished_ms
            .is_some_and(|f| (s.start_ms..s.end_ms).contains(&f))
    };
    if !history.iter().any(|r| in_window(r)) {
        return None;
    }
    let first_seen = first_seen(history);
    let mut lead_times = Vec::new();
    let mut restore_times = Vec::new();
    let mut m = Dora {
        service: history[0].service.clone(),
        environment: history[0].environment.clone(),
        deploys: 0,
        deploys_per_day: 0.0,
        lead_time: None,
        lead_time_measured: 0,
        lead_time_unknown: 0,
        finished_deploys: 0,
        failed_changes: 0,
        change_failure_rate: None,
        time_to_restore_ms: None,
        restored: 0,
        unrestored: 0,
    };
    for (i, r) in history.iter().enumerate() {
        let (true, DeploymentKind::Deploy, Some(finished)) = (in_window(r), r.kind, r.finished_ms)
        else {
            continue;
        };
        let failed = match r.state {
            DeploymentState::Succeeded => {
                m.deploys += 1;
                match r.commit_ms {
                    Some(c) => lead_times.push(finished.saturating_sub(c)),
                    None => m.lead_time_unknown += 1,
                }
                reverted(history, i, &first_seen, s.rollback_window_ms)
            }
            DeploymentState::Failed | DeploymentState::RolledBack => true,
            _ => continue,
        };
        m.finished_deploys += 1;
        if !failed {
            continue;
        }
        m.failed_changes += 1;
        let healthy = history[i + 1..]
            .iter()
            .filter(|n| n.state == DeploymentState::Succeeded)
            .find_map(|n| n.finished_ms)
            .filter(|f| *f < s.end_ms);
        match healthy {
            Some(f) => restore_times.push(f.saturating_sub(r.created_ms)),
            None => m.unrestored += 1,
        }
    }
    let days = s.end_ms.saturating_sub(s.start_ms) as f64 / 86_400_000.0;
    m.deploys_per_day = if days > 0.0 {
        m.deploys as f64 / days
    } else {
        0.0
    };
    m.lead_time_measured = lead_times.len() as u64;
    m.lead_time = spread(&mut lead_times);
    m.change_failure_rate =
        (m.finished_deploys > 0).then(|| m.failed_changes as f64 / m.finished_deploys as f64);
    m.restored = restore_times.len() as u64;
    m.time_to_restore_ms = spread(&mut restore_times).map(|s| s.median_ms);
    Some(m)
}

/// When each digest was first deployed in the environment (its first record).
fn first_seen<'a>(history: &[&'a Record]) -> HashMap<&'a str, u64> {
    let mut first = HashMap::new();
    for r in history.iter().filter(|r| !r.digest.is_empty()) {
        first.entry(r.digest.as_str()).or_insert(r.created_ms);
    }
    first
}

/// Whether the success `history[i]` was reverted: a deployment that ran within
/// `window_ms` of its finish, before any other success, was a rollback or a deploy of
/// a digest first seen before its own.
fn reverted(
    history: &[&Record],
    i: usize,
    first_seen: &HashMap<&str, u64>,
    window_ms: u64,
) -> bool {
    let d = history[i];
    let Some(finished) = d.finished_ms else {
        return false;
    };
    let own = first_seen.get(d.digest.as_str()).copied();
    for n in &history[i + 1..] {
        if n.created_ms > finished.saturating_add(window_ms) {
            return false;
        }
        if !ran(n.state) || n.created_ms < finished {
            continue;
        }
        let older = match (own, first_seen.get(n.digest.as_str())) {
            (Some(own), Some(theirs)) => *theirs < own,
            _ => false,
        };
        if n.kind == DeploymentKind::Rollback || older {
            return true;
        }
        if n.state == DeploymentState::Succeeded {
            // Superseded by a newer change: a later revert is that change's.
            return false;
        }
    }
    false
}

/// The deployment touched hosts (or is touching them): not cancelled, skipped or
/// still waiting to start.
fn ran(state: DeploymentState) -> bool {
    !matches!(
        state,
        DeploymentState::Cancelled
            | DeploymentState::Skipped
            | DeploymentState::Pending
            | DeploymentState::Scheduled
    )
}

/// Median and p90 by nearest rank (the smallest value with at least that share of the
/// values at or below it); `None` for no values.
fn spread(values: &mut [u64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = |p: u64| values[(values.len() as u64 * p).div_ceil(100).max(1) as usize - 1];
    Some(Spread {
        median_ms: rank(50),
        p90_ms: rank(90),
    })
}

#[cfg(test)]
mod tests;
