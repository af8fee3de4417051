//! RunHook: one deploy hook as a one-off container with the service's env, secrets,
//! network and mounts. Create, start, wait up to the timeout (then kill), collect the
//! last [`OUTPUT_BYTES`] of stdout and stderr with the hook's secrets redacted, remove.
//! With `exec` the hook runs inside the service's new container instead
//! ([`super::hook_exec`]), with the same timeout, output tail and result.
//!
//! The container is labelled `drover.hook` and carries no `drover.service` label, so it
//! is never taken for one of the service's containers. It is removed on every path out of
//! [`run_hook`]; one left by an agent that died mid-hook is killed and removed by
//! [`remove_leftovers`] when the agent starts again.

use std::collections::VecDeque;
use std::time::Duration;

use drover_shared::image::ImageRef;
use drover_shared::labels;
use drover_shared::proto::{Fence, RunHookCommand, RunHookResult};
use futures::StreamExt;
use tokio::time::Instant;
use tracing::{info, warn};

use super::spec::{self, Origin};
use super::{CommandContext, Job};
use crate::error::CommandFailure;
use crate::logs::lines::{LineSplitter, Redactor};
use crate::runtime::{
    ContainerRuntime, LogFrames, LogOutput, LogsQuery, RegistryCredentials, RunState,
};
use crate::secrets;

/// How much of a hook's output is kept: the end of it.
pub const OUTPUT_BYTES: usize = 64 * 1024;
/// A hook's timeout when the command gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How often a running hook container is looked at.
pub(super) const POLL: Duration = Duration::from_millis(25);

/// Runs a hook to its exit (or its timeout) and removes its container.
pub async fn run_hook<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    fence: &Fence,
    cmd: RunHookCommand,
) -> Result<RunHookResult, CommandFailure> {
    let spec = cmd.spec.as_ref().ok_or_else(|| {
        CommandFailure::invalid(format!("hook {} without a container spec", cmd.hook))
    })?;
    let checked = spec::check(spec)?;
    let redactor = Redactor::new(
        cmd.secrets
            .iter()
            .flat_map(|s| &s.values)
            .map(|v| String::from_utf8_lossy(&v.value).into_owned())
            .collect(),
    );
    let timeout = if cmd.timeout_ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(cmd.timeout_ms)
    };
    if cmd.exec {
        return super::hook_exec::run(ctx, &cmd.hook, &checked, &redactor, timeout).await;
    }
    let service = checked.service.as_str();
    let rt = &*ctx.runtime;
    let creds = super::prepare::credentials(cmd.auth.clone(), &checked.image);
    ensure_image(ctx, &checked.image, creds.as_ref()).await?;
    let delivery = secrets::plan(cmd.secrets.as_ref(), service, &checked.env, &checked.mounts)?;
    let origin = Origin {
        agent: &ctx.agent,
        command_id: &job.command_id,
        fence,
        digest: checked.image.digest.as_deref().unwrap_or(""),
    };
    let mut create = spec::create_spec(&checked, &origin);
    create.labels.remove(labels::SERVICE);
    create
        .labels
        .insert(labels::HOOK.to_string(), cmd.hook.clone());
    create
        .labels
        .insert(labels::HOOK_SERVICE.to_string(), service.to_string());
    create.name = spec::container_name(
        &ctx.agent,
        service,
        &format!("hook-{}", cmd.hook),
        &spec::random_suffix(),
    );
    info!(container = %create.name, hook = %cmd.hook, image = %create.image, "running hook");
    let (id, _) = super::swap::create_with_secrets(ctx, &mut create, delivery).await?;
    let outcome = run_to_exit(rt, &id, timeout).await;
    let output = match &outcome {
        Ok(_) => collect_output(rt, &id, &redactor).await,
        Err(_) => Output::default(),
    };
    // Whatever happened, the container goes (killed first if it still runs).
    if let Err(e) = rt.stop(&id, Duration::ZERO).await {
        warn!(container = %create.name, error = %e, "could not kill the hook container");
    }
    if let Err(e) = rt.remove(&id).await {
        warn!(container = %create.name, error = %e, "could not remove the hook container");
    }
    super::remove_secrets(&ctx.secrets, &create.name).await;
    Ok(outcome?.result(output))
}

/// Pulls the hook's image when it is not on the host (a hook image other than the
/// release's, which Prepare already pulled).
async fn ensure_image<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    image: &ImageRef,
    creds: Option<&RegistryCredentials>,
) -> Result<(), CommandFailure> {
    if ctx.runtime.image(&image.to_string()).await?.is_some() {
        return Ok(());
    }
    info!(image = %image, "pulling the hook's image");
    ctx.runtime
        .pull(image, creds, &mut |_| {})
        .await
        .map_err(|e| {
            CommandFailure::new(
                e.kind(),
                format!(
                    "the hook's image {image} is not on host {} and could not be pulled: {e}",
                    ctx.agent
                ),
            )
        })
}

/// How a hook's run ended.
pub(super) struct Ran {
    /// The process's exit code (-1 when it was killed at its timeout).
    pub exit_code: i64,
    /// It was still running at its timeout.
    pub timed_out: bool,
    /// From its start to its end (or its kill).
    pub took: Duration,
}

impl Ran {
    /// The wire result with `output`.
    pub fn result(self, output: Output) -> RunHookResult {
        RunHookResult {
            exit_code: self.exit_code,
            timed_out: self.timed_out,
            output: output.text,
            truncated: output.truncated,
            duration_ms: u64::try_from(self.took.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Starts the container and waits for it to exit, killing it at `timeout`.
async fn run_to_exit<R: ContainerRuntime>(
    rt: &R,
    id: &str,
    timeout: Duration,
) -> Result<Ran, CommandFailure> {
    let started = Instant::now();
    rt.start(id).await?;
    let deadline = started + timeout;
    loop {
        let info = rt.inspect(id).await?.ok_or_else(|| {
            CommandFailure::internal(format!("hook container {id} vanished while it ran"))
        })?;
        if matches!(info.state, RunState::Exited | RunState::Dead) {
            return Ok(Ran {
                exit_code: info.exit_code,
                timed_out: false,
                took: started.elapsed(),
            });
        }
        if Instant::now() >= deadline {
            rt.stop(id, Duration::ZERO).await?;
            return Ok(Ran {
                exit_code: -1,
                timed_out: true,
                took: started.elapsed(),
            });
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// A hook's output as kept.
#[derive(Debug, Default)]
pub(super) struct Output {
    text: String,
    truncated: bool,
}

impl Output {
    /// The lines kept.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// The end of the container's stdout and stderr, line by line as written, redacted.
async fn collect_output<R: ContainerRuntime>(rt: &R, id: &str, redactor: &Redactor) -> Output {
    let mut tail = Tail::default();
    let query = LogsQuery {
        tail: None,
        since_unix_s: None,
        follow: false,
    };
    match rt.logs(id, query).await {
        Ok(frames) => {
            read_frames(frames, redactor, None, &mut tail).await;
        }
        Err(e) => tail.push(format!("[the hook's output could not be read: {e}]")),
    }
    tail.finish()
}

/// Reads `frames` into `tail` line by line as written, redacted, until they end (or
/// fail) or `deadline` passes; whether they ended.
pub(super) async fn read_frames(
    mut frames: LogFrames,
    redactor: &Redactor,
    deadline: Option<Instant>,
    tail: &mut Tail,
) -> bool {
    let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
    let mut ended = true;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, frames.next()).await {
                Ok(next) => next,
                Err(_) => {
                    ended = false;
                    break;
                }
            },
            None => frames.next().await,
        };
        match next {
            Some(Ok(f)) => {
                let splitter = match f.output {
                    LogOutput::Stdout => &mut out,
                    LogOutput::Stderr => &mut err,
                };
                for line in splitter.push(&f.bytes) {
                    tail.push(redactor.redact(line));
                }
            }
            Some(Err(e)) => {
                tail.push(format!("[reading the hook's output failed: {e}]"));
                break;
            }
            None => break,
        }
    }
    for line in [out.finish(), err.finish()].into_iter().flatten() {
        tail.push(redactor.redact(line));
    }
    ended
}

/// The last [`OUTPUT_BYTES`] of lines (redacted before they are cut, so no part of a
/// secret survives at the cut).
#[derive(Debug, Default)]
pub(super) struct Tail {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: bool,
}

impl Tail {
    /// Adds a line (already redacted), dropping the oldest beyond [`OUTPUT_BYTES`].
    pub fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > OUTPUT_BYTES && self.lines.len() > 1 {
            if let Some(old) = self.lines.pop_front() {
                self.bytes -= old.len() + 1;
                self.dropped = true;
            }
        }
    }

    /// The lines kept, newline-terminated.
    pub fn finish(self) -> Output {
        let mut text = String::with_capacity(self.bytes);
        for l in &self.lines {
            text.push_str(l);
            text.push('\n');
        }
        Output {
            text,
            truncated: self.dropped,
        }
    }
}

/// Kills and removes every hook container of this agent (left by an agent that died
/// mid-hook; no command waits for it any more), and its secrets.
pub async fn remove_leftovers<R: ContainerRuntime>(ctx: &CommandContext<R>) {
    let containers = match ctx.runtime.list_managed(&ctx.agent).await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot list containers to remove left-over hook containers");
            return;
        }
    };
    for c in containers
        .iter()
        .filter(|c| c.labels.contains_key(labels::HOOK))
    {
        warn!(container = %c.name, hook = %c.labels[labels::HOOK], "removing a hook container left by an interrupted run");
        if let Err(e) = ctx.runtime.stop(&c.id, Duration::ZERO).await {
            warn!(container = %c.name, error = %e, "could not kill the left-over hook container");
        }
        match ctx.runtime.remove(&c.id).await {
            Ok(()) => super::remove_secrets(&ctx.secrets, &c.name).await,
            Err(e) => {
                warn!(container = %c.name, error = %e, "could not remove the left-over hook container")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_64_kib_of_whole_lines() {
        let mut t = Tail::default();
        for i in 0..10_000 {
            t.push(format!("line {i:05} {}", "x".repeat(20)));
        }
        let out = t.finish();
        assert!(out.truncated);
        assert!(out.text.len() <= OUTPUT_BYTES);
        assert!(out.text.len() > OUTPUT_BYTES - 64);
        assert!(out.text.starts_with("line "));
        assert!(out.text.ends_with("line 09999 xxxxxxxxxxxxxxxxxxxx\n"));
    }

    #[test]
    fn secrets_are_redacted_before_the_cut() {
        let r = Redactor::new(vec!["hunter2-password".into()]);
        let mut t = Tail::default();
        t.push(r.redact("connecting with hunter2-password".into()));
        let out = t.finish();
        assert_eq!(out.text, "connecting with [redacted]\n");
        assert!(!out.truncated);
    }
}
