//! Reconciliation at start: finish or undo what a swap or rollback left half done when
//! the agent died in the middle of it, before the agent reports its inventory.
//!
//! Per service with Drover-labelled containers:
//!
//! 1. A container that was created and never started (the swap died before starting it)
//!    is removed, with its secrets.
//! 2. A running container that became ready once (it has a ready record) is left alone.
//!    A running one without a record is the candidate of an interrupted handover: it is
//!    probed with the probe recorded on it, until what is left of its deadline (counted
//!    from its start). Ready: the handover is finished. Not ready: it is stopped (and
//!    removed when it is the service's newest container, as a failed swap would).
//!    When the container it was to replace still runs next to it (a start-first
//!    handover), that one keeps serving; both running is left to the controller, whose
//!    load balancer points at one of them and whose retire stops the other.
//! 3. When nothing runs (any more), the most recently run container that was ready once is
//!    started again and probed; if it does not become ready, the one before it. Without
//!    any ready record (containers of an older agent), the most recently run one is tried.
//!
//! Every step reads Docker again on the next start, so an agent killed during
//! reconciliation simply reconciles again.

use std::time::{Duration, SystemTime};

use drover_shared::proto::ReadinessProbe;
use tracing::{info, warn};

use super::handover::wait_until_ready;
use super::record::{recorded_probe, recorded_stop_grace};
use super::state::{self, ServiceContainers};
use super::{CommandContext, DEFAULT_STOP_GRACE};
use crate::runtime::{ContainerInfo, ContainerRuntime, RunState, RuntimeError};

/// Kept containers tried, at most, when nothing runs.
const RESTORE_ATTEMPTS: usize = 2;

/// What reconciliation left a service running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Its running container had been ready: nothing to do.
    Untouched {
        /// The running container.
        container: String,
    },
    /// Its running container became ready: the interrupted handover is finished.
    Finished {
        /// The container now serving.
        container: String,
    },
    /// A container that was ready before runs (and is ready) again.
    Restored {
        /// The container now serving.
        container: String,
    },
    /// Nothing runs: no container became ready.
    NothingRuns,
}

impl Outcome {
    /// The container serving the service, if one does.
    pub fn serving(&self) -> Option<&str> {
        match self {
            Self::Untouched { container }
            | Self::Finished { container }
            | Self::Restored { container } => Some(container),
            Self::NothingRuns => None,
        }
    }
}

/// Reconciles every service of this agent; returns what each is left running.
pub async fn all<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
) -> Result<Vec<(String, Outcome)>, RuntimeError> {
    let containers = ctx.runtime.list_managed(&ctx.agent).await?;
    let mut out = vec![];
    for (name, service_containers) in state::group(containers) {
        let outcome = service(ctx, service_containers).await;
        out.push((name, outcome));
    }
    Ok(out)
}

/// Reconciles one service's containers (as listed just before).
pub async fn service<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    mut c: ServiceContainers,
) -> Outcome {
    let svc = c.service.clone();
    let newest = newest_created(&c).map(|n| n.id.clone());
    let (never_started, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut c.kept)
        .into_iter()
        .partition(|k| k.state == RunState::Created);
    c.kept = kept;
    for k in &never_started {
        info!(service = %svc, container = %k.name, version = %k.version(), "removing a container that an interrupted swap created and never started");
        if let Err(e) = super::remove_container(ctx, k).await {
            warn!(service = %svc, container = %k.name, error = %e, "could not remove the never-started container");
        }
    }

    if let Some(running) = c.current() {
        if c.active.len() > 1 {
            // A start-first handover in progress: the controller that runs it decides
            // which one stays (its load balancer points at one of them).
            info!(service = %svc, running = c.active.len(), "more than one container of the service runs (a start-first handover); checking the most recently started one, the controller retires the other");
        }
        if ctx.ready.was_ready(&running.name).await {
            info!(service = %svc, container = %running.name, version = %running.version(), "running and ready before the agent restarted: nothing to do");
            return Outcome::Untouched {
                container: running.name.clone(),
            };
        }
        info!(service = %svc, container = %running.name, version = %running.version(), "running but never reported ready: an interrupted handover; checking its readiness");
        let probe = left_of_deadline(recorded_probe(running), running.started_at);
        match wait_until_ready(&*ctx.runtime, running, probe.as_ref()).await {
            Ok(_) => {
                info!(service = %svc, container = %running.name, version = %running.version(), "ready: the interrupted handover is finished");
                ctx.ready.record(&running.name).await;
                return Outcome::Finished {
                    container: running.name.clone(),
                };
            }
            Err(f) => {
                info!(service = %svc, container = %running.name, version = %running.version(), reason = %f.message, "not ready: undoing the interrupted handover");
                stop(ctx, running).await;
                if newest.as_deref() == Some(running.id.as_str()) {
                    info!(service = %svc, container = %running.name, version = %running.version(), "removing it: a container that never became ready is no rollback target");
                    if let Err(e) = super::remove_container(ctx, running).await {
                        warn!(service = %svc, container = %running.name, error = %e, "could not remove the container that never became ready");
                    }
                }
                // A start-first handover starts the new container next to the old one,
                // which never stopped: it still serves.
                if let Some(other) = c.active.get(1) {
                    info!(service = %svc, container = %other.name, version = %other.version(), "the container it was to replace still runs: it keeps serving");
                    return Outcome::Untouched {
                        container: other.name.clone(),
                    };
                }
            }
        }
    }
    restore(ctx, &svc, &c.kept).await
}

/// Starts the most recently run container of `kept` that was ready once (the one before
/// it when it does not become ready again).
async fn restore<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    svc: &str,
    kept: &[ContainerInfo],
) -> Outcome {
    let mut ready_before = vec![];
    for k in kept {
        if ctx.ready.was_ready(&k.name).await {
            ready_before.push(k);
        }
    }
    if ready_before.is_empty() {
        // No records at all (containers of an older agent): the most recently run one.
        ready_before.extend(kept.first());
    }
    for k in ready_before.into_iter().take(RESTORE_ATTEMPTS) {
        info!(service = svc, container = %k.name, version = %k.version(), "nothing runs: starting the container that ran last and was ready");
        let probe = recorded_probe(k);
        let started = match ctx.runtime.start(&k.id).await {
            Ok(()) => wait_until_ready(&*ctx.runtime, k, probe.as_ref())
                .await
                .map_err(|f| f.message),
            Err(e) => Err(e.to_string()),
        };
        match started {
            Ok(_) => {
                info!(service = svc, container = %k.name, version = %k.version(), "restored: it runs and is ready");
                ctx.ready.record(&k.name).await;
                return Outcome::Restored {
                    container: k.name.clone(),
                };
            }
            Err(why) => {
                warn!(service = svc, container = %k.name, version = %k.version(), reason = %why, "did not become ready again; stopping it");
                stop(ctx, k).await;
            }
        }
    }
    warn!(
        service = svc,
        "nothing runs: no container of the service became ready; deploy or roll back to fix it"
    );
    Outcome::NothingRuns
}

async fn stop<R: ContainerRuntime>(ctx: &CommandContext<R>, c: &ContainerInfo) {
    let grace = recorded_stop_grace(c).unwrap_or(DEFAULT_STOP_GRACE);
    if let Err(e) = ctx.runtime.stop(&c.id, grace).await {
        warn!(container = %c.name, error = %e, "could not stop the container");
    }
}

/// The service's most recently created container.
fn newest_created(c: &ServiceContainers) -> Option<&ContainerInfo> {
    c.active.iter().chain(&c.kept).max_by_key(|k| k.created)
}

/// `probe` with its deadline shortened by the time the container has run already (at
/// least one check is always made). Without a probe, running is enough.
fn left_of_deadline(
    probe: Option<ReadinessProbe>,
    started: Option<SystemTime>,
) -> Option<ReadinessProbe> {
    let mut p = probe?;
    let full = match p.deadline_ms {
        0 => drover_shared::probe::ProbeSettings::default().deadline,
        ms => Duration::from_millis(ms),
    };
    let ran = started
        .and_then(|s| SystemTime::now().duration_since(s).ok())
        .unwrap_or_default();
    let left = full.saturating_sub(ran).as_millis();
    p.deadline_ms = u64::try_from(left).unwrap_or(u64::MAX).max(1);
    Some(p)
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
