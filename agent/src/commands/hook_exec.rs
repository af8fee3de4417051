//! RunHook with `exec` (`run_in = "exec"`, `after_batch` only): the hook runs inside the
//! service's new container on this host (`docker exec`), with the container's own env,
//! secrets, network and mounts plus the hook's `DROVER_*` variables. Same timeout, output
//! tail (secrets redacted), exit code and result as a one-off hook container; the
//! executor gives it the same idempotency by command id and epoch fencing.
//!
//! Docker cannot kill an exec. At the timeout the hook stops reading the exec's output
//! (the exec is abandoned: the hook fails as timed out) and ends the process with
//! `kill -KILL PID`, run by a second exec in the same container, PID being the process's
//! id in the container's namespace. When that cannot work (the image has no `kill`, as
//! a `FROM scratch` image; the PID cannot be read because the agent does not share
//! dockerd's PID namespace) the process runs on inside the container, the output says
//! so, and it ends with the container: the failed check puts the host back on its
//! previous version, which stops the new container. An agent that dies mid-exec leaves
//! the process likewise; the controller fails the hook (it is never resent) and the host
//! goes back the same way.

use std::time::Duration;

use drover_shared::proto::{ErrorKind, RunHookResult};
use tokio::time::Instant;
use tracing::{info, warn};

use super::CommandContext;
use super::hook::{POLL, Ran, Tail, read_frames};
use super::spec::CheckedSpec;
use super::state;
use crate::error::CommandFailure;
use crate::logs::lines::Redactor;
use crate::runtime::{ContainerInfo, ContainerRuntime, ExecSpec, RunState};

/// How long the `kill` exec (and the killed process's end) may take.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Runs hook `hook` (argv and env from `checked`) in the service's new container.
pub(super) async fn run<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    hook: &str,
    checked: &CheckedSpec,
    redactor: &Redactor,
    timeout: Duration,
) -> Result<RunHookResult, CommandFailure> {
    let argv = checked
        .cmd
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| CommandFailure::invalid(format!("hook {hook}: exec needs a command")))?;
    let rt = &*ctx.runtime;
    let container = new_container(ctx, hook, checked).await?;
    info!(container = %container.name, hook, "running hook in the service's container");
    let spec = ExecSpec {
        argv,
        env: checked.env.clone(),
    };
    let started = Instant::now();
    let deadline = started + timeout;
    let run = rt.exec(&container.id, &spec).await?;
    let mut tail = Tail::default();
    let ended = read_frames(run.output, redactor, Some(deadline), &mut tail).await;
    let exit_code = if ended {
        exit_of(rt, &run.id, deadline).await?
    } else {
        None
    };
    let ran = match exit_code {
        Some(exit_code) => Ran {
            exit_code,
            timed_out: false,
            took: started.elapsed(),
        },
        None => {
            let took = started.elapsed();
            warn!(container = %container.name, hook, "the hook timed out; killing it");
            tail.push(kill(rt, &container, &run.id).await);
            Ran {
                exit_code: -1,
                timed_out: true,
                took,
            }
        }
    };
    Ok(ran.result(tail.finish()))
}

/// The service's running container on this host, which must be the new one (of the
/// hook's image digest).
async fn new_container<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    hook: &str,
    checked: &CheckedSpec,
) -> Result<ContainerInfo, CommandFailure> {
    let service = checked.service.as_str();
    let services = state::group(ctx.runtime.list_managed(&ctx.agent).await?);
    let current = services
        .get(service)
        .and_then(|s| s.current())
        .filter(|c| c.state == RunState::Running)
        .ok_or_else(|| {
            CommandFailure::new(
                ErrorKind::ContainerExited,
                format!(
                    "hook {hook}: no container of service {service} runs on host {} to exec in",
                    ctx.agent
                ),
            )
        })?;
    if let Some(digest) = &checked.image.digest
        && current.digest() != digest.as_str()
    {
        return Err(CommandFailure::invalid(format!(
            "hook {hook}: the running container {} of service {service} on host {} is {} ({}), not the new {digest}; the exec was not run",
            current.name,
            ctx.agent,
            current.version(),
            current.digest(),
        )));
    }
    Ok(current.clone())
}

/// Waits until the exec `id` has exited, up to `deadline`; its exit code, or `None`
/// when it still runs at the deadline.
async fn exit_of<R: ContainerRuntime>(
    rt: &R,
    id: &str,
    deadline: Instant,
) -> Result<Option<i64>, CommandFailure> {
    loop {
        let status = rt.exec_status(id).await?;
        if !status.running {
            return Ok(Some(status.exit_code.unwrap_or(-1)));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Ends the timed-out exec `id` with `kill -KILL` run by a second exec; what happened,
/// as a line of the hook's output.
async fn kill<R: ContainerRuntime>(rt: &R, container: &ContainerInfo, id: &str) -> String {
    let why_not = match try_kill(rt, container, id).await {
        Ok(Some(pid)) => {
            return format!(
                "[timed out: killed (kill -KILL {pid} in container {})]",
                container.name
            );
        }
        Ok(None) => return "[timed out; the process exited as it was to be killed]".into(),
        Err(why) => why,
    };
    warn!(container = %container.name, why = %why_not, "a timed-out exec hook could not be killed");
    format!(
        "[timed out; the process could not be killed ({why_not}): Docker cannot kill an exec by itself, so it runs on in container {} until it exits or the container stops (the failed check puts the host back on its previous version, which stops this container)]",
        container.name
    )
}

/// Kills the exec `id`; its pid in the container (`None`: it had exited), or why it
/// could not.
async fn try_kill<R: ContainerRuntime>(
    rt: &R,
    container: &ContainerInfo,
    id: &str,
) -> Result<Option<u32>, String> {
    let status = rt.exec_status(id).await.map_err(|e| e.to_string())?;
    if !status.running {
        return Ok(None);
    }
    let pid = status
        .container_pid
        .ok_or("its process id in the container cannot be read from this agent's /proc")?;
    let spec = ExecSpec {
        argv: vec!["kill".into(), "-KILL".into(), pid.to_string()],
        env: vec![],
    };
    let killer = rt
        .exec(&container.id, &spec)
        .await
        .map_err(|e| format!("`kill` could not be run in the container: {e}"))?;
    let deadline = Instant::now() + KILL_WAIT;
    let mut said = Tail::default();
    read_frames(
        killer.output,
        &Redactor::new(vec![]),
        Some(deadline),
        &mut said,
    )
    .await;
    let said = said.finish();
    match exit_of(rt, &killer.id, deadline).await {
        Ok(Some(0)) => {}
        Ok(Some(code)) => {
            return Err(format!(
                "`kill` exited with code {code}: {}",
                said.text().trim()
            ));
        }
        Ok(None) => return Err("`kill` did not finish".into()),
        Err(e) => return Err(e.message),
    }
    match exit_of(rt, id, deadline).await {
        Ok(Some(_)) => Ok(Some(pid)),
        Ok(None) => Err(format!("process {pid} still runs after kill -KILL")),
        Err(e) => Err(e.message),
    }
}

#[cfg(test)]
#[path = "hook_exec_tests.rs"]
mod tests;
