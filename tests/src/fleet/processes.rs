//! The fleet's processes: the controller (started, killed, restarted on the same address
//! and database), the agents (enrolled with a join token on their first start, killed,
//! started again with the certificate they kept), and the operator API as the admin, used
//! to wait until they are connected.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{HostInfo, ListHostsRequest};
use tokio::time::Instant;
use tonic::transport::Channel;

use drover_controller::schedule::ManualClock;

use super::{
    As, CONNECT_TIMEOUT, Fleet, InProcessController, JOIN_TOKEN_TTL, Transport, free_addr, now_ms,
    sigkill,
};
use crate::agent::TEST_HEARTBEAT;
use crate::process::{ChildGuard, bin_path};

impl Fleet {
    /// Kills the controller with SIGKILL (no shutdown of any kind).
    pub fn kill_controller(&mut self) {
        let mut c = self
            .controller
            .take()
            .expect("the controller is not running");
        sigkill(&mut c);
        self.dead.push(c);
    }

    /// Starts the controller again on the same address and database; waits until it
    /// answers and every running agent is connected to it.
    pub async fn start_controller(&mut self) {
        assert!(
            self.controller.is_none(),
            "the controller is already running"
        );
        // The old process is gone; its port is free again (SO_REUSEADDR), but allow a
        // few attempts in case the kernel is slow to release it.
        // Agents dial back in as soon as it listens: before it answers us.
        let since = now_ms();
        for attempt in 1..=5 {
            let c = self.spawn_controller();
            match self.wait_controller(c).await {
                Ok(c) => {
                    self.controller = Some(c);
                    return self.wait_connected(since, None).await;
                }
                Err(c) if attempt < 5 => self.dead.push(c),
                Err(c) => panic!("the controller did not restart:\n{}", c.logs()),
            }
        }
    }

    /// SIGKILLs the controller and starts it again on the same address and database.
    pub async fn restart_controller(&mut self) {
        self.kill_controller();
        self.start_controller().await;
    }

    /// Kills agent `i` with SIGKILL.
    pub fn kill_agent(&mut self, i: usize) {
        let mut a = self.agents[i].take().expect("the agent is not running");
        sigkill(&mut a);
        self.dead.push(a);
    }

    /// Stops agent `i` without waiting for it to connect again (a test that expects the
    /// controller to refuse it, say); keeps its logs. No-op when it is not running.
    pub fn forget_agent(&mut self, i: usize) {
        if let Some(mut a) = self.agents[i].take() {
            sigkill(&mut a);
            self.dead.push(a);
        }
    }

    /// Starts agent `i` again and waits until it is connected in a new session.
    pub async fn start_agent(&mut self, i: usize) {
        assert!(self.agents[i].is_none(), "agent {i} is already running");
        let since = now_ms();
        self.agents[i] = Some(self.spawn_agent(i).await);
        self.wait_connected(since, Some(i)).await;
    }

    /// Starts agent `i` again without waiting for anything (it may well be refused).
    pub async fn launch_agent(&mut self, i: usize) {
        assert!(self.agents[i].is_none(), "agent {i} is already running");
        self.agents[i] = Some(self.spawn_agent(i).await);
    }

    /// Serves the controller in this process on `clock` (plaintext), and waits until it
    /// answers.
    pub(super) async fn start_in_process(&mut self, clock: &ManualClock) {
        let c = InProcessController::start(clock, self.database_path()).await;
        self.controller_addr = c.addr();
        self.in_process = Some(c);
        let answers = crate::poll(CONNECT_TIMEOUT, || async { self.list_hosts().await }).await;
        if let Err(e) = answers {
            panic!("the in-process controller does not answer: {e}");
        }
    }

    pub(super) async fn start_first_controller(&mut self) {
        // Ports probed now may be taken before the controller binds them: retry.
        for _ in 0..3 {
            self.controller_addr = free_addr();
            self.metrics_addr = free_addr();
            if self.web_addr.is_some() {
                self.web_addr = Some(free_addr());
            }
            let c = self.spawn_controller();
            match self.wait_controller(c).await {
                Ok(c) => {
                    self.controller = Some(c);
                    return;
                }
                Err(c) => self.dead.push(c),
            }
        }
        panic!(
            "the controller did not start (3 tries):\n{}",
            self.controller_logs()
        );
    }

    /// `drover ca init --dir <dir>/pki`: the fleet's CA and the admin certificate.
    pub(super) async fn ca_init(&self) {
        let pki = self.pki();
        let dir = pki.dir.to_string_lossy().into_owned();
        let run = self
            .drover_as(&As::Anonymous, &["ca", "init", "--dir", &dir])
            .await;
        assert!(
            run.code == Some(0) && pki.ca_cert().is_file() && pki.admin_cert().is_file(),
            "drover ca init failed: {}",
            run.describe()
        );
    }

    /// A fresh join token (`drover token create --ttl TTL [--label k=v ...]`), as the
    /// admin. Panics when the CLI fails.
    pub async fn create_join_token(&self, ttl: &str, labels: &[(&str, &str)]) -> String {
        let mut args = vec![
            "token".to_string(),
            "create".into(),
            "--ttl".into(),
            ttl.into(),
        ];
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = self.drover(&args).await;
        let token = run.stdout.trim().to_string();
        assert!(
            run.code == Some(0) && token.starts_with("drj1.") && !token.contains('\n'),
            "drover token create: {}",
            run.describe()
        );
        token
    }

    fn spawn_controller(&self) -> ChildGuard {
        let args = self.controller_args(
            self.controller_addr,
            self.metrics_addr,
            &self.database_path().to_string_lossy(),
        );
        ChildGuard::spawn(
            &format!("controller {}", self.controller_addr),
            &bin_path("drover"),
            args,
            &[("RUST_LOG", "info,drover_controller=debug")],
        )
    }

    /// The flags of `drover serve` on `listen`, metrics on `metrics`, with `database`.
    pub(super) fn controller_args(
        &self,
        listen: std::net::SocketAddr,
        metrics: std::net::SocketAddr,
        database: &str,
    ) -> Vec<String> {
        // The controller holds the registry credentials too, as an operator would
        // configure it for scheduled deploys that outlive a restart.
        let auth = self.dir.path().join("registry-auth.toml");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let text = format!(
                "[[registry]]\nserver = \"{}\"\nusername = \"{}\"\npassword = \"{}\"\n",
                self.registry.host(),
                self.registry.username,
                self.registry.password()
            );
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&auth)
                .expect("write the registry credentials file");
            std::io::Write::write_all(&mut f, text.as_bytes()).expect("write credentials");
        }
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            listen.to_string(),
            "--database".into(),
            database.to_owned(),
            "--metrics-listen".into(),
            metrics.to_string(),
            "--reconnect-grace".into(),
            "5s".into(),
            "--slo-interval".into(),
            "200ms".into(),
            "--registry-auth-file".into(),
            auth.to_string_lossy().into_owned(),
        ];
        match self.transport {
            Transport::Mtls => {
                args.push("--pki-dir".into());
                args.push(self.pki().dir.to_string_lossy().into_owned());
            }
            Transport::InsecureDev => args.push("--insecure-dev".into()),
        }
        if let Some(ttl) = self.agent_cert_ttl {
            args.push("--agent-cert-ttl".into());
            args.push(format!("{}ms", ttl.as_millis()));
        }
        if let Some(web) = self.web_addr {
            args.push("--web-listen".into());
            args.push(web.to_string());
        }
        args
    }

    /// Waits until the controller answers ListHosts (and accepts connections on its web
    /// listener, when it serves one); gives the guard back as `Err` if the process exited
    /// (e.g. its port was taken) or did not answer in time.
    async fn wait_controller(&self, mut c: ChildGuard) -> Result<ChildGuard, ChildGuard> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while Instant::now() < deadline {
            if c.try_exit_status().is_some() {
                return Err(c);
            }
            let web_up = match self.web_addr {
                Some(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
                None => true,
            };
            if web_up && self.list_hosts().await.is_ok() {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(c)
    }

    /// Starts agent `i`; with mTLS, enrolls it first with a new join token unless its
    /// state directory holds a certificate already.
    pub(super) async fn spawn_agent(&self, i: usize) -> ChildGuard {
        let state_dir = self.agent_state_dir(i);
        let token = match self.transport {
            Transport::Mtls if !state_dir.join("agent.crt").exists() => {
                Some(self.create_join_token(JOIN_TOKEN_TTL, &[]).await)
            }
            _ => None,
        };
        let h = &self.hosts[i];
        let mut args = self.agent_args(&h.name, h.ip, &state_dir, &self.agent_secrets_dir(i));
        if let Some(token) = token {
            args.push("--token".into());
            args.push(token);
        }
        ChildGuard::spawn(
            &format!("agent {}", h.name),
            &bin_path("drover-agent"),
            args,
            &[("RUST_LOG", "info,drover_agent=debug")],
        )
    }

    /// The flags of an agent of this fleet named `name` on `ip`, keeping its certificate
    /// in `state_dir` and its secrets in `secrets_dir`; with mTLS and no certificate yet,
    /// it needs `--token` too. For tests that run agents of their own next to the fleet's.
    pub fn agent_args(
        &self,
        name: &str,
        ip: Ipv4Addr,
        state_dir: &Path,
        secrets_dir: &Path,
    ) -> Vec<String> {
        let config = self.dir.path().join("agent.toml");
        let mut args = vec![
            "--config".to_string(),
            config.to_string_lossy().into_owned(),
            "--controller".into(),
            self.controller_url(),
            "--name".into(),
            name.to_string(),
            "--heartbeat-interval".into(),
            TEST_HEARTBEAT.into(),
            "--label".into(),
            format!("role={}", self.role),
            "--advertise".into(),
            ip.to_string(),
            "--state-dir".into(),
            state_dir.to_string_lossy().into_owned(),
            "--secrets-dir".into(),
            secrets_dir.to_string_lossy().into_owned(),
        ];
        if let Some(env) = self
            .hosts
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.env.as_ref())
        {
            args.push("--label".into());
            args.push(format!("env={env}"));
        }
        match self.transport {
            Transport::Mtls => {
                args.push("--ca-cert".into());
                args.push(self.pki().ca_cert().to_string_lossy().into_owned());
            }
            Transport::InsecureDev => args.push("--insecure-dev".into()),
        }
        args
    }

    /// A directory on tmpfs for secrets of an agent of a test's own (`name`).
    pub fn extra_secrets_dir(&self, name: &str) -> PathBuf {
        self.secrets.path().join(name)
    }

    /// An operator channel as the admin (TLS with the admin certificate, or plaintext);
    /// with replicas, to the one that leads.
    pub async fn operator_channel(&self) -> Result<Channel, String> {
        if self.replicas.is_some() {
            return self.leader_channel().await;
        }
        match self.transport {
            Transport::Mtls => self.pki().admin_channel(&self.controller_url()).await,
            Transport::InsecureDev => {
                drover_shared::tls::insecure_channel(&self.controller_url(), Duration::from_secs(2))
                    .await
                    .map_err(|e| format!("connect to {}: {e}", self.controller_url()))
            }
        }
    }

    /// An operator API client as the admin; panics when the controller is unreachable.
    pub async fn operator_client(&self) -> OperatorClient<Channel> {
        match self.operator_channel().await {
            Ok(c) => OperatorClient::new(c),
            Err(e) => panic!("{e}\n{}", self.controller_logs()),
        }
    }

    /// The controller's inventory of this fleet's hosts.
    pub async fn list_hosts(&self) -> Result<Vec<HostInfo>, String> {
        let channel = self.operator_channel().await?;
        let mut client = OperatorClient::new(channel);
        let call = client.list_hosts(ListHostsRequest {
            selector: format!("role={}", self.role),
        });
        let hosts = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .map_err(|_| "ListHosts took over 5s".to_string())?
            .map_err(|s| format!("ListHosts: {}", s.message()))?
            .into_inner()
            .hosts;
        Ok(hosts)
    }

    /// Waits until every running agent is connected; host `fresh` (every host when
    /// `None`) in a session begun at or after `since_ms` (Unix ms).
    pub(super) async fn wait_connected(&self, since_ms: u64, fresh: Option<usize>) {
        let want: Vec<(&str, u64)> = self
            .hosts
            .iter()
            .zip(&self.agents)
            .enumerate()
            .filter(|(_, (_, a))| a.is_some())
            .map(|(i, (h, _))| {
                let since = if fresh.is_none_or(|f| f == i) {
                    since_ms
                } else {
                    0
                };
                (h.name.as_str(), since)
            })
            .collect();
        let check = || async {
            let hosts = self.list_hosts().await?;
            let missing: Vec<&str> = want
                .iter()
                .filter(|(n, since)| {
                    !hosts
                        .iter()
                        .any(|h| h.name == *n && h.connected && h.since_ms >= *since)
                })
                .map(|(n, _)| *n)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not connected: {missing:?}"))
            }
        };
        if let Err(last) = crate::poll(CONNECT_TIMEOUT, check).await {
            let logs: Vec<String> = (0..self.hosts.len()).map(|i| self.agent_logs(i)).collect();
            panic!(
                "agents {want:?} (name, since ms) did not connect within {CONNECT_TIMEOUT:?}: {last}\n{}\n{}",
                logs.join("\n"),
                self.controller_logs()
            );
        }
    }
}
