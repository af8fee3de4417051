//! The agent hub: the controller's side of every agent stream.
//!
//! It owns the inventory of agents (who is connected, since when, what they run) and
//! routes commands to a named host, matching each result to its waiter by command id.
//! One task per agent stream reads what the agent sends; writers go through a bounded
//! channel per agent. The inventory map is only locked for lookups, never across an
//! `.await`, so a slow agent never blocks the others.
//!
//! Who may open a stream is decided by an [`Admission`] rule (see [`admission`]): on
//! `drover serve`, only an enrolled agent whose certificate is not revoked, under the
//! name its certificate carries. [`AgentHub::remove`] closes a removed host's stream.

mod admission;
mod logs;

pub use admission::{Admission, removed_message};
pub use logs::{LOG_WINDOW, LogSubscription};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use drover_proto::v1::agent_channel_server::{AgentChannel, AgentChannelServer};
use drover_proto::v1::{
    AgentMessage, Command, CommandProgress, CommandResult, ContainerState, ControllerMessage,
    Health, Hello, ServiceState, Welcome, agent_message, command_result, controller_message,
};
use drover_shared::tls::TlsConnectInfo;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::store::Fence;

/// Tunables of the hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Heartbeat period asked of agents.
    pub heartbeat_interval: Duration,
    /// An agent silent for this long is declared lost and its stream closed.
    pub lost_after: Duration,
    /// Commands queued per agent before `send` waits.
    pub queue_depth: usize,
}

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            lost_after: Duration::from_secs(6),
            queue_depth: 64,
        }
    }
}

/// What the controller knows of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostSnapshot {
    /// The agent's name, unique in the fleet.
    pub name: String,
    /// Labels the agent announced (used by selectors).
    pub labels: BTreeMap<String, String>,
    /// Address the load balancer reaches this host on.
    pub advertise_address: String,
    /// Version of the agent binary.
    pub agent_version: String,
    /// Whether a stream is open now.
    pub connected: bool,
    /// When it connected (if connected) or was lost (if not).
    pub since: SystemTime,
    /// What the host runs, from its hello and later command results.
    pub services: Vec<ServiceState>,
    /// The agent's report that its Docker engine is unreachable, if any.
    pub docker_error: Option<String>,
    /// Increments on every (re)connect of this host.
    pub session: u64,
    /// When the certificate its stream was opened with expires (Unix seconds; None
    /// without mTLS).
    pub cert_not_after_unix: Option<i64>,
}

/// Why a command could not be delivered or answered.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// No agent of that name has ever connected.
    #[error("unknown host {host:?}: no agent of that name has connected (see `drover hosts`)")]
    UnknownHost {
        /// The name asked for.
        host: String,
    },
    /// The agent is known but its stream is closed.
    #[error(
        "host {host:?} is not connected (lost since {since}); check the agent with `systemctl status drover-agent` on that host"
    )]
    NotConnected {
        /// The host.
        host: String,
        /// When it was lost, in RFC 3339.
        since: String,
    },
    /// The stream closed while the command was in flight.
    #[error("host {host:?} disconnected while command {command_id} was running")]
    Disconnected {
        /// The host.
        host: String,
        /// The command that got no answer.
        command_id: String,
    },
    /// This replica no longer leads (its lease was lost or superseded): it commands no
    /// agent, the leader does.
    #[error(
        "refused to send command {command_id} to host {host:?}: this controller is no longer the leader; the new leader carries the deployment on"
    )]
    NotLeader {
        /// The host.
        host: String,
        /// The command not sent.
        command_id: String,
    },
    /// No answer in time.
    #[error("host {host:?} did not answer command {command_id} within {}", drover_shared::duration::human(*.timeout))]
    Timeout {
        /// The host.
        host: String,
        /// The command.
        command_id: String,
        /// How long we waited.
        timeout: Duration,
    },
}

type Waiters = HashMap<String, Vec<oneshot::Sender<Result<CommandResult, HubError>>>>;

/// The live side of one host: its snapshot, its outbound queue and its waiters.
struct Slot {
    snapshot: HostSnapshot,
    /// Outbound queue of the current session; `None` while disconnected.
    outbox: Option<mpsc::Sender<Result<ControllerMessage, Status>>>,
    /// Commands sent on this host and not answered yet.
    waiters: Waiters,
    /// Cancelled when the host is removed from the fleet: its streams close.
    removed: CancellationToken,
    /// Log streams read from this host's current session, by stream id.
    logs: HashMap<String, mpsc::Sender<drover_proto::v1::LogChunk>>,
}

struct Inner {
    settings: HubSettings,
    hosts: RwLock<HashMap<String, Arc<Mutex<Slot>>>>,
    progress: broadcast::Sender<(String, CommandProgress)>,
    /// Bumped on every inventory change, so waiters can re-check their condition.
    changed: watch::Sender<u64>,
    sessions: AtomicU64,
    /// Cancelled when the controller stops: every agent stream is closed.
    shutdown: CancellationToken,
    /// Bumped (under the `hosts` write lock) every time a host is removed, so a stream
    /// admitted just before its host's removal cannot open after it.
    removals: AtomicU64,
    /// A replica's fence: no command leaves while it does not lead (`None`: a single
    /// controller, always leading).
    fence: Option<Arc<Fence>>,
}

/// Cloneable handle to the hub.
#[derive(Clone)]
pub struct AgentHub {
    inner: Arc<Inner>,
}

impl AgentHub {
    /// An empty hub.
    pub fn new(settings: HubSettings) -> Self {
        Self::build(settings, None)
    }

    /// An empty hub of a replica that sends commands only while `fence` leads.
    pub fn fenced(settings: HubSettings, fence: Arc<Fence>) -> Self {
        Self::build(settings, Some(fence))
    }

    fn build(settings: HubSettings, fence: Option<Arc<Fence>>) -> Self {
        let (progress, _) = broadcast::channel(1024);
        let (changed, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                settings,
                hosts: RwLock::new(HashMap::new()),
                progress,
                changed,
                sessions: AtomicU64::new(0),
                removals: AtomicU64::new(0),
                shutdown: CancellationToken::new(),
                fence,
            }),
        }
    }

    /// Closes every agent stream (agents reconnect to the next controller).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// The tonic service agents connect to, admitting streams by `admission`.
    pub fn grpc_service(&self, admission: Admission) -> AgentChannelServer<AgentChannelService> {
        AgentChannelServer::new(AgentChannelService {
            hub: self.clone(),
            admission,
        })
    }

    /// Forgets `host`: closes its stream (the agent is told it was removed), fails its
    /// pending commands and drops it from the inventory. Returns whether it was connected.
    /// Revoking its certificates, so it cannot come back, is the caller's part.
    pub fn remove(&self, host: &str) -> bool {
        let removed = {
            let mut hosts = write(&self.inner.hosts);
            self.inner.removals.fetch_add(1, Ordering::SeqCst);
            hosts.remove(host)
        };
        let Some(slot) = removed else {
            return false;
        };
        let mut slot = lock(&slot);
        let was_connected = slot.snapshot.connected;
        if let Some(outbox) = slot.outbox.take() {
            // Best effort: a full queue still closes below, without the reason.
            let _ = outbox.try_send(Err(Status::permission_denied(removed_message(host))));
        }
        slot.removed.cancel();
        fail_waiters(&mut slot.waiters, host);
        slot.logs.clear();
        drop(slot);
        self.notify();
        was_connected
    }

    /// A snapshot of one host.
    pub fn host(&self, host: &str) -> Option<HostSnapshot> {
        let slot = self.slot(host)?;
        let s = lock(&slot).snapshot.clone();
        Some(s)
    }

    /// Snapshots of every known host, sorted by name.
    pub fn hosts(&self) -> Vec<HostSnapshot> {
        let slots: Vec<_> = read(&self.inner.hosts).values().cloned().collect();
        let mut all: Vec<_> = slots.iter().map(|s| lock(s).snapshot.clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Waits until `host` is connected, up to `timeout`.
    pub async fn wait_connected(
        &self,
        host: &str,
        timeout: Duration,
    ) -> Result<HostSnapshot, HubError> {
        self.wait_for(timeout, || self.host(host).filter(|h| h.connected))
            .await
            .ok_or_else(|| self.not_connected(host))
    }

    /// Waits until `pick` returns something after an inventory change, up to `timeout`.
    pub async fn wait_for<T>(&self, timeout: Duration, pick: impl Fn() -> Option<T>) -> Option<T> {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = pick() {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return pick(),
            }
        }
    }

    /// Progress events from every host, as they arrive.
    pub fn progress(&self) -> broadcast::Receiver<(String, CommandProgress)> {
        self.inner.progress.subscribe()
    }

    /// Sends `command` to `host` and waits for its result.
    ///
    /// Sending the same command id again (after a reconnect, say) is safe: agents answer
    /// a repeated id with the first result.
    pub async fn send(
        &self,
        host: &str,
        command: Command,
        timeout: Duration,
    ) -> Result<CommandResult, HubError> {
        let command_id = command.command_id.clone();
        if let Some(fence) = &self.inner.fence
            && fence.epoch().is_none()
        {
            let (deployment, epoch) = command
                .fence
                .as_ref()
                .map_or(("", 0), |f| (f.deployment_id.as_str(), f.epoch));
            warn!(host, command = %command_id, deployment, epoch, "refused to command the host: this controller is no longer the leader");
            return Err(HubError::NotLeader {
                host: host.to_string(),
                command_id,
            });
        }
        let timed_out = || HubError::Timeout {
            host: host.to_string(),
            command_id: command_id.clone(),
            timeout,
        };
        let (tx, rx) = oneshot::channel();
        let outbox = {
            let slot = self.slot(host).ok_or_else(|| HubError::UnknownHost {
                host: host.to_string(),
            })?;
            let mut slot = lock(&slot);
            let Some(outbox) = slot.outbox.clone() else {
                // `not_connected` reads the slot again: release it first.
                drop(slot);
                return Err(self.not_connected(host));
            };
            slot.waiters.entry(command_id.clone()).or_default().push(tx);
            outbox
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let message = ControllerMessage {
            body: Some(controller_message::Body::Command(command)),
        };
        match tokio::time::timeout_at(deadline, outbox.send(Ok(message))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(HubError::Disconnected {
                    host: host.to_string(),
                    command_id,
                });
            }
            Err(_) => return Err(timed_out()),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(HubError::Disconnected {
                host: host.to_string(),
                command_id,
            }),
            Err(_) => {
                if let Some(slot) = self.slot(host) {
                    lock(&slot).waiters.remove(&command_id);
                }
                Err(timed_out())
            }
        }
    }

    /// Records when the certificate of `host`'s session `session` expires.
    fn set_certificate_expiry(&self, host: &str, session: u64, not_after_unix: Option<i64>) {
        if let Some(slot) = self.slot(host) {
            let mut slot = lock(&slot);
            if slot.snapshot.session == session {
                slot.snapshot.cert_not_after_unix = not_after_unix;
            }
        }
    }

    fn slot(&self, host: &str) -> Option<Arc<Mutex<Slot>>> {
        read(&self.inner.hosts).get(host).cloned()
    }

    fn not_connected(&self, host: &str) -> HubError {
        match self.host(host) {
            None => HubError::UnknownHost {
                host: host.to_string(),
            },
            Some(h) => HubError::NotConnected {
                host: host.to_string(),
                since: humantime::format_rfc3339_seconds(h.since).to_string(),
            },
        }
    }

    fn notify(&self) {
        self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Registers a new session for the agent that said `hello`, with `enrolled_labels`
    /// (from its join token) over the hello's own; returns its session number and the
    /// token that is cancelled when the host is removed. Refused when a host was removed
    /// since `removals` was read (before the stream was admitted).
    fn open_session(
        &self,
        hello: Hello,
        enrolled_labels: Option<BTreeMap<String, String>>,
        outbox: mpsc::Sender<Result<ControllerMessage, Status>>,
        removals: u64,
    ) -> Result<(u64, CancellationToken), Status> {
        let session = self.inner.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let mut labels: BTreeMap<String, String> = hello.labels.into_iter().collect();
        labels.extend(enrolled_labels.unwrap_or_default());
        let snapshot = HostSnapshot {
            name: hello.name.clone(),
            labels,
            advertise_address: hello.advertise_address,
            agent_version: hello.agent_version,
            connected: true,
            since: SystemTime::now(),
            services: hello.services,
            docker_error: Some(hello.docker_error).filter(|e| !e.is_empty()),
            session,
            cert_not_after_unix: None,
        };
        let mut hosts = write(&self.inner.hosts);
        if self.inner.removals.load(Ordering::SeqCst) != removals {
            // Rare: some host was removed while this stream was being admitted. Let the
            // agent retry; admission then sees any revocation.
            return Err(Status::unavailable(
                "the fleet changed while this stream was admitted; reconnect",
            ));
        }
        let removed = match hosts.get(&hello.name) {
            Some(slot) => {
                let mut slot = lock(slot);
                if slot.snapshot.connected {
                    warn!(host = %hello.name, "agent reconnected while its previous stream was open; the new stream replaces it");
                }
                // Waiters of the replaced stream will never hear back on it.
                fail_waiters(&mut slot.waiters, &hello.name);
                slot.logs.clear();
                slot.snapshot = snapshot;
                slot.outbox = Some(outbox);
                slot.removed.clone()
            }
            None => {
                let removed = CancellationToken::new();
                hosts.insert(
                    hello.name.clone(),
                    Arc::new(Mutex::new(Slot {
                        snapshot,
                        outbox: Some(outbox),
                        waiters: HashMap::new(),
                        removed: removed.clone(),
                        logs: HashMap::new(),
                    })),
                );
                removed
            }
        };
        drop(hosts);
        self.notify();
        Ok((session, removed))
    }

    /// Marks the host lost if `session` is still its current session.
    fn close_session(&self, host: &str, session: u64) {
        if let Some(slot) = self.slot(host) {
            let mut slot = lock(&slot);
            if slot.snapshot.session == session {
                slot.snapshot.connected = false;
                slot.snapshot.since = SystemTime::now();
                slot.outbox = None;
                fail_waiters(&mut slot.waiters, host);
                slot.logs.clear();
            }
        }
        self.notify();
    }

    fn deliver(&self, host: &str, result: CommandResult) {
        let Some(slot) = self.slot(host) else { return };
        let mut slot = lock(&slot);
        if let Some(current) = result_state(&result) {
            let services = &mut slot.snapshot.services;
            match services.iter_mut().find(|s| s.service == current.service) {
                Some(s) => *s = current.clone(),
                None => services.push(current.clone()),
            }
        }
        if let Some(command_result::Output::Inspect(i)) = &result.output {
            slot.snapshot.services = i.services.clone();
        }
        match slot.waiters.remove(&result.command_id) {
            Some(waiters) => {
                for w in waiters {
                    let _ = w.send(Ok(result.clone()));
                }
            }
            None => {
                debug!(host, command = %result.command_id, "result with no waiter (late or repeated)")
            }
        }
        drop(slot);
        self.notify();
    }
}

/// The state a result says the host now runs, if it says one.
fn result_state(result: &CommandResult) -> Option<&ServiceState> {
    match &result.output {
        Some(command_result::Output::Swap(s)) => s.current.as_ref(),
        Some(command_result::Output::Rollback(r)) => r.current.as_ref(),
        _ => result.error.as_ref().and_then(|e| e.restored.as_ref()),
    }
}

fn fail_waiters(waiters: &mut Waiters, host: &str) {
    for (command_id, senders) in waiters.drain() {
        for s in senders {
            let _ = s.send(Err(HubError::Disconnected {
                host: host.to_string(),
                command_id: command_id.clone(),
            }));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// The `AgentChannel` gRPC service.
pub struct AgentChannelService {
    hub: AgentHub,
    /// Who may open a stream.
    admission: Admission,
}

type OutStream = ReceiverStream<Result<ControllerMessage, Status>>;

#[tonic::async_trait]
impl AgentChannel for AgentChannelService {
    type ConnectStream = OutStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let tls = request.extensions().get::<TlsConnectInfo>().cloned();
        let peer = tls
            .as_ref()
            .and_then(|t| t.remote_addr)
            .or_else(|| request.remote_addr())
            .map_or_else(|| "unknown".to_string(), |a: SocketAddr| a.to_string());
        let refused = |host: &str, status: Status| {
            warn!(%peer, host = %host, reason = %status.message(), "refused an agent stream");
            status
        };
        let cert_name = match tls
            .as_ref()
            .and_then(|t| t.peer.as_ref())
            .and_then(|p| p.identity.as_ref())
        {
            Some(drover_shared::tls::Identity::Agent { name }) => name.clone(),
            _ => String::new(),
        };
        let removals = self.hub.inner.removals.load(Ordering::SeqCst);
        let certified = self
            .admission
            .certificate(tls.as_ref())
            .await
            .map_err(|s| refused(&cert_name, s))?;
        let mut inbound = request.into_inner();
        let settings = self.hub.inner.settings.clone();
        let first = tokio::time::timeout(settings.lost_after, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no hello received; an agent must send Hello first")
            })??;
        let hello = match first.and_then(|m| m.body) {
            Some(agent_message::Body::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message on the agent stream must be Hello",
                ));
            }
        };
        if hello.name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "Hello carries an empty agent name",
            ));
        }
        admission::check_name(certified.as_ref(), &hello.name)
            .map_err(|s| refused(&hello.name, s))?;
        let enrolled_labels = certified.and_then(|c| c.labels);
        // A stream lasts no longer than the certificate it was opened with.
        let expires = tls
            .as_ref()
            .and_then(|t| t.peer.as_ref())
            .map(|p| expiry_instant(p.not_after_unix));
        let name = hello.name.clone();
        let (tx, rx) = mpsc::channel(settings.queue_depth);
        let welcome = ControllerMessage {
            body: Some(controller_message::Body::Welcome(Welcome {
                controller_version: drover_shared::VERSION.to_string(),
                heartbeat_interval_ms: settings.heartbeat_interval.as_millis() as u64,
            })),
        };
        tx.send(Ok(welcome))
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        let (session, removed) = self
            .hub
            .open_session(hello, enrolled_labels, tx.clone(), removals)
            .map_err(|s| refused(&name, s))?;
        let not_after = tls
            .as_ref()
            .and_then(|t| t.peer.as_ref())
            .map(|p| p.not_after_unix);
        self.hub.set_certificate_expiry(&name, session, not_after);
        info!(host = %name, %peer, session, "agent connected");
        let hub = self.hub.clone();
        let span = info_span!("agent_stream", host = %name, session);
        // Owned by the stream: it ends when the agent's side ends or goes silent, and the
        // response stream ends with it when the last sender (ours and the slot's) drops.
        tokio::spawn(
            async move {
                let reason = read_agent(
                    &hub,
                    &name,
                    &mut inbound,
                    settings.lost_after,
                    &removed,
                    expires,
                )
                .await;
                hub.close_session(&name, session);
                drop(tx);
                warn!(reason = %reason, "agent stream closed");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// When a certificate valid until `not_after_unix` expires, on the monotonic clock.
fn expiry_instant(not_after_unix: i64) -> tokio::time::Instant {
    let left_ms = u64::try_from(not_after_unix)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_sub(crate::store::now_ms());
    // Far-future certificates (a CA-signed operator one, say) must not overflow Instant.
    const TEN_YEARS_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
    tokio::time::Instant::now() + Duration::from_millis(left_ms.min(TEN_YEARS_MS))
}

/// Reads one agent's stream until it ends; returns why it ended. `expires`: when the
/// certificate the stream was opened with stops being valid (none in plaintext).
async fn read_agent(
    hub: &AgentHub,
    name: &str,
    inbound: &mut Streaming<AgentMessage>,
    lost_after: Duration,
    removed: &CancellationToken,
    expires: Option<tokio::time::Instant>,
) -> String {
    let expired = async {
        match expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expired);
    loop {
        let next = tokio::select! {
            m = tokio::time::timeout(lost_after, inbound.message()) => m,
            () = hub.inner.shutdown.cancelled() => return "controller shutting down".to_string(),
            () = removed.cancelled() => return "host removed from the fleet".to_string(),
            () = &mut expired => return "the agent's certificate expired".to_string(),
        };
        let message = match next {
            Err(_) => {
                return format!(
                    "no message for {}: agent declared lost",
                    drover_shared::duration::human(lost_after)
                );
            }
            Ok(Err(status)) => return format!("stream error: {}", status.message()),
            Ok(Ok(None)) => return "agent closed the stream".to_string(),
            Ok(Ok(Some(m))) => m,
        };
        match message.body {
            Some(agent_message::Body::Heartbeat(_)) => {}
            Some(agent_message::Body::Progress(p)) => {
                let _ = hub.inner.progress.send((name.to_string(), p));
            }
            Some(agent_message::Body::Result(r)) => hub.deliver(name, r),
            Some(agent_message::Body::LogChunk(c)) => hub.route_log(name, c),
            Some(agent_message::Body::Hello(_)) => {
                warn!("ignoring a second Hello on an open stream")
            }
            None => {}
        }
    }
}

/// Serves the agent channel on `listener` in plaintext, admitting anyone, until
/// `shutdown` completes: for in-process test controllers and `--insecure-dev` agents.
pub async fn serve_agents(
    listener: tokio::net::TcpListener,
    hub: AgentHub,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(hub.grpc_service(Admission::Open))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Serves the agent channel on `listener` over TLS with `config` (from
/// `drover_shared::tls::server_config`) until `shutdown` completes, admitting any agent
/// certificate from the config's CA under the name it carries: for in-process test
/// controllers that issue agent certificates themselves. `drover serve` additionally
/// requires certificates it issued and has not revoked ([`Admission::Enrolled`]).
pub async fn serve_agents_tls(
    listener: tokio::net::TcpListener,
    hub: AgentHub,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(hub.grpc_service(Admission::Certificate))
        .serve_with_incoming_shutdown(drover_shared::tls::incoming(listener, config), shutdown)
        .await
}

/// One service of a host in words: `web v2 running`, `web v1 exited` (the container
/// that ran last, when none runs), `web: none running` (no container at all).
pub fn service_words(s: &ServiceState) -> String {
    let state = match ContainerState::try_from(s.state).unwrap_or_default() {
        ContainerState::Absent => return format!("{}: none running", s.service),
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Restarting => "restarting",
        ContainerState::Exited => "exited",
        ContainerState::Paused => "paused",
        ContainerState::Dead => "dead",
        ContainerState::Unspecified => "in an unknown state",
    };
    let health = match Health::try_from(s.health).unwrap_or_default() {
        Health::Unhealthy => " (unhealthy)",
        Health::Starting => " (health starting)",
        _ => "",
    };
    format!("{} {} {state}{health}", s.service, s.version)
}

#[cfg(test)]
mod fence_tests {
    use super::*;

    #[tokio::test]
    async fn a_replica_that_does_not_lead_sends_no_command() {
        let fence = Fence::new("replica-a".into());
        let hub = AgentHub::fenced(HubSettings::default(), fence.clone());
        let command = || Command {
            command_id: "c-1".into(),
            fence: Some(drover_proto::v1::Fence {
                deployment_id: "d-1".into(),
                epoch: 3,
            }),
            kind: None,
        };
        let err = hub
            .send("h1", command(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::NotLeader { .. }), "{err}");
        assert!(err.to_string().contains("no longer the leader"), "{err}");
        // Leading, the same command goes on to the host (unknown here).
        fence.set(3);
        let err = hub
            .send("h1", command(), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, HubError::UnknownHost { .. }), "{err}");
    }
}
