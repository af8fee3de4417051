//! Operator actions on a deployment (cancel, abort, pause, resume, promote, approve).
//!
//! A deployment that a rollout task owns gets a request the task applies at its next
//! safe point; one that no task acts on yet (`scheduled`) is ended here, through the
//! state machine and a compare-and-set, so a cancel racing the first step either wins
//! cleanly or is refused.

use super::machine::{self, Event};
use super::{Action, DeployError, Deployer};
use crate::state::{Control, DeploymentState};
use crate::store::{Deployment, StoreError};
use tracing::info;

impl Deployer {
    /// Applies an operator's request to deployment `id`; safe to repeat. Recorded in the
    /// deployment's history with who asked.
    pub async fn control(&self, id: &str, action: Action, by: &str) -> Result<(), DeployError> {
        let d = self.shared.store.deployment(id).await?;
        let ended = |what: &str| {
            DeployError::Control(format!(
                "cannot {what} deployment {id}: it already ended ({}); see `drover status {id}`",
                d.state
            ))
        };
        let store = &self.shared.store;
        match action {
            Action::Approve => return self.approve(&d, by).await,
            Action::Cancel => {
                if d.state == DeploymentState::Cancelled {
                    return Ok(());
                }
                let started = || {
                    DeployError::Control(format!(
                        "cannot cancel deployment {id}: it has started; use `drover abort {id}` to stop it and roll back"
                    ))
                };
                let Ok(t) = machine::apply(d.state, Event::Cancel) else {
                    return Err(started());
                };
                let msg = format!("cancelled by {by}");
                match store.transition(id, t, Some(msg.clone()), &msg).await {
                    Ok(()) => {}
                    // The rollout took its first step meanwhile: it owns the state now.
                    Err(StoreError::Stale { actual, .. }) if !actual.is_terminal() => {
                        return Err(started());
                    }
                    Err(StoreError::Stale { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            // Already past every gate: a repeated promote has nothing left to do.
            Action::Promote if d.state == DeploymentState::Succeeded => return Ok(()),
            // Already stopped: a repeated abort has nothing left to do.
            Action::Abort
                if matches!(
                    d.state,
                    DeploymentState::RolledBack
                        | DeploymentState::Failed
                        | DeploymentState::Cancelled
                ) =>
            {
                return Ok(());
            }
            _ if d.state.is_terminal() => {
                let verb = match action {
                    Action::Approve => "approve",
                    Action::Promote => "promote",
                    Action::Pause => "pause",
                    Action::Resume => "resume",
                    _ => "abort",
                };
                return Err(ended(verb));
            }
            Action::Promote => {
                store
                    .request(
                        id,
                        None,
                        Some(d.stage),
                        &format!("stage {} promoted by {by}", d.stage + 1),
                    )
                    .await?;
            }
            Action::Pause => {
                store
                    .request(
                        id,
                        Some(Control::Pause),
                        None,
                        &format!("pause requested by {by}"),
                    )
                    .await?;
            }
            Action::Resume => {
                store
                    .request(id, Some(Control::None), None, &format!("resumed by {by}"))
                    .await?;
            }
            Action::Abort => {
                // Not started (`Scheduled`, never `Held`): nothing to roll back, so the
                // abort ends it here. If the rollout started meanwhile, the compare-and-set
                // refuses and the abort becomes a request the rollout task applies, with
                // the rollback under the service lock.
                let msg = format!("aborted by {by} before it started");
                let ended = match machine::apply(d.state, Event::Cancel) {
                    Ok(t)
                        if matches!(
                            d.state,
                            DeploymentState::Scheduled | DeploymentState::AwaitingApproval
                        ) =>
                    {
                        match store.transition(id, t, Some(msg.clone()), &msg).await {
                            Ok(()) => true,
                            Err(StoreError::Stale { .. }) => false,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    _ => false,
                };
                if !ended {
                    store
                        .request(
                            id,
                            Some(Control::Abort),
                            None,
                            &format!("abort requested by {by}"),
                        )
                        .await?;
                }
            }
        }
        info!(deployment = %id, action = ?action, by, "operator request recorded");
        self.shared.notify();
        Ok(())
    }
}

impl Deployer {
    /// A second person approves a deployment waiting for approval: it then waits for
    /// its start time and a deploy window like any other. The person who asked for the
    /// deployment cannot approve it; approving twice is a no-op.
    async fn approve(&self, d: &Deployment, by: &str) -> Result<(), DeployError> {
        let id = &d.id;
        if d.state != DeploymentState::AwaitingApproval {
            let approved = d
                .gate_note
                .as_deref()
                .is_some_and(|n| n.contains("approved by"));
            if approved && !d.state.is_terminal() || d.state == DeploymentState::Succeeded {
                return Ok(());
            }
            return Err(DeployError::Control(format!(
                "deployment {id} does not wait for approval (it is {}); see `drover status {id}`",
                d.state
            )));
        }
        if by == d.requested_by {
            return Err(DeployError::Control(format!(
                "{by} asked for deployment {id} and cannot approve it too: another person with the deployer or admin role runs `drover approve {id}`"
            )));
        }
        let t = machine::apply(d.state, Event::Approve).map_err(StoreError::from)?;
        let msg = format!("approved by {by}");
        match self.shared.store.transition(id, t, None, &msg).await {
            Ok(()) => {}
            // Approved (or cancelled) by someone else meanwhile.
            Err(StoreError::Stale { actual, .. }) if actual != DeploymentState::Failed => {
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
        self.shared.store.add_gate_note(id, &msg).await?;
        info!(deployment = %id, by, "deployment approved");
        self.shared.notify();
        Ok(())
    }
}
