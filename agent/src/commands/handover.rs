//! The one piece swap and rollback share: hand a service over from the running container
//! to a candidate (stop the old, start the new, wait until ready) and, when the candidate
//! does not become ready, restore the old one and wait for it to be ready again.
//!
//! Also the readiness check itself (HTTP, TCP or Docker HEALTHCHECK, always combined with
//! the container's own state) and the host-port pre-check run before anything is touched.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::Duration;

use drover_shared::probe::{Check, ProbeError, ProbeSettings, http_check, tcp_check, wait_ready};
use drover_shared::proto::{
    ErrorKind, HandoverSteps, Phase, ReadinessProbe, ServiceState, readiness_probe,
};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{CommandContext, Job, state};
use crate::error::CommandFailure;
use crate::runtime::{
    ContainerInfo, ContainerRuntime, HealthState, Protocol, PublishedPort, RunState, RuntimeError,
};

/// How many log lines of a failed container are reported.
pub const LOG_TAIL_LINES: usize = 20;

/// What to do with a candidate that did not become ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Remove it: a freshly created container that failed is no rollback target.
    Remove,
    /// Leave it stopped: it was a kept container and stays one.
    Keep,
}

/// One handover of a service.
pub struct Handover<'a> {
    /// The service.
    pub service: &'a str,
    /// The container to start.
    pub candidate: &'a ContainerInfo,
    /// The containers running now; stopped first, the newest restored on failure.
    pub outgoing: &'a [ContainerInfo],
    /// The readiness probe (`None` = running is enough).
    pub probe: Option<&'a ReadinessProbe>,
    /// SIGTERM-to-SIGKILL grace for stopping containers.
    pub stop_grace: Duration,
    /// Fate of a failed candidate.
    pub on_failure: OnFailure,
    /// Start-first: the candidate starts next to `outgoing`, which keeps running (a
    /// retire stops it once the load balancer points at the candidate); a failure
    /// leaves them untouched, serving.
    pub start_first: bool,
}

/// A finished handover: when the candidate became ready, and how each step went.
#[derive(Debug, Clone, PartialEq)]
pub struct HandedOver {
    /// From command receipt until the candidate was ready.
    pub ready_after: Duration,
    /// Each step's time; `create_ms` is the caller's to fill.
    pub steps: HandoverSteps,
}

/// Runs the handover. On success returns the time from command receipt to readiness and
/// each step's time; on failure the service runs what ran before (reported in
/// `restored`).
pub async fn hand_over<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    h: Handover<'_>,
) -> Result<HandedOver, CommandFailure> {
    let rt = &*ctx.runtime;
    let cand = h.candidate;
    let mut steps = HandoverSteps::default();
    let outcome = async {
        let stopping = Instant::now();
        let outgoing = if h.start_first { &[][..] } else { h.outgoing };
        for old in outgoing {
            job.phase(
                Phase::Stopping,
                format!("stopping {} ({})", old.name, old.version()),
            );
            info!(container = %old.name, version = %old.version(), "stopping");
            let started = Instant::now();
            rt.stop(&old.id, h.stop_grace).await?;
            if was_killed(rt, old, started.elapsed(), h.stop_grace).await {
                warn!(container = %old.name, grace = ?h.stop_grace, "ignored SIGTERM: killed after the stop timeout");
                steps.stop_killed = true;
                steps.stop_timeout_ms = ms(h.stop_grace);
            }
        }
        steps.stop_ms = ms(stopping.elapsed());
        job.phase(
            Phase::Starting,
            format!("starting {} ({})", cand.name, cand.version()),
        );
        info!(container = %cand.name, version = %cand.version(), "starting");
        let starting = Instant::now();
        rt.start(&cand.id)
            .await
            .map_err(|e| start_failure(cand, e))?;
        steps.start_ms = ms(starting.elapsed());
        job.phase(
            Phase::WaitingReady,
            format!("waiting for {} to be ready", cand.name),
        );
        let probing = Instant::now();
        wait_until_ready(rt, cand, h.probe).await?;
        steps.ready_ms = ms(probing.elapsed());
        Ok::<_, CommandFailure>(job.received.elapsed())
    }
    .await;
    let mut failure = match outcome {
        Ok(ready_after) => {
            info!(container = %cand.name, ready_after_ms = ready_after.as_millis() as u64, "ready");
            ctx.ready.record(&cand.name).await;
            return Ok(HandedOver { ready_after, steps });
        }
        Err(f) => f,
    };
    warn!(container = %cand.name, error = %failure.message, "handover failed; restoring");
    let tail = rt
        .logs_tail(&cand.id, LOG_TAIL_LINES)
        .await
        .unwrap_or_default();
    // The lines leave the host with the failure: hide the secrets the container was given.
    let secrets = ctx.secrets.clone();
    let name = cand.name.clone();
    let values = tokio::task::spawn_blocking(move || secrets.values_of(&name))
        .await
        .unwrap_or_default();
    let redactor = crate::logs::lines::Redactor::new(values);
    failure.log_tail = tail.into_iter().map(|l| redactor.redact(l)).collect();
    if let Err(e) = rt.stop(&cand.id, h.stop_grace).await {
        warn!(container = %cand.name, error = %e, "could not stop the failed container");
    }
    if h.on_failure == OnFailure::Remove
        && let Err(e) = super::remove_container(ctx, cand).await
    {
        warn!(container = %cand.name, error = %e, "could not remove the failed container");
    }
    if let Some(old) = h.outgoing.first().filter(|_| !h.start_first) {
        job.phase(
            Phase::Restoring,
            format!("restoring {} ({})", old.name, old.version()),
        );
        info!(container = %old.name, version = %old.version(), "restoring");
        let restored = async {
            rt.start(&old.id).await?;
            wait_until_ready(rt, old, h.probe).await
        }
        .await;
        match restored {
            Ok(_) => ctx.ready.record(&old.name).await,
            Err(e) => {
                failure.message = format!(
                    "{}; restoring {} ({}) also failed: {}",
                    failure.message,
                    old.name,
                    old.version(),
                    e.message
                );
            }
        }
    }
    failure.restored = Some(Box::new(service_state(ctx, h.service).await));
    Err(failure)
}

/// Did stopping `old` run into the grace and end in a SIGKILL? Docker reports exit code
/// 137 (128 + SIGKILL) for a container it killed; the stop taking the whole grace tells
/// that from an app that died of SIGKILL on its own.
pub(super) async fn was_killed<R: ContainerRuntime>(
    rt: &R,
    old: &ContainerInfo,
    took: Duration,
    grace: Duration,
) -> bool {
    if took < grace {
        return false;
    }
    matches!(rt.inspect(&old.id).await, Ok(Some(i)) if i.exit_code == 137)
}

/// Whole milliseconds of `d`.
pub fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What the host runs for `service` now (an ABSENT state when Docker cannot say).
pub async fn service_state<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    service: &str,
) -> ServiceState {
    match ctx.runtime.list_managed(&ctx.agent).await {
        Ok(all) => state::of_service(all, service).to_proto(),
        Err(e) => {
            warn!(service, error = %e, "cannot read the service state");
            state::ServiceContainers::new(service, vec![]).to_proto()
        }
    }
}

fn start_failure(c: &ContainerInfo, e: RuntimeError) -> CommandFailure {
    let kind = match e.kind() {
        ErrorKind::PortInUse | ErrorKind::DockerUnavailable | ErrorKind::Timeout => e.kind(),
        _ => ErrorKind::ContainerExited,
    };
    CommandFailure::new(
        kind,
        format!(
            "container {} ({}) could not start: {e}",
            c.name,
            c.version()
        ),
    )
}

/// Waits until `c` passes the probe, or fails with READINESS_FAILED / CONTAINER_EXITED.
pub async fn wait_until_ready<R: ContainerRuntime>(
    rt: &R,
    c: &ContainerInfo,
    probe: Option<&ReadinessProbe>,
) -> Result<Duration, CommandFailure> {
    let settings = probe.map(ProbeSettings::from_proto).unwrap_or_default();
    let kind = probe.and_then(|p| p.kind.as_ref());
    let baseline = c.restart_count;
    match wait_ready(settings, || check(rt, &c.id, baseline, kind)).await {
        Ok(waited) => Ok(waited),
        Err(ProbeError::Fatal(why)) => {
            let exited = matches!(rt.inspect(&c.id).await, Ok(Some(i)) if exited(&i, baseline));
            let kind = if exited {
                ErrorKind::ContainerExited
            } else {
                ErrorKind::ReadinessFailed
            };
            Err(CommandFailure::new(
                kind,
                format!("container {} ({}): {why}", c.name, c.version()),
            ))
        }
        Err(e @ ProbeError::Deadline { .. }) => Err(CommandFailure::new(
            ErrorKind::ReadinessFailed,
            format!(
                "container {} ({}) was {e}: check the readiness probe against the container's last log lines",
                c.name,
                c.version()
            ),
        )),
    }
}

/// Has the container exited since it was started (even if its restart policy restarted
/// it)? `baseline` is its restart count before the start.
fn exited(info: &ContainerInfo, baseline: u32) -> bool {
    matches!(
        info.state,
        RunState::Exited | RunState::Dead | RunState::Restarting
    ) || info.restart_count > baseline
}

/// One readiness check: the container must run (and not have exited since its start),
/// then the probe must pass.
async fn check<R: ContainerRuntime>(
    rt: &R,
    id: &str,
    baseline: u32,
    probe: Option<&readiness_probe::Kind>,
) -> Check {
    let info = match rt.inspect(id).await {
        Ok(Some(i)) => i,
        Ok(None) => return Check::Fatal(format!("container {id} was removed")),
        Err(e) => return Check::Fail(e.to_string()),
    };
    if exited(&info, baseline) {
        return Check::Fatal(format!("container exited with code {}", info.exit_code));
    }
    match info.state {
        RunState::Running => {}
        RunState::Removing => return Check::Fatal("container is being removed".into()),
        RunState::Exited | RunState::Dead | RunState::Restarting => {
            return Check::Fatal(format!("container exited with code {}", info.exit_code));
        }
        RunState::Created | RunState::Paused => {
            return Check::Fail(format!("container is {:?}", info.state));
        }
    }
    match probe {
        None => Check::Pass,
        Some(readiness_probe::Kind::Http(h)) => {
            let port = u16::try_from(h.port).unwrap_or(0);
            match rt.probe_address(&info, port) {
                Some(addr) => {
                    let path = if h.path.is_empty() { "/" } else { &h.path };
                    http_check(addr, path, u16::try_from(h.expected_status).unwrap_or(0)).await
                }
                None => Check::Fatal(no_address(port)),
            }
        }
        Some(readiness_probe::Kind::Tcp(t)) => {
            let port = u16::try_from(t.port).unwrap_or(0);
            match rt.probe_address(&info, port) {
                Some(addr) => tcp_check(addr).await,
                None => Check::Fatal(no_address(port)),
            }
        }
        Some(readiness_probe::Kind::DockerHealth(_)) => match info.health {
            HealthState::Healthy => Check::Pass,
            HealthState::Starting => Check::Fail("HEALTHCHECK is starting".into()),
            HealthState::Unhealthy => Check::Fail(format!(
                "HEALTHCHECK reports unhealthy: {}",
                info.health_output.as_deref().unwrap_or("no output")
            )),
            HealthState::None => Check::Fatal(
                "the image defines no HEALTHCHECK: use an http or tcp readiness probe".into(),
            ),
        },
    }
}

fn no_address(port: u16) -> String {
    if port == 0 {
        "the probe needs a port: the container publishes no TCP port; set the probe's port".into()
    } else {
        format!(
            "container port {port} is not published and the container has no address to probe it on"
        )
    }
}

/// Refuses, before anything is touched, host ports that something other than the
/// service's running containers already holds.
pub fn check_ports_free(
    agent: &str,
    wanted: &[PublishedPort],
    held: &[PublishedPort],
) -> Result<(), CommandFailure> {
    for p in wanted {
        if p.host_port == 0
            || held
                .iter()
                .any(|h| h.host_port == p.host_port && h.protocol == p.protocol)
        {
            continue;
        }
        let addr = SocketAddr::new(p.host_ip, p.host_port);
        let bound = match p.protocol {
            Protocol::Tcp => TcpListener::bind(addr).map(drop),
            Protocol::Udp => UdpSocket::bind(addr).map(drop),
        };
        match bound {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                return Err(CommandFailure::invalid(format!(
                    "host address {} is not an address of host {agent}: publish on one of its addresses or 0.0.0.0",
                    p.host_ip
                )));
            }
            Err(e) => {
                return Err(CommandFailure::new(
                    ErrorKind::PortInUse,
                    format!(
                        "port {addr}/{} is already in use on host {agent} ({e}): free it or publish the service on another port; nothing was changed",
                        p.protocol.as_str()
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn taken_port_is_refused_unless_held_by_the_service() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let want = PublishedPort {
            container_port: 80,
            protocol: Protocol::Tcp,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
        };
        let e = check_ports_free("h1", &[want], &[]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PortInUse);
        assert!(
            e.message.contains(&format!("127.0.0.1:{port}/tcp")),
            "{}",
            e.message
        );
        // Held by the running container of the service: it will be stopped first.
        check_ports_free("h1", &[want], &[want]).unwrap();
        drop(taken);
        check_ports_free("h1", &[want], &[]).unwrap();
    }
}
