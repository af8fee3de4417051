//! A deployment in flight, and the only code that writes its state.
//!
//! A rollout changes its deployment through [`Rollout::advance`] (a state-machine
//! transition written as a compare-and-set), [`Rollout::set_phase`] (host phases) and
//! [`Rollout::note`] (events); everything else reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as proto;
use tracing::{info, warn};

use super::Shared;
use super::machine::{self, Event};
use super::plan::stage_gates;
use super::stages::{Promotion, ResolvedStage};
use crate::lb::LoadBalancer;
use crate::spec::ServiceSpec;
use crate::state::HostPhase;
use crate::store::{Deployment, DeploymentHost, HostChange, StoreError};

/// A deployment in flight.
pub(crate) struct Rollout {
    pub(super) shared: Arc<Shared>,
    pub(super) d: Deployment,
    pub(super) spec: ServiceSpec,
    pub(super) hosts: Vec<DeploymentHost>,
    /// Where each host is in `hosts`, by name (a deployment may have 10,000).
    pub(super) index: HashMap<String, usize>,
    pub(super) lb: Option<LoadBalancer>,
    pub(super) auth: Option<proto::RegistryAuth>,
    /// Start-first: hosts whose new container is ready and not yet pointed at.
    pub(super) pending: super::handover::Pending,
    /// Start-first: old containers being retired in the background.
    pub(super) retiring: Vec<super::handover::Retiring>,
}

pub(super) type Result<T, E = StoreError> = std::result::Result<T, E>;

impl Rollout {
    pub(super) fn fence(&self) -> proto::Fence {
        proto::Fence {
            deployment_id: self.d.id.clone(),
            epoch: self.d.epoch,
        }
    }

    pub(super) fn server(&self, host: &str) -> String {
        self.spec
            .load_balancer
            .as_ref()
            .map_or_else(|| host.to_string(), |l| l.server_for(host))
    }

    /// The gates of stage `stage` against this deployment's fleet.
    fn resolved_stage(&self, stage: u32) -> Option<ResolvedStage> {
        stage_gates(&self.spec, self.d.kind, self.hosts.len())
            .get(stage as usize)
            .copied()
    }

    /// How long stage `stage` bakes before the next one.
    pub(super) fn stage_bake(&self, stage: u32) -> Duration {
        self.resolved_stage(stage)
            .map_or(Duration::ZERO, |s| s.bake)
    }

    /// Whether stage `stage` waits for `drover promote`.
    pub(super) fn stage_is_manual(&self, stage: u32) -> bool {
        self.resolved_stage(stage)
            .is_some_and(|s| s.promotion == Promotion::Manual)
    }

    pub(super) fn stage_count(&self) -> u32 {
        self.hosts.iter().map(|h| h.stage + 1).max().unwrap_or(0)
    }

    pub(super) fn batch_count(&self) -> u32 {
        self.hosts.iter().map(|h| h.batch + 1).max().unwrap_or(0)
    }

    pub(super) fn host(&self, name: &str) -> Option<&DeploymentHost> {
        self.index.get(name).map(|&i| &self.hosts[i])
    }

    /// The names of this deployment's hosts that satisfy `keep`, in plan order.
    pub(super) fn hosts_where(&self, keep: impl Fn(&DeploymentHost) -> bool) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| keep(h))
            .map(|h| h.host.clone())
            .collect()
    }

    /// Applies `event` through the state machine and writes the transition as a
    /// compare-and-set; the only way a rollout changes its deployment's state. A refused
    /// or stale transition is an error, and nothing is written.
    pub(super) async fn advance(
        &mut self,
        event: Event,
        error: Option<String>,
        message: &str,
    ) -> Result<()> {
        let t = machine::apply(self.d.state, event)?;
        if let Err(e) = self
            .shared
            .store
            .transition(&self.d.id, t, error, message)
            .await
        {
            if let StoreError::Stale { actual, .. } = &e {
                warn!(error = %e, "the deployment changed under the rollout");
                self.d.state = *actual;
            }
            return Err(e);
        }
        let next = t.to();
        self.d.state = next;
        if next.is_terminal() {
            let took = crate::store::now_ms().saturating_sub(self.d.created_ms);
            self.shared
                .metrics
                .deployment_finished(&self.d.service, next, took);
            self.shared.metrics.forget_deployment(&self.d.id);
        }
        info!(state = %next, "{message}");
        self.shared.notify();
        Ok(())
    }

    /// Records `phase` for `hosts` (one store write for all of them).
    pub(super) async fn set_phase(
        &mut self,
        hosts: &[String],
        phase: HostPhase,
        error: Option<String>,
        message: &str,
    ) -> Result<()> {
        let changes = hosts
            .iter()
            .map(|h| HostChange::new(h, phase, error.clone(), message))
            .collect();
        self.change_hosts(changes).await
    }

    /// Records `phase` for several hosts, each with its own message `(host, message)`,
    /// in one store write.
    pub(super) async fn set_phase_each(
        &mut self,
        hosts: Vec<(String, String)>,
        phase: HostPhase,
        error: Option<String>,
    ) -> Result<()> {
        let changes = hosts
            .into_iter()
            .map(|(h, message)| HostChange {
                host: h,
                phase,
                error: error.clone(),
                message,
            })
            .collect();
        self.change_hosts(changes).await
    }

    /// Records each host's change (its own phase, error and message) in one store write.
    pub(super) async fn change_hosts(&mut self, changes: Vec<HostChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.shared
            .store
            .change_hosts(&self.d.id, changes.clone())
            .await?;
        for ch in &changes {
            if let Some(&i) = self.index.get(&ch.host) {
                self.hosts[i].phase = ch.phase;
            }
            self.shared
                .metrics
                .host_phase(&self.d.id, &ch.host, ch.phase);
            info!(host = %ch.host, phase = %ch.phase, "{}", ch.message);
        }
        self.shared.notify();
        Ok(())
    }

    /// Records an event of the deployment (`host` empty: of the whole deployment).
    pub(super) async fn note(&self, host: &str, message: &str) -> Result<()> {
        self.shared.store.event(&self.d.id, host, message).await?;
        info!(host, "{message}");
        self.shared.notify();
        Ok(())
    }

    /// Records several host events, `(host, message)`, in one store write.
    pub(super) async fn notes(&self, lines: Vec<(String, String)>) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        for (host, message) in &lines {
            info!(host, "{message}");
        }
        self.shared.store.add_events(&self.d.id, lines).await?;
        self.shared.notify();
        Ok(())
    }
}
