//! `docker exec` for deploy hooks that run inside the service's new container: create
//! the exec, start it with stdout and stderr attached, and inspect it for its exit code
//! and process id.
//!
//! Docker has no call to signal an exec. [`status`] therefore also reads the exec's
//! process id inside the container from the host's `/proc/PID/status` (`NSpid`), so the
//! hook can end a timed-out process with a `kill` run by a second exec.

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures::StreamExt;

use super::{DockerRuntime, log_frame};
use crate::runtime::{ExecRun, ExecSpec, ExecStatus, RuntimeError};

/// Creates and starts `spec` in `container`, its output attached.
pub(super) async fn start(
    rt: &DockerRuntime,
    container: &str,
    spec: &ExecSpec,
) -> Result<ExecRun, RuntimeError> {
    let docker = rt.client().await?;
    let program = spec.argv.first().map_or("", String::as_str);
    let op = format!("exec {program} in container {container}");
    let config = ExecConfig {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(false),
        tty: Some(false),
        cmd: Some(spec.argv.clone()),
        env: Some(spec.env.clone()),
        ..Default::default()
    };
    let created = docker
        .create_exec(container, config)
        .await
        .map_err(|e| rt.engine_error(op.clone(), e))?;
    let options = StartExecOptions {
        detach: false,
        tty: false,
        output_capacity: None,
    };
    let started = docker
        .start_exec(&created.id, Some(options))
        .await
        .map_err(|e| rt.engine_error(op.clone(), e))?;
    let StartExecResults::Attached { output, input } = started else {
        return Err(RuntimeError::Engine {
            op,
            message: "the engine started the exec detached, without its output".into(),
        });
    };
    let endpoint = rt.endpoint.clone();
    // The write half stays open as long as the output is read: closing it early may end
    // the upgraded connection on some engines.
    let output = output.map(move |chunk| {
        let _stdin = &input;
        log_frame(&endpoint, &op, chunk)
    });
    Ok(ExecRun {
        id: created.id,
        output: Box::pin(output),
    })
}

/// Whether the exec runs, its exit code, and its process id inside the container.
pub(super) async fn status(rt: &DockerRuntime, exec_id: &str) -> Result<ExecStatus, RuntimeError> {
    let docker = rt.client().await?;
    let info = docker
        .inspect_exec(exec_id)
        .await
        .map_err(|e| rt.engine_error(format!("inspect exec {exec_id}"), e))?;
    let running = info.running.unwrap_or(false);
    let container_pid = match info.pid.and_then(|p| u32::try_from(p).ok()) {
        Some(pid) if running && pid != 0 => namespaced_pid(pid).await,
        _ => None,
    };
    Ok(ExecStatus {
        running,
        exit_code: if running { None } else { info.exit_code },
        container_pid,
    })
}

/// The innermost PID namespace's id of host process `pid`, from `/proc/PID/status`.
async fn namespaced_pid(pid: u32) -> Option<u32> {
    let text = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
        .await
        .ok()?;
    innermost_pid(&text)
}

/// The last number of the `NSpid:` line of a `/proc/PID/status` text.
fn innermost_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::innermost_pid;

    #[test]
    fn the_innermost_namespace_pid_is_the_last_of_nspid() {
        let status = "Name:\tdemo-app\nPid:\t41234\nNSpid:\t41234\t17\nPPid:\t41200\n";
        assert_eq!(innermost_pid(status), Some(17));
        assert_eq!(innermost_pid("Name:\tx\nNSpid:\t900\n"), Some(900));
        assert_eq!(innermost_pid("Name:\tx\n"), None);
    }
}
