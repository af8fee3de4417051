//! A whole fleet with real parts, for the end-to-end rollout tests and the demo: the demo
//! images in a real registry with htpasswd auth, a real `drover serve` process with its
//! own SQLite database, N real `drover-agent` processes each publishing on its own
//! 127.0.0.N, and a real HAProxy whose backend has one health-checked server per agent
//! (named like the agent, `GET /ready` as the check). [`Fleet::drover`] runs the real CLI
//! against it; [`Fleet::start`] deploys a first version so every host serves it.
//!
//! Transport ([`Transport`]): by default mutual TLS, as in production. The fleet runs
//! `drover ca init`, serves with `--pki-dir`, gives every CLI run the admin certificate
//! (`DROVER_CA_CERT`, `DROVER_CERT`, `DROVER_KEY`, `https://` controller), and enrolls each
//! agent for real: a `drover token create` join token, then `drover-agent --token ...
//! --ca-cert ... --state-dir <dir>/agent-N`. `Transport::InsecureDev` runs everything with
//! `--insecure-dev` over plaintext instead (for comparisons such as the cost of TLS).
//! Agents keep secrets in a directory on tmpfs (`/dev/shm`), removed with the fleet.
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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_controller::schedule::ManualClock;

use crate::haproxy::{Haproxy, HaproxyOptions};
use crate::pki::PkiDir;
use crate::process::ChildGuard;
use crate::registry::Pushed;
use crate::tmpfs::TmpfsDir;
use crate::{DemoImage, DockerCleanup, Registry};

mod cli;
mod follow;
mod in_process;
mod observe;
mod processes;
mod replicas;
mod web;

pub use cli::{As, CliRun, RunningCli, Transcript};
pub use follow::{TERMINAL, field, host_in_batch, hosts_in_phase, phases};
pub use in_process::InProcessController;
pub use observe::version_of;
pub use replicas::LEASE;

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
/// Lifetime of the join tokens the fleet creates for its agents.
const JOIN_TOKEN_TTL: &str = "30m";
/// The variables through which the CLI takes credentials: removed from every CLI run's
/// environment, then set as [`As`] says. A CLI run also gets a client configuration
/// directory of its own (`XDG_CONFIG_HOME`), so no profile of the machine's user leaks in.
const CREDENTIAL_ENV: [&str; 9] = [
    "DROVER_CA_CERT",
    "DROVER_CERT",
    "DROVER_KEY",
    "DROVER_TOKEN",
    "DROVER_TOKEN_FILE",
    "DROVER_INSECURE_DEV",
    "DROVER_PKI_DIR",
    "DROVER_PROFILE",
    "DROVER_CONTROLLER",
];

/// How the fleet's parts talk to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Mutual TLS with a fleet CA, agents enrolled with join tokens, the CLI presenting the
    /// admin certificate: what production runs.
    #[default]
    Mtls,
    /// Plaintext HTTP/2, `--insecure-dev` on the controller, the agents and the CLI.
    InsecureDev,
}

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
    /// mTLS (default) or plaintext `--insecure-dev`.
    pub transport: Transport,
    /// `drover serve --agent-cert-ttl` (the controller's default when `None`).
    pub agent_cert_ttl: Option<Duration>,
    /// Serve the controller in this process on this clock instead of running `drover
    /// serve` (for deploy windows and schedules); needs [`Transport::InsecureDev`].
    pub clock: Option<ManualClock>,
    /// Environment labels dealt to the hosts in turn (host `i` gets
    /// `env=<env_labels[i % len]>`); empty: no `env` label.
    pub env_labels: &'a [&'a str],
    /// HAProxy's `timeout check` (none: a check may take its `inter`, 1 s).
    pub check_timeout: Option<Duration>,
    /// HAProxy's `inter` (none: 1 s, so that a loaded machine does not fail checks of
    /// hosts no deploy touches).
    pub check_inter: Option<Duration>,
    /// Serve the web interface too (`drover serve --web-listen` on a loopback port of
    /// its own, kept across controller restarts); see [`Fleet::web_url`].
    pub web: bool,
    /// Controller replicas on a throwaway PostgreSQL cluster of the fleet's own
    /// (`--leader-lease` [`LEASE`]), instead of one controller on SQLite (0).
    pub replicas: usize,
}

impl Default for FleetOptions<'_> {
    fn default() -> Self {
        Self {
            hosts: 4,
            batch_size: "1",
            readiness_deadline: Duration::from_secs(15),
            images: &[DemoImage::V1, DemoImage::V2, DemoImage::NeverReady],
            initial: Some(DemoImage::V1),
            transport: Transport::Mtls,
            agent_cert_ttl: None,
            clock: None,
            env_labels: &[],
            check_timeout: None,
            check_inter: None,
            web: false,
            replicas: 0,
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
    /// Its `env` label, if the fleet deals them ([`FleetOptions::env_labels`]).
    pub env: Option<String>,
}

/// A running fleet. Fields drop in declaration order (see the module docs).
pub struct Fleet {
    /// The controller served in this process ([`FleetOptions::clock`]), instead of
    /// `controller`.
    in_process: Option<InProcessController>,
    /// `drover serve`; `None` while a test has it killed.
    controller: Option<ChildGuard>,
    /// Controller replicas and their PostgreSQL ([`FleetOptions::replicas`]), instead of
    /// `controller`.
    replicas: Option<replicas::Replicas>,
    /// One agent per host; `None` while a test has it killed.
    agents: Vec<Option<ChildGuard>>,
    /// Processes a test killed, kept for their logs.
    dead: Vec<ChildGuard>,
    /// Removes every container of the fleet's agents.
    _cleanup: DockerCleanup,
    /// The agents' secrets directories (`agent-N` inside), after their containers.
    secrets: TmpfsDir,
    /// The load balancer in front of the hosts.
    haproxy: Haproxy,
    /// Where the images come from.
    registry: Registry,
    /// Database, specs, the agents' (empty) config file, the PKI (`pki/`) and the agents'
    /// state directories (`agent-N/`).
    dir: tempfile::TempDir,
    /// mTLS or plaintext.
    transport: Transport,
    /// `--agent-cert-ttl` for the controller.
    agent_cert_ttl: Option<Duration>,
    /// Every CLI run's output.
    transcript: Transcript,
    /// The hosts, in order.
    hosts: Vec<FleetHost>,
    /// The label value (`role=<this>`) selecting exactly this fleet's hosts.
    role: String,
    /// Where the controller serves agents and operators.
    controller_addr: SocketAddr,
    /// Where the controller serves Prometheus metrics.
    metrics_addr: SocketAddr,
    /// Where the controller serves the web interface ([`FleetOptions::web`]).
    web_addr: Option<SocketAddr>,
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
        assert!(
            opts.clock.is_none() || opts.transport == Transport::InsecureDev,
            "the in-process controller (FleetOptions::clock) serves plaintext only"
        );
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
                env: (!opts.env_labels.is_empty())
                    .then(|| opts.env_labels[i % opts.env_labels.len()].to_string()),
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
        let mut haproxy_opts = HaproxyOptions {
            check_timeout: opts.check_timeout,
            ..haproxy_options()
        };
        if let Some(inter) = opts.check_inter {
            haproxy_opts.check_params = haproxy_opts
                .check_params
                .replace("inter 1s ", &format!("inter {}ms ", inter.as_millis()));
        }
        let haproxy = Haproxy::start(BACKEND, &servers, haproxy_opts).await;
        let dir = tempfile::Builder::new()
            .prefix("drover-fleet-")
            .tempdir()
            .expect("create the fleet's directory");
        std::fs::write(dir.path().join("agent.toml"), "").expect("write agent.toml");
        let mut fleet = Self {
            in_process: None,
            controller: None,
            replicas: None,
            agents: hosts.iter().map(|_| None).collect(),
            dead: vec![],
            _cleanup: cleanup,
            secrets: TmpfsDir::new(),
            haproxy,
            registry,
            spec: dir.path().join("drover.toml"),
            dir,
            transport: opts.transport,
            agent_cert_ttl: opts.agent_cert_ttl,
            transcript: Transcript::default(),
            hosts,
            role,
            controller_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            metrics_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            web_addr: opts.web.then(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            readiness_deadline: opts.readiness_deadline,
            pushed,
        };
        if fleet.transport == Transport::Mtls {
            fleet.ca_init().await;
        }
        match &opts.clock {
            Some(clock) => fleet.start_in_process(clock).await,
            None if opts.replicas > 0 => fleet.start_replicas(opts.replicas).await,
            None => fleet.start_first_controller().await,
        }
        let spec = fleet.spec_toml(opts.batch_size);
        std::fs::write(&fleet.spec, spec).expect("write the spec");
        for i in 0..fleet.hosts.len() {
            fleet.agents[i] = Some(fleet.spawn_agent(i).await);
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

    /// The load balancer, to reload or restart it.
    pub fn haproxy_mut(&mut self) -> &mut Haproxy {
        &mut self.haproxy
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

    /// `https://127.0.0.1:PORT` (`http://` with [`Transport::InsecureDev`]), for
    /// `--controller` / `DROVER_CONTROLLER`.
    pub fn controller_url(&self) -> String {
        if let Some(r) = &self.replicas {
            return r.urls().join(",");
        }
        match self.transport {
            Transport::Mtls => format!("https://{}", self.controller_addr),
            Transport::InsecureDev => format!("http://{}", self.controller_addr),
        }
    }

    /// Where the controller listens for agents and operators.
    pub fn controller_addr(&self) -> SocketAddr {
        self.controller_addr
    }

    /// Where the controller serves the web interface; panics unless the fleet was started
    /// with [`FleetOptions::web`].
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr
            .expect("the fleet serves no web interface (FleetOptions::web)")
    }

    /// `https://127.0.0.1:PORT` of the web interface (`http://` with
    /// [`Transport::InsecureDev`]); panics unless the fleet was started with
    /// [`FleetOptions::web`].
    pub fn web_url(&self) -> String {
        match self.transport {
            Transport::Mtls => format!("https://{}", self.web_addr()),
            Transport::InsecureDev => format!("http://{}", self.web_addr()),
        }
    }

    /// mTLS or plaintext.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The fleet's PKI directory (`drover ca init --dir`); panics with
    /// [`Transport::InsecureDev`], which has none.
    pub fn pki(&self) -> PkiDir {
        assert_eq!(
            self.transport,
            Transport::Mtls,
            "an --insecure-dev fleet has no PKI"
        );
        PkiDir::new(self.dir.path().join("pki"))
    }

    /// The fleet's own directory (database, specs, PKI, agents' state).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The controller's SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.dir.path().join("drover.db")
    }

    /// Agent `i`'s state directory (`agent.crt`, `agent.key`).
    pub fn agent_state_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("agent-{}", i + 1))
    }

    /// Agent `i`'s secrets directory (on tmpfs).
    pub fn agent_secrets_dir(&self, i: usize) -> PathBuf {
        self.secrets.path().join(format!("agent-{}", i + 1))
    }

    /// Every CLI run of this fleet so far.
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// Logs of every process of the fleet, killed ones included: controllers, agents,
    /// HAProxy, the registry (each with a `----- label -----` header).
    pub fn all_logs(&self) -> String {
        let mut out: Vec<String> = self.dead.iter().map(ChildGuard::logs).collect();
        out.extend(self.controller.as_ref().map(ChildGuard::logs));
        out.extend(self.replicas.iter().flat_map(replicas::Replicas::logs));
        out.extend(self.agents.iter().flatten().map(ChildGuard::logs));
        out.push(self.haproxy.logs());
        out.push(self.registry.logs());
        out.join("\n")
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
        out.extend(self.replicas.iter().flat_map(replicas::Replicas::logs));
        out.join("\n")
    }

    /// Logs of agent `i`: every process it ran as, killed ones first.
    pub fn agent_logs(&self, i: usize) -> String {
        let header = format!("----- agent {} ", self.hosts[i].name);
        let mut out: Vec<String> = self
            .dead
            .iter()
            .map(ChildGuard::logs)
            .filter(|l| l.starts_with(&header))
            .collect();
        out.extend(self.agents[i].as_ref().map(ChildGuard::logs));
        out.join("\n")
    }

    /// Whether agent `i` runs (was not killed, and has not exited).
    pub fn agent_running(&mut self, i: usize) -> bool {
        self.agents[i]
            .as_mut()
            .is_some_and(|a| a.try_exit_status().is_none())
    }

    /// The process id of agent `i`, while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i].as_ref().and_then(ChildGuard::pid)
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

    /// The service spec of this fleet with `batch_size`, start-first: `rollout.order =
    /// "start-first"` and `service.host_ports = [P, P + 1]` (P: the fleet's port).
    pub fn start_first_spec_toml(&self, batch_size: &str) -> String {
        let port = self.hosts[0].addr.port();
        let spec = self.spec_toml(batch_size).replace(
            &format!("host_port = {port}\n"),
            &format!("host_ports = [{port}, {}]\n", port + 1),
        );
        assert!(spec.contains("host_ports"), "{spec}");
        spec.replace("[rollout]\n", "[rollout]\norder = \"start-first\"\n")
    }

    /// The service spec of this fleet with `batch_size` and no load balancer: its
    /// `[load_balancer]` section is `kind = "none"` (HAProxy still runs, untouched).
    pub fn no_load_balancer_spec_toml(&self, batch_size: &str) -> String {
        let spec = self.spec_toml(batch_size);
        let start = spec
            .find("[load_balancer]\n")
            .expect("a [load_balancer] section");
        let end = spec[start..].find("\n\n").map_or(spec.len(), |n| start + n);
        format!(
            "{}[load_balancer]\nkind = \"none\"{}",
            &spec[..start],
            &spec[end..]
        )
    }

    /// Writes `text` as `name` in the fleet's directory; returns its path.
    pub fn write_spec(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
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

/// HAProxy in front of the fleet: `GET /ready` checks (HAProxy's default would be
/// OPTIONS, which the demo app answers 405). Without `timeout check`, HAProxy gives a check
/// `inter` to complete: 1 s, so that a loaded machine does not fail checks of hosts no
/// deploy touches, while `fastinter`/`downinter` keep state changes quick to show.
pub fn haproxy_options() -> HaproxyOptions {
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
pub fn loopback_ips_and_port(n: usize) -> (Vec<Ipv4Addr>, u16) {
    for _ in 0..20 {
        let mut ips: Vec<Ipv4Addr> = vec![];
        while ips.len() < n {
            let ip = crate::loopback_host();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let port = crate::free_port(ips[0]);
        // The next port too: a start-first spec alternates between the two.
        let free = |ip: &Ipv4Addr, p: u16| TcpListener::bind((*ip, p)).is_ok();
        if port < u16::MAX && ips.iter().all(|ip| free(ip, port) && free(ip, port + 1)) {
            return (ips, port);
        }
    }
    panic!("no port free on {n} loopback addresses after 20 tries");
}
