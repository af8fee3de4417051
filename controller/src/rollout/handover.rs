//! Start-first handover, the controller's part (`rollout.order = "start-first"`).
//!
//! A host never leaves rotation. Its swap (or undo) starts the new container next to the
//! old one, on the service's other host port, and waits until it is ready; nothing is
//! drained. Its "enable" then points the host's server at the new port on every load
//! balancer, waits until each reports it UP, and retires the old container: the agent
//! waits until the old container's connections end (or the drain timeout passes) and
//! stops it, kept for rollback. A rollback is the same handover in reverse, with no pull.
//!
//! Every step is idempotent and keyed by the deployment, so a controller that resumes
//! the deployment after a restart sends the same commands again: the swap reports the
//! container it already started, pointing at a port it already points at changes
//! nothing, and a retire with nothing else running is done.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use drover_proto::v1 as proto;
use drover_proto::v1::{command, command_result};
use futures::future::join_all;

use super::flight::Rollout;
use super::steps::{HostFailure, Left, failure, fmt_ms, killed_note};
use std::time::Duration;

use crate::spec::Order;
use crate::state::HostPhase;
use crate::store::{HostChange, HostStep, StepKind};

/// A new container ready next to the old one, waiting to be pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ready {
    /// The host port it publishes.
    pub(super) port: u16,
    /// Its name: the container the retire keeps.
    pub(super) container: String,
}

/// The hosts of a rollout with a container ready and not yet pointed at.
#[derive(Debug, Default)]
pub(crate) struct Pending(Mutex<HashMap<String, Ready>>);

impl Pending {
    pub(super) fn put(&self, host: &str, ready: Ready) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_string(), ready);
    }

    fn take(&self, host: &str) -> Option<Ready> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(host)
    }
}

/// What a handover's last step did on one host.
#[derive(Debug, Clone, Default)]
pub(super) struct Retired {
    /// Until every load balancer reported the server UP on its new port.
    pub(super) up_ms: u64,
    /// The old container's connections ending.
    pub(super) drain_ms: u64,
    /// Connections left when the drain timeout passed.
    pub(super) connections_left: u32,
    /// Stopping the old container.
    pub(super) stop_ms: u64,
    /// It ignored SIGTERM and was killed after this many ms.
    pub(super) killed_after_ms: Option<u64>,
}

impl Retired {
    /// The steps as recorded for `host`.
    pub(super) fn host_steps(&self, host: &str) -> Vec<HostStep> {
        let mut stop = HostStep::new(host, StepKind::Stop, self.stop_ms);
        if let Some(ms) = self.killed_after_ms {
            stop.note = killed_note(ms);
        }
        [
            HostStep::new(host, StepKind::Up, self.up_ms),
            HostStep::new(host, StepKind::Drain, self.drain_ms),
            stop,
        ]
        .into_iter()
        .filter(|st| st.ms > 0 || !st.note.is_empty())
        .collect()
    }

    /// `; old container drained in 120ms, stopped in 80ms`.
    pub(super) fn words(&self) -> String {
        let drained = if self.connections_left > 0 {
            format!(
                "drain timeout after {} with {} connections left",
                fmt_ms(self.drain_ms),
                self.connections_left
            )
        } else {
            format!("its connections ended in {}", fmt_ms(self.drain_ms))
        };
        let stopped = match self.killed_after_ms {
            Some(ms) => killed_note(ms),
            None => format!("stopped in {}", fmt_ms(self.stop_ms)),
        };
        format!(
            "UP on the new port after {}; old container: {drained}, {stopped}",
            fmt_ms(self.up_ms)
        )
    }
}

impl Rollout {
    /// Whether this rollout hands hosts over start-first.
    pub(super) fn start_first(&self) -> bool {
        self.spec.rollout.order == Order::StartFirst
    }

    /// The start-first part of a swap or rollback command (`None` for stop-first).
    pub(super) fn start_first_part(&self) -> Option<proto::StartFirst> {
        let ports = self.spec.service.host_ports?;
        self.start_first().then(|| proto::StartFirst {
            host_ports: ports.iter().map(|p| u32::from(*p)).collect(),
        })
    }

    /// Remembers the container a start-first swap or undo made ready on `host`.
    pub(super) fn started_next_to(
        &self,
        host: &str,
        port: u32,
        container: &str,
    ) -> Result<(), HostFailure> {
        let port = u16::try_from(port).ok().filter(|p| *p != 0).ok_or_else(|| {
            HostFailure::new(
                host,
                Left::Unknown,
                "the agent started the new container but did not say on which host port: upgrade the agent",
            )
        })?;
        self.pending.put(
            host,
            Ready {
                port,
                container: container.to_string(),
            },
        );
        Ok(())
    }

    /// The start-first "enable", all at once: points `host`'s server at the container its
    /// swap or undo made ready, waits until every load balancer reports it UP, and
    /// retires the old container. A host with nothing pending (a failed swap: its agent
    /// never touched the old container) stays as it is, in rotation.
    pub(super) async fn hand_over(&self, host: &str) -> Result<Retired, HostFailure> {
        let Some((up_ms, ready)) = self.point(host).await? else {
            return Ok(Retired::default());
        };
        let (cmd, timeout) = self.retire_command(host, &ready);
        let r = self.send(host, cmd, timeout).await?;
        retired(host, up_ms, &r)
    }

    /// Points `host`'s server at the container its swap or undo made ready and waits
    /// until every load balancer reports it UP; returns how long that took and what to
    /// retire around. `None`: nothing pending.
    pub(super) async fn point(&self, host: &str) -> Result<Option<(u64, Ready)>, HostFailure> {
        let Some(ready) = self.pending.take(host) else {
            return Ok(None);
        };
        let Some(lb) = &self.lb else {
            return Ok(Some((0, ready)));
        };
        let server = self.server(host);
        let start = tokio::time::Instant::now();
        let pointed = async {
            lb.point(&server, ready.port).await?;
            lb.wait_up(&server, self.spec.rollout.up_timeout).await
        };
        // Both containers run: the host still serves whichever one the load balancer
        // points at; it stays in rotation either way.
        pointed.await.map_err(|e| {
            HostFailure::new(
                host,
                Left::Unknown,
                format!("pointing the load balancer at port {}: {e}", ready.port),
            )
        })?;
        Ok(Some((start.elapsed().as_millis() as u64, ready)))
    }

    /// The retire of the containers running next to `ready` on `host`, and its timeout.
    fn retire_command(&self, host: &str, ready: &Ready) -> (proto::Command, Duration) {
        let kind = command::Kind::Retire(proto::RetireCommand {
            service: self.d.service.clone(),
            keep_container: ready.container.clone(),
            drain_timeout_ms: self.spec.rollout.drain_timeout.as_millis() as u64,
            stop_timeout_ms: self.spec.rollout.stop_timeout.as_millis() as u64,
        });
        // One retire per container kept: a rollback's retire is not the swap's.
        let step = format!("retire-{}", ready.container);
        let timeout = self.spec.rollout.drain_timeout
            + self.spec.rollout.stop_timeout
            + Duration::from_secs(30);
        (self.command(host, &step, kind), timeout)
    }

    /// Start-first's last steps for a batch's `ready` hosts: collects the previous
    /// batch's retires (they ran while this batch's containers started), points each
    /// host at its new container, and starts retiring its old one in the background.
    /// `failed` are the batch's hosts that failed before (their agents left the old
    /// container serving).
    pub(super) async fn hand_over_hosts(
        &mut self,
        ready: Vec<String>,
        mut failed: Vec<HostFailure>,
    ) -> super::flight::Result<Result<(), HostFailure>> {
        let earlier = self.finish_retires().await?;
        let points = join_all(ready.iter().map(|h| self.point(h))).await;
        let (mut pointed, mut done) = (vec![], vec![]);
        for (host, r) in ready.iter().zip(points) {
            match r {
                Ok(Some((up_ms, to))) => {
                    let msg = format!(
                        "in rotation on port {} after {}; retiring the old container",
                        to.port,
                        fmt_ms(up_ms)
                    );
                    pointed.push((host.clone(), msg));
                    self.spawn_retire(host, up_ms, &to);
                }
                Ok(None) => {
                    let msg = format!("runs {} and is in rotation", self.d.version);
                    done.push((host.clone(), msg));
                }
                Err(f) => failed.push(f),
            }
        }
        self.notes(pointed).await?;
        self.set_phase_each(done, HostPhase::Done, None).await?;
        self.note_lb_notices().await?;
        if !failed.is_empty() {
            self.restore(&[], &failed).await?;
            return Ok(Err(failed.remove(0)));
        }
        Ok(earlier.map_or(Ok(()), Err))
    }

    /// Starts retiring the old container of a pointed `host` in the background: its
    /// connections end and it stops while the next batch starts. [`Self::finish_retires`]
    /// collects the outcome.
    pub(super) fn spawn_retire(&mut self, host: &str, up_ms: u64, ready: &Ready) {
        let (cmd, timeout) = self.retire_command(host, ready);
        let grace = self.grace_for(&cmd);
        let hub = self.shared.hub.clone();
        let owned = host.to_string();
        let task =
            tokio::spawn(
                async move { super::steps::send(&hub, grace, &owned, cmd, timeout).await },
            );
        self.retiring.push(Retiring {
            host: host.to_string(),
            up_ms,
            task,
        });
    }

    /// Waits for every retire started so far; each host whose old container stopped is
    /// done. Returns the first failure (the others are recorded on their hosts).
    pub(super) async fn finish_retires(&mut self) -> super::flight::Result<Option<HostFailure>> {
        let mut first = None;
        let mut steps = vec![];
        let mut finished = vec![];
        for r in std::mem::take(&mut self.retiring) {
            let outcome = match r.task.await {
                Ok(sent) => sent.and_then(|res| retired(&r.host, r.up_ms, &res)),
                Err(e) => Err(HostFailure::new(
                    &r.host,
                    Left::Unknown,
                    format!("the retire was interrupted: {e}"),
                )),
            };
            match outcome {
                Ok(done) => {
                    steps.extend(done.host_steps(&r.host));
                    self.shared.metrics.host_swapped();
                    let msg = format!(
                        "runs {} and is in rotation; {}",
                        self.d.version,
                        done.words()
                    );
                    finished.push(HostChange::new(&r.host, HostPhase::Done, None, &msg));
                }
                Err(f) => {
                    let msg = format!(
                        "{}; it serves {} and is in rotation, but the old container may still run: `drover hosts` shows it, a new deploy or rollback retires it",
                        f.message, self.d.version
                    );
                    let error = Some(f.message.clone());
                    finished.push(HostChange::new(&f.host, HostPhase::Failed, error, &msg));
                    first.get_or_insert(f);
                }
            }
        }
        self.change_hosts(finished).await?;
        self.shared.store.record_steps(&self.d.id, steps).await?;
        Ok(first)
    }
}

/// A retire in the background (start-first): the host serves the new container already.
#[derive(Debug)]
pub(crate) struct Retiring {
    host: String,
    /// How long the pointing took, for the host's steps.
    up_ms: u64,
    task: tokio::task::JoinHandle<Result<proto::CommandResult, HostFailure>>,
}

/// What a retire's result says, as the host's handover.
fn retired(host: &str, up_ms: u64, r: &proto::CommandResult) -> Result<Retired, HostFailure> {
    let Some(command_result::Output::Retire(res)) = &r.output else {
        return Err(failure(host, r));
    };
    let mut out = Retired {
        up_ms,
        drain_ms: res.drain_ms,
        connections_left: res.connections_left,
        ..Default::default()
    };
    if let Some(st) = &res.steps {
        out.stop_ms = st.stop_ms;
        out.killed_after_ms = st.stop_killed.then_some(st.stop_timeout_ms);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_handover_is_taken_once() {
        let p = Pending::default();
        let ready = Ready {
            port: 8081,
            container: "web-v2".into(),
        };
        p.put("h1", ready.clone());
        assert_eq!(p.take("h1"), Some(ready));
        assert_eq!(p.take("h1"), None);
    }

    #[test]
    fn a_killed_old_container_says_so_with_the_fix() {
        let r = Retired {
            up_ms: 120,
            drain_ms: 40,
            stop_ms: 2000,
            killed_after_ms: Some(2000),
            ..Default::default()
        };
        assert!(
            r.words().contains("ignored SIGTERM, killed after 2.0s"),
            "{}",
            r.words()
        );
        let steps = r.host_steps("h1");
        assert!(steps.iter().any(|s| s.note.contains("init = true")));
    }
}
