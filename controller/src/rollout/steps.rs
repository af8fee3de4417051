//! The host steps of a rollout: drain, enable, swap, undo, each one command or one
//! load-balancer exchange, and what is known of the host when one fails.
//!
//! None of these writes to the store: [`flight`](super::flight) records what they did.

use std::fmt::Display;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_proto::v1::{command, command_result};
use futures::future::join_all;
use tracing::warn;

use super::flight::Rollout;
use crate::hub::HubError;
use crate::state::DeploymentKind;
use crate::store::{HostStep, StepKind};

/// What is known of a host after a step failed on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Left {
    /// It runs what it ran before the step (untouched, or restored by its agent): safe
    /// to put back in rotation.
    AsBefore,
    /// The agent answered but could not say it restored the previous container: the
    /// host may serve neither version, so it stays drained.
    Unknown,
    /// The agent could not be reached: its state is unknown, it stays drained.
    Lost,
}

/// Why a step failed on one host.
#[derive(Debug, Clone)]
pub(super) struct HostFailure {
    pub(super) host: String,
    /// Starts with the host's name.
    pub(super) message: String,
    pub(super) left: Left,
}

impl HostFailure {
    pub(super) fn new(host: &str, left: Left, detail: impl Display) -> Self {
        HostFailure {
            host: host.to_string(),
            message: format!("{host}: {detail}"),
            left,
        }
    }

    /// The host may be put back in rotation.
    pub(super) fn can_reenable(&self) -> bool {
        self.left == Left::AsBefore
    }
}

/// What a swap or an undo reported from the host.
#[derive(Debug, Clone, Default)]
pub(super) struct Swapped {
    /// From command receipt until the new container was ready.
    pub(super) ready_after_ms: u64,
    /// Each step's time (zeros from an agent that does not report them).
    pub(super) steps: proto::HandoverSteps,
}

impl Swapped {
    fn of(ready_after_ms: u64, steps: Option<&proto::HandoverSteps>) -> Self {
        Swapped {
            ready_after_ms,
            steps: steps.cloned().unwrap_or_default(),
        }
    }

    /// The old container ignored SIGTERM and was killed at the stop timeout: what to
    /// say about it, with the fix.
    pub(super) fn killed_note(&self) -> Option<String> {
        self.steps
            .stop_killed
            .then(|| killed_note(self.steps.stop_timeout_ms))
    }

    /// `(create 20ms, stop 110ms, start 40ms, ready 300ms)`, the steps that ran.
    pub(super) fn words(&self) -> String {
        let s = &self.steps;
        let parts: Vec<String> = [
            ("create", s.create_ms),
            ("stop", s.stop_ms),
            ("start", s.start_ms),
            ("ready", s.ready_ms),
        ]
        .into_iter()
        .filter(|(_, ms)| *ms > 0)
        .map(|(w, ms)| format!("{w} {}", fmt_ms(ms)))
        .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }

    /// The steps as recorded for `host`.
    pub(super) fn host_steps(&self, host: &str) -> Vec<HostStep> {
        let s = &self.steps;
        let mut stop = HostStep::new(host, StepKind::Stop, s.stop_ms);
        stop.note = self.killed_note().unwrap_or_default();
        [
            HostStep::new(host, StepKind::Create, s.create_ms),
            stop,
            HostStep::new(host, StepKind::Start, s.start_ms),
            HostStep::new(host, StepKind::Ready, s.ready_ms),
        ]
        .into_iter()
        .filter(|st| st.ms > 0 || !st.note.is_empty())
        .collect()
    }
}

impl Rollout {
    /// Drains `host` on every load balancer and waits for its sessions to end; returns
    /// what to say and how long the wait took.
    pub(super) async fn drain(&self, host: &str) -> Result<(String, u64), HostFailure> {
        let Some(lb) = &self.lb else {
            return Ok((
                "not drained: no load balancer; it stops serving while it swaps".into(),
                0,
            ));
        };
        if self.start_first() {
            return Ok(("start-first: stays in rotation".into(), 0));
        }
        let server = self.server(host);
        let lb_fail = |e| HostFailure::new(host, Left::AsBefore, e);
        lb.drain(&server).await.map_err(lb_fail)?;
        let out = lb
            .wait_drained(&server, self.spec.rollout.drain_timeout)
            .await
            .map_err(lb_fail)?;
        let ms = out.waited.as_millis() as u64;
        let msg = if out.timed_out {
            format!(
                "drain timeout after {}: {} sessions left, going on",
                fmt_ms(ms),
                out.sessions_left
            )
        } else {
            format!("drained in {}", fmt_ms(ms))
        };
        Ok((msg, ms))
    }

    /// Puts `host` back in rotation and waits until every load balancer reports it UP
    /// after fresh health checks; returns how long that took.
    pub(super) async fn enable(&self, host: &str) -> Result<u64, HostFailure> {
        if self.start_first() {
            return self.hand_over(host).await.map(|r| r.up_ms);
        }
        let Some(lb) = &self.lb else { return Ok(0) };
        let server = self.server(host);
        let start = tokio::time::Instant::now();
        let r = async {
            // What HAProxy's checks saw before the swap is stale: UP must mean a fresh
            // check passed against the container that runs now.
            lb.expect_fresh_checks(&server).await?;
            lb.enable(&server).await?;
            lb.wait_up(&server, self.spec.rollout.up_timeout).await
        };
        r.await
            .map(|()| start.elapsed().as_millis() as u64)
            .map_err(|e| HostFailure::new(host, Left::AsBefore, e))
    }

    /// Runs `step` (a swap or an undo of drained `hosts`) while their health checks are
    /// held on HAProxy's fast cadence, so that the re-enable after it waits `rise` fast
    /// checks, not a whole `inter` first, once the step outlasts the check pending at
    /// the drain (see [`LoadBalancer::hold_checks`]). A load
    /// balancer that stops answering only ends the hold: the step goes on, and the
    /// enable reports the balancer's error.
    ///
    /// [`LoadBalancer::hold_checks`]: crate::lb::LoadBalancer::hold_checks
    pub(super) async fn with_checks_held<T>(
        &self,
        hosts: &[String],
        step: impl std::future::Future<Output = T>,
    ) -> T {
        let Some(lb) = self.lb.as_ref().filter(|_| !self.start_first()) else {
            // Start-first never takes a host out of rotation: nothing to hold.
            return step.await;
        };
        let holds = join_all(hosts.iter().map(|h| async move {
            let server = self.server(h);
            let e = lb.hold_checks(&server).await;
            warn!(host = %h, %server, error = %e, "cannot hold the health checks on their fast cadence; the re-enable may wait up to one check interval more");
        }));
        // Ended only by the step: no host to hold (or every hold stopped) leaves it alone.
        let holds = async {
            holds.await;
            std::future::pending::<()>().await
        };
        tokio::select! {
            out = step => out,
            () = holds => unreachable!("pending never completes"),
        }
    }

    /// Records what the load balancers noticed since the last look (an HAProxy that
    /// restarted and got its states back) as events of the deployment.
    pub(super) async fn note_lb_notices(&self) -> super::flight::Result<()> {
        let Some(lb) = &self.lb else { return Ok(()) };
        for notice in lb.take_notices() {
            self.note("", &notice).await?;
        }
        Ok(())
    }

    /// How long a swap or an undo may take on the agent.
    fn swap_timeout(&self) -> Duration {
        self.spec.rollout.stop_timeout + self.spec.readiness.deadline * 2 + Duration::from_secs(30)
    }

    /// The swap command of `host` for this deployment's version; with `stage_for`, the
    /// stage-only command that creates its container for the swap with that id.
    async fn swap_command(
        &self,
        host: &str,
        stage_for: Option<String>,
    ) -> Result<proto::SwapCommand, HostFailure> {
        let advertise = self
            .shared
            .hub
            .host(host)
            .map(|h| h.advertise_address)
            .unwrap_or_default();
        Ok(proto::SwapCommand {
            spec: Some(
                self.spec
                    .container(&self.d.pinned, &self.d.version, &advertise),
            ),
            readiness: Some(self.spec.probe()),
            stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
            keep_previous: self.spec.rollout.keep_previous,
            secrets: self.secrets(host).await?,
            stage_for_command: stage_for.unwrap_or_default(),
            start_first: self.start_first_part(),
        })
    }

    /// Creates the new container on `host` while it still serves (stop-first): a create
    /// that fails leaves the host untouched, in rotation. The swap then starts it.
    /// Returns how long the create took; nothing for a rollback, which creates nothing.
    pub(super) async fn stage(&self, host: &str) -> Result<u64, HostFailure> {
        // Start-first creates next to a serving container: nothing to gain.
        if self.d.kind == DeploymentKind::Rollback || self.start_first() {
            return Ok(0);
        }
        let swap_id = self.command_id(host, "swap");
        let kind = command::Kind::Swap(self.swap_command(host, Some(swap_id)).await?);
        let cmd = self.command(host, "stage", kind);
        let r = self.send(host, cmd, self.swap_timeout()).await?;
        match &r.output {
            Some(command_result::Output::Swap(s)) => {
                Ok(s.steps.as_ref().map_or(0, |st| st.create_ms))
            }
            _ => Err(failure(host, &r)),
        }
    }

    /// Moves `host` to this deployment's version (starting the container staged for it,
    /// or creating one); returns when it was ready and its steps.
    pub(super) async fn swap(&self, host: &str) -> Result<Swapped, HostFailure> {
        let kind = if self.d.kind == DeploymentKind::Rollback {
            command::Kind::Rollback(self.rollback_command(&self.d.version))
        } else {
            command::Kind::Swap(self.swap_command(host, None).await?)
        };
        let cmd = self.command(host, "swap", kind);
        let r = self.send(host, cmd, self.swap_timeout()).await?;
        let (port, serving) = match &r.output {
            Some(command_result::Output::Swap(s)) => (s.host_port, &s.serving_container),
            Some(command_result::Output::Rollback(s)) => (s.host_port, &s.serving_container),
            _ => return Err(failure(host, &r)),
        };
        if self.start_first() {
            self.started_next_to(host, port, serving)?;
        }
        match &r.output {
            Some(command_result::Output::Swap(s)) => {
                Ok(Swapped::of(s.ready_after_ms, s.steps.as_ref()))
            }
            Some(command_result::Output::Rollback(s)) => {
                Ok(Swapped::of(s.ready_after_ms, s.steps.as_ref()))
            }
            _ => Err(failure(host, &r)),
        }
    }

    /// Returns `host` to the version it ran before this deployment; returns that version
    /// and the undo's steps.
    pub(super) async fn undo(&self, host: &str) -> Result<(String, Swapped), HostFailure> {
        let from = self
            .host(host)
            .map(|h| h.from_version.clone())
            .unwrap_or_default();
        if from.is_empty() {
            let detail = format!("ran no earlier version of {} to return to", self.d.service);
            return Err(HostFailure::new(host, Left::Unknown, detail));
        }
        let kind = command::Kind::Rollback(self.rollback_command(&from));
        let cmd = self.command(host, "undo", kind);
        let r = self.send(host, cmd, self.swap_timeout()).await?;
        match (&r.output, &r.error) {
            (Some(command_result::Output::Rollback(s)), _) => {
                if self.start_first() {
                    self.started_next_to(host, s.host_port, &s.serving_container)?;
                }
                Ok((from, Swapped::of(s.ready_after_ms, s.steps.as_ref())))
            }
            // Already on that version (the swap never happened): nothing to undo.
            (_, Some(e))
                if e.kind == proto::ErrorKind::NothingToRollBack as i32
                    && e.restored.as_ref().is_some_and(|s| s.version == from) =>
            {
                Ok((from, Swapped::default()))
            }
            _ => Err(failure(host, &r)),
        }
    }

    fn rollback_command(&self, to_version: &str) -> proto::RollbackCommand {
        proto::RollbackCommand {
            service: self.d.service.clone(),
            readiness: Some(self.spec.probe()),
            stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
            to_version: to_version.to_string(),
            start_first: self.start_first_part(),
        }
    }

    /// A command of this deployment to `host`, under its fence; `step` makes the id
    /// unique per step and stable across resends.
    pub(super) fn command(&self, host: &str, step: &str, kind: command::Kind) -> proto::Command {
        proto::Command {
            command_id: self.command_id(host, step),
            fence: Some(self.fence()),
            kind: Some(kind),
        }
    }

    /// The id of this deployment's `step` command to `host`.
    fn command_id(&self, host: &str, step: &str) -> String {
        format!("{}/{step}/{host}", self.d.id)
    }

    /// The spec's secrets, opened for one swap on `host` (`None` when it names none).
    /// Nothing was touched on the host when this fails; the message names the secret.
    pub(super) async fn secrets(&self, host: &str) -> Result<Option<proto::Secrets>, HostFailure> {
        let names = &self.spec.secrets.names;
        if names.is_empty() {
            return Ok(None);
        }
        let values = self
            .shared
            .vault
            .open_all(&self.d.service, &self.d.environment, names)
            .await
            .map_err(|e| HostFailure::new(host, Left::AsBefore, e))?;
        let (delivery, mount_path) = self.spec.secrets_delivery();
        Ok(Some(proto::Secrets {
            delivery: delivery as i32,
            mount_path,
            values,
        }))
    }

    /// Sends a command; if the agent is gone, waits for it to come back (within the
    /// reconnect grace) and sends the same command id again.
    pub(super) async fn send(
        &self,
        host: &str,
        cmd: proto::Command,
        timeout: Duration,
    ) -> Result<proto::CommandResult, HostFailure> {
        send(&self.shared.hub, self.grace_for(&cmd), host, cmd, timeout).await
    }

    /// How long `send` waits for a lost agent to come back before it sends `cmd` again.
    pub(super) fn grace_for(&self, cmd: &proto::Command) -> Duration {
        let mut grace = self.shared.settings.reconnect_grace;
        if matches!(
            cmd.kind,
            Some(command::Kind::Swap(_) | command::Kind::Rollback(_) | command::Kind::Retire(_))
        ) {
            // An agent restarted mid-swap first finishes or undoes it (probing the new
            // container, or starting the previous one again), then reports.
            grace += self.spec.readiness.deadline + self.spec.rollout.stop_timeout;
        }
        grace
    }
}

/// Sends `cmd` to `host`; if the agent is gone, waits up to `grace` for it to come back
/// and sends the same command id again.
pub(super) async fn send(
    hub: &crate::hub::AgentHub,
    grace: Duration,
    host: &str,
    cmd: proto::Command,
    timeout: Duration,
) -> Result<proto::CommandResult, HostFailure> {
    let lost = |e: HubError| HostFailure::new(host, Left::Lost, e);
    match hub.send(host, cmd.clone(), timeout).await {
        Ok(r) => Ok(r),
        Err(HubError::Disconnected { .. } | HubError::NotConnected { .. }) => {
            warn!(host, command = %cmd.command_id, "agent gone mid-command; waiting for it to reconnect");
            hub.wait_connected(host, grace).await.map_err(lost)?;
            hub.send(host, cmd, timeout).await.map_err(lost)
        }
        Err(e) => Err(lost(e)),
    }
}

/// A command result that carries an error (or an unexpected output), as a failure.
pub(super) fn failure(host: &str, r: &proto::CommandResult) -> HostFailure {
    let Some(e) = &r.error else {
        let detail = format!(
            "the agent answered command {} without a result",
            r.command_id
        );
        return HostFailure::new(host, Left::Unknown, detail);
    };
    let kind = proto::ErrorKind::try_from(e.kind).unwrap_or_default();
    let detail = crate::logtail::with_log_tail(&e.message, &e.log_tail);
    // The agent restores the previous container on every failure it can name; an
    // internal or Docker failure may have left the host half swapped.
    let restored = e.restored.is_some()
        || !matches!(
            kind,
            proto::ErrorKind::Internal | proto::ErrorKind::DockerUnavailable
        );
    let left = if restored {
        Left::AsBefore
    } else {
        Left::Unknown
    };
    HostFailure::new(host, left, detail)
}

/// An old container that ignored SIGTERM and was killed after `timeout_ms`, with the fix.
pub(super) fn killed_note(timeout_ms: u64) -> String {
    format!(
        "old container ignored SIGTERM, killed after {}: consider `init = true` in [service]",
        fmt_ms(timeout_ms)
    )
}

pub(super) fn fmt_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}
