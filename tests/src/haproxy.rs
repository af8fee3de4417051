//! A real HAProxy for tests: [`Haproxy::start`] writes a config into a temporary
//! directory and runs `haproxy -f cfg -db` in the foreground as a child process, stopped
//! (SIGTERM, then SIGKILL) when the guard drops. One HTTP frontend on a loopback address,
//! one backend with health-checked servers, the runtime API on a Unix socket (and
//! optionally on loopback TCP).
//!
//! [`Haproxy::sample_states`] records every server's state in the background so a test
//! can assert how many servers were ever out of rotation at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_controller::lb::{
    AdminState, HaproxyRuntime, LoadBalancer, OpStatus, RuntimeAddr, ServerStatus,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, info_span};

use crate::net::{free_port, loopback_host};
use crate::process::ChildGuard;

/// How long `start` waits for the runtime API to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Runtime API command timeout used by the harness.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A sampler stops by itself after this long, whatever the test does.
const SAMPLER_MAX: Duration = Duration::from_secs(600);

/// How to run HAProxy.
#[derive(Debug, Clone)]
pub struct HaproxyOptions {
    /// The binary: `$DROVER_HAPROXY`, else `/usr/sbin/haproxy`.
    pub binary: PathBuf,
    /// Also open the runtime API on loopback TCP (`stats socket 127.x.y.z:port`).
    pub tcp_runtime: bool,
    /// Health check path; 200 means ready.
    pub check_path: String,
    /// Health check timing and thresholds, added to every server line.
    pub check_params: String,
    /// `timeout check` of the backend (none: a check may take `inter`).
    pub check_timeout: Option<Duration>,
}

impl Default for HaproxyOptions {
    fn default() -> Self {
        Self {
            binary: std::env::var_os("DROVER_HAPROXY")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy")),
            tcp_runtime: false,
            check_path: "/ready".to_string(),
            check_params: "inter 100ms fastinter 100ms downinter 100ms rise 2 fall 2".to_string(),
            check_timeout: None,
        }
    }
}

/// A running HAProxy owned by a test.
pub struct Haproxy {
    /// The process; stopped on drop (declared first: it stops before `dir` is removed).
    process: ChildGuard,
    /// Holds the config and the admin socket.
    dir: tempfile::TempDir,
    /// The one backend.
    backend: String,
    /// Where clients send HTTP.
    frontend: SocketAddr,
    /// The runtime API on loopback TCP, if asked for.
    tcp_runtime: Option<SocketAddr>,
    /// The config it runs, for messages.
    config: String,
    /// The HAProxy binary, for a reload.
    binary: PathBuf,
}

impl Haproxy {
    /// Starts HAProxy in front of `servers` (name, address) in `backend`, and returns once
    /// its runtime API answers. Servers start DOWN until their checks pass (`rise 2`).
    /// Panics with HAProxy's output if it does not come up.
    pub async fn start(
        backend: &str,
        servers: &[(&str, SocketAddr)],
        opts: HaproxyOptions,
    ) -> Self {
        let mut last_logs = String::new();
        // A free port can be taken between probing and HAProxy's bind: try again.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("drover-haproxy-")
                .tempdir()
                .expect("create a temp dir for HAProxy");
            let ip = loopback_host();
            let frontend = SocketAddr::from((ip, free_port(ip)));
            let tcp_runtime = opts
                .tcp_runtime
                .then(|| SocketAddr::from((ip, free_port(ip))));
            let config = render_config(dir.path(), backend, servers, frontend, tcp_runtime, &opts);
            let cfg_path = dir.path().join("haproxy.cfg");
            std::fs::write(&cfg_path, &config).expect("write haproxy.cfg");
            let args = ["-f".as_ref(), cfg_path.as_os_str(), "-db".as_ref()];
            let process =
                ChildGuard::spawn(&format!("haproxy {frontend}"), &opts.binary, args, &[]);
            let mut proxy = Haproxy {
                process,
                dir,
                backend: backend.to_string(),
                frontend,
                tcp_runtime,
                config,
                binary: opts.binary.clone(),
            };
            if proxy.wait_runtime().await {
                return proxy;
            }
            last_logs = proxy.process.logs();
        }
        panic!("HAProxy did not start (3 tries); last output:\n{last_logs}");
    }

    /// Polls the admin socket until it answers; false if HAProxy exited or time ran out.
    async fn wait_runtime(&mut self) -> bool {
        let runtime = self.runtime();
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.process.try_exit_status().is_some() {
                return false;
            }
            if runtime.command("show info").await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Reloads HAProxy as `haproxy -sf OLDPID` does: a new process with the same config
    /// takes over the listeners and the runtime socket, the old one finishes and exits.
    /// The new process counts from zero. Returns once the old process has exited and
    /// the new one answers the runtime API; panics with the logs otherwise.
    pub async fn reload(&mut self) {
        let old_pid = self.process.pid().expect("HAProxy runs before a reload");
        let cfg = self.dir.path().join("haproxy.cfg");
        let old_pid_arg = old_pid.to_string();
        let args = [
            "-f".as_ref(),
            cfg.as_os_str(),
            "-db".as_ref(),
            "-sf".as_ref(),
            old_pid_arg.as_ref(),
        ];
        let label = format!("haproxy {} (reloaded)", self.frontend);
        let new = ChildGuard::spawn(&label, &self.binary, args, &[]);
        let new_pid = new.pid();
        let mut old = std::mem::replace(&mut self.process, new);
        let deadline = Instant::now() + START_TIMEOUT;
        while old.try_exit_status().is_none() {
            assert!(
                Instant::now() < deadline,
                "the old HAProxy (pid {old_pid}) did not exit after the reload:\n{}\n{}",
                old.logs(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let runtime = self.runtime();
        while runtime.process_info().await.ok().map(|p| p.pid) != new_pid {
            assert!(
                Instant::now() < deadline && self.process.try_exit_status().is_none(),
                "the reloaded HAProxy does not answer its runtime API:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops HAProxy (SIGTERM: a hard stop, connections are cut) and starts it again
    /// with the same configuration: every runtime state is lost, servers start DOWN
    /// until their checks pass. Returns once the new process answers its runtime API.
    pub async fn restart(&mut self) {
        let (_, killed) = self.process.stop(START_TIMEOUT);
        assert!(!killed, "HAProxy did not stop on SIGTERM:\n{}", self.logs());
        let cfg = self.dir.path().join("haproxy.cfg");
        let args = ["-f".as_ref(), cfg.as_os_str(), "-db".as_ref()];
        let label = format!("haproxy {} (restarted)", self.frontend);
        self.process = ChildGuard::spawn(&label, &self.binary, args, &[]);
        assert!(
            self.wait_runtime().await,
            "the restarted HAProxy does not answer its runtime API:\n{}",
            self.logs()
        );
    }

    /// Where clients send HTTP.
    pub fn frontend_addr(&self) -> SocketAddr {
        self.frontend
    }

    /// The admin-level Unix socket of the runtime API.
    pub fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// The admin-level TCP runtime API, if started with `tcp_runtime`.
    pub fn tcp_runtime_addr(&self) -> Option<SocketAddr> {
        self.tcp_runtime
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The config HAProxy runs.
    pub fn config(&self) -> &str {
        &self.config
    }

    /// What HAProxy printed so far (alerts, server state changes).
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The runtime API on the Unix socket.
    pub fn runtime_addr(&self) -> RuntimeAddr {
        RuntimeAddr::Unix(self.admin_socket())
    }

    /// A driver handle on the Unix socket.
    pub fn runtime(&self) -> HaproxyRuntime {
        HaproxyRuntime::new(self.runtime_addr(), COMMAND_TIMEOUT)
    }

    /// The controller's driver for this HAProxy's backend.
    pub fn load_balancer(&self) -> LoadBalancer {
        LoadBalancer::new(
            vec![self.runtime_addr()],
            self.backend.clone(),
            COMMAND_TIMEOUT,
        )
    }

    /// Every server of the backend, now.
    pub async fn servers(&self) -> Vec<ServerStatus> {
        self.runtime()
            .servers(&self.backend)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// Waits until every server is UP; panics with the states and logs otherwise.
    pub async fn wait_all_up(&self, timeout: Duration) {
        let lb = self.load_balancer();
        for s in self.servers().await {
            if let Err(e) = lb.wait_up(&s.server, timeout).await {
                panic!("{e}\n{}", self.logs());
            }
        }
    }

    /// Starts recording every server's state each `interval`, until the guard is stopped
    /// (or dropped, or 10 minutes pass).
    pub fn sample_states(&self, interval: Duration) -> SamplerGuard {
        let runtime = self.runtime();
        let backend = self.backend.clone();
        let samples = Arc::new(Mutex::new(Samples::default()));
        let (stop, mut stop_rx) = watch::channel(false);
        let span = info_span!("haproxy_sampler", %backend);
        let shared = samples.clone();
        let task = tokio::spawn(
            async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let end = Instant::now() + SAMPLER_MAX;
                while Instant::now() < end {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stop_rx.changed() => break,
                    }
                    let read = runtime.servers(&backend).await;
                    let mut samples = shared.lock().expect("sampler lock");
                    match read {
                        Ok(servers) => samples.samples.push(StateSample {
                            at: Instant::now(),
                            servers: servers
                                .into_iter()
                                .map(|s| (s.server, (s.status, s.admin)))
                                .collect(),
                        }),
                        Err(e) => samples.errors.push(e.to_string()),
                    }
                }
            }
            .instrument(span),
        );
        SamplerGuard {
            stop,
            task: Some(task),
            samples,
        }
    }
}

/// Every server's (status, admin state) at one moment.
#[derive(Debug, Clone)]
pub struct StateSample {
    /// When the sample was read.
    pub at: Instant,
    /// Server name to its state.
    pub servers: BTreeMap<String, (OpStatus, AdminState)>,
}

impl StateSample {
    /// Servers out of rotation: admin DRAIN/MAINT, or status not UP.
    pub fn out_of_rotation(&self) -> Vec<&str> {
        self.servers
            .iter()
            .filter(|(_, (status, admin))| *status != OpStatus::Up || *admin != AdminState::Ready)
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// What a sampler recorded.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// In time order.
    pub samples: Vec<StateSample>,
    /// Runtime API errors while sampling.
    pub errors: Vec<String>,
}

impl Samples {
    /// The most servers out of rotation in any one sample.
    pub fn max_out_of_rotation(&self) -> usize {
        self.samples
            .iter()
            .map(|s| s.out_of_rotation().len())
            .max()
            .unwrap_or(0)
    }

    /// The states `server` went through, consecutive repeats folded.
    pub fn history(&self, server: &str) -> Vec<(OpStatus, AdminState)> {
        let mut out: Vec<(OpStatus, AdminState)> = Vec::new();
        for state in self.samples.iter().filter_map(|s| s.servers.get(server)) {
            if out.last() != Some(state) {
                out.push(state.clone());
            }
        }
        out
    }

    /// Did `server` go through states matching `steps`, in this order (other states may
    /// come between)?
    pub fn saw_in_order(&self, server: &str, steps: &[fn(&OpStatus, AdminState) -> bool]) -> bool {
        let mut steps = steps.iter().peekable();
        for (status, admin) in self.history(server) {
            if steps.peek().is_some_and(|step| step(&status, admin)) {
                steps.next();
            }
        }
        steps.peek().is_none()
    }
}

/// One trip of a server out of rotation and back, as the samples saw it.
#[derive(Debug, Clone, Copy)]
pub struct Excursion {
    /// The first sample with its admin state not READY (drained or in maintenance).
    pub left: Instant,
    /// The first later sample with its admin state READY again (re-enabled; usually
    /// still DOWN until fresh checks pass).
    pub reenabled: Instant,
    /// The first sample from `reenabled` on with it UP and READY: back in rotation.
    pub up: Instant,
}

impl Samples {
    /// `server`'s first trip out of rotation (by admin state) and back UP, if the samples
    /// saw it end.
    pub fn excursion(&self, server: &str) -> Option<Excursion> {
        let mut left = None;
        let mut reenabled = None;
        for sample in &self.samples {
            let Some((status, admin)) = sample.servers.get(server) else {
                continue;
            };
            let ready = *admin == AdminState::Ready;
            match (left, reenabled) {
                (None, _) if !ready => left = Some(sample.at),
                (Some(_), None) if ready => reenabled = Some(sample.at),
                _ => {}
            }
            if let (Some(left), Some(reenabled)) = (left, reenabled)
                && ready
                && *status == OpStatus::Up
            {
                return Some(Excursion {
                    left,
                    reenabled,
                    up: sample.at,
                });
            }
        }
        None
    }
}

/// Stops the sampler: [`SamplerGuard::stop`] returns what it recorded; drop aborts it.
pub struct SamplerGuard {
    /// Tells the task to stop.
    stop: watch::Sender<bool>,
    /// The sampling task; `None` once stopped.
    task: Option<JoinHandle<()>>,
    /// What was recorded so far, shared with the task (never locked across an await).
    samples: Arc<Mutex<Samples>>,
}

impl SamplerGuard {
    /// The last state recorded for `server`, for tests that wait until the sampler saw it.
    pub fn last(&self, server: &str) -> Option<(OpStatus, AdminState)> {
        let samples = self.samples.lock().expect("sampler lock");
        samples.samples.last()?.servers.get(server).cloned()
    }

    /// Stops sampling and returns the samples.
    pub async fn stop(mut self) -> Samples {
        let _ = self.stop.send(true);
        let task = self.task.take().expect("a sampler is stopped once");
        task.await.expect("the sampler task panicked");
        std::mem::take(&mut *self.samples.lock().expect("sampler lock"))
    }
}

impl Drop for SamplerGuard {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

fn render_config(
    dir: &Path,
    backend: &str,
    servers: &[(&str, SocketAddr)],
    frontend: SocketAddr,
    tcp_runtime: Option<SocketAddr>,
    opts: &HaproxyOptions,
) -> String {
    for (_, addr) in servers {
        assert!(
            addr.ip().is_loopback(),
            "HAProxy test servers must be on loopback, not {addr}"
        );
    }
    let tcp_socket = tcp_runtime
        .map(|a| format!("    stats socket {a} level admin\n"))
        .unwrap_or_default();
    let server_lines: String = servers
        .iter()
        .map(|(name, addr)| format!("    server {name} {addr} check\n"))
        .collect();
    format!(
        "global\n\
         \x20   nbthread 1\n\
         \x20   stats socket {sock} mode 600 level admin\n\
         {tcp_socket}\
         \n\
         defaults\n\
         \x20   mode http\n\
         \x20   option http-keep-alive\n\
         \x20   retries 3\n\
         \x20   option redispatch 1\n\
         \x20   timeout connect 1s\n\
         \x20   timeout client 10s\n\
         \x20   timeout server 10s\n\
         \n\
         frontend fe\n\
         \x20   bind {frontend}\n\
         \x20   default_backend {backend}\n\
         \n\
         backend {backend}\n\
         \x20   balance roundrobin\n\
         \x20   option httpchk GET {check}\n\
         \x20   http-check expect status 200\n\
         \x20   default-server {params}\n\
         {check_timeout}\
         {server_lines}",
        sock = dir.join("admin.sock").display(),
        check = opts.check_path,
        params = opts.check_params,
        check_timeout = opts
            .check_timeout
            .map(|t| format!("    timeout check {}ms\n", t.as_millis()))
            .unwrap_or_default(),
    )
}
