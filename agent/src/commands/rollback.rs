//! Rollback: return a service to one of its kept (stopped) containers. Never pulls: the
//! image is there because the container is. Uses the same handover as swap, so a kept
//! container that does not become ready is stopped again and the running one restored.

use drover_shared::proto::{ErrorKind, RollbackCommand, RollbackResult};
use tracing::info;

use super::handover::{self, Handover, OnFailure};
use super::swap::ms_or;
use super::{CommandContext, DEFAULT_STOP_GRACE, Job, spec, start_first, state};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime};

/// Runs a rollback.
pub async fn rollback<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    cmd: RollbackCommand,
) -> Result<RollbackResult, CommandFailure> {
    spec::check_service(&cmd.service)?;
    let rt = &*ctx.runtime;
    let containers = state::of_service(rt.list_managed(&ctx.agent).await?, &cmd.service);
    let start_first = cmd.start_first.is_some();
    if start_first
        && let Some(running) = containers
            .active
            .iter()
            .find(|c| !cmd.to_version.is_empty() && c.version() == cmd.to_version)
    {
        // A start-first handover left it running next to the other: it serves again as
        // soon as the load balancer points back at it, which the retire then finishes.
        info!(container = %running.name, version = %running.version(), "already running next to the other container");
        return Ok(RollbackResult {
            current: Some(containers.to_proto()),
            host_port: start_first::published_port(running),
            serving_container: running.name.clone(),
            ..Default::default()
        });
    }
    let target = pick_target(&containers, &cmd.to_version).ok_or_else(|| {
        let kept: Vec<&str> = containers.kept.iter().map(ContainerInfo::version).collect();
        let wanted = if cmd.to_version.is_empty() {
            "with a version other than the running one".to_string()
        } else {
            format!("with version {}", cmd.to_version)
        };
        CommandFailure::new(
            ErrorKind::NothingToRollBack,
            format!(
                "service {} has no kept container {wanted} on host {} (kept: [{}]); deploy the wanted version instead",
                cmd.service,
                ctx.agent,
                kept.join(", ")
            ),
        )
    })?;
    info!(container = %target.name, version = %target.version(), start_first, "rolling back");
    start_first::check_ports(&ctx.agent, &target.ports, &containers.active, start_first)?;
    let done = handover::hand_over(
        ctx,
        job,
        Handover {
            service: &cmd.service,
            candidate: target,
            outgoing: &containers.active,
            probe: cmd.readiness.as_ref(),
            stop_grace: ms_or(cmd.stop_timeout_ms, DEFAULT_STOP_GRACE),
            on_failure: OnFailure::Keep,
            start_first,
        },
    )
    .await?;
    Ok(RollbackResult {
        current: Some(handover::service_state(ctx, &cmd.service).await),
        rolled_back_container: containers
            .current()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        ready_after_ms: handover::ms(done.ready_after),
        steps: Some(done.steps),
        host_port: if start_first {
            start_first::published_port(target)
        } else {
            0
        },
        serving_container: target.name.clone(),
    })
}

/// The kept container to return to: the newest with `to_version`, or (when empty) the
/// most recently run one whose version differs from the running one's.
pub fn pick_target<'a>(
    c: &'a state::ServiceContainers,
    to_version: &str,
) -> Option<&'a ContainerInfo> {
    let running = c.current().map(ContainerInfo::version);
    c.kept.iter().find(|k| {
        if to_version.is_empty() {
            Some(k.version()) != running
        } else {
            k.version() == to_version
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::state::tests::container;
    use crate::runtime::RunState;

    #[test]
    fn picks_newest_other_version_or_the_named_one() {
        let c = state::ServiceContainers::new(
            "web",
            vec![
                container("v3", "web", "v3", RunState::Running, 30),
                container("v3-old", "web", "v3", RunState::Exited, 25),
                container("v2", "web", "v2", RunState::Exited, 20),
                container("v1", "web", "v1", RunState::Exited, 10),
            ],
        );
        assert_eq!(pick_target(&c, "").map(|k| k.id.as_str()), Some("v2"));
        assert_eq!(pick_target(&c, "v1").map(|k| k.id.as_str()), Some("v1"));
        assert!(pick_target(&c, "v9").is_none());
        let only_same = state::ServiceContainers::new(
            "web",
            vec![
                container("a", "web", "v3", RunState::Running, 30),
                container("b", "web", "v3", RunState::Exited, 20),
            ],
        );
        assert!(pick_target(&only_same, "").is_none());
    }
}
