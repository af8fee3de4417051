//! The link to the controller: dial out (mutual TLS, or plaintext with `--insecure-dev`),
//! open the `Connect` stream, say hello, send heartbeats, run the commands that arrive,
//! send progress and results up; reconnect with jittered backoff when the stream breaks;
//! drain in-flight commands on shutdown.
//!
//! Commands outlive streams: they run in one [`JoinSet`] owned by [`Link::run`], and their
//! messages go through one uplink channel. Results that could not be sent wait in a small
//! outbox and go out first on the next stream.
//!
//! A controller that refuses this agent (`PERMISSION_DENIED` / `UNAUTHENTICATED`, e.g.
//! the host was removed) is logged with its message and retried slowly, never in a tight
//! loop. After a certificate renewal the link reconnects, once no command is in flight (or
//! after [`RECONNECT_DEFER_MAX`]), so the stream runs on the new certificate.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_shared::backoff::Backoff;
use drover_shared::proto::agent_channel_client::AgentChannelClient;
use drover_shared::proto::{
    AgentMessage, Command, CommandResult, ControllerMessage, ErrorKind, Heartbeat, Hello,
    agent_message, controller_message,
};
use drover_shared::tls::{self, SwappableCert};
use futures::FutureExt;
use rustls::ClientConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::commands::{self, inspect};
use crate::config::AgentConfig;
use crate::error::CommandFailure;
use crate::executor::Executor;
use crate::identity::{CONNECT_TIMEOUT, rfc3339, source_chain};
use crate::logs::LogTails;
use crate::runtime::ContainerRuntime;
use crate::targets::Redirect;

/// Results kept for delivery while no stream is open.
const OUTBOX_CAPACITY: usize = 1024;
/// Messages buffered between command tasks and the stream.
const UPLINK_CAPACITY: usize = 1024;
/// Reconnect backoff: first ceiling and upper bound.
const RETRY_BASE: Duration = Duration::from_millis(200);
/// See [`RETRY_BASE`].
const RETRY_MAX: Duration = Duration::from_secs(10);
/// The upper bound with several controller replicas: one of them leads, soon.
const RETRY_MAX_REPLICAS: Duration = Duration::from_secs(1);
/// Delay ceiling after the controller refused this agent: retrying cannot help until an
/// operator acts, so it is slow (but never stops).
const REFUSED_RETRY: Duration = Duration::from_secs(30);
/// After a renewal, how long the link waits for in-flight commands to finish before it
/// reconnects anyway (their results then arrive on the new stream).
pub const RECONNECT_DEFER_MAX: Duration = Duration::from_secs(300);

/// How the link reaches the controller.
#[derive(Clone)]
pub enum Transport {
    /// Plaintext HTTP/2, nobody authenticated: `--insecure-dev` only.
    Insecure,
    /// Mutual TLS 1.3: the controller must present the controller identity from the fleet
    /// CA; the agent presents `cert`, which renewals swap.
    Mtls {
        /// The client configuration (it resolves `cert` at every handshake).
        client: Arc<ClientConfig>,
        /// The agent's certificate.
        cert: SwappableCert,
    },
}

/// Why a session ended.
enum SessionEnd {
    /// Shutdown was requested and in-flight commands are done (or out of time).
    Shutdown,
    /// The stream failed or was never opened; reconnect.
    Lost(String),
    /// The controller refused this agent; reconnect slowly.
    Refused(String),
    /// The certificate was renewed; reconnect at once to present it.
    Renewed,
    /// A standby replica named the leader; dial it at once.
    Redirected(String),
}

/// The agent's link to the controller, across reconnects.
pub struct Link<R> {
    /// Validated configuration (controller URL, name, labels, intervals).
    config: AgentConfig,
    /// Plaintext or mutual TLS.
    transport: Transport,
    /// Bumped by the renewer after every renewal (`None` without renewals).
    renewed: Option<watch::Receiver<u64>>,
    /// Runs the commands.
    executor: Executor<R>,
    /// Command tasks; commands survive a lost stream.
    tasks: JoinSet<()>,
    /// Sender cloned into each command task.
    uplink_tx: mpsc::Sender<AgentMessage>,
    /// Progress and results from command tasks, read by the live session.
    uplink_rx: mpsc::Receiver<AgentMessage>,
    /// Results not yet delivered to any controller.
    outbox: VecDeque<CommandResult>,
    /// Set once shutdown was requested: the drain deadline.
    draining: Option<Instant>,
}

impl<R: ContainerRuntime> Link<R> {
    /// A link that dials with `transport` and runs commands on `executor`.
    pub fn new(config: AgentConfig, executor: Executor<R>, transport: Transport) -> Self {
        let (uplink_tx, uplink_rx) = mpsc::channel(UPLINK_CAPACITY);
        Self {
            config,
            transport,
            renewed: None,
            executor,
            tasks: JoinSet::new(),
            uplink_tx,
            uplink_rx,
            outbox: VecDeque::new(),
            draining: None,
        }
    }

    /// Reconnects whenever `renewed` changes (the certificate was renewed).
    pub fn with_renewals(mut self, renewed: watch::Receiver<u64>) -> Self {
        self.renewed = Some(renewed);
        self
    }

    /// Keeps a session open until `shutdown` completes, then lets in-flight commands
    /// finish (up to the configured grace) and closes the stream. Never stops containers.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let most = if self.config.targets.len() > 1 {
            RETRY_MAX_REPLICAS
        } else {
            RETRY_MAX
        };
        let mut backoff = Backoff::new(RETRY_BASE, most);
        let mut refused_backoff = Backoff::new(REFUSED_RETRY, REFUSED_RETRY);
        // Fused: polling it again after it fired is harmless.
        let shutdown = shutdown.fuse();
        tokio::pin!(shutdown);
        loop {
            let delay = match self.session(&mut shutdown, &mut backoff).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Renewed => {
                    info!(controller = %self.config.controller, "reconnecting to present the renewed certificate");
                    backoff.reset();
                    continue;
                }
                SessionEnd::Redirected(leader) => {
                    info!(leader = %leader, "a standby controller named the leader; following it");
                    continue;
                }
                SessionEnd::Lost(why) => {
                    let delay = backoff.next_delay();
                    warn!(controller = %self.config.targets.current(), error = %why, retry_in_ms = delay.as_millis() as u64, "controller stream lost");
                    delay
                }
                SessionEnd::Refused(why) => {
                    let delay = refused_backoff.next_delay();
                    error!(controller = %self.config.controller, name = %self.config.name, reason = %why, retry_in_ms = delay.as_millis() as u64, "the controller refused this agent");
                    delay
                }
            };
            if self.draining.is_some() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = &mut shutdown => {
                    self.start_draining();
                    break;
                }
            }
        }
        self.drain_offline().await;
        info!("agent stopped; application containers keep running");
    }

    fn start_draining(&mut self) {
        if self.draining.is_none() {
            info!(
                in_flight = self.tasks.len(),
                grace_s = self.config.shutdown_grace.as_secs(),
                "shutting down: finishing in-flight commands"
            );
            self.draining = Some(Instant::now() + self.config.shutdown_grace);
        }
    }

    /// Waits for in-flight commands without a stream (their results are only logged).
    async fn drain_offline(&mut self) {
        let deadline = self.draining.unwrap_or_else(Instant::now);
        while !self.tasks.is_empty() {
            tokio::select! {
                _ = self.tasks.join_next() => {}
                Some(msg) = self.uplink_rx.recv() => self.stash(msg),
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(abandoned = self.tasks.len(), "shutdown grace over: abandoning in-flight commands");
                    self.tasks.shutdown().await;
                }
            }
        }
        while let Ok(msg) = self.uplink_rx.try_recv() {
            self.stash(msg);
        }
        for r in &self.outbox {
            warn!(command = %r.command_id, "result not delivered: no controller connected at shutdown");
        }
    }

    /// Keeps results that could not be sent; drops progress.
    fn stash(&mut self, msg: AgentMessage) {
        if let Some(agent_message::Body::Result(r)) = msg.body {
            if self.outbox.len() >= OUTBOX_CAPACITY {
                self.outbox.pop_front();
            }
            self.outbox.push_back(r);
        }
    }

    async fn session(
        &mut self,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
        backoff: &mut Backoff,
    ) -> SessionEnd {
        // Anything queued while disconnected: keep results, drop stale progress.
        while let Ok(msg) = self.uplink_rx.try_recv() {
            self.stash(msg);
        }
        // A renewal that happened while disconnected is used by this connection already.
        if let Some(rx) = &mut self.renewed {
            rx.borrow_and_update();
        }
        let url = self.config.targets.current();
        let channel = tokio::select! {
            c = self.dial(&url) => match c {
                Ok(c) => c,
                Err(end) => {
                    if matches!(end, SessionEnd::Lost(_)) {
                        self.config.targets.unreachable(&url);
                    }
                    return end;
                }
            },
            _ = &mut *shutdown => { self.start_draining(); return SessionEnd::Lost("shutting down before connecting".into()); }
        };
        let (tx, rx) = mpsc::channel::<AgentMessage>(256);
        let hello = self.hello().await;
        let services = hello.services.len();
        let _ = tx.send(body(agent_message::Body::Hello(hello))).await;
        let mut client = AgentChannelClient::new(channel);
        let mut inbound = match client.connect(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) if refuses_agent(status.code()) => {
                return SessionEnd::Refused(format!("{} ({:?})", status.message(), status.code()));
            }
            Err(status) => {
                match self.config.targets.redirected(&url, &status) {
                    Some(Redirect::Leader(leader)) => return SessionEnd::Redirected(leader),
                    Some(Redirect::NoLeader) => {
                        return SessionEnd::Lost(format!("{url}: {}", status.message()));
                    }
                    None => {}
                }
                return SessionEnd::Lost(format!(
                    "controller refused the stream: {} ({:?})",
                    status.message(),
                    status.code()
                ));
            }
        };
        info!(controller = %url, services, "connected to controller");
        while let Some(r) = self.outbox.pop_front() {
            if let Err(e) = tx.try_send(body(agent_message::Body::Result(r))) {
                self.stash(e.into_inner());
                break;
            }
        }
        let mut interval = self.config.heartbeat_interval;
        let mut heartbeat = tokio::time::interval(interval);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seq = 0u64;
        // Log streams asked on this stream; they end with it.
        let mut tails = LogTails::default();
        // Set when a renewal asks for a reconnect: the latest moment to do it.
        let mut reconnect_by: Option<Instant> = None;
        loop {
            if let Some(deadline) = self.draining
                && (self.tasks.is_empty() || Instant::now() >= deadline)
            {
                if !self.tasks.is_empty() {
                    warn!(
                        abandoned = self.tasks.len(),
                        "shutdown grace over: abandoning in-flight commands"
                    );
                    self.tasks.shutdown().await;
                }
                info!("closing the controller stream");
                tails.shutdown().await;
                self.close(tx, &mut inbound).await;
                return SessionEnd::Shutdown;
            }
            if let Some(by) = reconnect_by
                && self.draining.is_none()
                && (self.tasks.is_empty() || Instant::now() >= by)
            {
                info!(
                    in_flight = self.tasks.len(),
                    "closing the controller stream to reconnect with the renewed certificate"
                );
                tails.shutdown().await;
                self.close(tx, &mut inbound).await;
                return SessionEnd::Renewed;
            }
            let far = Instant::now() + Duration::from_secs(3600);
            let deadline = self.draining.unwrap_or(far);
            tokio::select! {
                _ = &mut *shutdown, if self.draining.is_none() => self.start_draining(),
                _ = tokio::time::sleep_until(deadline), if self.draining.is_some() => {}
                _ = tokio::time::sleep_until(reconnect_by.unwrap_or(far)), if reconnect_by.is_some() => {}
                changed = renewal(&mut self.renewed), if reconnect_by.is_none() => {
                    if changed {
                        reconnect_by = Some(Instant::now() + RECONNECT_DEFER_MAX);
                    } else {
                        self.renewed = None;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => match m.body {
                        Some(controller_message::Body::Welcome(w)) => {
                            backoff.reset();
                            info!(controller_version = %w.controller_version, "welcomed by controller");
                            let wanted = Duration::from_millis(w.heartbeat_interval_ms);
                            if w.heartbeat_interval_ms > 0 && wanted < interval {
                                interval = wanted.max(Duration::from_millis(100));
                                heartbeat = tokio::time::interval(interval);
                                heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
                            }
                        }
                        Some(controller_message::Body::Command(c)) => {
                            backoff.reset();
                            self.accept(c);
                        }
                        Some(controller_message::Body::Logs(req)) => {
                            tails.start(self.executor.shared_context(), req, tx.clone());
                        }
                        Some(controller_message::Body::LogsAck(ack)) => tails.ack(&ack.stream_id, ack.chunks),
                        Some(controller_message::Body::LogsCancel(c)) => tails.cancel(&c.stream_id),
                        None => debug!("empty controller message ignored"),
                    },
                    Ok(None) => {
                        self.config.targets.unreachable(&url);
                        return SessionEnd::Lost("the controller closed the stream".into());
                    }
                    Err(status) if refuses_agent(status.code()) => {
                        return SessionEnd::Refused(format!("{} ({:?})", status.message(), status.code()));
                    }
                    Err(status) => {
                        self.config.targets.unreachable(&url);
                        return SessionEnd::Lost(format!("stream error: {} ({:?})", status.message(), status.code()));
                    }
                },
                _ = heartbeat.tick() => {
                    seq += 1;
                    let beat = Heartbeat { seq, sent_at_ms: now_ms() };
                    if tx.try_send(body(agent_message::Body::Heartbeat(beat))).is_err() {
                        warn!("controller is not reading the stream; heartbeat skipped");
                    }
                }
                Some(msg) = self.uplink_rx.recv() => {
                    if let Err(mpsc::error::SendError(m)) = tx.send(msg).await {
                        self.stash(m);
                        return SessionEnd::Lost("the stream closed while sending".into());
                    }
                }
                () = tails.reap() => {}
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    if let Err(e) = joined && e.is_panic() {
                        warn!(error = %e, "a command task panicked");
                    }
                }
            }
        }
    }

    /// Opens a channel to the controller with the configured transport.
    async fn dial(&self, url: &str) -> Result<Channel, SessionEnd> {
        let connect_error = |e: tonic::transport::Error| {
            SessionEnd::Lost(format!("cannot connect to {url}: {}", source_chain(&e)))
        };
        match &self.transport {
            Transport::Insecure => {
                let endpoint = Endpoint::from_shared(url.to_owned())
                    .map_err(|e| SessionEnd::Lost(format!("invalid controller URL: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(tls::KEEP_ALIVE)
                    .keep_alive_timeout(tls::KEEP_ALIVE)
                    .keep_alive_while_idle(true);
                endpoint.connect().await.map_err(connect_error)
            }
            Transport::Mtls { client, cert } => {
                if let Some(own) = cert.peer_certificate()
                    && own.not_after_unix < i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX)
                {
                    let at = UNIX_EPOCH
                        + Duration::from_secs(u64::try_from(own.not_after_unix).unwrap_or(0));
                    return Err(SessionEnd::Refused(format!(
                        "this agent's certificate expired at {} and was not renewed: create a new join token with \
                         `drover token create` and restart the agent with it",
                        rfc3339(at)
                    )));
                }
                tls::channel(url, client.clone(), CONNECT_TIMEOUT)
                    .await
                    .map_err(connect_error)
            }
        }
    }

    /// Ends a session politely: forwards what command tasks sent, half-closes, and gives
    /// the controller a moment to read it and end its side, so the last results are not
    /// cut off. Commands arriving meanwhile still run; their results go out on the next
    /// stream.
    async fn close(
        &mut self,
        tx: mpsc::Sender<AgentMessage>,
        inbound: &mut Streaming<ControllerMessage>,
    ) {
        while let Ok(msg) = self.uplink_rx.try_recv() {
            if let Err(mpsc::error::SendError(m)) = tx.send(msg).await {
                self.stash(m);
            }
        }
        drop(tx);
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(Some(m)) = inbound.message().await {
                // Log requests arriving now are dropped: this stream is closing.
                if let Some(controller_message::Body::Command(c)) = m.body {
                    self.accept(c);
                }
            }
        })
        .await;
    }

    /// Starts a command in its own task (or answers BUSY while shutting down).
    fn accept(&mut self, cmd: Command) {
        let kind = cmd.kind.as_ref().map_or("unknown", commands::kind_name);
        let service = cmd
            .kind
            .as_ref()
            .and_then(commands::service_of)
            .unwrap_or("")
            .to_string();
        let fence = cmd.fence.clone().unwrap_or_default();
        let span = info_span!("command", command_id = %cmd.command_id, kind, deployment = %fence.deployment_id, epoch = fence.epoch, service = %service);
        let uplink = self.uplink_tx.clone();
        if self.draining.is_some() {
            let failure = CommandFailure::new(
                ErrorKind::Busy,
                format!(
                    "agent {} is shutting down; resend the command after it reconnects",
                    self.config.name
                ),
            );
            let result = CommandResult {
                command_id: cmd.command_id,
                error: Some(failure.into_proto()),
                ..Default::default()
            };
            let _ = uplink.try_send(body(agent_message::Body::Result(result)));
            return;
        }
        let executor = self.executor.clone();
        self.tasks.spawn(
            async move {
                info!("command received");
                let up = uplink.clone();
                executor
                    .execute_then(cmd, Some(uplink), |result| async move {
                        info!(
                            ok = result.error.is_none(),
                            elapsed_ms = result.elapsed_ms,
                            "command finished"
                        );
                        let _ = up.send(body(agent_message::Body::Result(result))).await;
                    })
                    .await;
            }
            .instrument(span),
        );
    }

    async fn hello(&self) -> Hello {
        let ctx = self.executor.context();
        let (services, docker_error) = match inspect::collect(ctx, "").await {
            Ok((services, containers)) => {
                self.executor.observe(&containers);
                (services, String::new())
            }
            Err(e) => {
                warn!(error = %e, "Docker unavailable while saying hello");
                (vec![], e.to_string())
            }
        };
        Hello {
            name: self.config.name.clone(),
            labels: self.config.labels.clone().into_iter().collect(),
            advertise_address: self.config.advertise.clone(),
            agent_version: drover_shared::VERSION.to_string(),
            services,
            docker_error,
            heartbeat_interval_ms: u64::try_from(self.config.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

fn body(b: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(b) }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Codes with which the controller refuses this agent itself (removed, revoked, unknown).
fn refuses_agent(code: Code) -> bool {
    matches!(code, Code::PermissionDenied | Code::Unauthenticated)
}

/// Completes when the certificate was renewed (true) or the renewer is gone (false);
/// never without renewals.
async fn renewal(rx: &mut Option<watch::Receiver<u64>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
