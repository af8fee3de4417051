//! A whole fleet with real parts, for the end-to-end rollout tests and the demo: the demo
//! images in a real registry with htpasswd auth, a real `drover serve` process with its
//! own SQLite database, N real `drover-agent` processes each publishing on its own
//! 127.0.0.N, and a real HAProxy whose backend has one health-checked server per agent
//! (named like the agent, `GET /ready` as the check). [`Fleet::drover`] runs the real CLI
//! against it; [`Fleet::start`] deploys a first version so every host serves it.
//!
//! Dropping a [`Fleet`] removes everything, in order: the controller (SIGKILL: its state
//! is throw-away, and a graceful stop would wait for the agent streams), the agents, their
//! containers (by `drover.agent` label), HAProxy, the registry and the images pulled from
//! it, then the directory holding the database and the specs. Tests drop their CLI
//! processes and loads first by declaring them after the fleet.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_controller::lb::{AdminState, OpStatus};
use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{HostInfo, ListHostsRequest};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agent::TEST_HEARTBEAT;
use crate::haproxy::{Haproxy, HaproxyOptions};
use crate::load::{Load, LoadOptions};
use crate::process::{ChildGuard, bin_path};
use crate::registry::Pushed;
use crate::{DemoImage, DockerCleanup, Registry};

/// The service every fleet runs.
pub const SERVICE: &str = "web";
/// The HAProxy backend holding one server per host.
pub const BACKEND: &str = "web";
/// The environment variable the CLI reads the registry password from (set only in the
/// CLI's own environment).
pub const PASSWORD_ENV: &str = "DROVER_TEST_REGISTRY_PASSWORD";
/// How long agents may take to (re)connect, and the controller to answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(40);
/// Longest any one CLI invocation may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(180);
/// How long HAProxy may take to report every server UP after the first deploy.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

/// What fleet to build.
#[derive(Debug, Clone)]
pub struct FleetOptions<'a> {
    /// Hosts (agents), each with its own loopback address.
    pub hosts: usize,
    /// `rollout.batch_size` of the fleet's spec: `"1"` or `"25%"`.
    pub batch_size: &'a str,
    /// `readiness.deadline` of the spec: how long a never-ready version keeps a host.
    pub readiness_deadline: Duration,
    /// Images pushed to the registry as `demo:<tag>` at start.
    pub images: &'a [DemoImage],
    /// Deployed (all hosts at once) before `start` returns, so every host serves it.
    pub initial: Option<DemoImage>,
}

impl Default for FleetOptions<'_> {
    fn default() -> Self {
        Self {
            hosts: 4,
            batch_size: "1",
            readiness_deadline: Duration::from_secs(15),
            images: &[DemoImage::V1, DemoImage::V2, DemoImage::NeverReady],
            initial: Some(DemoImage::V1),
        }
    }
}

/// One host of the fleet.
#[derive(Debug, Clone)]
pub struct FleetHost {
    /// Agent name, HAProxy server name and `drover.agent` container label.
    pub name: String,
    /// The loopback address it advertises and publishes the service on.
    pub ip: Ipv4Addr,
    /// Where the service answers on this host (`ip:host_port`).
    pub addr: SocketAddr,
}

/// A running fleet. Fields drop in declaration order (see the module docs).
pub struct Fleet {
    /// `drover serve`; `None` while a test has it killed.
    controller: Option<ChildGuard>,
    /// One agent per host; `None` while a test has it killed.
    agents: Vec<Option<ChildGuard>>,
    /// Processes a test killed, kept for their logs.
    dead: Vec<ChildGuard>,
    /// Removes every container of the fleet's agents.
    _cleanup: DockerCleanup,
    /// The load balancer in front of the hosts.
    haproxy: Haproxy,
    /// Where the images come from.
    registry: Registry,
    /// Database, specs, the agents' (empty) config file.
    dir: tempfile::TempDir,
    /// The hosts, in order.
    hosts: Vec<FleetHost>,
    /// The label value (`role=<this>`) selecting exactly this fleet's hosts.
    role: String,
    /// Where the controller serves agents and operators.
    controller_addr: SocketAddr,
    /// Where the controller serves Prometheus metrics.
    metrics_addr: SocketAddr,
    /// Readiness deadline written into specs.
    readiness_deadline: Duration,
    /// The fleet's spec (batch size from the options).
    spec: PathBuf,
    /// What was pushed, per variant.
    pushed: BTreeMap<&'static str, Pushed>,
}

impl Fleet {
    /// Builds the fleet; panics (cleaning up) if any part does not come up.
    pub async fn start(opts: FleetOptions<'_>) -> Self {
        assert!(opts.hosts > 0, "a fleet needs hosts");
        tokio::task::spawn_blocking(crate::ensure_demo_images)
            .await
            .expect("building the demo images panicked");
        let role = crate::unique_name("fleet");
        let (ips, host_port) = loopback_ips_and_port(opts.hosts);
        let hosts: Vec<FleetHost> = ips
            .into_iter()
            .enumerate()
            .map(|(i, ip)| FleetHost {
                name: format!("{role}-{}", i + 1),
                ip,
                addr: SocketAddr::from((ip, host_port)),
            })
            .collect();
        let mut cleanup = DockerCleanup::default();
        for h in &hosts {
            cleanup.agent(&h.name);
        }
        let registry = Registry::start().await;
        let mut pushed = BTreeMap::new();
        for variant in opts.images {
            pushed.insert(variant.tag(), registry.push_demo(*variant).await);
        }
        let servers: Vec<(&str, SocketAddr)> =
            hosts.iter().map(|h| (h.name.as_str(), h.addr)).collect();
        let haproxy = Haproxy::start(BACKEND, &servers, haproxy_options()).await;
        let dir = tempfile::Builder::new()
            .prefix("drover-fleet-")
            .tempdir()
            .expect("create the fleet's directory");
        std::fs::write(dir.path().join("agent.toml"), "").expect("write agent.toml");
        let mut fleet = Self {
            controller: None,
            agents: hosts.iter().map(|_| None).collect(),
            dead: vec![],
            _cleanup: cleanup,
            haproxy,
            registry,
            spec: dir.path().join("drover.toml"),
            dir,
            hosts,
            role,
            controller_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            readiness_deadline: opts.readiness_deadline,
            pushed,
        };
        fleet.start_first_controller().await;
        let spec = fleet.spec_toml(opts.batch_size);
        std::fs::write(&fleet.spec, spec).expect("write the spec");
        for i in 0..fleet.hosts.len() {
            fleet.agents[i] = Some(fleet.spawn_agent(i));
        }
        fleet.wait_connected(0, None).await;
        if let Some(first) = opts.initial {
            fleet.deploy_everywhere(first).await;
        }
        fleet
    }

    /// Deploys `variant` to every host at once and waits until HAProxy has all UP.
    async fn deploy_everywhere(&self, variant: DemoImage) {
        let spec = self.write_spec("initial.toml", &self.spec_toml("100%"));
        let spec = spec.to_string_lossy().into_owned();
        let run = self
            .drover(&["deploy", "-f", &spec, "--version", variant.tag(), "--json"])
            .await;
        assert_eq!(
            run.code,
            Some(0),
            "the first deploy ({}) failed: {}\n{}",
            variant.tag(),
            run.describe(),
            self.controller_logs()
        );
        self.haproxy.wait_all_up(UP_TIMEOUT).await;
    }

    // ----- the parts ------------------------------------------------------------------

    /// The hosts, in order.
    pub fn hosts(&self) -> &[FleetHost] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &FleetHost {
        &self.hosts[i]
    }

    /// Index of the host named `name`.
    pub fn index_of(&self, name: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host named {name:?} in this fleet"))
    }

    /// The `role` label value that selects this fleet's hosts.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The load balancer.
    pub fn haproxy(&self) -> &Haproxy {
        &self.haproxy
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What was pushed as `variant`.
    pub fn pushed(&self, variant: DemoImage) -> &Pushed {
        self.pushed
            .get(variant.tag())
            .unwrap_or_else(|| panic!("{} was not pushed (FleetOptions::images)", variant.tag()))
    }

    /// `http://127.0.0.1:PORT`, for `--controller` / `DROVER_CONTROLLER`.
    pub fn controller_url(&self) -> String {
        format!("http://{}", self.controller_addr)
    }

    /// Where Prometheus metrics are served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The fleet's spec file.
    pub fn spec_path(&self) -> &Path {
        &self.spec
    }

    /// Logs of every controller process so far (killed ones first).
    pub fn controller_logs(&self) -> String {
        let mut out: Vec<String> = self
            .dead
            .iter()
            .map(ChildGuard::logs)
            .filter(|l| l.contains("----- controller"))
            .collect();
        out.extend(self.controller.as_ref().map(ChildGuard::logs));
        out.join("\n")
    }

    /// Logs of agent `i` (empty while it is killed).
    pub fn agent_logs(&self, i: usize) -> String {
        self.agents[i]
            .as_ref()
            .map(ChildGuard::logs)
            .unwrap_or_default()
    }

    // ----- specs ----------------------------------------------------------------------

    /// The service spec of this fleet with `batch_size`.
    pub fn spec_toml(&self, batch_size: &str) -> String {
        format!(
            r#"[service]
name = "{SERVICE}"
image = "{registry}/demo"
port = 8080
host_ip = "advertise"
host_port = {port}

[targets]
selector = "role={role}"

[readiness]
kind = "http"
path = "/ready"
interval = "100ms"
timeout = "1s"
deadline = "{deadline}ms"

[rollout]
batch_size = "{batch_size}"
stop_timeout = "2s"
drain_timeout = "5s"
up_timeout = "30s"
pull_timeout = "60s"
keep_previous = 2

[load_balancer]
runtime = ["unix:{socket}"]
backend = "{BACKEND}"

[registry]
username = "{user}"
password_env = "{PASSWORD_ENV}"
"#,
            registry = self.registry.host(),
            port = self.hosts[0].addr.port(),
            role = self.role,
            deadline = self.readiness_deadline.as_millis(),
            socket = self.haproxy.admin_socket().display(),
            user = self.registry.username,
        )
    }

    /// Writes `text` as `name` in the fleet's directory; returns its path.
    pub fn write_spec(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    // ----- the CLI --------------------------------------------------------------------

    /// `drover <args>` aimed at this fleet's controller, with the registry password in
    /// its environment only; stdin closed, killed if dropped. Stdout and stderr are the
    /// caller's to set.
    pub fn cli(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin_path("drover"));
        cmd.args(args)
            .env("DROVER_CONTROLLER", self.controller_url())
            .env(PASSWORD_ENV, self.registry.password())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `drover <args>` to its end (at most [`CLI_TIMEOUT`]) and captures its output.
    pub async fn drover(&self, args: &[&str]) -> CliRun {
        let started = Instant::now();
        let child = self
            .cli(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run drover {}: {e}", args.join(" ")));
        match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) => CliRun {
                args: args.iter().map(|a| a.to_string()).collect(),
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                took: started.elapsed(),
            },
            Ok(Err(e)) => panic!("drover {}: {e}", args.join(" ")),
            Err(_) => panic!(
                "drover {} did not finish within {CLI_TIMEOUT:?} (killed)\n{}",
                args.join(" "),
                self.controller_logs()
            ),
        }
    }

    /// Starts `drover <args>` in the background; its output is collected as it comes.
    pub fn spawn_drover(&self, args: &[&str]) -> RunningCli {
        let mut child = self
            .cli(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run drover {}: {e}", args.join(" ")));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), stdout.clone()),
            collect(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        RunningCli {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
        }
    }

    /// `drover deploy -f <the fleet's spec> --version <version> --json`, to its end.
    pub async fn deploy(&self, version: &str) -> CliRun {
        let spec = self.spec.to_string_lossy().into_owned();
        self.drover(&["deploy", "-f", &spec, "--version", version, "--json"])
            .await
    }

    /// The same deploy, in the background.
    pub fn spawn_deploy(&self, version: &str) -> RunningCli {
        let spec = self.spec.to_string_lossy().into_owned();
        self.spawn_drover(&["deploy", "-f", &spec, "--version", version, "--json"])
    }

    /// `drover hosts --json`: one object per host.
    pub async fn hosts_json(&self) -> Vec<Value> {
        let run = self.drover(&["hosts", "--json"]).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
        run.json()
    }

    /// `drover history --json`: one object per deployment, newest first.
    pub async fn history_json(&self) -> Vec<Value> {
        let run = self.drover(&["history", "--json"]).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
        run.json()
    }

    // ----- traffic and state ----------------------------------------------------------

    /// Continuous `GET /` through HAProxy, bounded in count and time.
    pub fn load(&self, keep_alive: bool) -> Load {
        let opts = LoadOptions {
            keep_alive,
            concurrency: 2,
            max_requests: 400_000,
            max_duration: Duration::from_secs(240),
            request_timeout: Duration::from_secs(5),
        };
        Load::start(self.haproxy.frontend_addr(), opts)
    }

    /// The version host `i` answers on `/` right now (from its own address).
    pub async fn host_version(&self, i: usize) -> Result<String, String> {
        version_of(self.hosts[i].addr).await
    }

    /// What `n` requests through HAProxy answered, per version (`Err` for failures).
    pub async fn lb_versions(&self, n: usize) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let key = match version_of(self.haproxy.frontend_addr()).await {
                Ok(v) => v,
                Err(e) => format!("error: {e}"),
            };
            *out.entry(key).or_default() += 1;
        }
        out
    }

    /// Every server's (status, admin state) in HAProxy now.
    pub async fn servers(&self) -> BTreeMap<String, (OpStatus, AdminState)> {
        self.haproxy
            .servers()
            .await
            .into_iter()
            .map(|s| (s.server, (s.status, s.admin)))
            .collect()
    }

    /// Asserts that every host answers `version` on its own address, HAProxy has them all
    /// UP and READY, requests through HAProxy reach only `version`, and `drover hosts`
    /// agrees (connected, one `web` service of `version`, running).
    pub async fn assert_serves(&self, version: &str) {
        for (i, h) in self.hosts().iter().enumerate() {
            assert_eq!(
                self.host_version(i).await.as_deref(),
                Ok(version),
                "host {} ({})",
                h.name,
                h.addr
            );
        }
        let servers = self.servers().await;
        for h in self.hosts() {
            assert_eq!(
                servers.get(&h.name),
                Some(&(OpStatus::Up, AdminState::Ready)),
                "{} in HAProxy: {servers:?}",
                h.name
            );
        }
        let through_lb = self.lb_versions(2 * self.hosts().len()).await;
        assert_eq!(
            through_lb.keys().collect::<Vec<_>>(),
            [version],
            "through HAProxy"
        );
        let field = |v: &Value, name: &str| v[name].as_str().unwrap_or("").to_string();
        for h in self.hosts_json().await {
            let web: Vec<&Value> = h["services"]
                .as_array()
                .map(|s| s.iter().filter(|s| s["service"] == "web").collect())
                .unwrap_or_default();
            assert!(
                h["connected"] == true
                    && web.len() == 1
                    && field(web[0], "version") == version
                    && field(web[0], "state").ends_with("RUNNING"),
                "drover hosts: {h}"
            );
        }
    }

    // ----- processes ------------------------------------------------------------------

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

    /// Starts agent `i` again and waits until it is connected in a new session.
    pub async fn start_agent(&mut self, i: usize) {
        assert!(self.agents[i].is_none(), "agent {i} is already running");
        let since = now_ms();
        self.agents[i] = Some(self.spawn_agent(i));
        self.wait_connected(since, Some(i)).await;
    }

    async fn start_first_controller(&mut self) {
        // Ports probed now may be taken before the controller binds them: retry.
        for _ in 0..3 {
            self.controller_addr = free_addr();
            self.metrics_addr = free_addr();
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

    fn spawn_controller(&self) -> ChildGuard {
        let db = self.dir.path().join("drover.db");
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
        let args = [
            "serve".to_string(),
            "--listen".into(),
            self.controller_addr.to_string(),
            "--database".into(),
            db.to_string_lossy().into_owned(),
            "--metrics-listen".into(),
            self.metrics_addr.to_string(),
            "--reconnect-grace".into(),
            "5s".into(),
            "--registry-auth-file".into(),
            auth.to_string_lossy().into_owned(),
        ];
        ChildGuard::spawn(
            &format!("controller {}", self.controller_addr),
            &bin_path("drover"),
            args,
            &[("RUST_LOG", "info,drover_controller=debug")],
        )
    }

    /// Waits until the controller answers ListHosts; gives the guard back as `Err` if
    /// the process exited (e.g. its port was taken) or did not answer in time.
    async fn wait_controller(&self, mut c: ChildGuard) -> Result<ChildGuard, ChildGuard> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while Instant::now() < deadline {
            if c.try_exit_status().is_some() {
                return Err(c);
            }
            if self.list_hosts().await.is_ok() {
                return Ok(c);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(c)
    }

    fn spawn_agent(&self, i: usize) -> ChildGuard {
        let h = &self.hosts[i];
        let config = self.dir.path().join("agent.toml");
        let args = [
            "--config".to_string(),
            config.to_string_lossy().into_owned(),
            "--controller".into(),
            self.controller_url(),
            "--name".into(),
            h.name.clone(),
            "--heartbeat-interval".into(),
            TEST_HEARTBEAT.into(),
            "--label".into(),
            format!("role={}", self.role),
            "--advertise".into(),
            h.ip.to_string(),
        ];
        ChildGuard::spawn(
            &format!("agent {}", h.name),
            &bin_path("drover-agent"),
            args,
            &[("RUST_LOG", "info,drover_agent=debug")],
        )
    }

    /// The controller's inventory of this fleet's hosts.
    pub async fn list_hosts(&self) -> Result<Vec<HostInfo>, String> {
        let channel = tonic::transport::Endpoint::from_shared(self.controller_url())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| format!("connect to the controller: {e}"))?;
        let hosts = OperatorClient::new(channel)
            .list_hosts(ListHostsRequest {
                selector: format!("role={}", self.role),
            })
            .await
            .map_err(|s| format!("ListHosts: {}", s.message()))?
            .into_inner()
            .hosts;
        Ok(hosts)
    }

    /// Waits until every running agent is connected; host `fresh` (every host when
    /// `None`) in a session begun at or after `since_ms` (Unix ms).
    async fn wait_connected(&self, since_ms: u64, fresh: Option<usize>) {
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

impl Drop for Fleet {
    fn drop(&mut self) {
        // A graceful stop would wait for the agent streams; the state is throw-away.
        if let Some(mut c) = self.controller.take() {
            sigkill(&mut c);
            if std::thread::panicking() {
                eprintln!("{}", c.logs());
            }
        }
        // The remaining fields drop in declaration order: agents, containers, HAProxy,
        // registry, directory.
    }
}

/// A CLI run that ended.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The arguments, for messages.
    pub args: Vec<String>,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

impl CliRun {
    /// Every stdout line that is a JSON object.
    pub fn json(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    /// The last deployment snapshot printed (`{"type": "deployment", ...}`).
    pub fn final_snapshot(&self) -> Value {
        self.json()
            .into_iter()
            .rev()
            .find(|v| v["type"] == "deployment")
            .unwrap_or_else(|| panic!("no deployment snapshot in the output: {}", self.describe()))
    }

    /// Exit code, duration and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "drover {} exited with {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.took,
            self.stdout,
            self.stderr
        )
    }
}

/// A CLI process still running, its output collected as it comes; killed if dropped.
pub struct RunningCli {
    /// The arguments, for messages.
    args: Vec<String>,
    /// The process (`kill_on_drop`).
    child: tokio::process::Child,
    /// Stdout so far.
    stdout: Arc<Mutex<String>>,
    /// Stderr so far.
    stderr: Arc<Mutex<String>>,
    /// The tasks copying stdout and stderr; aborted on drop.
    readers: Vec<JoinHandle<()>>,
    /// When it started.
    started: Instant,
}

impl RunningCli {
    /// The JSON lines printed so far.
    pub fn json(&self) -> Vec<Value> {
        json_lines(&self.stdout.lock().expect("stdout lock"))
    }

    /// Waits until a JSON line matching `pred` was printed, and returns it. Panics with
    /// the output when the process ends first or `timeout` passes.
    pub async fn wait_json(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                return v;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // Let the readers catch up with the last lines before giving up.
                if exited {
                    for r in std::mem::take(&mut self.readers) {
                        let _ = r.await;
                    }
                    if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                        return v;
                    }
                }
                panic!(
                    "drover {} {} before printing {what}\n--- stdout ---\n{}--- stderr ---\n{}",
                    self.args.join(" "),
                    if exited { "exited" } else { "timed out" },
                    self.stdout.lock().expect("stdout lock"),
                    self.stderr.lock().expect("stderr lock"),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to end (killing it after `timeout`) and returns its run.
    pub async fn finish(mut self, timeout: Duration) -> CliRun {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.await;
        }
        let run = CliRun {
            args: self.args.clone(),
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.lock().expect("stdout lock").clone(),
            stderr: self.stderr.lock().expect("stderr lock").clone(),
            took: self.started.elapsed(),
        };
        assert!(
            status.is_some(),
            "drover did not finish within {timeout:?} (killed): {}",
            run.describe()
        );
        run
    }
}

impl Drop for RunningCli {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

/// Copies lines of `from` into `into` until EOF.
fn collect(
    from: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = into.lock().expect("output lock");
            s.push_str(&line);
            s.push('\n');
        }
    })
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The version `GET /` on `addr` answered (`X-Version`), or why it failed.
pub async fn version_of(addr: SocketAddr) -> Result<String, String> {
    let r = crate::http::get(addr, "/").await?;
    if r.status != 200 {
        return Err(format!(
            "GET / on {addr} answered {}: {:?}",
            r.status, r.body
        ));
    }
    r.header("x-version")
        .map(str::to_string)
        .ok_or_else(|| format!("GET / on {addr} named no version: {:?}", r.body))
}

/// HAProxy in front of the fleet: `GET /ready` checks (HAProxy's default would be
/// OPTIONS, which the demo app answers 405). Without `timeout check`, HAProxy gives a check
/// `inter` to complete: 1 s, so that a loaded machine does not fail checks of hosts no
/// deploy touches, while `fastinter`/`downinter` keep state changes quick to show.
fn haproxy_options() -> HaproxyOptions {
    HaproxyOptions {
        check_path: "/ready".to_string(),
        check_params: "inter 1s fastinter 100ms downinter 100ms rise 2 fall 2".to_string(),
        ..HaproxyOptions::default()
    }
}

/// SIGKILL, then reap (the pid cannot be reused before the reap).
fn sigkill(guard: &mut ChildGuard) {
    if let Some(pid) = guard.pid() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    guard.stop(Duration::ZERO);
}

/// Unix time in ms.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port(Ipv4Addr::LOCALHOST)))
}

/// `n` distinct loopback addresses and one port free on all of them.
fn loopback_ips_and_port(n: usize) -> (Vec<Ipv4Addr>, u16) {
    for _ in 0..20 {
        let mut ips: Vec<Ipv4Addr> = vec![];
        while ips.len() < n {
            let ip = crate::loopback_host();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let port = crate::free_port(ips[0]);
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return (ips, port);
        }
    }
    panic!("no port free on {n} loopback addresses after 20 tries");
}
