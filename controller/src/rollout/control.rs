//! Where a rollout waits: for its start time, for a deploy window, for an operator to
//! resume or promote. Every wait re-reads the deployment from the store when anything
//! changes, so `drover pause/resume/promote/abort` from any terminal, and a controller
//! restart, all land on the same recorded state.

use std::time::Duration;

use tracing::info;

use super::flight::{Result, Rollout};
use super::machine::Event;
use crate::state::{Control, DeploymentState};

/// What a rollout does after a wait or a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Go {
    /// Carry on.
    Continue,
    /// An operator aborted: roll back every changed host, whatever the policy.
    Abort(String),
    /// A step failed: apply the spec's failure policy.
    Fail(String),
}

/// How a scheduled deployment's wait ended.
pub(crate) enum Start {
    /// Due now: start.
    Go,
    /// Cancelled, skipped or otherwise ended while waiting.
    Ended,
}

/// Longest a wait sleeps before re-reading the store without being told to.
const RECHECK: Duration = Duration::from_millis(500);

impl Rollout {
    /// Re-reads what operators may have changed.
    pub(super) async fn refresh(&mut self) -> Result<()> {
        let d = self.shared.store.deployment(&self.d.id).await?;
        self.d.control = d.control;
        self.d.promoted = d.promoted;
        self.d.hold = d.hold;
        if d.state.is_terminal() {
            self.d.state = d.state;
        }
        Ok(())
    }

    /// Sleeps until something changes (an operator request, a controller notice) or the
    /// recheck period passes, whichever comes first.
    pub(super) async fn nap(&self, at_most: Duration) {
        let mut changed = self.shared.changed.subscribe();
        changed.borrow_and_update();
        tokio::select! {
            _ = changed.changed() => {}
            () = tokio::time::sleep(at_most.min(RECHECK)) => {}
        }
    }

    fn abort_reason(&self) -> String {
        self.d
            .hold
            .clone()
            .filter(|h| h.contains("abort"))
            .unwrap_or_else(|| "aborted by an operator".into())
    }

    /// A safe point between batches: honours pause and abort requests.
    pub(super) async fn checkpoint(&mut self) -> Result<Go> {
        self.refresh().await?;
        match self.d.control {
            Control::None => Ok(Go::Continue),
            Control::Abort => Ok(Go::Abort(self.abort_reason())),
            Control::Pause => {
                let hold = self
                    .d
                    .hold
                    .clone()
                    .unwrap_or_else(|| "pause requested".into());
                let msg = format!(
                    "paused at a safe point ({hold}); nothing is drained; `drover resume` continues"
                );
                self.advance(Event::Pause, None, &msg).await?;
                self.wait_paused().await
            }
        }
    }

    /// Waits in `Paused` until an operator resumes or aborts.
    pub(super) async fn wait_paused(&mut self) -> Result<Go> {
        loop {
            self.refresh().await?;
            match self.d.control {
                Control::Abort => return Ok(Go::Abort(self.abort_reason())),
                Control::None => {
                    self.advance(Event::Resume, None, "resumed").await?;
                    return Ok(Go::Continue);
                }
                Control::Pause => self.nap(RECHECK).await,
            }
        }
    }

    /// After a stage's bake: continue at once (automatic promotion) or wait for
    /// `drover promote` (manual), honouring pause and abort meanwhile.
    pub(super) async fn gate(&mut self, stage: u32) -> Result<Go> {
        if !self.stage_is_manual(stage) {
            return Ok(Go::Continue);
        }
        let msg = format!(
            "stage {} done; waiting for `drover promote {}` (or `drover abort {}`)",
            stage + 1,
            self.d.id,
            self.d.id
        );
        self.shared
            .store
            .set_hold(&self.d.id, Some(msg.clone()))
            .await?;
        // A rollout resumed by a new controller may already be waiting at this gate.
        if self.d.state != DeploymentState::AwaitingPromotion {
            self.advance(Event::AwaitPromotion, None, &msg).await?;
        }
        loop {
            self.refresh().await?;
            if self.d.promoted >= i64::from(stage) {
                self.shared.store.set_hold(&self.d.id, None).await?;
                info!(stage, "promoted");
                return Ok(Go::Continue);
            }
            match self.d.control {
                Control::Abort => return Ok(Go::Abort(self.abort_reason())),
                Control::Pause | Control::None => self.nap(RECHECK).await,
            }
        }
    }
}
