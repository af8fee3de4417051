//! Swap: replace the service's running container with a new one from a (prepared) image,
//! wait for readiness, keep the old one stopped for rollback; once the result is sent,
//! prune the oldest kept ones ([`prune`]).
//!
//! Order: validate (spec and secrets), check the image is local, check host ports, write
//! file secrets and create the new container (all before anything runs differently), then
//! the [`handover`](super::handover). A container that is removed takes its secrets
//! directory with it; a kept one keeps it, for rollback.

use std::time::Duration;

use drover_shared::proto::{ErrorKind, Fence, HandoverSteps, SwapCommand, SwapResult};
use tracing::{info, warn};

use super::handover::{self, Handover, OnFailure};
use super::spec::{self, Origin};
use super::{CommandContext, DEFAULT_STOP_GRACE, Job, reconcile, record, start_first, state};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime, CreateSpec, MountSpec, MountType, RunState};
use crate::secrets::{self, Delivery};

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
    let mut checked = spec::check(spec)?;
    let start_first = cmd.start_first.as_ref();
    let service = checked.service.clone();
    let service = service.as_str();
    let delivery = secrets::plan(cmd.secrets.as_ref(), service, &checked.env, &checked.mounts)?;
    if matches!(delivery, Delivery::Files { .. }) {
        let store = ctx.secrets.clone();
        blocking(move || store.check_tmpfs())
            .await?
            .map_err(CommandFailure::invalid)?;
    }
    let image = rt.image(&checked.image.to_string()).await?.ok_or_else(|| {
        CommandFailure::new(
            ErrorKind::ImageNotFound,
            format!(
                "image {} is not on host {}; send Prepare first",
                checked.image, ctx.agent
            ),
        )
    })?;
    let mut containers = state::of_service(rt.list_managed(&ctx.agent).await?, service);
    // The swap whose container this command makes: itself, or the swap it stages for.
    let staging = !cmd.stage_for_command.is_empty();
    let swap_id = if staging {
        cmd.stage_for_command.as_str()
    } else {
        job.command_id.as_str()
    };

    // Repeated command (e.g. resent after an agent restart). Its container runs but was
    // never reported ready: the agent died mid-handover, so finish or undo that first.
    if let Some(cur) = containers.current()
        && cur.command() == swap_id
        && !ctx.ready.was_ready(&cur.name).await
    {
        info!(container = %cur.name, "this command's container runs but never became ready; reconciling first");
        reconcile::service(ctx, containers).await;
        containers = state::of_service(rt.list_managed(&ctx.agent).await?, service);
    }
    // The work is done (a reconciliation that undid it leaves another container current).
    if let Some(cur) = containers.current()
        && cur.command() == swap_id
    {
        info!(container = %cur.name, "swap already done by this command");
        let previous = match start_first {
            Some(_) => containers.active.get(1),
            None => containers.kept.first(),
        };
        return Ok(SwapResult {
            current: Some(containers.to_proto()),
            previous_container: previous.map(|k| k.id.clone()).unwrap_or_default(),
            host_port: start_first.map_or(0, |_| start_first::published_port(cur)),
            serving_container: cur.name.clone(),
            ..Default::default()
        });
    }
    let staged = clear_staged(ctx, &containers, swap_id).await;

    if let Some(sf) = start_first {
        // Next to the running container, on the port it does not publish.
        let port = start_first::pick_port(&ctx.agent, service, &sf.host_ports, &containers.active)?;
        start_first::with_host_port(&mut checked.ports, port);
    }
    start_first::check_ports(
        &ctx.agent,
        &checked.ports,
        &containers.active,
        start_first.is_some(),
    )?;
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
        command_id: swap_id,
        fence,
        digest: &digest,
    };
    let creating = tokio::time::Instant::now();
    let candidate = match staged {
        Some(c) => {
            info!(container = %c.name, "starting the container staged for this swap");
            c
        }
        None => create(ctx, &cmd, &checked, &origin, delivery).await?,
    };
    let create_ms = handover::ms(creating.elapsed());
    if staging {
        return Ok(SwapResult {
            current: Some(containers.to_proto()),
            staged_container: candidate.name.clone(),
            steps: Some(HandoverSteps {
                create_ms,
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    let stop_grace = ms_or(cmd.stop_timeout_ms, DEFAULT_STOP_GRACE);
    let done = handover::hand_over(
        ctx,
        job,
        Handover {
            service,
            candidate: &candidate,
            outgoing: &containers.active,
            probe: cmd.readiness.as_ref(),
            stop_grace,
            on_failure: OnFailure::Remove,
            start_first: start_first.is_some(),
        },
    )
    .await?;

    // Pruning the oldest kept containers waits until the result is sent
    // (`super::Tidy::Prune`): the controller does not wait for it.
    Ok(SwapResult {
        current: Some(handover::service_state(ctx, service).await),
        previous_container: containers
            .current()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        ready_after_ms: handover::ms(done.ready_after),
        steps: Some(HandoverSteps {
            create_ms,
            ..done.steps
        }),
        staged_container: String::new(),
        host_port: start_first.map_or(0, |_| start_first::published_port(&candidate)),
        serving_container: candidate.name.clone(),
    })
}

/// Removes the containers staged for swaps that never came (created, never started) and
/// returns the one staged for `swap_id`, if any.
async fn clear_staged<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    containers: &state::ServiceContainers,
    swap_id: &str,
) -> Option<ContainerInfo> {
    let mut mine = None;
    for c in containers
        .kept
        .iter()
        .filter(|c| c.state == RunState::Created)
    {
        if c.command() == swap_id && mine.is_none() {
            mine = Some(c.clone());
            continue;
        }
        info!(container = %c.name, "removing a container staged for a swap that never came");
        if let Err(e) = super::remove_container(ctx, c).await {
            warn!(container = %c.name, error = %e, "could not remove a staged container");
        }
    }
    mine
}

/// Creates the container of `checked` (its secrets delivered first) and inspects it;
/// on any failure leaves neither the container nor its secrets behind.
async fn create<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    cmd: &SwapCommand,
    checked: &spec::CheckedSpec,
    origin: &Origin<'_>,
    delivery: Delivery,
) -> Result<ContainerInfo, CommandFailure> {
    let rt = &*ctx.runtime;
    let stop_grace = ms_or(cmd.stop_timeout_ms, DEFAULT_STOP_GRACE);
    let mut create = spec::create_spec(checked, origin);
    create
        .labels
        .extend(record::handover_labels(cmd.readiness.as_ref(), stop_grace));
    info!(container = %create.name, image = %create.image, version = %checked.version, "creating");
    let (id, secret_files) = create_with_secrets(ctx, &mut create, delivery).await?;
    match rt.inspect(&id).await {
        Ok(Some(c)) => Ok(c),
        failed => {
            // Leave no container behind that no command knows about, nor its secrets.
            if let Err(e) = rt.remove(&id).await {
                warn!(container = %create.name, error = %e, "could not remove a container that cannot be inspected");
            }
            if secret_files {
                super::remove_secrets(&ctx.secrets, &create.name).await;
            }
            Err(match failed {
                Err(e) => e.into(),
                Ok(_) => CommandFailure::internal(format!(
                    "container {} vanished right after it was created",
                    create.name
                )),
            })
        }
    }
}

/// Delivers the secrets of `create` and creates it; a failed create leaves no secret
/// files behind. Returns the container's id and whether secret files were written.
pub(super) async fn create_with_secrets<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    create: &mut CreateSpec,
    delivery: Delivery,
) -> Result<(String, bool), CommandFailure> {
    let secret_files = deliver_secrets(ctx, create, delivery).await?;
    match ctx.runtime.create(create).await {
        Ok(id) => Ok((id, secret_files)),
        Err(e) => {
            if secret_files {
                super::remove_secrets(&ctx.secrets, &create.name).await;
            }
            Err(e.into())
        }
    }
}

/// Gives the container to be created its secrets: environment variables, or files written
/// into its own directory and bind-mounted read-only. Returns whether files were written.
async fn deliver_secrets<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    create: &mut CreateSpec,
    delivery: Delivery,
) -> Result<bool, CommandFailure> {
    match delivery {
        Delivery::None => Ok(false),
        Delivery::Env(vars) => {
            info!(container = %create.name, names = ?names(vars.iter().map(|v| &v.name)), "secrets as environment variables");
            ctx.secrets.remember_env(&create.name, &vars);
            create.secret_env = vars;
            Ok(false)
        }
        Delivery::Files { mount, files } => {
            let names = names(files.iter().map(|f| &f.name));
            let store = ctx.secrets.clone();
            let container = create.name.clone();
            let dir = blocking(move || store.write(&container, &files))
                .await?
                .map_err(|e| {
                    CommandFailure::internal(format!(
                        "cannot write the secrets of container {} under {} on host {}: {e}; check the agent's --secrets-dir",
                        create.name,
                        ctx.secrets.root().display(),
                        ctx.agent
                    ))
                })?;
            info!(container = %create.name, names = ?names, mount = %mount, "secrets as read-only files");
            create.mounts.push(MountSpec {
                kind: MountType::Bind,
                source: dir.to_string_lossy().into_owned(),
                target: mount,
                read_only: true,
            });
            Ok(true)
        }
    }
}

fn names<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    names.cloned().collect()
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CommandFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CommandFailure::internal(format!("a file operation was interrupted: {e}")))
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

/// Removes stopped containers of `service` beyond the newest `keep` (never a running one).
pub async fn prune<R: ContainerRuntime>(ctx: &CommandContext<R>, service: &str, keep: usize) {
    let rt = &*ctx.runtime;
    let all = match rt.list_managed(&ctx.agent).await {
        Ok(all) => all,
        Err(e) => {
            warn!(service, error = %e, "cannot list containers to prune");
            return;
        }
    };
    let grouped = state::of_service(all, service);
    let stale: Vec<&ContainerInfo> = grouped.kept.iter().skip(keep).collect();
    for c in stale {
        info!(container = %c.name, version = %c.version(), "pruning kept container");
        if let Err(e) = super::remove_container(ctx, c).await {
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

#[cfg(test)]
#[path = "swap_tests.rs"]
mod tests;
