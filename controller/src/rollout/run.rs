//! One deployment, driven from its recorded state to a terminal one.
//!
//! Every step is recorded before it is taken and is idempotent (drain a drained server,
//! resend a swap under the same command id), so the rollout can be dropped at any await
//! point (controller shutdown) and resumed from the store by the next controller.
//!
//! The order per batch is the one in ARCHITECTURE.md: drain on every load balancer, wait
//! for sessions to end, swap through the agents, and put the hosts back only once they
//! are ready; the next batch starts when every load balancer reports them UP.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_proto::v1::{command, command_result};
use futures::future::join_all;
use tracing::{info, warn};

use super::control::{Go, Start};
use super::machine::{self, Event};
use super::stages::{Promotion, ResolvedStage};
use super::{Shared, load_balancer};
use crate::hub::HubError;
use crate::lb::LoadBalancer;
use crate::spec::{OnFailure, ServiceSpec};
use crate::state::{DeploymentKind, DeploymentState, HostPhase};
use crate::store::{Deployment, DeploymentHost, StoreError};

/// Why a step failed on one host.
#[derive(Debug, Clone)]
pub(super) struct HostFailure {
    host: String,
    message: String,
    /// The agent put the previous container back (it is safe to re-enable the host).
    restored: bool,
    /// The agent could not be reached: the host's state is unknown.
    lost: bool,
}

/// A deployment in flight.
pub(crate) struct Rollout {
    pub(super) shared: Arc<Shared>,
    pub(super) d: Deployment,
    pub(super) spec: ServiceSpec,
    pub(super) hosts: Vec<DeploymentHost>,
    pub(super) lb: Option<LoadBalancer>,
    pub(super) auth: Option<proto::RegistryAuth>,
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

    /// The spec's stage `stage` against this deployment's fleet.
    fn resolved_stage(&self, stage: u32) -> Option<ResolvedStage> {
        let stages = self.spec.rollout.stages().resolve(self.hosts.len());
        stages.get(stage as usize).copied()
    }

    /// How long stage `stage` bakes before the next one.
    pub(super) fn stage_bake(&self, stage: u32) -> Duration {
        if self.d.kind == DeploymentKind::Rollback {
            return Duration::ZERO;
        }
        self.resolved_stage(stage)
            .map_or(Duration::ZERO, |s| s.bake)
    }

    /// Whether stage `stage` waits for `drover promote`.
    pub(super) fn stage_is_manual(&self, stage: u32) -> bool {
        self.d.kind == DeploymentKind::Deploy
            && self
                .resolved_stage(stage)
                .is_some_and(|s| s.promotion == Promotion::Manual)
    }

    fn stage_count(&self) -> u32 {
        self.hosts.iter().map(|h| h.stage + 1).max().unwrap_or(0)
    }

    fn batch_count(&self) -> u32 {
        self.hosts.iter().map(|h| h.batch + 1).max().unwrap_or(0)
    }

    fn host(&self, name: &str) -> Option<&DeploymentHost> {
        self.hosts.iter().find(|h| h.host == name)
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
            self.shared.metrics.deployment_finished(next, took);
            self.shared.metrics.forget_deployment(&self.d.id);
        }
        info!(state = %next, "{message}");
        self.shared.notify();
        Ok(())
    }

    async fn set_phase(
        &mut self,
        hosts: &[String],
        phase: HostPhase,
        error: Option<String>,
        message: &str,
    ) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        self.shared
            .store
            .set_hosts(&self.d.id, hosts, phase, error, message)
            .await?;
        for h in self.hosts.iter_mut().filter(|h| hosts.contains(&h.host)) {
            h.phase = phase;
        }
        for h in hosts {
            self.shared.metrics.host_phase(&self.d.id, h, phase);
        }
        for h in hosts {
            info!(host = %h, phase = %phase, "{message}");
        }
        self.shared.notify();
        Ok(())
    }

    pub(super) async fn note(&self, host: &str, message: &str) -> Result<()> {
        self.shared.store.event(&self.d.id, host, message).await?;
        info!(host, "{message}");
        self.shared.notify();
        Ok(())
    }

    /// Drives the deployment to a terminal state (or until the controller shuts down).
    async fn drive(&mut self) -> Result<()> {
        if self.d.state == DeploymentState::Scheduled {
            match self.wait_start().await? {
                Start::Go => {}
                Start::Ended => return Ok(()),
            }
        }
        if matches!(
            self.d.state,
            DeploymentState::Pending | DeploymentState::Preparing
        ) {
            if self.d.kind == DeploymentKind::Deploy {
                if self.d.state == DeploymentState::Pending {
                    let msg = format!("pulling {} on {} hosts", self.d.image, self.hosts.len());
                    self.advance(Event::Prepare, None, &msg).await?;
                }
                if let Err(f) = self.prepare().await? {
                    let msg = format!("pull failed before any host was drained: {}", f.message);
                    return self.advance(Event::Fail, Some(msg.clone()), &msg).await;
                }
            }
            let msg = format!(
                "rolling {} to {} in {} batches{}",
                self.d.service,
                self.d.version,
                self.batch_count(),
                match self.stage_count() {
                    0 | 1 => String::new(),
                    n => format!(" over {n} stages"),
                }
            );
            self.advance(Event::Roll, None, &msg).await?;
        }
        let reason = loop {
            if self.d.state == DeploymentState::RollingBack {
                break self
                    .d
                    .error
                    .clone()
                    .unwrap_or_else(|| "resumed after a restart".into());
            }
            if self.d.state == DeploymentState::Paused {
                // Resumed by a new controller while paused: wait for the operator again.
                match self.wait_paused().await? {
                    Go::Continue => {}
                    Go::Abort(reason) | Go::Fail(reason) => break reason,
                }
            }
            match self.roll_stages().await? {
                Go::Continue => {
                    let msg = format!("every host runs {} and is in rotation", self.d.version);
                    return self.advance(Event::Succeed, None, &msg).await;
                }
                Go::Abort(reason) => break reason,
                Go::Fail(reason) if self.spec.rollout.on_failure == OnFailure::Pause => {
                    let msg = format!(
                        "paused after a failure (on_failure = pause): {reason}; `drover resume` retries, `drover abort` rolls back"
                    );
                    self.advance(Event::Pause, Some(reason), &msg).await?;
                    match self.wait_paused().await? {
                        Go::Continue => continue,
                        Go::Abort(reason) | Go::Fail(reason) => break reason,
                    }
                }
                Go::Fail(reason) => break reason,
            }
        };
        if self.d.state != DeploymentState::RollingBack {
            let msg = format!("rolling back every changed host: {reason}");
            self.advance(Event::BeginRollback, Some(reason.clone()), &msg)
                .await?;
        }
        let undone = self.roll_back_changed().await?;
        if undone {
            let msg = format!("rolled back: {reason}");
            self.advance(Event::FinishRollback, Some(reason), &msg)
                .await
        } else {
            let msg =
                format!("failed, and some hosts could not be rolled back (see hosts): {reason}");
            self.advance(Event::Fail, Some(reason), &msg).await
        }
    }

    /// Every remaining batch, stage by stage, with bakes and gates between stages.
    async fn roll_stages(&mut self) -> Result<Go> {
        let stages = self.stage_count().max(1);
        for stage in self.d.stage..stages {
            if let Go::Abort(r) | Go::Fail(r) = self.wait_window(stage).await? {
                return Ok(Go::Abort(r));
            }
            let batches: Vec<u32> = {
                let mut b: Vec<u32> = self
                    .hosts
                    .iter()
                    .filter(|h| h.stage == stage)
                    .map(|h| h.batch)
                    .collect();
                b.sort_unstable();
                b.dedup();
                b
            };
            for batch in batches {
                match self.checkpoint().await? {
                    Go::Continue => {}
                    other => return Ok(other),
                }
                if let Err(f) = self.roll_batch(batch).await? {
                    return Ok(Go::Fail(f.message));
                }
            }
            if stage + 1 < stages {
                match self.bake(stage).await? {
                    Go::Continue => {}
                    other => return Ok(other),
                }
                match self.gate(stage).await? {
                    Go::Continue => {}
                    other => return Ok(other),
                }
                self.shared.store.set_stage(&self.d.id, stage + 1).await?;
                self.d.stage = stage + 1;
                if self.d.state != DeploymentState::Rolling {
                    let msg = format!("stage {} of {}", stage + 2, stages);
                    self.advance(Event::Promote, None, &msg).await?;
                }
            }
        }
        Ok(Go::Continue)
    }

    /// Pulls the image on every target in parallel and pins the digest.
    async fn prepare(&mut self) -> Result<Result<(), HostFailure>> {
        let image = if self.d.pinned.is_empty() {
            self.d.image.clone()
        } else {
            self.d.pinned.clone()
        };
        let timeout = self.spec.rollout.pull_timeout + Duration::from_secs(10);
        let targets: Vec<String> = self.hosts.iter().map(|h| h.host.clone()).collect();
        let sends = targets.iter().map(|host| {
            let cmd = proto::Command {
                command_id: format!("{}/prepare/{host}", self.d.id),
                fence: Some(self.fence()),
                kind: Some(command::Kind::Prepare(proto::PrepareCommand {
                    image: image.clone(),
                    auth: self.auth.clone(),
                    timeout_ms: self.spec.rollout.pull_timeout.as_millis() as u64,
                })),
            };
            self.send(host, cmd, timeout)
        });
        let results = join_all(sends).await;
        let mut pinned: Option<String> = None;
        for (host, r) in targets.iter().zip(results) {
            let r = match r {
                Ok(proto::CommandResult {
                    output: Some(command_result::Output::Prepare(p)),
                    ..
                }) => p,
                Ok(other) => return Ok(Err(failure(host, &other))),
                Err(f) => return Ok(Err(f)),
            };
            match &pinned {
                Some(p) if *p != r.pinned => {
                    return Ok(Err(HostFailure {
                        host: host.clone(),
                        message: format!(
                            "{host}: {} resolved to {} but another host got {p}; the tag moved during the deploy, retry",
                            self.d.image, r.pinned
                        ),
                        restored: true,
                        lost: false,
                    }));
                }
                _ => pinned = Some(r.pinned.clone()),
            }
        }
        let pinned = pinned.unwrap_or_default();
        self.shared.store.set_pinned(&self.d.id, &pinned).await?;
        self.d.pinned = pinned.clone();
        self.set_phase(
            &targets,
            HostPhase::Prepared,
            None,
            &format!("image ready: {pinned}"),
        )
        .await?;
        Ok(Ok(()))
    }

    /// Drain, swap, ready, enable for the hosts of one batch that are not done yet.
    async fn roll_batch(&mut self, batch: u32) -> Result<Result<(), HostFailure>> {
        let todo: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.batch == batch && h.phase != HostPhase::Done)
            .map(|h| h.host.clone())
            .collect();
        if todo.is_empty() {
            return Ok(Ok(()));
        }
        self.note(
            "",
            &format!(
                "batch {}/{}: {}",
                batch + 1,
                self.batch_count(),
                todo.join(", ")
            ),
        )
        .await?;
        // A host whose agent is gone is not drained: it keeps serving its current
        // version, and the batch fails (within the reconnect grace it may come back).
        let hub = self.shared.hub.clone();
        let grace = self.shared.settings.reconnect_grace;
        let lost: Vec<(String, String)> = join_all(todo.iter().map(|h| {
            let hub = hub.clone();
            async move {
                hub.wait_connected(h, grace)
                    .await
                    .err()
                    .map(|e| (h.clone(), e))
            }
        }))
        .await
        .into_iter()
        .flatten()
        .map(|(h, e)| {
            (
                h,
                format!("{e}; not touched: it stays in rotation on its current version"),
            )
        })
        .collect();
        if !lost.is_empty() {
            for (h, msg) in &lost {
                self.set_phase(
                    std::slice::from_ref(h),
                    HostPhase::Failed,
                    Some(msg.clone()),
                    msg,
                )
                .await?;
            }
            for h in todo.iter().filter(|h| !lost.iter().any(|(l, _)| l == *h)) {
                self.note(h, "untouched: another host of its batch is unreachable")
                    .await?;
            }
            let message = lost
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(Err(HostFailure {
                host: lost[0].0.clone(),
                message,
                restored: true,
                lost: false,
            }));
        }
        self.set_phase(&todo, HostPhase::Draining, None, "draining")
            .await?;
        let drains = join_all(todo.iter().map(|h| self.drain(h))).await;
        let mut failed: Vec<HostFailure> = vec![];
        let mut swap_now = vec![];
        for (host, r) in todo.iter().zip(drains) {
            match r {
                Ok(msg) => {
                    self.note(host, &msg).await?;
                    swap_now.push(host.clone());
                }
                Err(f) => failed.push(f),
            }
        }
        if !failed.is_empty() {
            // Nothing was swapped: put every drained host of the batch back.
            self.restore_failed(&todo, &failed).await?;
            return Ok(Err(failed.remove(0)));
        }
        let verb = if self.d.kind == DeploymentKind::Rollback {
            "rolling back"
        } else {
            "swapping"
        };
        self.set_phase(
            &swap_now,
            HostPhase::Swapping,
            None,
            &format!("{verb} to {}", self.d.version),
        )
        .await?;
        let swaps = join_all(swap_now.iter().map(|h| self.swap(h))).await;
        let mut ready = vec![];
        for (host, r) in swap_now.iter().zip(swaps) {
            match r {
                Ok(ms) => ready.push((host.clone(), ms)),
                Err(f) => failed.push(f),
            }
        }
        for (host, ms) in &ready {
            let msg = format!("{} ready after {}; enabling", self.d.version, fmt_ms(*ms));
            self.set_phase(std::slice::from_ref(host), HostPhase::Enabling, None, &msg)
                .await?;
        }
        let enables = join_all(ready.iter().map(|(h, _)| self.enable(h))).await;
        let mut done = vec![];
        for ((host, _), r) in ready.iter().zip(enables) {
            match r {
                Ok(()) => done.push(host.clone()),
                Err(f) => failed.push(f),
            }
        }
        for _ in &done {
            self.shared.metrics.host_swapped();
        }
        self.set_phase(
            &done,
            HostPhase::Done,
            None,
            &format!("runs {} and is in rotation", self.d.version),
        )
        .await?;
        if failed.is_empty() {
            return Ok(Ok(()));
        }
        self.restore_failed(&[], &failed).await?;
        Ok(Err(failed.remove(0)))
    }

    /// Puts failed hosts (restored to their previous version by their agent) and any
    /// other drained hosts of the batch back in rotation; a host whose state is unknown
    /// is left drained and says so.
    async fn restore_failed(
        &mut self,
        also_drained: &[String],
        failed: &[HostFailure],
    ) -> Result<()> {
        for f in failed {
            if f.lost || !f.restored {
                let msg = format!(
                    "{}; left drained on the load balancer: check the host, then `drover rollback {}` or redeploy",
                    f.message, self.d.service
                );
                self.set_phase(
                    std::slice::from_ref(&f.host),
                    HostPhase::LeftDrained,
                    Some(f.message.clone()),
                    &msg,
                )
                .await?;
                continue;
            }
            let msg = match self.enable(&f.host).await {
                Ok(()) => (
                    HostPhase::Failed,
                    format!(
                        "{}; back on its previous version and in rotation",
                        f.message
                    ),
                ),
                Err(e) => (
                    HostPhase::LeftDrained,
                    format!("{}; re-enabling failed too: {}", f.message, e.message),
                ),
            };
            self.set_phase(
                std::slice::from_ref(&f.host),
                msg.0,
                Some(f.message.clone()),
                &msg.1,
            )
            .await?;
        }
        let others: Vec<String> = also_drained
            .iter()
            .filter(|h| !failed.iter().any(|f| &f.host == *h))
            .cloned()
            .collect();
        for h in others {
            let (phase, msg) = match self.enable(&h).await {
                Ok(()) => (
                    HostPhase::Prepared,
                    "untouched and back in rotation".to_string(),
                ),
                Err(e) => (HostPhase::LeftDrained, e.message),
            };
            self.set_phase(std::slice::from_ref(&h), phase, None, &msg)
                .await?;
        }
        Ok(())
    }

    /// Returns every host this deployment changed to its previous version, in batches.
    /// True when every such host is back.
    async fn roll_back_changed(&mut self) -> Result<bool> {
        let changed: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| h.phase.is_changed() || h.phase == HostPhase::RollingBack)
            .map(|h| h.host.clone())
            .collect();
        let per = self
            .spec
            .rollout
            .batch_size
            .hosts_per_batch(self.hosts.len());
        let mut all_back = true;
        for chunk in changed.chunks(per) {
            self.set_phase(
                chunk,
                HostPhase::RollingBack,
                None,
                "returning to the previous version",
            )
            .await?;
            let this = &*self;
            let undos = join_all(chunk.iter().map(|h| async move {
                this.drain(h).await?;
                this.undo(h).await
            }))
            .await;
            for (host, r) in chunk.iter().zip(undos) {
                let r = match r {
                    Ok(version) => self.enable(host).await.map(|()| version),
                    Err(f) => Err(f),
                };
                match r {
                    Ok(version) => {
                        let msg = format!("back on {version} and in rotation");
                        self.set_phase(
                            std::slice::from_ref(host),
                            HostPhase::RolledBack,
                            None,
                            &msg,
                        )
                        .await?;
                    }
                    Err(f) => {
                        all_back = false;
                        let msg = format!("rollback failed: {}; left drained", f.message);
                        self.set_phase(
                            std::slice::from_ref(host),
                            HostPhase::LeftDrained,
                            Some(f.message),
                            &msg,
                        )
                        .await?;
                    }
                }
            }
        }
        Ok(all_back)
    }

    /// Drains `host` on every load balancer and waits for its sessions to end.
    async fn drain(&self, host: &str) -> Result<String, HostFailure> {
        let Some(lb) = &self.lb else {
            return Ok("no load balancer configured".into());
        };
        let server = self.server(host);
        let lb_fail = |e: crate::lb::LbError| HostFailure {
            host: host.to_string(),
            message: format!("{host}: {e}"),
            restored: true,
            lost: false,
        };
        lb.drain(&server).await.map_err(lb_fail)?;
        let out = lb
            .wait_drained(&server, self.spec.rollout.drain_timeout)
            .await
            .map_err(lb_fail)?;
        Ok(if out.timed_out {
            format!(
                "drain timeout after {}: {} sessions left, going on",
                fmt_ms(out.waited.as_millis() as u64),
                out.sessions_left
            )
        } else {
            format!("drained in {}", fmt_ms(out.waited.as_millis() as u64))
        })
    }

    /// Puts `host` back in rotation and waits until every load balancer reports it UP
    /// after fresh health checks.
    async fn enable(&self, host: &str) -> Result<(), HostFailure> {
        let Some(lb) = &self.lb else { return Ok(()) };
        let server = self.server(host);
        let r = async {
            // What HAProxy's checks saw before the swap is stale: UP must mean a fresh
            // check passed against the container that runs now.
            lb.expect_fresh_checks(&server).await?;
            lb.enable(&server).await?;
            lb.wait_up(&server, self.spec.rollout.up_timeout).await
        };
        r.await.map_err(|e| HostFailure {
            host: host.to_string(),
            message: format!("{host}: {e}"),
            restored: true,
            lost: false,
        })
    }

    /// Moves `host` to this deployment's version; returns ms until ready.
    async fn swap(&self, host: &str) -> Result<u64, HostFailure> {
        let timeout = self.spec.rollout.stop_timeout
            + self.spec.readiness.deadline * 2
            + Duration::from_secs(30);
        let advertise = self
            .shared
            .hub
            .host(host)
            .map(|h| h.advertise_address)
            .unwrap_or_default();
        let kind = if self.d.kind == DeploymentKind::Rollback {
            command::Kind::Rollback(proto::RollbackCommand {
                service: self.d.service.clone(),
                readiness: Some(self.spec.probe()),
                stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
                to_version: self.d.version.clone(),
            })
        } else {
            command::Kind::Swap(proto::SwapCommand {
                spec: Some(
                    self.spec
                        .container(&self.d.pinned, &self.d.version, &advertise),
                ),
                readiness: Some(self.spec.probe()),
                stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
                keep_previous: self.spec.rollout.keep_previous,
                secrets: self.secrets(host).await?,
            })
        };
        let cmd = proto::Command {
            command_id: format!("{}/swap/{host}", self.d.id),
            fence: Some(self.fence()),
            kind: Some(kind),
        };
        let r = self.send(host, cmd, timeout).await?;
        match &r.output {
            Some(command_result::Output::Swap(s)) => Ok(s.ready_after_ms),
            Some(command_result::Output::Rollback(s)) => Ok(s.ready_after_ms),
            _ => Err(failure(host, &r)),
        }
    }

    /// The spec's secrets, opened for one swap on `host` (`None` when it names none).
    /// Nothing was touched on the host when this fails; the message names the secret.
    async fn secrets(&self, host: &str) -> Result<Option<proto::Secrets>, HostFailure> {
        let names = &self.spec.secrets.names;
        if names.is_empty() {
            return Ok(None);
        }
        let values = self
            .shared
            .vault
            .open_all(&self.d.service, names)
            .await
            .map_err(|e| HostFailure {
                host: host.to_string(),
                message: format!("{host}: {e}"),
                restored: true,
                lost: false,
            })?;
        let (delivery, mount_path) = self.spec.secrets_delivery();
        Ok(Some(proto::Secrets {
            delivery: delivery as i32,
            mount_path,
            values,
        }))
    }

    /// Returns `host` to the version it ran before this deployment; returns that version.
    async fn undo(&self, host: &str) -> Result<String, HostFailure> {
        let from = self
            .host(host)
            .map(|h| h.from_version.clone())
            .unwrap_or_default();
        if from.is_empty() {
            return Err(HostFailure {
                host: host.to_string(),
                message: format!(
                    "{host}: ran no earlier version of {} to return to",
                    self.d.service
                ),
                restored: false,
                lost: false,
            });
        }
        let cmd = proto::Command {
            command_id: format!("{}/undo/{host}", self.d.id),
            fence: Some(self.fence()),
            kind: Some(command::Kind::Rollback(proto::RollbackCommand {
                service: self.d.service.clone(),
                readiness: Some(self.spec.probe()),
                stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
                to_version: from.clone(),
            })),
        };
        let timeout = self.spec.rollout.stop_timeout
            + self.spec.readiness.deadline * 2
            + Duration::from_secs(30);
        let r = self.send(host, cmd, timeout).await?;
        match (&r.output, &r.error) {
            (Some(command_result::Output::Rollback(_)), _) => Ok(from),
            // Already on that version (the swap never happened): nothing to undo.
            (_, Some(e))
                if e.kind == proto::ErrorKind::NothingToRollBack as i32
                    && e.restored.as_ref().is_some_and(|s| s.version == from) =>
            {
                Ok(from)
            }
            _ => Err(failure(host, &r)),
        }
    }

    /// Sends a command; if the agent is gone, waits for it to come back (within the
    /// reconnect grace) and sends the same command id again.
    pub(super) async fn send(
        &self,
        host: &str,
        cmd: proto::Command,
        timeout: Duration,
    ) -> Result<proto::CommandResult, HostFailure> {
        let hub = &self.shared.hub;
        let lost = |e: HubError| HostFailure {
            host: host.to_string(),
            message: format!("{host}: {e}"),
            restored: false,
            lost: true,
        };
        match hub.send(host, cmd.clone(), timeout).await {
            Ok(r) => Ok(r),
            Err(HubError::Disconnected { .. } | HubError::NotConnected { .. }) => {
                warn!(host, command = %cmd.command_id, "agent gone mid-command; waiting for it to reconnect");
                hub.wait_connected(host, self.shared.settings.reconnect_grace)
                    .await
                    .map_err(lost)?;
                hub.send(host, cmd, timeout).await.map_err(lost)
            }
            Err(e) => Err(lost(e)),
        }
    }
}

/// A command result that carries an error (or an unexpected output), as a failure.
fn failure(host: &str, r: &proto::CommandResult) -> HostFailure {
    match &r.error {
        Some(e) => {
            let kind = proto::ErrorKind::try_from(e.kind).unwrap_or_default();
            let mut message = format!("{host}: {}", e.message);
            if !e.log_tail.is_empty() {
                let tail: Vec<_> = e.log_tail.iter().rev().take(5).rev().cloned().collect();
                message.push_str(&format!(" (last log lines: {})", tail.join(" | ")));
            }
            HostFailure {
                host: host.to_string(),
                message,
                restored: e.restored.is_some()
                    || !matches!(
                        kind,
                        proto::ErrorKind::Internal | proto::ErrorKind::DockerUnavailable
                    ),
                lost: false,
            }
        }
        None => HostFailure {
            host: host.to_string(),
            message: format!(
                "{host}: the agent answered command {} without a result",
                r.command_id
            ),
            restored: false,
            lost: false,
        },
    }
}

fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// Loads deployment `d`'s hosts and spec from the store and drives it until it is
/// terminal or the controller shuts down.
pub(crate) async fn run(
    shared: Arc<Shared>,
    d: Deployment,
    auth: Option<proto::RegistryAuth>,
) -> Result<()> {
    let auth = auth.or_else(|| shared.settings.registry_credentials.for_image(&d.image));
    let (stored, hosts) = shared.store.get(&d.id).await?;
    let d = Deployment {
        epoch: d.epoch.max(stored.epoch),
        ..stored
    };
    let spec = match ServiceSpec::from_toml(&d.spec) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("the recorded spec no longer parses: {e}");
            return fail_before_start(&shared, &d, &msg).await;
        }
    };
    let lb = match load_balancer(&spec, &shared.settings) {
        Ok(lb) => lb,
        Err(e) => {
            let msg = e.to_string();
            return fail_before_start(&shared, &d, &msg).await;
        }
    };
    if d.epoch > 1 {
        // Resumed by a new controller: give the agents time to dial back in first.
        let wait = shared.settings.reconnect_grace.max(Duration::from_secs(30));
        let names: Vec<String> = hosts.iter().map(|h| h.host.clone()).collect();
        let hub = shared.hub.clone();
        hub.wait_for(wait, || {
            names
                .iter()
                .all(|n| hub.host(n).is_some_and(|h| h.connected))
                .then_some(())
        })
        .await;
    }
    let mut rollout = Rollout {
        shared: shared.clone(),
        d,
        spec,
        hosts,
        lb,
        auth,
    };
    let r = tokio::select! {
        r = rollout.drive() => r,
        () = shared.shutdown.cancelled() => {
            info!("controller shutting down; the deployment resumes on the next start");
            Ok(())
        }
    };
    match r {
        // An operator ended it first (a cancel that won the race with the first step):
        // the rollout has nothing left to do, and did nothing.
        Err(StoreError::Stale { actual, .. }) if actual.is_terminal() => {
            info!(state = %actual, "the deployment was ended by an operator; the rollout stops");
            Ok(())
        }
        other => other,
    }
}

/// Fails a deployment whose rollout could not even begin (its recorded spec or load
/// balancer no longer resolves).
async fn fail_before_start(shared: &Shared, d: &Deployment, msg: &str) -> Result<()> {
    let t = machine::apply(d.state, Event::Fail)?;
    shared
        .store
        .transition(&d.id, t, Some(msg.to_string()), msg)
        .await
}
