//! Start-first handover, the agent's part: which of the service's two host ports a new
//! container takes (the one the running container does not publish), and the retire
//! that ends a handover once the load balancer points at the new container: wait until
//! the old container's connections end (or the drain timeout passes), then stop it and
//! keep it for rollback.
//!
//! The swap and the rollback start the new container next to the old one
//! ([`Handover::start_first`](super::handover::Handover::start_first)); between them and
//! the retire the controller moves the host's server to the new port on every load
//! balancer. Both containers run in that window, and either one may be what the load
//! balancer points at, so nothing on the agent stops either on its own: the controller
//! (or a controller resuming the deployment) decides with the retire.

use std::time::Duration;

use drover_shared::proto::{ErrorKind, HandoverSteps, Phase, RetireCommand, RetireResult};
use tokio::time::Instant;
use tracing::{info, warn};

use super::handover::{self, ms};
use super::swap::ms_or;
use super::{CommandContext, DEFAULT_STOP_GRACE, Job, spec, state};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime, Protocol, PublishedPort};

/// How often a retire counts the old containers' connections.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// The host port a new container of the service takes: the one of `host_ports` that no
/// running container of the service publishes (the first when neither is taken).
pub fn pick_port(
    agent: &str,
    service: &str,
    host_ports: &[u32],
    active: &[ContainerInfo],
) -> Result<u16, CommandFailure> {
    let ports: Vec<u16> = host_ports
        .iter()
        .filter_map(|p| u16::try_from(*p).ok().filter(|p| *p != 0))
        .collect();
    let [a, b] = ports[..] else {
        return Err(CommandFailure::invalid(format!(
            "service {service}: start-first needs two host ports, got {host_ports:?}: set service.host_ports = [PORT, ALTERNATE]"
        )));
    };
    if a == b {
        return Err(CommandFailure::invalid(format!(
            "service {service}: start-first needs two different host ports, got {a} twice: set service.host_ports = [PORT, ALTERNATE]"
        )));
    }
    let held = |p: u16| {
        active
            .iter()
            .any(|c| c.ports.iter().any(|pp| pp.host_port == p))
    };
    match (held(a), held(b)) {
        (true, true) => Err(CommandFailure::new(
            ErrorKind::PortInUse,
            format!(
                "service {service} on host {agent}: containers publish both {a} and {b} (an unfinished handover): roll back or deploy again to finish it"
            ),
        )),
        (true, false) => Ok(b),
        _ => Ok(a),
    }
}

/// The host port `c` publishes (its first TCP one), 0 when none.
pub fn published_port(c: &ContainerInfo) -> u32 {
    c.ports
        .iter()
        .find(|p| p.protocol == Protocol::Tcp)
        .map_or(0, |p| u32::from(p.host_port))
}

/// Refuses, before anything is touched, host ports of `wanted` that are taken. Stop-first
/// frees the ports of the service's running containers before it starts the new one;
/// start-first runs both at once, so nothing may hold them.
pub fn check_ports(
    agent: &str,
    wanted: &[PublishedPort],
    active: &[ContainerInfo],
    start_first: bool,
) -> Result<(), CommandFailure> {
    if start_first {
        return handover::check_ports_free(agent, wanted, &[]).map_err(port_in_use);
    }
    let held: Vec<PublishedPort> = active
        .iter()
        .flat_map(|c| c.ports.iter().copied())
        .collect();
    handover::check_ports_free(agent, wanted, &held)
}

/// A host port of a start-first container is taken by something else: says which key
/// picks it.
fn port_in_use(mut f: CommandFailure) -> CommandFailure {
    if f.kind == ErrorKind::PortInUse {
        f.message = format!(
            "{}; with rollout.order = \"start-first\" the ports come from service.host_ports",
            f.message
        );
    }
    f
}

/// Retires the service's running containers other than `keep_container`.
pub async fn retire<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    cmd: RetireCommand,
) -> Result<RetireResult, CommandFailure> {
    spec::check_service(&cmd.service)?;
    let rt = &*ctx.runtime;
    let containers = state::of_service(rt.list_managed(&ctx.agent).await?, &cmd.service);
    if !containers
        .active
        .iter()
        .any(|c| c.name == cmd.keep_container)
    {
        return Err(CommandFailure::new(
            ErrorKind::ContainerExited,
            format!(
                "container {} of service {} does not run on host {}: nothing was stopped, so the service keeps serving; deploy again",
                cmd.keep_container, cmd.service, ctx.agent
            ),
        ));
    }
    let old: Vec<&ContainerInfo> = containers
        .active
        .iter()
        .filter(|c| c.name != cmd.keep_container)
        .collect();
    let mut out = RetireResult::default();
    if old.is_empty() {
        info!(service = %cmd.service, keep = %cmd.keep_container, "nothing else runs: nothing to retire");
        out.current = Some(containers.to_proto());
        return Ok(out);
    }
    let names: Vec<&str> = old.iter().map(|c| c.name.as_str()).collect();
    job.phase(
        Phase::Stopping,
        format!("waiting for the connections of {} to end", names.join(", ")),
    );
    let drain_timeout = Duration::from_millis(cmd.drain_timeout_ms);
    let (drain, left) = wait_connections_end(&old, drain_timeout).await;
    out.drain_ms = ms(drain);
    out.connections_left = left;
    if left > 0 {
        warn!(containers = ?names, connections = left, waited = ?drain, "drain timeout passed with connections left; stopping anyway");
    }
    let grace = ms_or(cmd.stop_timeout_ms, DEFAULT_STOP_GRACE);
    let mut steps = HandoverSteps::default();
    let stopping = Instant::now();
    for c in &old {
        job.phase(
            Phase::Stopping,
            format!("stopping {} ({})", c.name, c.version()),
        );
        info!(container = %c.name, version = %c.version(), "retiring");
        let started = Instant::now();
        rt.stop(&c.id, grace).await?;
        if handover::was_killed(rt, c, started.elapsed(), grace).await {
            warn!(container = %c.name, ?grace, "ignored SIGTERM: killed after the stop timeout");
            steps.stop_killed = true;
            steps.stop_timeout_ms = ms(grace);
        }
        out.retired.push(c.name.clone());
    }
    steps.stop_ms = ms(stopping.elapsed());
    out.steps = Some(steps);
    out.current = Some(handover::service_state(ctx, &cmd.service).await);
    Ok(out)
}

/// Waits until none of `old` has an established TCP connection on a port it listens on,
/// or `timeout` passes. Returns the wait and the connections left. A container whose
/// connections cannot be counted (no process, or a process table the agent cannot read)
/// counts as none.
async fn wait_connections_end(old: &[&ContainerInfo], timeout: Duration) -> (Duration, u32) {
    let start = Instant::now();
    loop {
        let mut left = 0;
        for c in old {
            let ports: Vec<u16> = c.ports.iter().map(|p| p.container_port).collect();
            left += established(c.pid, &ports).await.unwrap_or(0);
        }
        let waited = start.elapsed();
        if left == 0 || waited >= timeout {
            return (waited, left);
        }
        tokio::time::sleep(DRAIN_POLL.min(timeout - waited)).await;
    }
}

/// The established TCP connections on `ports` in the network namespace of process `pid`
/// (the container's main process; the agent runs on the host), `None` when it cannot
/// be read.
async fn established(pid: Option<u32>, ports: &[u16]) -> Option<u32> {
    let pid = pid?;
    let mut total = None;
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = tokio::fs::read_to_string(format!("/proc/{pid}/net/{table}")).await {
            *total.get_or_insert(0) += count_established(&text, ports);
        }
    }
    total
}

/// Counts the ESTABLISHED sockets whose local port is one of `ports` in a
/// `/proc/<pid>/net/tcp` (or `tcp6`) table.
pub fn count_established(table: &str, ports: &[u16]) -> u32 {
    let mut n = 0;
    for line in table.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let port = local
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
        if state == "01" && port.is_some_and(|p| ports.contains(&p)) {
            n += 1;
        }
    }
    n
}

/// A published port of `ports` as the `host_port` a start-first container takes.
pub fn with_host_port(ports: &mut [PublishedPort], host_port: u16) {
    if let Some(p) = ports.iter_mut().find(|p| p.protocol == Protocol::Tcp) {
        p.host_port = host_port;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::state::tests::container;
    use crate::runtime::RunState;
    use std::net::{IpAddr, Ipv4Addr};

    fn publishing(mut c: ContainerInfo, host_port: u16) -> ContainerInfo {
        c.ports = vec![PublishedPort {
            container_port: 8080,
            protocol: Protocol::Tcp,
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port,
        }];
        c
    }

    #[test]
    fn the_new_container_takes_the_port_the_running_one_does_not_publish() {
        let on = |p| {
            vec![publishing(
                container("a", "web", "v1", RunState::Running, 1),
                p,
            )]
        };
        assert_eq!(pick_port("h1", "web", &[8080, 8081], &[]).unwrap(), 8080);
        assert_eq!(
            pick_port("h1", "web", &[8080, 8081], &on(8080)).unwrap(),
            8081
        );
        assert_eq!(
            pick_port("h1", "web", &[8080, 8081], &on(8081)).unwrap(),
            8080
        );
        assert_eq!(
            pick_port("h1", "web", &[8080, 8081], &on(9000)).unwrap(),
            8080
        );
        let both = vec![
            publishing(container("a", "web", "v1", RunState::Running, 1), 8080),
            publishing(container("b", "web", "v2", RunState::Running, 2), 8081),
        ];
        let e = pick_port("h1", "web", &[8080, 8081], &both).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PortInUse);
        for bad in [&[8080][..], &[8080, 8080], &[8080, 0], &[]] {
            let e = pick_port("h1", "web", bad, &[]).unwrap_err();
            assert!(e.message.contains("service.host_ports"), "{}", e.message);
        }
    }

    #[test]
    fn counts_established_sockets_on_the_listening_ports_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0200A8C0:1F90 0100A8C0:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
   2: 0200A8C0:1F90 0100A8C0:C351 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0000000000000000
   3: 0200A8C0:C352 0100A8C0:1F90 01 00000000:00000000 00:00000000 00000000     0        0 4 1 0000000000000000 20 4 30 10 -1
   4: 0200A8C0:1F90 0100A8C0:C353 01 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 20 4 30 10 -1
";
        // Two established on port 8080 (0x1F90); the listener, the TIME_WAIT and the
        // outgoing connection do not count.
        assert_eq!(count_established(table, &[8080]), 2);
        assert_eq!(count_established(table, &[9090]), 0);
        assert_eq!(count_established("", &[8080]), 0);
    }
}
