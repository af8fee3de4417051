//! The deployment state machine: which event moves a deployment from which state to
//! which, and what the move does to the service lock. Pure: no I/O, no clock.
//!
//! This is the only place that decides a deployment's next state. A [`Transition`] can
//! only be made by [`apply`], and the store writes one only as a compare-and-set on the
//! state it was computed from, so a move from a state the deployment has already left
//! (an operator's cancel racing the rollout task, two controllers) is refused, never
//! written. The service lock is released by exactly the transitions that end a
//! deployment, and by nothing else.

use crate::state::DeploymentState::{self, *};

/// Something that happens to a deployment: a step of its rollout task, or an operator's
/// request applied to a deployment that no task is acting on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A second person approved a deployment that waited for approval; it then waits
    /// for its start time and a deploy window like any other.
    Approve,
    /// A scheduled deployment's start time came and a deploy window is open.
    StartTimeReached,
    /// Pulling the image on every target begins.
    Prepare,
    /// The first batch is about to move (after the pull, or at once for a rollback).
    Roll,
    /// A stage's hosts are done; its canaries are watched against the rest.
    Bake,
    /// A stage is done (and baked); a manual gate waits for `drover promote`.
    AwaitPromotion,
    /// A stage was promoted (automatically after its bake, or by an operator).
    Promote,
    /// A deploy window closed between stages: the rollout is held, under its lock.
    HoldForWindow,
    /// The deploy window opened again: the held rollout continues.
    WindowOpened,
    /// Stopped at a safe point (an operator's pause, or a failure with
    /// `on_failure = "pause"`).
    Pause,
    /// An operator resumed a paused rollout.
    Resume,
    /// Every host runs the new version and is enabled.
    Succeed,
    /// Changed hosts are being returned to their previous version.
    BeginRollback,
    /// Every changed host is back on its previous version and enabled.
    FinishRollback,
    /// The deployment failed (the hosts section says what each host runs).
    Fail,
    /// An operator cancelled a deployment that had not started.
    Cancel,
    /// A scheduled deployment's start time passed while the controller was down, and the
    /// spec says skip.
    Skip,
}

/// What a transition does to the service lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockEffect {
    /// The deployment keeps the service's lock.
    Keep,
    /// The deployment ended: its lock is released in the same write.
    Release,
}

/// A checked move from one state to the next; made only by [`apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    from: DeploymentState,
    to: DeploymentState,
    event: Event,
}

impl Transition {
    /// The state the deployment must still be in for this transition to be written.
    pub fn from(&self) -> DeploymentState {
        self.from
    }

    /// The state it moves to.
    pub fn to(&self) -> DeploymentState {
        self.to
    }

    /// The event that caused it.
    pub fn event(&self) -> Event {
        self.event
    }

    /// What it does to the service lock.
    pub fn lock(&self) -> LockEffect {
        if self.to.is_terminal() {
            LockEffect::Release
        } else {
            LockEffect::Keep
        }
    }
}

/// An event that the deployment's current state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a deployment that is {state} cannot take the event {event:?}")]
pub struct Refused {
    /// The state the deployment is in.
    pub state: DeploymentState,
    /// The event it was asked to take.
    pub event: Event,
}

/// The state `event` moves a deployment in `state` to, or `None` if it may not happen.
pub fn next(state: DeploymentState, event: Event) -> Option<DeploymentState> {
    use Event as E;
    let to = match (event, state) {
        (E::Approve, AwaitingApproval) => Scheduled,
        (E::StartTimeReached, Scheduled) => Pending,
        (E::Prepare, Pending) => Preparing,
        (E::Roll, Pending | Preparing) => Rolling,
        (E::Bake, Rolling) => Baking,
        (E::AwaitPromotion, Rolling | Baking) => AwaitingPromotion,
        (E::Promote, Baking | AwaitingPromotion) => Rolling,
        (E::HoldForWindow, Rolling) => Held,
        (E::WindowOpened, Held) => Rolling,
        (E::Pause, Rolling | Baking | AwaitingPromotion) => Paused,
        (E::Resume, Paused) => Rolling,
        (E::Succeed, Rolling) => Succeeded,
        (E::BeginRollback, Rolling | Baking | AwaitingPromotion | Held | Paused) => RollingBack,
        (E::FinishRollback, RollingBack) => RolledBack,
        (E::Fail, s) if !s.is_terminal() => Failed,
        (E::Cancel, AwaitingApproval | Scheduled | Pending) => Cancelled,
        (E::Skip, Scheduled) => Skipped,
        _ => return None,
    };
    Some(to)
}

/// Checks `event` against `state`: the transition to write, or why it is refused.
pub fn apply(state: DeploymentState, event: Event) -> Result<Transition, Refused> {
    next(state, event)
        .map(|to| Transition {
            from: state,
            to,
            event,
        })
        .ok_or(Refused { state, event })
}

#[cfg(test)]
mod tests;
