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
use tracing::info;

use super::control::{Go, Start};
use super::flight::{Result, Rollout};
use super::machine::{self, Event};
use super::steps::{HostFailure, Left, failure};
use super::{Shared, load_balancer};
use crate::spec::{OnFailure, ServiceSpec};
use crate::state::{DeploymentKind, DeploymentState, HostPhase};
use crate::store::{Deployment, StoreError};

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
    let index = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.host.clone(), i))
        .collect();
    let mut rollout = Rollout {
        shared: shared.clone(),
        d,
        spec,
        hosts,
        index,
        lb,
        auth,
        pending: Default::default(),
        retiring: Vec::new(),
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

impl Rollout {
    /// Drives the deployment to a terminal state (or until the controller shuts down).
    async fn drive(&mut self) -> Result<()> {
        if self.d.state == DeploymentState::AwaitingApproval {
            match self.wait_approval().await? {
                Start::Go => {}
                Start::Ended => return Ok(()),
            }
        }
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
                if let Err(msg) = self.before_rollout().await? {
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
                    if self.d.kind == DeploymentKind::Deploy
                        && let Err(reason) = self.after_rollout().await?
                    {
                        break reason;
                    }
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

    /// Every remaining batch, stage by stage, with bakes and gates between stages; then
    /// (start-first) the old containers still being retired stop first.
    async fn roll_stages(&mut self) -> Result<Go> {
        let go = self.roll_stages_in_order().await?;
        match self.finish_retires().await? {
            Some(f) if matches!(go, Go::Continue) => Ok(Go::Fail(f.message)),
            _ => Ok(go),
        }
    }

    async fn roll_stages_in_order(&mut self) -> Result<Go> {
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
                if let Err(reason) = self.roll_batch(batch).await? {
                    return Ok(Go::Fail(reason));
                }
            }
            if stage + 1 < stages {
                // A stage ends with its hosts' old containers stopped.
                if let Some(f) = self.finish_retires().await? {
                    return Ok(Go::Fail(f.message));
                }
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
            let kind = command::Kind::Prepare(proto::PrepareCommand {
                image: image.clone(),
                auth: self.auth.clone(),
                timeout_ms: self.spec.rollout.pull_timeout.as_millis() as u64,
            });
            self.send(host, self.command(host, "prepare", kind), timeout)
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
                    let detail = format!(
                        "{} resolved to {} but another host got {p}; the tag moved during the deploy, retry",
                        self.d.image, r.pinned
                    );
                    return Ok(Err(HostFailure::new(host, Left::AsBefore, detail)));
                }
                _ => pinned = Some(r.pinned.clone()),
            }
        }
        let pinned = pinned.unwrap_or_default();
        self.shared.store.set_pinned(&self.d.id, &pinned).await?;
        if let Some((_, digest)) = pinned.rsplit_once('@')
            && !self.d.release_id.is_empty()
        {
            // A release whose registry the controller cannot ask learns its digest here.
            self.shared
                .store
                .set_release_digest(&self.d.release_id, digest)
                .await?;
        }
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
}
