//! One host under test, fully assembled: demo images, a registry with credentials, the
//! in-process hub, and a real agent connected to it over mTLS (its certificate issued by
//! the hub's test CA into a state directory kept across agent restarts), with a loopback
//! address of its own to publish on. Dropping it removes everything, in order: the agent
//! stops first, then its containers go, then the registry and the images pulled from it,
//! then the hub.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use drover_controller::hub::{AgentHub, HostSnapshot};
use drover_proto::v1::{CommandResult, PrepareResult, command};

use crate::commands::{self, expect_prepare};
use crate::registry::Pushed;
use crate::{Agent, DemoImage, DockerCleanup, Registry, TestController};

/// How long an agent may take to (re)connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long any single command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// A host under test. Fields drop in declaration order.
pub struct Fixture {
    /// The agent process; `None` while a test has it stopped.
    pub agent: Option<Agent>,
    /// Removes the agent's containers.
    pub cleanup: DockerCleanup,
    /// The registry the images come from.
    pub registry: Registry,
    /// The hub; `None` while a test has the controller away.
    pub controller: Option<TestController>,
    /// The host (agent) name, unique per test.
    pub name: String,
    /// The loopback address this host publishes on (and advertises).
    pub host_ip: Ipv4Addr,
    /// The deployment id commands are fenced with.
    pub deployment: String,
    /// Extra agent flags, kept for restarts.
    agent_args: Vec<String>,
    /// The agent's state directory (its certificate and key), kept across restarts.
    state: tempfile::TempDir,
}

impl Fixture {
    /// A host with a connected agent.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A host whose agent gets `extra_args` too.
    pub async fn start_with(extra_args: &[&str]) -> Self {
        tokio::task::spawn_blocking(crate::ensure_demo_images)
            .await
            .expect("building the demo images panicked");
        let name = crate::unique_name("t");
        let mut f = Self {
            agent: None,
            cleanup: DockerCleanup::for_agent(&name),
            registry: Registry::start().await,
            controller: Some(TestController::start()),
            host_ip: crate::loopback_host(),
            deployment: crate::unique_name("dep"),
            agent_args: extra_args.iter().map(|a| a.to_string()).collect(),
            state: tempfile::Builder::new()
                .prefix("drover-agent-state-")
                .tempdir()
                .expect("create the agent's state directory"),
            name,
        };
        f.start_agent();
        f.wait_session_above(0).await;
        f
    }

    /// The hub (panics while the controller is away).
    pub fn hub(&self) -> &AgentHub {
        &self
            .controller
            .as_ref()
            .expect("the controller is away")
            .hub
    }

    /// Starts the agent (again), dialling the current controller.
    pub fn start_agent(&mut self) {
        assert!(self.agent.is_none(), "the agent is already running");
        let connect = self.agent_connect_args(&self.name);
        let mut args = vec!["--advertise".to_string(), self.host_ip.to_string()];
        args.extend(self.agent_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.agent = Some(Agent::spawn(
            &connect,
            &self.name,
            &[("role", "web"), ("test", "e2e")],
            &args,
        ));
    }

    /// The flags that connect an agent named `name` to the current controller
    /// (`--controller`, `--ca-cert`, `--state-dir` with a certificate for `name`): this
    /// host's state directory for its own name, a new one under it for any other (an
    /// agent a test or benchmark runs next to this one).
    pub fn agent_connect_args(&self, name: &str) -> Vec<String> {
        let controller = self.controller.as_ref().expect("the controller is away");
        let state_dir = if name == self.name {
            self.state.path().to_path_buf()
        } else {
            self.state.path().join(name)
        };
        controller.agent_args(name, &state_dir)
    }

    /// Waits until the agent is connected in a session newer than `session`.
    pub async fn wait_session_above(&self, session: u64) -> HostSnapshot {
        let name = self.name.clone();
        let hub = self.hub();
        match hub
            .wait_for(CONNECT_TIMEOUT, || {
                hub.host(&name)
                    .filter(|h| h.connected && h.session > session)
            })
            .await
        {
            Some(h) => h,
            None => panic!(
                "agent {name} did not connect (session > {session}) within {CONNECT_TIMEOUT:?}; hub sees {:?}\n{}",
                hub.host(&name),
                self.agent_logs()
            ),
        }
    }

    /// The agent's logs so far (empty while it is stopped).
    pub fn agent_logs(&self) -> String {
        self.agent.as_ref().map(Agent::logs).unwrap_or_default()
    }

    /// A free address on this host's loopback IP to publish a service on.
    pub fn publish_addr(&self) -> SocketAddr {
        SocketAddr::from((self.host_ip, crate::free_port(self.host_ip)))
    }

    /// Sends a ready-made command and waits for its result.
    pub async fn send_command(&self, cmd: drover_proto::v1::Command) -> CommandResult {
        match self
            .hub()
            .send(&self.name, cmd.clone(), COMMAND_TIMEOUT)
            .await
        {
            Ok(r) => {
                assert_eq!(r.command_id, cmd.command_id, "result for another command");
                r
            }
            Err(e) => panic!("command {cmd:?} got no result: {e}\n{}", self.agent_logs()),
        }
    }

    /// Sends `kind` with a fresh command id at `epoch` of this test's deployment.
    pub async fn send(&self, kind: command::Kind, epoch: u64) -> CommandResult {
        self.send_command(commands::command(kind, &self.deployment, epoch))
            .await
    }

    /// Pushes `variant` and prepares it with the right credentials at epoch 1; must succeed.
    pub async fn prepare(&self, variant: DemoImage) -> (Pushed, PrepareResult) {
        let pushed = self.registry.push_demo(variant).await;
        let r = self
            .send(
                commands::prepare(&pushed.reference, Some(self.registry.auth())),
                1,
            )
            .await;
        (pushed, expect_prepare(&r))
    }
}
