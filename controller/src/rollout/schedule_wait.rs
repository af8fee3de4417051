//! Waiting for time: a deployment scheduled with `--at` waits for its start (and, when
//! the controller was down at that time, runs or is skipped by the spec's `missed`
//! rule); deploy windows hold the start and every later stage until a window is open.
//! Time comes from the injectable clock, so tests move it instead of waiting.

use std::time::Duration;

use jiff::Timestamp;

use super::control::{Go, Start};
use super::flight::{Result, Rollout};
use super::machine::Event;
use crate::schedule::{MissedDecision, Schedule, missed_decision};
use crate::state::{Control, DeploymentState};

fn ts(ms: u64) -> Timestamp {
    Timestamp::from_millisecond(ms as i64).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn until(from: Timestamp, to: Timestamp) -> Duration {
    to.duration_since(from).unsigned_abs()
}

impl Rollout {
    fn schedule(&self) -> Schedule {
        self.spec.schedule.clone()
    }

    /// Waits for a scheduled deployment's start time and an open window.
    pub(super) async fn wait_start(&mut self) -> Result<Start> {
        let schedule = self.schedule();
        if let Some(at) = self.d.scheduled_ms {
            loop {
                self.refresh().await?;
                if self.d.state.is_terminal() {
                    return Ok(Start::Ended);
                }
                let now = self.shared.clock.now();
                match missed_decision(ts(at), now, &schedule.missed) {
                    MissedDecision::NotYet => self.nap(until(now, ts(at))).await,
                    MissedDecision::Run => break,
                    MissedDecision::Skip { missed_by } => {
                        let msg = format!(
                            "skipped: its start time {} passed {} ago while the controller was down (schedule.missed = {:?}, limit {})",
                            ts(at),
                            humantime::format_duration(Duration::from_secs(missed_by.as_secs())),
                            schedule.missed.missed,
                            humantime::format_duration(schedule.missed.limit())
                        );
                        self.advance(Event::Skip, Some(msg.clone()), &msg).await?;
                        return Ok(Start::Ended);
                    }
                }
            }
        }
        match self.hold_for_window(&schedule, 0).await? {
            Go::Continue => {}
            Go::Abort(_) | Go::Fail(_) => return Ok(Start::Ended),
        }
        self.advance(Event::StartTimeReached, None, "start time reached")
            .await?;
        Ok(Start::Go)
    }

    /// Waits until a second person approves the deployment (or it is cancelled).
    pub(super) async fn wait_approval(&mut self) -> Result<Start> {
        loop {
            let d = self.shared.store.deployment(&self.d.id).await?;
            if d.state.is_terminal() {
                self.d.state = d.state;
                return Ok(Start::Ended);
            }
            if d.state != DeploymentState::AwaitingApproval {
                self.d.state = d.state;
                return Ok(Start::Go);
            }
            self.nap(Duration::from_secs(60)).await;
        }
    }

    /// Holds stage `stage` until a deploy window is open.
    pub(super) async fn wait_window(&mut self, stage: u32) -> Result<Go> {
        let schedule = self.schedule();
        let go = self.hold_for_window(&schedule, stage).await?;
        if go == Go::Continue && self.d.state == DeploymentState::Held {
            let msg = format!("deploy window open: stage {} starts", stage + 1);
            self.advance(Event::WindowOpened, None, &msg).await?;
        }
        Ok(go)
    }

    async fn hold_for_window(&mut self, schedule: &Schedule, stage: u32) -> Result<Go> {
        let windows = &schedule.windows;
        if windows.is_empty() {
            return Ok(Go::Continue);
        }
        let mut held = false;
        loop {
            self.refresh().await?;
            if self.d.state.is_terminal() {
                return Ok(Go::Abort("ended while waiting for a deploy window".into()));
            }
            if self.d.control == Control::Abort {
                return Ok(Go::Abort(
                    self.d
                        .hold
                        .clone()
                        .unwrap_or_else(|| "aborted by an operator".into()),
                ));
            }
            let now = self.shared.clock.now();
            if windows.is_open(now) {
                if held {
                    self.shared.store.set_hold(&self.d.id, None).await?;
                }
                return Ok(Go::Continue);
            }
            let opens = windows.next_open(now);
            if !held {
                held = true;
                let msg = match opens {
                    Some(t) => format!(
                        "stage {} held until the deploy window opens at {t}",
                        stage + 1
                    ),
                    None => format!(
                        "stage {} held: no deploy window will ever open; fix [schedule] and redeploy, or abort",
                        stage + 1
                    ),
                };
                self.shared
                    .store
                    .set_hold(&self.d.id, Some(msg.clone()))
                    .await?;
                // Before the first stage the deployment is still `Scheduled` (nothing
                // touched); a rollout resumed by a new controller may already be `Held`.
                if matches!(
                    self.d.state,
                    DeploymentState::Scheduled | DeploymentState::Held
                ) {
                    self.note("", &msg).await?;
                } else {
                    self.advance(Event::HoldForWindow, None, &msg).await?;
                }
            }
            let wait = opens.map_or(Duration::from_secs(60), |t| until(now, t));
            self.nap(wait).await;
        }
    }
}
