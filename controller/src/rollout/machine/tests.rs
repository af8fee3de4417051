//! Every (state, event) pair of the deployment state machine, state by state: allowed or
//! refused, where it goes, and what it does to the service lock.

use super::*;

const STATES: [DeploymentState; 15] = [
    AwaitingApproval,
    Scheduled,
    Pending,
    Preparing,
    Rolling,
    Baking,
    AwaitingPromotion,
    Held,
    Paused,
    RollingBack,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
    Skipped,
];

const EVENTS: [Event; 17] = [
    Event::Approve,
    Event::StartTimeReached,
    Event::Prepare,
    Event::Roll,
    Event::Bake,
    Event::AwaitPromotion,
    Event::Promote,
    Event::HoldForWindow,
    Event::WindowOpened,
    Event::Pause,
    Event::Resume,
    Event::Succeed,
    Event::BeginRollback,
    Event::FinishRollback,
    Event::Fail,
    Event::Cancel,
    Event::Skip,
];

/// The whole table, written out: for each state, the events it takes and where they
/// lead. Every pair not listed must be refused.
fn allowed(state: DeploymentState) -> Vec<(Event, DeploymentState)> {
    use Event as E;
    match state {
        AwaitingApproval => vec![
            (E::Approve, Scheduled),
            (E::Fail, Failed),
            (E::Cancel, Cancelled),
        ],
        Scheduled => vec![
            (E::StartTimeReached, Pending),
            (E::Fail, Failed),
            (E::Cancel, Cancelled),
            (E::Skip, Skipped),
        ],
        Pending => vec![
            (E::Prepare, Preparing),
            (E::Roll, Rolling),
            (E::Fail, Failed),
            (E::Cancel, Cancelled),
        ],
        Preparing => vec![(E::Roll, Rolling), (E::Fail, Failed)],
        Rolling => vec![
            (E::Bake, Baking),
            (E::AwaitPromotion, AwaitingPromotion),
            (E::HoldForWindow, Held),
            (E::Pause, Paused),
            (E::Succeed, Succeeded),
            (E::BeginRollback, RollingBack),
            (E::Fail, Failed),
        ],
        Baking => vec![
            (E::AwaitPromotion, AwaitingPromotion),
            (E::Promote, Rolling),
            (E::Pause, Paused),
            (E::BeginRollback, RollingBack),
            (E::Fail, Failed),
        ],
        AwaitingPromotion => vec![
            (E::Promote, Rolling),
            (E::Pause, Paused),
            (E::BeginRollback, RollingBack),
            (E::Fail, Failed),
        ],
        Held => vec![
            (E::WindowOpened, Rolling),
            (E::BeginRollback, RollingBack),
            (E::Fail, Failed),
        ],
        Paused => vec![
            (E::Resume, Rolling),
            (E::BeginRollback, RollingBack),
            (E::Fail, Failed),
        ],
        RollingBack => vec![(E::FinishRollback, RolledBack), (E::Fail, Failed)],
        Succeeded | Failed | RolledBack | Cancelled | Skipped => vec![],
    }
}

fn check_state(state: DeploymentState) {
    let table = allowed(state);
    for event in EVENTS {
        let expected = table.iter().find(|(e, _)| *e == event).map(|(_, to)| *to);
        match (apply(state, event), expected) {
            (Ok(t), Some(to)) => {
                assert_eq!(t.to(), to, "{state} --{event:?}-->");
                assert_eq!(t.from(), state);
                assert_eq!(t.event(), event);
                let lock = if to.is_terminal() {
                    LockEffect::Release
                } else {
                    LockEffect::Keep
                };
                assert_eq!(t.lock(), lock, "{state} --{event:?}--> {to}: lock");
            }
            (Err(r), None) => assert_eq!(r, Refused { state, event }),
            (got, want) => panic!("{state} --{event:?}-->: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn awaiting_approval_is_approved_or_cancelled_and_nothing_else() {
    check_state(AwaitingApproval);
    assert_eq!(
        apply(AwaitingApproval, Event::StartTimeReached)
            .unwrap_err()
            .state,
        AwaitingApproval
    );
}

#[test]
fn scheduled_starts_or_is_cancelled_skipped_or_failed_and_nothing_else() {
    check_state(Scheduled);
}

#[test]
fn pending_prepares_or_rolls_or_is_cancelled() {
    check_state(Pending);
}

#[test]
fn preparing_rolls_or_fails_and_cannot_be_cancelled() {
    check_state(Preparing);
    assert!(apply(Preparing, Event::Cancel).is_err());
}

#[test]
fn rolling_takes_every_rollout_step() {
    check_state(Rolling);
}

#[test]
fn baking_promotes_pauses_or_rolls_back() {
    check_state(Baking);
}

#[test]
fn awaiting_promotion_promotes_pauses_or_rolls_back() {
    check_state(AwaitingPromotion);
}

#[test]
fn held_by_a_window_mid_rollout_rolls_back_and_is_never_cancelled() {
    check_state(Held);
    // The bug this state exists for: a held rollout has changed hosts, so neither an
    // abort nor a schedule cancel may end it without a rollback under the lock.
    assert!(apply(Held, Event::Cancel).is_err());
    let t = apply(Held, Event::BeginRollback).unwrap();
    assert_eq!(t.lock(), LockEffect::Keep);
}

#[test]
fn paused_resumes_or_rolls_back() {
    check_state(Paused);
}

#[test]
fn rolling_back_ends_rolled_back_or_failed() {
    check_state(RollingBack);
}

#[test]
fn terminal_states_take_no_event() {
    for s in [Succeeded, Failed, RolledBack, Cancelled, Skipped] {
        check_state(s);
        assert!(EVENTS.iter().all(|e| apply(s, *e).is_err()));
    }
}

#[test]
fn only_a_transition_that_ends_the_deployment_releases_the_lock() {
    for state in STATES {
        for event in EVENTS {
            if let Ok(t) = apply(state, event) {
                assert_eq!(
                    t.lock() == LockEffect::Release,
                    t.to().is_terminal(),
                    "{state} --{event:?}--> {}",
                    t.to()
                );
            }
        }
    }
}

#[test]
fn every_non_terminal_state_is_reachable_and_can_end() {
    for state in STATES.iter().filter(|s| !s.is_terminal()) {
        assert!(apply(*state, Event::Fail).is_ok(), "{state} cannot fail");
        // The two states a deployment is recorded in without an event.
        if !matches!(*state, Scheduled | AwaitingApproval) {
            let reached = STATES
                .iter()
                .any(|from| EVENTS.iter().any(|e| next(*from, *e) == Some(*state)));
            assert!(reached, "{state} is unreachable");
        }
    }
}
