//! A standing population of SIMULATED agents for scale benchmarks: N agent streams from
//! this process to a real `drover serve --insecure-dev`, each saying Hello with a name,
//! labels and one running service, then heartbeating as the Welcome asks, until
//! stopped. No Docker and no `drover-agent` processes: the controller sees N connected
//! hosts and keeps their streams, as it would 10,000 real agents.
//!
//! Agents share HTTP/2 connections (`per_connection` streams on each) so that ten
//! thousand of them need a few hundred sockets, not ten thousand; the controller tells
//! agents apart by their Hello, not by their connection. (`bench_handshake` measures
//! the other case: one connection per agent, with TLS.)

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use drover_proto::v1::agent_channel_client::AgentChannelClient;
use drover_proto::v1::{
    AgentMessage, ContainerState, Health, Heartbeat, Hello, ServiceState, agent_message,
    controller_message,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// How long one dial or the Welcome may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Until the controller's Welcome says otherwise.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Pause before a failed agent dials again.
const RETRY: Duration = Duration::from_millis(500);

/// One simulated host.
#[derive(Debug, Clone)]
pub struct SimHost {
    /// Agent name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// The service it runs and the version (`web`, `v1`).
    pub runs: (String, String),
}

/// Simulated agents connected to one controller; stopped (streams closed) on drop.
pub struct SimulatedAgents {
    /// Set to `true` to end every stream.
    stop: watch::Sender<bool>,
    /// One task per agent.
    tasks: JoinSet<()>,
    /// Agents welcomed in their current stream.
    connected: Arc<AtomicUsize>,
}

impl SimulatedAgents {
    /// Starts one agent per host against `url` (`http://127.0.0.1:PORT`), sharing one
    /// HTTP/2 connection per `per_connection` agents. Returns at once: see
    /// [`SimulatedAgents::connected`].
    pub async fn start(
        url: &str,
        hosts: Vec<SimHost>,
        per_connection: usize,
    ) -> Result<Self, String> {
        let (stop, stopped) = watch::channel(false);
        let connected = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        for group in hosts.chunks(per_connection.max(1)) {
            let channel = drover_shared::tls::insecure_channel(url, CALL_TIMEOUT)
                .await
                .map_err(|e| format!("connect to {url}: {e}"))?;
            for host in group {
                let (channel, stopped, connected) =
                    (channel.clone(), stopped.clone(), connected.clone());
                let hello = hello(host);
                tasks.spawn(run_agent(channel, hello, stopped, connected));
            }
        }
        Ok(Self {
            stop,
            tasks,
            connected,
        })
    }

    /// How many agents are welcomed right now.
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Relaxed)
    }

    /// Ends every stream and waits for the agents' tasks.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SimulatedAgents {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
    }
}

fn hello(host: &SimHost) -> Hello {
    let (service, version) = &host.runs;
    Hello {
        name: host.name.clone(),
        labels: host.labels.clone(),
        advertise_address: "127.0.0.1".into(),
        agent_version: format!("{}-simulated", drover_shared::VERSION),
        heartbeat_interval_ms: HEARTBEAT.as_millis() as u64,
        services: vec![ServiceState {
            service: service.clone(),
            container_name: format!("{service}-{version}"),
            image: format!("127.0.0.1:5000/{service}:{version}"),
            version: version.clone(),
            state: ContainerState::Running as i32,
            health: Health::Healthy as i32,
            ..ServiceState::default()
        }],
        ..Hello::default()
    }
}

/// Runs one agent's streams until stopped, dialing again after a failure.
async fn run_agent(
    channel: Channel,
    hello: Hello,
    mut stopped: watch::Receiver<bool>,
    connected: Arc<AtomicUsize>,
) {
    while !*stopped.borrow() {
        let mut welcomed = false;
        let ended = session(&channel, &hello, &mut stopped, &connected, &mut welcomed).await;
        if welcomed {
            connected.fetch_sub(1, Ordering::Relaxed);
        }
        if ended.is_ok() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// One stream: `Ok` once stopped, `Err` when it fails.
async fn session(
    channel: &Channel,
    hello: &Hello,
    stopped: &mut watch::Receiver<bool>,
    connected: &AtomicUsize,
    welcomed: &mut bool,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<AgentMessage>(8);
    let first = AgentMessage {
        body: Some(agent_message::Body::Hello(hello.clone())),
    };
    tx.send(first).await.map_err(|_| "stream closed")?;
    let mut client = AgentChannelClient::new(channel.clone());
    let mut inbound = tokio::time::timeout(CALL_TIMEOUT, client.connect(ReceiverStream::new(rx)))
        .await
        .map_err(|_| "Connect timed out".to_string())?
        .map_err(|s| format!("Connect: {}", s.message()))?
        .into_inner();
    let welcome = tokio::time::timeout(CALL_TIMEOUT, inbound.message())
        .await
        .map_err(|_| "no Welcome".to_string())?
        .map_err(|s| format!("stream: {}", s.message()))?;
    let every = match welcome.and_then(|m| m.body) {
        Some(controller_message::Body::Welcome(w)) if w.heartbeat_interval_ms > 0 => {
            Duration::from_millis(w.heartbeat_interval_ms).max(Duration::from_millis(100))
        }
        Some(controller_message::Body::Welcome(_)) => HEARTBEAT,
        other => return Err(format!("expected a Welcome first, got {other:?}")),
    };
    *welcomed = true;
    connected.fetch_add(1, Ordering::Relaxed);
    // Spread the beats: ten thousand agents welcomed at once must not beat at once.
    let jitter = Duration::from_millis(rand::random_range(0..every.as_millis() as u64));
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + jitter, every);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = stopped.changed() => return Ok(()),
            _ = beat.tick() => {
                seq += 1;
                let hb = AgentMessage {
                    body: Some(agent_message::Body::Heartbeat(Heartbeat {
                        seq,
                        sent_at_ms: crate::fleet::now_ms(),
                    })),
                };
                // A full queue means the controller is not reading; the next beat retries.
                let _ = tx.try_send(hb);
            }
            m = inbound.message() => match m {
                Ok(Some(_)) => {} // no deploy targets these hosts
                Ok(None) => return Err("the controller closed the stream".into()),
                Err(s) => return Err(format!("stream: {}", s.message())),
            },
        }
    }
}
