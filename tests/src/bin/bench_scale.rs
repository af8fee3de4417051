//! `bench_scale`: one real `drover serve` (mTLS, SQLite) against 10,000 agents.
//!
//! The agents are the REAL agent code (`drover_agent::run_with_runtime`: enrollment,
//! connection, heartbeats, executor, fencing, commands) on a SIMULATED container engine
//! (`drover_agent::sim`, compiled only with the agent's `sim` feature), many per process:
//! `--processes` child processes of this program each run their share, so that no
//! process needs more open files than its limit. Each agent has its own key, certificate
//! (enrolled with its own join token) and TCP + TLS connection. The controller is the
//! release `drover serve` on 127.0.0.1; nothing leaves loopback (the simulated image's
//! registry, `sim.invalid`, is never contacted: the controller asks only loopback
//! registries, and the simulated engine answers pulls itself).
//!
//! 1. Enrollment: one join token per agent (CreateJoinToken, admin certificate), then
//!    every agent starts, enrolls and connects: time until the controller lists all
//!    connected.
//! 2. Storms: every agent stops (streams closed), then all start at once with the
//!    identity on disk: time until all are connected again; the controller's RSS with
//!    all connected, and its CPU while they only heartbeat.
//! 3. Deploys across all agents with `--batch` batches (`[load_balancer] kind = "none"`,
//!    Docker-health readiness): v1 (first install), then v2 (stop, start, ready on every
//!    host). One operator watches (`Watch`) and one polls `GetDeployment` once a second,
//!    as `drover status` would; the controller's CPU time per host is measured, and
//!    every host must end on the version deployed, having started exactly one container.
//! 4. Fan-out: `Logs` with `--tail 1` to every host (one command per agent, every answer
//!    back), timed from the request to the end of the stream.
//!
//! Prints each figure with the target of the scale the controller is built for: under
//! 1 GiB RSS, fan-out under 2 s, under 1 ms of controller CPU per host of a deploy.
//! Not a test: run it through `tests/bench.sh scale` (which raises the open-files limit).
//!
//! ```text
//! bench_scale [--agents 10000] [--processes 10] [--batch 10%] [--storms 2] [--deadline 300]
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use drover_agent::sim::{self, SimProfile};
use drover_agent::{AgentConfig, config::TokenSource};
use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{
    CreateJoinTokenRequest, DeployRequest, DeploymentState, GetDeploymentRequest, LogsQuery,
    WatchRequest, logs_event,
};
use drover_shared::telemetry::LogFormat;
use drover_shared::tls;
use drover_tests::bench::{self, BinDir, Flags, Stats, StopChildren, cpu_seconds, ms, verdict};
use drover_tests::bench_controller::{CALL_TIMEOUT, Controller, Mode, ca_init, status_chain};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::Channel;

/// The label every simulated agent carries, and the deploy's selector.
const ROLE: &str = "scale";
/// The simulated service.
const SERVICE: &str = "sim";
/// Open files each process needs besides one socket per agent.
const SPARE_FILES: u64 = 512;
/// How often the controller is asked while waiting for agents.
const POLL: Duration = Duration::from_millis(200);
/// Targets of the scale the controller is built for.
const RSS_TARGET_MIB: f64 = 1024.0;
const FAN_OUT_TARGET: Duration = Duration::from_secs(2);
const CPU_PER_HOST_TARGET_MS: f64 = 1.0;

#[derive(Debug, Clone)]
struct Args {
    agents: usize,
    processes: usize,
    batch: String,
    storms: usize,
    deadline: Duration,
    profile: Profile,
}

/// The simulated engines' latencies, ms.
#[derive(Debug, Clone, Copy)]
struct Profile {
    pull: u64,
    stop: u64,
    start: u64,
    ready: u64,
}

impl Profile {
    fn flags(&self) -> Vec<String> {
        [
            ("--pull-ms", self.pull),
            ("--stop-ms", self.stop),
            ("--start-ms", self.start),
            ("--ready-ms", self.ready),
        ]
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
    }

    fn sim(&self) -> SimProfile {
        SimProfile {
            pull: Duration::from_millis(self.pull),
            stop: Duration::from_millis(self.stop),
            start: Duration::from_millis(self.start),
            ready: Duration::from_millis(self.ready),
            ..SimProfile::default()
        }
    }
}

/// What a child process is told to run.
#[derive(Debug)]
struct ChildArgs {
    dir: PathBuf,
    controller: String,
    first: usize,
    count: usize,
    profile: Profile,
}

enum Invocation {
    Parent(Args),
    Child(ChildArgs),
}

fn parse_args() -> Result<Invocation, String> {
    let mut a = Args {
        agents: 10_000,
        processes: 10,
        batch: "10%".into(),
        storms: 2,
        deadline: Duration::from_secs(300),
        profile: Profile {
            pull: 200,
            stop: 50,
            start: 50,
            ready: 200,
        },
    };
    // Internal: the flags of one child process of simulated agents.
    let (mut child_dir, mut controller, mut first, mut count) = (None, String::new(), 0, 0);
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--agents" => a.agents = flags.number_in("--agents", 1..=50_000)?,
            "--processes" => a.processes = flags.number_in("--processes", 1..=64)?,
            "--batch" => a.batch = flags.value("--batch")?,
            "--storms" => a.storms = flags.number_in("--storms", 0..=10)?,
            "--deadline" => {
                a.deadline = Duration::from_secs(flags.number_in("--deadline", 10..=3600)? as u64)
            }
            "--pull-ms" => a.profile.pull = flags.number_in("--pull-ms", 0..=60_000)? as u64,
            "--stop-ms" => a.profile.stop = flags.number_in("--stop-ms", 0..=60_000)? as u64,
            "--start-ms" => a.profile.start = flags.number_in("--start-ms", 0..=60_000)? as u64,
            "--ready-ms" => a.profile.ready = flags.number_in("--ready-ms", 0..=60_000)? as u64,
            "--child" => child_dir = Some(flags.path("--child")?),
            "--controller" => controller = flags.value("--controller")?,
            "--first" => first = flags.number_in("--first", 0..=50_000)?,
            "--count" => count = flags.number_in("--count", 1..=50_000)?,
            other => {
                return Err(format!(
                    "unknown flag {other}\nusage: bench_scale [--agents N] [--processes P] [--batch 10%] [--storms S] [--deadline SECONDS] [--pull-ms MS] [--stop-ms MS] [--start-ms MS] [--ready-ms MS]"
                ));
            }
        }
    }
    match child_dir {
        Some(dir) if !controller.is_empty() && count > 0 => Ok(Invocation::Child(ChildArgs {
            dir,
            controller,
            first,
            count,
            profile: a.profile,
        })),
        Some(_) => Err("--child needs --controller and --count".into()),
        None => Ok(Invocation::Parent(a)),
    }
}

fn main() -> ExitCode {
    match parse_args() {
        Ok(Invocation::Child(c)) => child_main(c),
        Ok(Invocation::Parent(a)) => bench::run_main(
            "bench_scale",
            Ok(a),
            BinDir::Release,
            StopChildren::Kill,
            run,
        ),
        // Printed, exit 64, as for every benchmark.
        Err(e) => bench::run_main(
            "bench_scale",
            Err(e),
            BinDir::Release,
            StopChildren::Kill,
            run,
        ),
    }
}

async fn run(args: Args) -> ExitCode {
    match bench_scale(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_scale: {e}");
            ExitCode::FAILURE
        }
    }
}

// ----- the parent: controller, children, phases ----------------------------------------

fn agent_name(i: usize) -> String {
    format!("{ROLE}-{i:05}")
}

async fn bench_scale(args: &Args) -> Result<(), String> {
    bench::require_open_files(
        args.agents as u64 + SPARE_FILES,
        &format!("{} agents (one socket each in the controller)", args.agents),
    )?;
    let dir = tempfile::Builder::new()
        .prefix("drover-bench-scale-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    bench::on_abort(|c| c.dirs.push(dir.path().to_path_buf()));
    let pki = dir.path().join("pki");
    ca_init(&pki).await?;
    std::fs::create_dir_all(dir.path().join("tokens")).map_err(|e| e.to_string())?;
    let mut ctl = Controller::start(Mode::Mtls, dir.path(), &pki).await?;
    let pid = ctl.process.pid().ok_or("the controller exited at start")?;
    println!(
        "bench_scale: {} agents in {} processes, batches of {}, simulated engine {:?}; controller pid {pid} at {}",
        args.agents, args.processes, args.batch, args.profile, ctl.url
    );

    // 1. Join tokens, then every agent enrolls and connects.
    let started = Instant::now();
    join_tokens(&ctl.operator, dir.path(), args.agents).await?;
    let tokens = started.elapsed();
    println!(
        "join tokens: {} in {:.2} s ({:.0}/s)",
        args.agents,
        tokens.as_secs_f64(),
        args.agents as f64 / tokens.as_secs_f64()
    );
    let mut pool = Pool::spawn(args, dir.path(), &ctl.url).await?;
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t = Instant::now();
    pool.command("start", "started").await?;
    wait_connected(&mut ctl, args.agents, args.deadline).await?;
    let enrolled = t.elapsed();
    let enroll_cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    println!(
        "enroll + connect: all {} agents connected over mTLS {:.2} s after they started ({:.0} enrollments/s; controller CPU {:.2} s)",
        args.agents,
        enrolled.as_secs_f64(),
        args.agents as f64 / enrolled.as_secs_f64(),
        enroll_cpu
    );

    // 2. Storms: everyone again at once, the identity on disk.
    let mut storms = vec![];
    for round in 1..=args.storms {
        pool.command("stop", "stopped").await?;
        ctl.wait_all_gone(ROLE).await?;
        let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
        let t = Instant::now();
        pool.command("start", "started").await?;
        wait_connected(&mut ctl, args.agents, args.deadline).await?;
        let took = t.elapsed();
        let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        println!(
            "storm {round}: all {} agents connected {:.2} s after they started (controller CPU {:.2} s = {:.3} ms per agent)",
            args.agents,
            took.as_secs_f64(),
            cpu,
            cpu * 1000.0 / args.agents as f64
        );
        storms.push(ms(took));
    }
    let idle = idle_cpu(pid, Duration::from_secs(10)).await;
    let rss_connected = rss_mib(pid, "VmRSS");
    println!(
        "connected and idle: controller RSS {rss_connected:.0} MiB, CPU {:.1}% of a core for {} heartbeating agents",
        idle * 100.0,
        args.agents
    );

    // 3. Deploys.
    let spec = spec_toml(&args.batch);
    let mut deploys = vec![];
    let (_, mut starts) = pool.versions().await?;
    for version in ["v1", "v2"] {
        let d = deploy(&mut ctl, pid, &spec, version, idle, args).await?;
        d.print(args.agents);
        let (running, now) = pool.versions().await?;
        let on = running.get(version).copied().unwrap_or(0);
        if on != args.agents {
            return Err(format!(
                "after the deploy of {version}, {on} of {} simulated hosts run it: {running:?}",
                args.agents
            ));
        }
        // Every host swapped exactly once: no host started twice, none skipped.
        if now - starts != args.agents as u64 {
            return Err(format!(
                "the deploy of {version} started {} containers on {} hosts",
                now - starts,
                args.agents
            ));
        }
        starts = now;
        deploys.push(d);
    }

    // 4. Fan-out.
    let mut fan_outs = vec![];
    for round in 1..=3 {
        let agents_cpu = || {
            pool.pids()
                .iter()
                .filter_map(|p| cpu_seconds(*p))
                .sum::<f64>()
        };
        let (c0, a0) = (cpu_seconds(pid).unwrap_or(0.0), agents_cpu());
        let (took, hosts) = fan_out(&ctl.operator, args.agents).await?;
        let (c1, a1) = (cpu_seconds(pid).unwrap_or(0.0), agents_cpu());
        println!(
            "fan-out {round}: Logs --tail 1 to every host, {hosts} hosts answered, stream ended after {:.0} ms (CPU meanwhile: controller {:.2} s, agents {:.2} s, of {:.2} s on 2 cores)",
            ms(took),
            c1 - c0,
            a1 - a0,
            2.0 * took.as_secs_f64()
        );
        fan_outs.push(ms(took));
    }
    let rss_peak = rss_mib(pid, "VmHWM");
    let children_rss: f64 = pool.pids().iter().map(|p| rss_mib(*p, "VmRSS")).sum();
    pool.finish().await;

    // Report.
    let fan = Stats::of(&fan_outs);
    let update = deploys.last().expect("two deploys");
    println!();
    println!(
        "summary ({} agents, one `drover serve` over mTLS, SQLite):",
        args.agents
    );
    println!(
        "  enroll + connect        {:>8.2} s",
        enrolled.as_secs_f64()
    );
    if !storms.is_empty() {
        let s = Stats::of(&storms);
        println!(
            "  reconnect storm         {:>8.2} s  median of {} (max {:.2} s)",
            s.median / 1000.0,
            storms.len(),
            s.max / 1000.0
        );
    }
    println!(
        "  controller RSS          {:>8.0} MiB connected, {:.0} MiB peak   target < {RSS_TARGET_MIB:.0} MiB: {}",
        rss_connected,
        rss_peak,
        verdict(rss_peak < RSS_TARGET_MIB)
    );
    println!(
        "  fan-out (Logs, all)     {:>8.0} ms median of {} (max {:.0})   target < {} ms: {}",
        fan.median,
        fan_outs.len(),
        fan.max,
        FAN_OUT_TARGET.as_millis(),
        verdict(fan.median < ms(FAN_OUT_TARGET))
    );
    for d in &deploys {
        println!(
            "  deploy {}              {:>8.2} s, controller CPU {:.3} ms per host, {:.3} without heartbeats   target < {CPU_PER_HOST_TARGET_MS} ms: {}",
            d.version,
            d.took.as_secs_f64(),
            d.cpu_per_host_ms(args.agents),
            d.work_per_host_ms(args.agents),
            verdict(d.cpu_per_host_ms(args.agents) < CPU_PER_HOST_TARGET_MS)
        );
    }
    println!(
        "  status during deploy    GetDeployment median {:.0} ms, max {:.0} ms; Watch {} messages",
        Stats::of(&update.status_ms).median,
        Stats::of(&update.status_ms).max,
        update.watch_messages
    );
    println!(
        "  simulated agents        {:.0} MiB RSS in {} processes ({:.0} KiB per agent)",
        children_rss,
        args.processes,
        children_rss * 1024.0 / args.agents as f64
    );
    Ok(())
}

/// One join token per agent, labelled `role=ROLE`, written to `dir/tokens/<name>`.
async fn join_tokens(
    operator: &OperatorClient<Channel>,
    dir: &Path,
    n: usize,
) -> Result<(), String> {
    let limit = Arc::new(Semaphore::new(32));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (mut operator, limit) = (operator.clone(), limit.clone());
        let path = dir.join("tokens").join(agent_name(i));
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut request = tonic::Request::new(CreateJoinTokenRequest {
                ttl_ms: 3_600_000,
                labels: [("role".to_string(), ROLE.to_string())].into(),
            });
            request.set_timeout(CALL_TIMEOUT);
            let token = operator
                .create_join_token(request)
                .await
                .map_err(|s| format!("CreateJoinToken: {}", status_chain(&s)))?
                .into_inner()
                .token;
            std::fs::write(&path, token)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
    }
    while let Some(r) = set.join_next().await {
        r.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Waits until the controller lists `n` hosts labelled `role=ROLE` connected.
async fn wait_connected(ctl: &mut Controller, n: usize, deadline: Duration) -> Result<(), String> {
    let until = Instant::now() + deadline;
    loop {
        let (_, connected) = ctl.connected(ROLE, 0).await?;
        if connected >= n {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!(
                "only {connected} of {n} agents connected after {}",
                drover_shared::duration::human(deadline)
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The controller's CPU share (of one core) over `window`.
async fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let c0 = cpu_seconds(pid).unwrap_or(0.0);
    tokio::time::sleep(window).await;
    (cpu_seconds(pid).unwrap_or(0.0) - c0) / window.as_secs_f64()
}

/// A `/proc/PID/status` size (`VmRSS`, `VmHWM`) in MiB; 0 when unreadable.
fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn spec_toml(batch: &str) -> String {
    format!(
        r#"[service]
name = "{SERVICE}"
image = "sim.invalid/worker"
port = 8080
# Every simulated agent shares this machine: nothing is bound on the host.
host_port = 0

[targets]
selector = "role={ROLE}"

[readiness]
kind = "docker"
interval = "100ms"
deadline = "60s"

[rollout]
batch_size = "{batch}"
stop_timeout = "2s"
pull_timeout = "120s"
keep_previous = 1

[load_balancer]
kind = "none"
"#
    )
}

/// What one deploy measured.
struct Deploy {
    version: &'static str,
    took: Duration,
    cpu_s: f64,
    /// Of `cpu_s`, what the agents' heartbeats cost over the same time (at the idle
    /// rate measured before), leaving the deploy's own work.
    heartbeat_s: f64,
    batches: u32,
    status_ms: Vec<f64>,
    watch_messages: usize,
}

impl Deploy {
    fn cpu_per_host_ms(&self, hosts: usize) -> f64 {
        self.cpu_s * 1000.0 / hosts as f64
    }

    /// The deploy's own CPU per host: the total less the heartbeats' share.
    fn work_per_host_ms(&self, hosts: usize) -> f64 {
        (self.cpu_s - self.heartbeat_s).max(0.0) * 1000.0 / hosts as f64
    }

    fn print(&self, hosts: usize) {
        let s = Stats::of(&self.status_ms);
        println!(
            "deploy {}: {hosts} hosts in {} batches, succeeded after {:.2} s; controller CPU {:.2} s = {:.3} ms per host ({:.3} ms without the {:.2} s the heartbeats cost meanwhile); GetDeployment median {:.0} ms (max {:.0}, {} calls); Watch {} messages",
            self.version,
            self.batches,
            self.took.as_secs_f64(),
            self.cpu_s,
            self.cpu_per_host_ms(hosts),
            self.work_per_host_ms(hosts),
            self.heartbeat_s,
            s.median,
            s.max,
            self.status_ms.len(),
            self.watch_messages
        );
    }
}

/// Deploys `version` to every agent and waits for its end, watching and polling it as
/// operators would.
async fn deploy(
    ctl: &mut Controller,
    pid: u32,
    spec: &str,
    version: &'static str,
    idle: f64,
    args: &Args,
) -> Result<Deploy, String> {
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
    let t = Instant::now();
    let mut request = tonic::Request::new(DeployRequest {
        spec_toml: spec.to_string(),
        version: version.to_string(),
        requested_by: "bench_scale".into(),
        ..DeployRequest::default()
    });
    request.set_timeout(Duration::from_secs(60));
    let d = ctl
        .operator
        .deploy(request)
        .await
        .map_err(|s| format!("Deploy {version}: {}", status_chain(&s)))?
        .into_inner()
        .deployment
        .ok_or("Deploy answered without a deployment")?;
    let id = d.id.clone();

    // One operator follows the deployment live.
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let mut watcher = ctl.operator.clone();
    let watch_id = id.clone();
    let watch_task = tokio::spawn(async move {
        let mut n = 0usize;
        let Ok(stream) = watcher
            .watch(WatchRequest {
                id: watch_id,
                after_seq: 0,
            })
            .await
        else {
            return n;
        };
        let mut stream = stream.into_inner();
        loop {
            tokio::select! {
                m = stream.message() => match m {
                    Ok(Some(_)) => n += 1,
                    _ => return n,
                },
                _ = stop_rx.changed() => return n,
            }
        }
    });

    // Another asks for its status once a second.
    let mut status_ms = vec![];
    let until = Instant::now() + args.deadline;
    let last = loop {
        let asked = Instant::now();
        let mut request = tonic::Request::new(GetDeploymentRequest { id: id.clone() });
        request.set_timeout(CALL_TIMEOUT);
        let info = ctl
            .operator
            .get_deployment(request)
            .await
            .map_err(|s| format!("GetDeployment {id}: {}", status_chain(&s)))?
            .into_inner();
        status_ms.push(ms(asked.elapsed()));
        let state = DeploymentState::try_from(info.state).unwrap_or_default();
        if matches!(
            state,
            DeploymentState::Succeeded
                | DeploymentState::Failed
                | DeploymentState::RolledBack
                | DeploymentState::Cancelled
                | DeploymentState::Skipped
        ) {
            break info;
        }
        if Instant::now() >= until {
            return Err(format!(
                "deployment {id} of {version} is still {state:?} after {}",
                drover_shared::duration::human(args.deadline)
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = t.elapsed();
    let cpu_s = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let _ = stop_tx.send(true);
    let watch_messages = watch_task.await.unwrap_or(0);
    if last.state != DeploymentState::Succeeded as i32 {
        return Err(format!(
            "deployment {id} of {version} ended {:?}: {}",
            DeploymentState::try_from(last.state).unwrap_or_default(),
            last.error
        ));
    }
    Ok(Deploy {
        version,
        took,
        cpu_s,
        heartbeat_s: idle * took.as_secs_f64(),
        batches: last.batches,
        status_ms,
        watch_messages,
    })
}

/// `Logs --tail 1` of the service on every host: how long until the stream ended, and
/// how many hosts sent their line.
async fn fan_out(
    operator: &OperatorClient<Channel>,
    hosts: usize,
) -> Result<(Duration, usize), String> {
    let mut operator = operator.clone();
    let t = Instant::now();
    let mut request = tonic::Request::new(LogsQuery {
        service: SERVICE.into(),
        selector: format!("role={ROLE}"),
        tail: 1,
        ..LogsQuery::default()
    });
    request.set_timeout(Duration::from_secs(60));
    let mut stream = operator
        .logs(request)
        .await
        .map_err(|s| format!("Logs: {}", status_chain(&s)))?
        .into_inner();
    let mut answered = std::collections::HashSet::new();
    let mut notices = BTreeMap::new();
    while let Some(event) = stream
        .message()
        .await
        .map_err(|s| format!("Logs stream: {}", status_chain(&s)))?
    {
        match event.body {
            Some(logs_event::Body::Line(_)) => {
                answered.insert(event.host);
            }
            Some(logs_event::Body::Notice(n)) => {
                *notices.entry(n).or_insert(0usize) += 1;
            }
            None => {}
        }
    }
    let took = t.elapsed();
    if answered.len() != hosts {
        return Err(format!(
            "Logs reached {} of {hosts} hosts; notices: {notices:?}",
            answered.len()
        ));
    }
    Ok((took, answered.len()))
}

// ----- the children ------------------------------------------------------------------

/// The child processes of simulated agents, each told what to do on its stdin and
/// answering on its stdout, one line each.
struct Pool {
    children: Vec<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl Pool {
    async fn spawn(args: &Args, dir: &Path, url: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let per = args.agents.div_ceil(args.processes);
        let mut children = vec![];
        for (k, first) in (0..args.agents).step_by(per).enumerate() {
            let count = per.min(args.agents - first);
            let log = dir.join(format!("agents-{k}.log"));
            let stderr = std::fs::File::create(&log)
                .map_err(|e| format!("cannot create {}: {e}", log.display()))?;
            let mut child = tokio::process::Command::new(&exe)
                .arg("--child")
                .arg(dir)
                .args(["--controller", url])
                .args(["--first", &first.to_string(), "--count", &count.to_string()])
                .args(args.profile.flags())
                .env("RUST_LOG", "warn")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
            let stdin = child.stdin.take().ok_or("no stdin")?;
            let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
            children.push((child, stdin, stdout));
        }
        let mut pool = Self { children };
        pool.expect_all("ready").await?;
        Ok(pool)
    }

    fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.0.id()).collect()
    }

    /// Sends `command` to every child, then waits until each answered `answer`.
    async fn command(&mut self, command: &str, answer: &str) -> Result<(), String> {
        for (_, stdin, _) in &mut self.children {
            stdin
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(|e| format!("a child of agents is gone: {e}"))?;
        }
        self.expect_all(answer).await
    }

    async fn expect_all(&mut self, answer: &str) -> Result<(), String> {
        for (k, (_, _, lines)) in self.children.iter_mut().enumerate() {
            let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
                .await
                .map_err(|_| format!("child {k} did not answer {answer:?} within 300 s"))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("child {k} exited instead of answering {answer:?}"))?;
            if line != answer && !line.starts_with(&format!("{answer} ")) {
                return Err(format!("child {k} answered {line:?}, not {answer:?}"));
            }
        }
        Ok(())
    }

    /// How many simulated hosts run each version (a running container of it), and how
    /// many containers the simulated engines started so far.
    async fn versions(&mut self) -> Result<(BTreeMap<String, usize>, u64), String> {
        let mut total = BTreeMap::new();
        let mut starts = 0;
        for (k, (_, stdin, lines)) in self.children.iter_mut().enumerate() {
            stdin
                .write_all(b"versions\n")
                .await
                .map_err(|e| e.to_string())?;
            let line = lines
                .next_line()
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("child {k} exited"))?;
            // "versions STARTS v1=N v2=M ..."
            let mut words = line
                .strip_prefix("versions")
                .unwrap_or("")
                .split_whitespace();
            starts += words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            for pair in words {
                if let Some((v, n)) = pair.split_once('=') {
                    *total.entry(v.to_string()).or_insert(0) += n.parse::<usize>().unwrap_or(0);
                }
            }
        }
        Ok((total, starts))
    }

    /// Stops every agent and lets the children exit.
    async fn finish(mut self) {
        let _ = self.command("stop", "stopped").await;
        for (mut child, stdin, _) in self.children {
            drop(stdin);
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
    }
}

/// A child: runs `count` simulated agents from `first`, as its parent says on stdin
/// (`start`, `stop`, `versions`); exits at the end of its stdin.
fn child_main(args: ChildArgs) -> ExitCode {
    drover_shared::telemetry::init(LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(child(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_scale child: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn child(args: ChildArgs) -> Result<(), String> {
    let (engines, counters) = sim::engines(args.count, args.profile.sim());
    let ca = args.dir.join("pki").join(tls::CA_CERT_FILE);
    // Secrets go to tmpfs, as the agent requires of a real host.
    let secrets = PathBuf::from("/dev/shm").join(
        args.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let configs: Vec<AgentConfig> = (0..args.count)
        .map(|i| {
            let name = agent_name(args.first + i);
            AgentConfig {
                controller: args.controller.clone(),
                targets: drover_agent::targets::Targets::new(&args.controller),
                name: name.clone(),
                labels: [("role".to_string(), ROLE.to_string())].into(),
                advertise: "127.0.0.1".into(),
                docker_host: "sim://".into(),
                keep_previous: 1,
                heartbeat_interval: drover_agent::config::DEFAULT_HEARTBEAT,
                log_format: LogFormat::Text,
                shutdown_grace: Duration::from_secs(5),
                insecure_dev: false,
                ca_cert: ca.clone(),
                state_dir: args.dir.join("agents").join(&name),
                join_token: TokenSource::File(args.dir.join("tokens").join(&name)),
                secrets_dir: secrets.join(&name),
            }
        })
        .collect();
    let mut out = tokio::io::stdout();
    say(&mut out, "ready".into()).await;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut running: Option<(watch::Sender<bool>, JoinSet<()>)> = None;
    while let Ok(Some(line)) = stdin.next_line().await {
        match line.trim() {
            "start" => {
                if running.is_none() {
                    let (stop, stopped) = watch::channel(false);
                    let mut set = JoinSet::new();
                    for (config, engine) in configs.iter().zip(&engines) {
                        let mut stopped = stopped.clone();
                        let (config, engine) = (config.clone(), engine.clone());
                        set.spawn(async move {
                            let shutdown = async move {
                                let _ = stopped.wait_for(|s| *s).await;
                            };
                            if let Err(e) =
                                drover_agent::run_with_runtime(config, engine, shutdown).await
                            {
                                tracing::error!(error = %e, "a simulated agent could not start");
                            }
                        });
                    }
                    running = Some((stop, set));
                }
                say(&mut out, "started".into()).await;
            }
            "stop" => {
                if let Some((stop, mut set)) = running.take() {
                    let _ = stop.send(true);
                    while set.join_next().await.is_some() {}
                }
                say(&mut out, "stopped".into()).await;
            }
            "versions" => {
                let counts = sim::versions_running(&engines);
                let started = counters.starts.load(std::sync::atomic::Ordering::Relaxed);
                let mut line = format!("versions {started}");
                for (v, n) in counts {
                    line.push_str(&format!(" {v}={n}"));
                }
                say(&mut out, line).await;
            }
            other => say(&mut out, format!("unknown command {other:?}")).await,
        }
    }
    if let Some((stop, mut set)) = running.take() {
        let _ = stop.send(true);
        while set.join_next().await.is_some() {}
    }
    let _ = std::fs::remove_dir_all(&secrets);
    Ok(())
}

/// One line to the parent.
async fn say(out: &mut tokio::io::Stdout, line: String) {
    let _ = out.write_all(format!("{line}\n").as_bytes()).await;
    let _ = out.flush().await;
}
