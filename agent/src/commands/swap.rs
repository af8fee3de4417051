//! Swap: replace the service's running container with a new one from a (prepared) image,
//! wait for readiness, keep the old one stopped for rollback, prune the oldest kept ones.
//!
//! Order: validate, check the image is local, check host ports, create the new container
//! (all before anything runs differently), then the [`handover`](super::handover).

use std::time::Duration;

use drover_shared::proto::{ErrorKind, Fence, SwapCommand, SwapResult};
use tracing::{info, warn};

use super::handover::{self, Handover, OnFailure};
use super::spec::{self, Origin};
use super::{CommandContext, DEFAULT_STOP_GRACE, Job, state};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime};

/// Runs a swap.
pub async fn swap<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    fence: &Fence,
    cmd: SwapCommand,
) -> Result<SwapResult, CommandFailure> {
    let rt = &*ctx.runtime;
    let spec = cmd.spec.as_ref().ok_or_else(|| {
        CommandFailure::invalid("swap without a container spec: send the service's spec")
    })?;
    let checked = spec::check(spec)?;
    let service = checked.service.as_str();
    let image = rt.image(&checked.image.to_string()).await?.ok_or_else(|| {
        CommandFailure::new(
            ErrorKind::ImageNotFound,
            format!(
                "image {} is not on host {}; send Prepare first",
                checked.image, ctx.agent
            ),
        )
    })?;
    let containers = state::of_service(rt.list_managed(&ctx.agent).await?, service);

    // Repeated command (e.g. resent after an agent restart): the work is already done.
    if let Some(cur) = containers.current()
        && cur.command() == job.command_id
    {
        info!(container = %cur.name, "swap already done by this command");
        return Ok(SwapResult {
            current: Some(containers.to_proto()),
            previous_container: containers
                .kept
                .first()
                .map(|k| k.id.clone())
                .unwrap_or_default(),
            ready_after_ms: 0,
        });
    }

    let held: Vec<_> = containers
        .active
        .iter()
        .flat_map(|c| c.ports.iter().copied())
        .collect();
    handover::check_ports_free(&ctx.agent, &checked.ports, &held)?;
    check_probe_port(&cmd, &checked)?;

    let digest = checked
        .image
        .digest
        .clone()
        .or_else(|| {
            let name = checked.image.name();
            image.repo_digests.iter().find_map(|d| {
                d.split_once('@')
                    .filter(|(n, _)| *n == name)
                    .map(|(_, d)| d.to_string())
            })
        })
        .unwrap_or_else(|| image.id.clone());
    let origin = Origin {
        agent: &ctx.agent,
        command_id: &job.command_id,
        fence,
        digest: &digest,
    };
    let create = spec::create_spec(&checked, &origin);
    info!(container = %create.name, image = %create.image, version = %checked.version, "creating");
    let id = rt.create(&create).await?;
    let candidate = rt.inspect(&id).await?.ok_or_else(|| {
        CommandFailure::internal(format!(
            "container {} vanished right after it was created",
            create.name
        ))
    })?;

    let stop_grace = ms_or(cmd.stop_timeout_ms, DEFAULT_STOP_GRACE);
    let ready_after = handover::hand_over(
        ctx,
        job,
        Handover {
            service,
            candidate: &candidate,
            outgoing: &containers.active,
            probe: cmd.readiness.as_ref(),
            stop_grace,
            on_failure: OnFailure::Remove,
        },
    )
    .await?;

    let keep = if cmd.keep_previous == 0 {
        ctx.keep_previous
    } else {
        cmd.keep_previous
    };
    prune(ctx, service, &candidate.id, keep as usize).await;
    Ok(SwapResult {
        current: Some(handover::service_state(ctx, service).await),
        previous_container: containers
            .current()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        ready_after_ms: u64::try_from(ready_after.as_millis()).unwrap_or(u64::MAX),
    })
}

/// An HTTP or TCP probe on "the first published port" needs one.
fn check_probe_port(cmd: &SwapCommand, checked: &spec::CheckedSpec) -> Result<(), CommandFailure> {
    use drover_shared::proto::readiness_probe::Kind;
    let port = match cmd.readiness.as_ref().and_then(|r| r.kind.as_ref()) {
        Some(Kind::Http(h)) => h.port,
        Some(Kind::Tcp(t)) => t.port,
        _ => return Ok(()),
    };
    if port > u32::from(u16::MAX) {
        return Err(CommandFailure::invalid(format!(
            "readiness probe port {port} is not in 1-65535"
        )));
    }
    let any_tcp = checked
        .ports
        .iter()
        .any(|p| p.protocol == crate::runtime::Protocol::Tcp);
    if port == 0 && !any_tcp {
        return Err(CommandFailure::invalid(format!(
            "service {}: the readiness probe has no port and the service publishes no TCP port: set the probe's port",
            checked.service
        )));
    }
    Ok(())
}

/// Removes stopped containers of `service` beyond the newest `keep` (never `current`).
pub async fn prune<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    service: &str,
    current: &str,
    keep: usize,
) {
    let rt = &*ctx.runtime;
    let all = match rt.list_managed(&ctx.agent).await {
        Ok(all) => all,
        Err(e) => {
            warn!(service, error = %e, "cannot list containers to prune");
            return;
        }
    };
    let grouped = state::of_service(all, service);
    let stale: Vec<&ContainerInfo> = grouped
        .kept
        .iter()
        .filter(|c| c.id != current)
        .skip(keep)
        .collect();
    for c in stale {
        info!(container = %c.name, version = %c.version(), "pruning kept container");
        if let Err(e) = rt.remove(&c.id).await {
            warn!(container = %c.name, error = %e, "could not prune");
        }
    }
}

/// `ms` milliseconds, or `default` when zero.
pub fn ms_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}
