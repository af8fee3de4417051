//! Container logs over the agent streams: [`AgentHub::open_logs`] asks one host for a
//! service's logs and returns a [`LogSubscription`] that yields its chunks.
//!
//! Flow control is by credit (see `LogsRequest` in `agent.proto`): the agent sends at most
//! [`LOG_WINDOW`] chunks before one is acknowledged, and the subscription acknowledges a
//! chunk only when its reader asks for the next one, i.e. once it has handed the previous
//! one on. The hub's own buffer per subscription is exactly that window, so routing a
//! chunk never waits and a slow reader never slows the host's other traffic. A stream
//! that closes (host lost or replaced) ends every subscription on it; a subscription that
//! is dropped tells the agent to stop reading.

use drover_proto::v1::{
    ControllerMessage, LogChunk, LogsAck, LogsCancel, LogsRequest, controller_message,
};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, debug, info_span, warn};

use super::{AgentHub, HubError, lock};

/// Chunks of one log stream in flight between an agent and its reader. With the agent's
/// chunk bound (32 KiB) this caps what a host has in flight per stream at 256 KiB.
pub const LOG_WINDOW: u32 = 8;

type Outbox = mpsc::Sender<Result<ControllerMessage, Status>>;

/// One host's log stream, as its reader sees it.
pub struct LogSubscription {
    /// The host.
    host: String,
    /// The id the agent knows the stream by.
    stream_id: String,
    /// Chunks routed here by the host's stream task.
    chunks: mpsc::Receiver<LogChunk>,
    /// The host's outbound queue, for acknowledgements and the cancel.
    outbox: Outbox,
    /// A chunk was handed out and is not acknowledged yet.
    unacked: bool,
    /// The agent said the stream ended: no cancel needed.
    ended: bool,
    hub: AgentHub,
}

impl AgentHub {
    /// Asks `host` for the logs `request` describes (its stream id and window are set
    /// here). Fails when the host is unknown or not connected.
    pub async fn open_logs(
        &self,
        host: &str,
        mut request: LogsRequest,
    ) -> Result<LogSubscription, HubError> {
        request.stream_id = uuid::Uuid::new_v4().to_string();
        request.window = LOG_WINDOW;
        let (tx, rx) = mpsc::channel(LOG_WINDOW as usize);
        let outbox = {
            let slot = self.slot(host).ok_or_else(|| HubError::UnknownHost {
                host: host.to_string(),
            })?;
            let mut slot = lock(&slot);
            let Some(outbox) = slot.outbox.clone() else {
                drop(slot);
                return Err(self.not_connected(host));
            };
            slot.logs.insert(request.stream_id.clone(), tx);
            outbox
        };
        let subscription = LogSubscription {
            host: host.to_string(),
            stream_id: request.stream_id.clone(),
            chunks: rx,
            outbox: outbox.clone(),
            unacked: false,
            ended: false,
            hub: self.clone(),
        };
        let message = ControllerMessage {
            body: Some(controller_message::Body::Logs(request)),
        };
        if outbox.send(Ok(message)).await.is_err() {
            return Err(self.not_connected(host));
        }
        Ok(subscription)
    }

    /// Hands a chunk from `host` to its subscription (never waits).
    pub(super) fn route_log(&self, host: &str, chunk: LogChunk) {
        let Some(slot) = self.slot(host) else { return };
        let mut slot = lock(&slot);
        let Some(tx) = slot.logs.get(&chunk.stream_id) else {
            debug!(host, stream = %chunk.stream_id, "log chunk for a stream nobody reads");
            return;
        };
        let end = chunk.end;
        let id = chunk.stream_id.clone();
        if let Err(e) = tx.try_send(chunk) {
            if matches!(e, mpsc::error::TrySendError::Full(_)) {
                warn!(host, stream = %id, "agent sent more log chunks than its window; ending the stream");
            }
            slot.logs.remove(&id);
        } else if end {
            slot.logs.remove(&id);
        }
    }
}

impl LogSubscription {
    /// The host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The next chunk (acknowledging the previous one); `None` when the host's stream
    /// closed before the agent ended the logs.
    pub async fn next(&mut self) -> Option<LogChunk> {
        if std::mem::take(&mut self.unacked) {
            let ack = ControllerMessage {
                body: Some(controller_message::Body::LogsAck(LogsAck {
                    stream_id: self.stream_id.clone(),
                    chunks: 1,
                })),
            };
            // A closed outbox means a closed stream: the receive below ends too.
            let _ = self.outbox.send(Ok(ack)).await;
        }
        let chunk = self.chunks.recv().await?;
        self.unacked = true;
        self.ended = chunk.end;
        Some(chunk)
    }
}

impl Drop for LogSubscription {
    fn drop(&mut self) {
        if let Some(slot) = self.hub.slot(&self.host) {
            lock(&slot).logs.remove(&self.stream_id);
        }
        if self.ended {
            return;
        }
        let cancel = Ok(ControllerMessage {
            body: Some(controller_message::Body::LogsCancel(LogsCancel {
                stream_id: self.stream_id.clone(),
            })),
        });
        if let Err(mpsc::error::TrySendError::Full(cancel)) = self.outbox.try_send(cancel) {
            // The queue is full (a busy host): deliver the cancel when there is room, so
            // the agent does not keep a tail open; bounded by the stream's own life.
            let outbox = self.outbox.clone();
            let span = info_span!("logs_cancel", host = %self.host, stream = %self.stream_id);
            tokio::spawn(
                async move {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(30),
                        outbox.send(cancel),
                    )
                    .await;
                }
                .instrument(span),
            );
        }
    }
}

#[cfg(test)]
#[path = "logs_tests.rs"]
mod tests;
