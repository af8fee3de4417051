//! The commands the controller sends (prepare, swap, rollback, inspect, and start-first's
//! [`retire`](start_first::retire)), each in its
//! own module, and what they share: the [`CommandContext`] (runtime, host name, defaults)
//! and the [`Job`] (command id, receipt time, progress reporting). Also the
//! [`reconcile`]iation run at start, which finishes or undoes an interrupted handover.
//!
//! [`hook`] runs a deploy hook in a one-off container.
//!
//! Commands are reconcilers over Docker state: each reads what runs, acts, and on any
//! failure leaves the previously running container running.

pub mod handover;
pub mod hook;
mod hook_exec;
pub mod inspect;
pub mod prepare;
pub mod reconcile;
pub mod record;
pub mod rollback;
pub mod spec;
pub mod start_first;
pub mod state;
pub mod swap;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use drover_shared::proto::{
    AgentMessage, CommandProgress, Fence, Phase, agent_message, command, command_result,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime, RuntimeError};
use crate::secrets::SecretsDir;

/// Default grace between SIGTERM and SIGKILL when a command gives none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// What every command needs from the agent.
pub struct CommandContext<R> {
    /// The container engine.
    pub runtime: Arc<R>,
    /// This host's name (the drover.agent label).
    pub agent: String,
    /// Stopped containers kept per service when a swap does not say.
    pub keep_previous: u32,
    /// Where file-delivered secrets live, one directory per container.
    pub secrets: SecretsDir,
    /// Which containers became ready once (read when the agent starts again).
    pub ready: record::ReadyRecords,
}

/// Removes a container and then its secrets directory (kept while the container exists,
/// so a rollback to it finds its files) and its ready record.
pub async fn remove_container<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    c: &ContainerInfo,
) -> Result<(), RuntimeError> {
    ctx.runtime.remove(&c.id).await?;
    remove_secrets(&ctx.secrets, &c.name).await;
    ctx.ready.forget(&c.name).await;
    Ok(())
}

/// Removes secrets directories of this agent whose container no longer exists (removed
/// behind the agent's back, or while it was down). `live` holds the names of the managed
/// containers; a directory is removed only when Docker knows no container of its name.
pub async fn remove_orphan_secrets<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    live: &HashSet<String>,
) {
    let store = ctx.secrets.clone();
    let (agent, names) = (ctx.agent.clone(), live.clone());
    let Ok(orphans) = tokio::task::spawn_blocking(move || store.orphans(&agent, &names)).await
    else {
        return;
    };
    for entry in orphans {
        // Unfinished writes start with '.'; other entries are container names.
        if !entry.starts_with('.') && !matches!(ctx.runtime.inspect(&entry).await, Ok(None)) {
            continue;
        }
        let store = ctx.secrets.clone();
        let name = entry.clone();
        match tokio::task::spawn_blocking(move || store.remove_orphan(&name)).await {
            Ok(Ok(())) => info!(
                entry,
                "removed the secrets of a container that no longer exists"
            ),
            Ok(Err(e)) => warn!(entry, error = %e, "could not remove orphaned secrets"),
            Err(e) => warn!(entry, error = %e, "removing orphaned secrets failed"),
        }
    }
}

/// Removes the secrets directory of `container` (if any); failures are logged.
pub async fn remove_secrets(secrets: &SecretsDir, container: &str) {
    let store = secrets.clone();
    let name = container.to_string();
    let removed = tokio::task::spawn_blocking(move || store.remove(&name)).await;
    match removed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(container, dir = %secrets.root().display(), error = %e, "could not remove the container's secrets directory")
        }
        Err(e) => warn!(container, error = %e, "removing the secrets directory failed"),
    }
}

/// One command being executed: who it is and where its progress goes.
pub struct Job {
    /// The command id.
    pub command_id: String,
    /// When the agent received it (elapsed and ready-after times count from here).
    pub received: Instant,
    /// The uplink to the controller; `None` in tests.
    uplink: Option<mpsc::Sender<AgentMessage>>,
}

impl Job {
    /// A job for `command_id`, received now.
    pub fn new(command_id: &str, uplink: Option<mpsc::Sender<AgentMessage>>) -> Self {
        Self {
            command_id: command_id.to_string(),
            received: Instant::now(),
            uplink,
        }
    }

    /// Reports a phase change. Progress is best effort: dropped when the uplink is full.
    pub fn phase(&self, phase: Phase, message: impl Into<String>) {
        self.send(CommandProgress {
            command_id: self.command_id.clone(),
            phase: phase as i32,
            message: message.into(),
            current_bytes: 0,
            total_bytes: 0,
        });
    }

    /// Reports pull progress.
    pub fn bytes(&self, message: &str, current: u64, total: u64) {
        self.send(CommandProgress {
            command_id: self.command_id.clone(),
            phase: Phase::Pulling as i32,
            message: message.to_string(),
            current_bytes: current,
            total_bytes: total,
        });
    }

    fn send(&self, progress: CommandProgress) {
        if let Some(tx) = &self.uplink {
            let _ = tx.try_send(AgentMessage {
                body: Some(agent_message::Body::Progress(progress)),
            });
        }
    }

    /// Milliseconds since receipt.
    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.received.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The service a command acts on, when it must be serialized with others of that service.
pub fn service_of(kind: &command::Kind) -> Option<&str> {
    match kind {
        command::Kind::Swap(s) => s.spec.as_ref().map(|s| s.service.as_str()),
        command::Kind::Rollback(r) => Some(r.service.as_str()),
        command::Kind::Retire(r) => Some(r.service.as_str()),
        command::Kind::Prepare(_) | command::Kind::Inspect(_) | command::Kind::RunHook(_) => None,
    }
}

/// A short name of the command kind, for logs.
pub fn kind_name(kind: &command::Kind) -> &'static str {
    match kind {
        command::Kind::Prepare(_) => "prepare",
        command::Kind::Swap(_) => "swap",
        command::Kind::Rollback(_) => "rollback",
        command::Kind::Retire(_) => "retire",
        command::Kind::Inspect(_) => "inspect",
        command::Kind::RunHook(_) => "run_hook",
    }
}

/// Work a command leaves for after its result is sent: nothing the controller waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tidy {
    /// Remove the stopped containers of `service` beyond the newest `keep`.
    Prune {
        /// The service swapped.
        service: String,
        /// Stopped containers it keeps for rollback.
        keep: usize,
    },
}

impl Tidy {
    /// Does the work; failures are logged (the command's result is already out).
    pub async fn run<R: ContainerRuntime>(self, ctx: &CommandContext<R>) {
        match self {
            Tidy::Prune { service, keep } => swap::prune(ctx, &service, keep).await,
        }
    }
}

/// Runs one command to its output or failure, and says what is left to tidy once its
/// result is sent.
pub async fn execute<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    fence: &Fence,
    kind: command::Kind,
) -> Result<(command_result::Output, Option<Tidy>), CommandFailure> {
    use command_result::Output;
    let plain = |o: Output| (o, None);
    match kind {
        command::Kind::Prepare(p) => prepare::prepare(ctx, job, p)
            .await
            .map(Output::Prepare)
            .map(plain),
        command::Kind::Swap(s) => {
            // A stage-only command adds a container; its swap prunes.
            let staging = !s.stage_for_command.is_empty();
            let tidy = Tidy::Prune {
                service: s
                    .spec
                    .as_ref()
                    .map(|s| s.service.clone())
                    .unwrap_or_default(),
                keep: if s.keep_previous == 0 {
                    ctx.keep_previous
                } else {
                    s.keep_previous
                } as usize,
            };
            let out = swap::swap(ctx, job, fence, s).await?;
            Ok((Output::Swap(out), (!staging).then_some(tidy)))
        }
        command::Kind::Rollback(r) => rollback::rollback(ctx, job, r)
            .await
            .map(Output::Rollback)
            .map(plain),
        command::Kind::Retire(r) => start_first::retire(ctx, job, r)
            .await
            .map(Output::Retire)
            .map(plain),
        command::Kind::Inspect(i) => inspect::inspect(ctx, &i.service)
            .await
            .map(Output::Inspect)
            .map(plain),
        command::Kind::RunHook(h) => hook::run_hook(ctx, job, fence, h)
            .await
            .map(Output::RunHook)
            .map(plain),
    }
}
