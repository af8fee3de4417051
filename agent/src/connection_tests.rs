//! The link against a fake controller that is a real tonic server on loopback. The
//! container runtime is the in-memory FAKE (this tests the stream layer, not Docker).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drover_shared::proto::agent_channel_server::{AgentChannel, AgentChannelServer};
use drover_shared::proto::{
    AgentMessage, Command, ControllerMessage, Fence, PrepareCommand, Welcome, agent_message,
    command, controller_message,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use crate::config::{AgentConfig, Cli, EnvVars, FileConfig};
use crate::testing::FakeRuntime;

/// One agent stream as the test sees it.
struct Session {
    /// Messages from the agent.
    from_agent: Streaming<AgentMessage>,
    /// Messages to the agent; dropping it ends the stream.
    to_agent: mpsc::Sender<Result<ControllerMessage, Status>>,
}

struct FakeController {
    sessions: mpsc::Sender<Session>,
}

#[tonic::async_trait]
impl AgentChannel for FakeController {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let (to_agent, rx) = mpsc::channel(16);
        let session = Session {
            from_agent: request.into_inner(),
            to_agent,
        };
        self.sessions
            .send(session)
            .await
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

const WAIT: Duration = Duration::from_secs(10);

async fn next(s: &mut Session) -> agent_message::Body {
    loop {
        let m = tokio::time::timeout(WAIT, s.from_agent.message())
            .await
            .expect("agent went quiet")
            .expect("stream error")
            .expect("stream ended");
        match m.body {
            Some(agent_message::Body::Heartbeat(_)) | None => continue,
            Some(b) => return b,
        }
    }
}

async fn next_result(s: &mut Session) -> drover_shared::proto::CommandResult {
    loop {
        if let agent_message::Body::Result(r) = next(s).await {
            return r;
        }
    }
}

fn prepare(id: &str) -> ControllerMessage {
    ControllerMessage {
        body: Some(controller_message::Body::Command(Command {
            command_id: id.into(),
            fence: Some(Fence {
                deployment_id: "d1".into(),
                epoch: 1,
            }),
            kind: Some(command::Kind::Prepare(PrepareCommand {
                image: "127.0.0.1:5000/app:v1".into(),
                ..Default::default()
            })),
        })),
    }
}

#[tokio::test]
async fn hello_commands_reconnect_and_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (sessions_tx, mut sessions) = mpsc::channel(4);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentChannelServer::new(FakeController {
                sessions: sessions_tx,
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let cli = Cli {
        controller: Some(format!("http://{addr}")),
        name: Some("h1".into()),
        labels: vec!["role=web".into()],
        heartbeat_interval: Some("100ms".into()),
        insecure_dev: true,
        ..Default::default()
    };
    let config = AgentConfig::merge(&cli, FileConfig::default(), EnvVars::default()).unwrap();
    let runtime = Arc::new(FakeRuntime::new());
    runtime.pull_gate.forget_permits(usize::MAX);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let agent = tokio::spawn(crate::run_with_runtime(config, runtime.clone(), async {
        let _ = stop_rx.await;
    }));

    // Session 1: hello first, then a command whose pull is held.
    let mut s1 = tokio::time::timeout(WAIT, sessions.recv())
        .await
        .unwrap()
        .unwrap();
    let agent_message::Body::Hello(hello) = next(&mut s1).await else {
        panic!("the first message must be a hello")
    };
    assert_eq!(hello.name, "h1");
    assert_eq!(hello.labels["role"], "web");
    assert_eq!(hello.heartbeat_interval_ms, 100);
    assert!(hello.docker_error.is_empty());
    let welcome = ControllerMessage {
        body: Some(controller_message::Body::Welcome(Welcome {
            controller_version: "test".into(),
            heartbeat_interval_ms: 0,
        })),
    };
    s1.to_agent.send(Ok(welcome)).await.unwrap();
    s1.to_agent.send(Ok(prepare("c1"))).await.unwrap();
    while runtime.pulls.load(Ordering::SeqCst) == 0 {
        assert!(matches!(
            next(&mut s1).await,
            agent_message::Body::Progress(_)
        ));
    }

    // The controller goes away mid-command; the agent reconnects and says hello again.
    drop(s1);
    let mut s2 = tokio::time::timeout(WAIT, sessions.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(next(&mut s2).await, agent_message::Body::Hello(_)));
    // The command finishes now; its result arrives on the new stream.
    runtime.pull_gate.add_permits(1);
    let r = next_result(&mut s2).await;
    assert_eq!(r.command_id, "c1");
    assert!(r.error.is_none(), "{r:?}");
    // The controller resends it: same answer, no second pull.
    s2.to_agent.send(Ok(prepare("c1"))).await.unwrap();
    let again = next_result(&mut s2).await;
    assert_eq!(again, r);
    assert_eq!(runtime.pulls.load(Ordering::SeqCst), 1);

    // Shutdown: the agent half-closes its side of the stream (heartbeats may still be
    // in flight before that), waits for the controller to end its side, and returns.
    stop_tx.send(()).unwrap();
    while let Ok(Some(_)) = tokio::time::timeout(WAIT, s2.from_agent.message())
        .await
        .unwrap()
    {}
    drop(s2.to_agent);
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.abort();
}
