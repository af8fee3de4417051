//! The engine-test harness: a controller in this process and scripted fake agents.
//!
//! The agents here are fakes (in-process gRPC clients answering from a script), so the
//! tests that use them cover the controller's state machine (batches, failure,
//! rollback, pause, locks) in milliseconds; the same paths run against real Docker,
//! HAProxy and registry in `tests/tests/`.
#![allow(dead_code)] // each test file uses part of the harness

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_controller::server::{ServeSettings, run};
use drover_proto::v1 as proto;
use drover_proto::v1::agent_channel_client::AgentChannelClient;
use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{agent_message, command, controller_message};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// What a fake agent answers to a swap of a given version.
#[derive(Clone, Default)]
pub struct Script {
    /// (host, version) swaps that fail (the agent "restores" the previous version).
    pub failing: Vec<(String, String)>,
    /// (host, version) swaps during which the agent vanishes for good (its stream ends
    /// without an answer, as when its process is killed).
    pub vanish: Vec<(String, String)>,
}

/// Every command each fake host received, in order: (host, kind, version); a kind
/// without a script is logged as `other`.
pub type Log = Arc<Mutex<Vec<(String, &'static str, String)>>>;

pub async fn fake_agent(addr: std::net::SocketAddr, name: String, script: Script, log: Log) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = AgentChannelClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    let mut running = "v1".to_string();
    let mut kept = vec!["v0".to_string()];
    // What the agent reports: the running version and the kept ones, newest first.
    let state = |v: &str, kept: &[String]| proto::ServiceState {
        service: "web".into(),
        version: v.into(),
        state: proto::ContainerState::Running as i32,
        previous: kept
            .iter()
            .map(|k| proto::KeptContainer {
                version: k.clone(),
                image: format!("reg/web:{k}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    tx.send(proto::AgentMessage {
        body: Some(agent_message::Body::Hello(proto::Hello {
            name: name.clone(),
            labels: HashMap::from([("role".to_string(), "web".to_string())]),
            advertise_address: "127.0.0.1".into(),
            services: vec![state("v1", &kept)],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = inbound.message().await {
            let Some(controller_message::Body::Command(cmd)) = msg.body else {
                continue;
            };
            let mut result = proto::CommandResult {
                command_id: cmd.command_id.clone(),
                ..Default::default()
            };
            match cmd.kind {
                Some(command::Kind::Prepare(p)) => {
                    log.lock()
                        .unwrap()
                        .push((name.clone(), "prepare", p.image.clone()));
                    result.output = Some(proto::command_result::Output::Prepare(
                        proto::PrepareResult {
                            image: p.image.clone(),
                            digest: "sha256:abc".into(),
                            pinned: p.image.replace(':', "@sha256:"),
                            pulled: true,
                        },
                    ));
                }
                Some(command::Kind::Swap(s)) if !s.stage_for_command.is_empty() => {
                    // Stage-only: the new container is created, nothing changes yet.
                    let v = s.spec.unwrap().version;
                    log.lock().unwrap().push((name.clone(), "stage", v.clone()));
                    result.output = Some(proto::command_result::Output::Swap(proto::SwapResult {
                        current: Some(state(&running, &kept)),
                        staged_container: format!("{name}-web-{v}"),
                        ..Default::default()
                    }));
                }
                Some(command::Kind::Swap(s)) => {
                    let v = s.spec.unwrap().version;
                    log.lock().unwrap().push((name.clone(), "swap", v.clone()));
                    if script.vanish.contains(&(name.clone(), v.clone())) {
                        return;
                    }
                    if script.failing.contains(&(name.clone(), v.clone())) {
                        result.error = Some(proto::CommandError {
                            kind: proto::ErrorKind::ReadinessFailed as i32,
                            message: format!("{v} never became ready"),
                            restored: Some(state(&running, &kept)),
                            ..Default::default()
                        });
                    } else {
                        kept.insert(0, std::mem::replace(&mut running, v.clone()));
                        result.output =
                            Some(proto::command_result::Output::Swap(proto::SwapResult {
                                current: Some(state(&v, &kept)),
                                ..Default::default()
                            }));
                    }
                }
                Some(command::Kind::Rollback(r)) => {
                    log.lock()
                        .unwrap()
                        .push((name.clone(), "rollback", r.to_version.clone()));
                    kept.retain(|k| *k != r.to_version);
                    kept.insert(0, std::mem::replace(&mut running, r.to_version.clone()));
                    result.output = Some(proto::command_result::Output::Rollback(
                        proto::RollbackResult {
                            current: Some(state(&running, &kept)),
                            ..Default::default()
                        },
                    ));
                }
                other => {
                    // Logged too, so a test can tell that nothing at all was sent.
                    log.lock()
                        .unwrap()
                        .push((name.clone(), "other", format!("{other:?}")));
                }
            }
            let msg = proto::AgentMessage {
                body: Some(agent_message::Body::Result(result)),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
    });
}

pub struct Controller {
    pub addr: std::net::SocketAddr,
    pub dir: Option<tempfile::TempDir>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Controller {
    pub async fn start() -> Self {
        Self::start_with(
            drover_controller::schedule::SystemClock::shared(),
            tempfile::tempdir().unwrap(),
            "127.0.0.1:0",
        )
        .await
    }

    /// A controller on `addr` with its database in `dir` and time from `clock`.
    pub async fn start_with(
        clock: drover_controller::schedule::SharedClock,
        dir: tempfile::TempDir,
        addr: &str,
    ) -> Self {
        Self::start_tuned(clock, dir, addr, Default::default()).await
    }

    /// As [`Controller::start_with`], with the rollout engine's tunables.
    pub async fn start_tuned(
        clock: drover_controller::schedule::SharedClock,
        dir: tempfile::TempDir,
        addr: &str,
        deployer: drover_controller::rollout::DeployerSettings,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let settings = ServeSettings {
            hub: Default::default(),
            deployer,
            database: drover_controller::server::Database::Sqlite(dir.path().join("drover.db")),
            shutdown_grace: Duration::from_secs(1),
            metrics: None,
            clock,
            security: drover_controller::server::Security::InsecureDev,
            slo: Default::default(),
            web: None,
        };
        let server = tokio::spawn(async move {
            let _ = run(listener, settings, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            addr,
            dir: Some(dir),
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Stops the controller (like SIGTERM) and hands back its database directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let server = self.server.take().unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the controller stops within its shutdown grace")
            .unwrap();
        self.dir.take().unwrap()
    }

    pub async fn client(&self) -> OperatorClient<tonic::transport::Channel> {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        OperatorClient::new(ch)
    }

    pub async fn fleet(&self, n: usize, script: Script) -> Log {
        let log: Log = Default::default();
        for i in 0..n {
            fake_agent(self.addr, format!("h{i}"), script.clone(), log.clone()).await;
        }
        let mut client = self.client().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let hosts = client
                .list_hosts(proto::ListHostsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .hosts;
            if hosts.iter().filter(|h| h.connected).count() == n {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake agents did not connect"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub fn spec(extra: &str) -> String {
    format!(
        "[service]\nname = \"web\"\nimage = \"reg/web\"\nport = 8080\n[targets]\nselector = \"role=web\"\n[rollout]\nbatch_size = 2\n{extra}"
    )
}

pub async fn deploy_and_wait(
    client: &mut OperatorClient<tonic::transport::Channel>,
    spec: String,
    version: &str,
) -> proto::DeploymentInfo {
    let d = client
        .deploy(proto::DeployRequest {
            spec_toml: spec,
            version: version.into(),
            requested_by: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let mut stream = client
        .watch(proto::WatchRequest {
            id: d.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let watched = tokio::time::timeout(Duration::from_secs(20), async {
        while stream.message().await.unwrap().is_some() {}
    })
    .await;
    assert!(watched.is_ok(), "deployment {} did not finish", d.id);
    client
        .get_deployment(proto::GetDeploymentRequest { id: d.id })
        .await
        .unwrap()
        .into_inner()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

pub async fn start_deploy(
    client: &mut OperatorClient<tonic::transport::Channel>,
    spec: String,
    version: &str,
    at_ms: u64,
) -> String {
    client
        .deploy(proto::DeployRequest {
            spec_toml: spec,
            version: version.into(),
            requested_by: "test".into(),
            at_ms,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap()
        .id
}

pub async fn control(
    client: &mut OperatorClient<tonic::transport::Channel>,
    id: &str,
    action: proto::ControlAction,
    by: &str,
) -> Result<proto::DeploymentInfo, tonic::Status> {
    client
        .control(proto::ControlRequest {
            id: id.into(),
            action: action as i32,
            requested_by: by.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Polls the deployment until it reaches `state` (deadline 20 s).
pub async fn wait_state(
    client: &mut OperatorClient<tonic::transport::Channel>,
    id: &str,
    state: proto::DeploymentState,
) -> proto::DeploymentInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let d = client
            .get_deployment(proto::GetDeploymentRequest { id: id.into() })
            .await
            .unwrap()
            .into_inner();
        if d.state == state as i32 {
            return d;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never reached {state:?}: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn phases(d: &proto::DeploymentInfo) -> BTreeMap<String, proto::HostPhase> {
    d.hosts
        .iter()
        .map(|h| (h.host.clone(), proto::HostPhase::try_from(h.phase).unwrap()))
        .collect()
}

pub fn manual_clock(at: &str) -> drover_controller::schedule::ManualClock {
    drover_controller::schedule::ManualClock::new(at.parse().unwrap())
}

pub trait NowMs {
    fn now_ms(&self) -> u64;
}

impl NowMs for drover_controller::schedule::ManualClock {
    fn now_ms(&self) -> u64 {
        use drover_controller::schedule::Clock;
        self.now().as_millisecond() as u64
    }
}
