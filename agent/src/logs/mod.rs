//! Container logs sent up the controller stream on request ([`LogTails`]).
//!
//! A log stream is not a command: it is not fenced or remembered, and it lives only as
//! long as the controller stream it was asked on (the session owns its tasks and aborts
//! them when it ends). Each stream sends at most `window` chunks before the controller
//! acknowledges one, so a slow operator slows the reading of the Docker log instead of
//! filling memory; a cancel (the operator went away) stops it at once. Every line is
//! redacted of the secret values the container was given before it leaves the host.

pub mod lines;

use std::collections::HashMap;
use std::sync::Arc;

use drover_shared::proto::{AgentMessage, LogChunk, LogLine, LogsRequest, agent_message};
use futures::{FutureExt, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{Instrument, debug, info, info_span};

use crate::commands::CommandContext;
use crate::runtime::{ContainerInfo, ContainerRuntime, LogOutput, LogsQuery};
use lines::{Chunker, LineSplitter, Redactor};

/// Chunks in flight per log stream when the request does not say.
pub const DEFAULT_WINDOW: u32 = 4;
/// Most chunks in flight per log stream, whatever the request says.
pub const MAX_WINDOW: u32 = 64;

/// The log streams of one controller session.
#[derive(Default)]
pub struct LogTails {
    /// One task per stream; dropping the set aborts them all.
    tasks: JoinSet<String>,
    /// Credit and abort handle per stream id.
    streams: HashMap<String, (Arc<Semaphore>, AbortHandle)>,
}

impl LogTails {
    /// Starts sending the logs `req` asks for up `uplink` (the session's stream).
    pub fn start<R: ContainerRuntime>(
        &mut self,
        ctx: Arc<CommandContext<R>>,
        req: LogsRequest,
        uplink: mpsc::Sender<AgentMessage>,
    ) {
        let window = match req.window {
            0 => DEFAULT_WINDOW,
            w => w.min(MAX_WINDOW),
        };
        let credit = Arc::new(Semaphore::new(window as usize));
        let id = req.stream_id.clone();
        if let Some((_, old)) = self.streams.remove(&id) {
            old.abort();
        }
        let span = info_span!("logs", stream = %id, service = %req.service, deployment = %req.deployment_id, follow = req.follow);
        let task = {
            let credit = credit.clone();
            async move {
                let id = req.stream_id.clone();
                let sender = ChunkSender {
                    id: id.clone(),
                    credit,
                    uplink,
                };
                // The last lines travel with the end: one message for a short tail.
                let (rest, error) = match send_logs(&ctx, &req, &sender).await {
                    Ok(rest) => (rest, String::new()),
                    Err(Stop::Failed(why)) => (vec![], why),
                    Err(Stop::Gone) => return id,
                };
                let _ = sender.send(rest, true, error).await;
                debug!("log stream finished");
                id
            }
            .instrument(span)
        };
        let handle = self.tasks.spawn(task);
        self.streams.insert(id, (credit, handle));
    }

    /// The controller handed on `chunks` more chunks of `stream_id`.
    pub fn ack(&mut self, stream_id: &str, chunks: u32) {
        if let Some((credit, _)) = self.streams.get(stream_id) {
            credit.add_permits((chunks.min(MAX_WINDOW)) as usize);
        }
    }

    /// Stops `stream_id` (the operator went away).
    pub fn cancel(&mut self, stream_id: &str) {
        if let Some((_, task)) = self.streams.remove(stream_id) {
            task.abort();
            info!(stream = %stream_id, "log stream cancelled by the controller; stopped reading");
        }
    }

    /// Waits for a stream to finish and forgets it; pending while none runs.
    pub async fn reap(&mut self) {
        match self.tasks.join_next().await {
            Some(Ok(id)) => {
                self.streams.remove(&id);
            }
            Some(Err(_)) => {}
            None => std::future::pending().await,
        }
    }

    /// Stops every stream and waits until their tasks are gone (they hold the uplink).
    pub async fn shutdown(&mut self) {
        self.streams.clear();
        self.tasks.shutdown().await;
    }
}

/// Why sending stopped early.
enum Stop {
    /// The logs could not be read: the reason, for the operator.
    Failed(String),
    /// The stream to the controller is gone; nothing more to say.
    Gone,
}

/// Sends chunks of one log stream, each after taking a unit of credit.
struct ChunkSender {
    id: String,
    credit: Arc<Semaphore>,
    uplink: mpsc::Sender<AgentMessage>,
}

impl ChunkSender {
    async fn send(&self, lines: Vec<LogLine>, end: bool, error: String) -> Result<(), Stop> {
        self.credit
            .acquire()
            .await
            .map_err(|_| Stop::Gone)?
            .forget();
        let chunk = LogChunk {
            stream_id: self.id.clone(),
            lines,
            end,
            error,
        };
        let message = AgentMessage {
            body: Some(agent_message::Body::LogChunk(chunk)),
        };
        self.uplink.send(message).await.map_err(|_| Stop::Gone)
    }
}

/// Sends the log of every container `req` names, oldest first; only the last one is
/// followed, and only while it runs. Returns the last lines read, not sent yet.
async fn send_logs<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    req: &LogsRequest,
    sender: &ChunkSender,
) -> Result<Vec<LogLine>, Stop> {
    let containers = pick(ctx, req).await?;
    let last = containers.len().saturating_sub(1);
    let mut rest = vec![];
    for (i, c) in containers.iter().enumerate() {
        if !rest.is_empty() {
            sender
                .send(std::mem::take(&mut rest), false, String::new())
                .await?;
        }
        let secrets = ctx.secrets.clone();
        let name = c.name.clone();
        let values = tokio::task::spawn_blocking(move || secrets.values_of(&name))
            .await
            .unwrap_or_default();
        let query = LogsQuery {
            tail: (req.tail > 0).then_some(req.tail),
            since_unix_s: (req.since_unix_s > 0).then_some(req.since_unix_s),
            follow: req.follow && i == last && c.is_active(),
        };
        rest = send_container(ctx, c, query, &Redactor::new(values), sender).await?;
    }
    Ok(rest)
}

/// The containers whose logs `req` asks for.
async fn pick<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    req: &LogsRequest,
) -> Result<Vec<ContainerInfo>, Stop> {
    let all = ctx
        .runtime
        .list_managed(&ctx.agent)
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let mut of_service: Vec<ContainerInfo> = all
        .iter()
        .filter(|c| c.service() == req.service)
        .cloned()
        .collect();
    if !req.deployment_id.is_empty() {
        of_service.retain(|c| c.deployment() == req.deployment_id);
        of_service.sort_by_key(|c| c.created);
        if of_service.is_empty() {
            return Err(Stop::Failed(format!(
                "host {} has no container of service {} from deployment {} (a container that failed its swap is removed; its last lines are kept with the deployment)",
                ctx.agent, req.service, req.deployment_id
            )));
        }
        return Ok(of_service);
    }
    let current = of_service
        .iter()
        .find(|c| c.is_active())
        .or_else(|| of_service.iter().max_by_key(|c| c.last_run()));
    match current {
        Some(c) => Ok(vec![c.clone()]),
        None => {
            let mut services: Vec<&str> = all.iter().map(ContainerInfo::service).collect();
            services.sort_unstable();
            services.dedup();
            Err(Stop::Failed(format!(
                "host {} has no container of service {}; it has containers of: {}",
                ctx.agent,
                req.service,
                if services.is_empty() {
                    "none".to_string()
                } else {
                    services.join(", ")
                }
            )))
        }
    }
}

/// Reads one container's log into chunks, sending a chunk when it is full or when the
/// engine has nothing more ready at the moment; returns the lines read after the last
/// chunk sent (the caller sends them, with the end of the stream if nothing follows).
async fn send_container<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    c: &ContainerInfo,
    query: LogsQuery,
    redactor: &Redactor,
    sender: &ChunkSender,
) -> Result<Vec<LogLine>, Stop> {
    let mut frames = ctx.runtime.logs(&c.id, query).await.map_err(|e| {
        Stop::Failed(format!(
            "cannot read the log of container {} on host {}: {e}",
            c.name, ctx.agent
        ))
    })?;
    let (mut out, mut err) = (LineSplitter::default(), LineSplitter::default());
    let mut chunk = Chunker::default();
    let line = |output: LogOutput, text: String| LogLine {
        container: c.name.clone(),
        version: c.version().to_string(),
        source: lines::source(output) as i32,
        text: redactor.redact(text),
    };
    loop {
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            None => {
                if !chunk.is_empty() {
                    sender.send(chunk.take(), false, String::new()).await?;
                }
                frames.next().await
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(f)) => f,
            Some(Err(e)) => {
                return Err(Stop::Failed(format!(
                    "reading the log of container {} on host {} failed: {e}",
                    c.name, ctx.agent
                )));
            }
        };
        let splitter = match frame.output {
            LogOutput::Stdout => &mut out,
            LogOutput::Stderr => &mut err,
        };
        for text in splitter.push(&frame.bytes) {
            if let Some(full) = chunk.push(line(frame.output, text)) {
                sender.send(full, false, String::new()).await?;
            }
        }
    }
    for (output, splitter) in [(LogOutput::Stdout, &mut out), (LogOutput::Stderr, &mut err)] {
        if let Some(text) = splitter.finish()
            && let Some(full) = chunk.push(line(output, text))
        {
            sender.send(full, false, String::new()).await?;
        }
    }
    Ok(chunk.take())
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
