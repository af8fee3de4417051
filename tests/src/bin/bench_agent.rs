//! `bench_agent`: how fast and how small `drover-agent` is, as RATIOS against a baseline
//! measured in the same run (the machine is shared and noisy: absolute times drift).
//!
//! 1. Swap latency. One host (the harness [`Fixture`]: real release agent, real Docker,
//!    real registry, the controller's real hub in-process) swaps v1→v2→v1… K times. In the
//!    same rounds, interleaved (ABBA order), the docker CLI does what a person would:
//!    `docker stop -t <same grace>` + `docker run -d` of the other image with the same
//!    publishing + the same readiness loop (`GET /ready`, same interval, same code:
//!    [`drover_shared::probe::wait_ready`]). Both use the same digest-pinned images,
//!    prepared first, so neither path pulls. Prints median and p90 of each and the ratio
//!    agent/CLI (target <= 1.0).
//! 2. Footprint. Idle RSS of the connected release agent (`VmRSS` after a few heartbeats;
//!    target < 15 MiB), its binary size, and the same for the static build when present.
//!
//! Not a test: run it through `tests/bench.sh` (which builds the release binaries and the
//! static demo app, and points `DROVER_BIN_DIR` at them).
//!
//! ```text
//! bench_agent [--rounds K] [--static-agent PATH]
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::v1::{CommandProgress, Phase};
use drover_shared::probe::{ProbeSettings, http_check, wait_ready};
use drover_tests::bench::{
    self, BinDir, Flags, Stats, StopChildren, child_pids, ms, on_abort, remove_labelled, verdict,
};
use drover_tests::commands::{self, STOP_TIMEOUT, demo_spec, expect_swap, http_ready};
use drover_tests::docker::docker;
use drover_tests::process::{ChildGuard, bin_path};
use drover_tests::tmpfs::TmpfsDir;
use drover_tests::{DemoImage, DockerCleanup, Fixture};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The service the agent deploys.
const SERVICE: &str = "bench";
/// Label on every container the CLI baseline runs, so cleanup finds them.
const CLI_LABEL: &str = "org.drover-bench.run";
/// Readiness deadline (both paths).
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long the agent is left idle before its RSS is read (a few heartbeats: the
/// harness agents beat every 500 ms).
const IDLE: Duration = Duration::from_secs(4);
/// Default number of timed rounds.
const DEFAULT_ROUNDS: usize = 10;

/// The child process whose command line contains every one of `needles`.
fn child_with_args(needles: &[&str]) -> Option<u32> {
    child_pids().into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        needles.iter().all(|n| args.iter().any(|a| a.contains(n)))
    })
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// One timed agent swap.
#[derive(Debug, Clone, Default)]
struct AgentSwap {
    /// The agent's `ready_after_ms`: command receipt to readiness.
    ready_after: f64,
    /// The agent's `elapsed_ms`: command receipt to result.
    elapsed: f64,
    /// At the hub: send to result.
    wall: f64,
    /// At the hub: send to the first progress of each phase.
    phases: BTreeMap<&'static str, f64>,
}

/// One timed docker-CLI swap.
#[derive(Debug, Clone, Default)]
struct CliSwap {
    /// `docker stop` of the running container.
    stop: f64,
    /// `docker run -d` of the new one.
    run: f64,
    /// From `docker run` returning to `/ready` passing.
    ready: f64,
    /// All of it.
    total: f64,
}

/// The docker-CLI baseline: one running container at a time, on `publish`.
struct CliBaseline {
    /// Identifies this run's containers (label [`CLI_LABEL`]).
    run: String,
    /// Where the app is published.
    publish: SocketAddr,
    /// The running container's name.
    current: Option<String>,
    /// Containers created so far (for names).
    created: usize,
}

impl CliBaseline {
    fn new(run: &str, publish: SocketAddr) -> Self {
        on_abort(|c| c.labels.push((CLI_LABEL.into(), run.into())));
        Self {
            run: run.to_string(),
            publish,
            current: None,
            created: 0,
        }
    }

    /// Stop the running container, run `image`, wait until `/ready` passes; timed.
    async fn swap(&mut self, image: &str, probe: ProbeSettings) -> Result<CliSwap, String> {
        let name = format!("{}-{}", self.run, self.created);
        self.created += 1;
        let label = format!("{CLI_LABEL}={}", self.run);
        let publish = format!(
            "{}:{}:{}",
            self.publish.ip(),
            self.publish.port(),
            commands::DEMO_PORT
        );
        let grace = STOP_TIMEOUT.as_secs().to_string();
        let start = Instant::now();
        if let Some(old) = &self.current {
            docker(&["stop", "-t", &grace, old]).await?;
        }
        let stopped = Instant::now();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--restart",
            "unless-stopped",
            "-p",
            &publish,
            image,
        ])
        .await?;
        let running = Instant::now();
        let addr = self.publish;
        wait_ready(probe, || http_check(addr, "/ready", 0))
            .await
            .map_err(|e| format!("CLI container {name} never became ready: {e}"))?;
        let ready = Instant::now();
        // Outside the timing: a person keeps nothing; remove the stopped one.
        if let Some(old) = self.current.replace(name) {
            docker(&["rm", "-f", &old]).await?;
        }
        Ok(CliSwap {
            stop: ms(stopped - start),
            run: ms(running - stopped),
            ready: ms(ready - running),
            total: ms(ready - start),
        })
    }
}

impl Drop for CliBaseline {
    fn drop(&mut self) {
        if let Err(e) = remove_labelled(CLI_LABEL, &self.run) {
            eprintln!("bench_agent: cleanup of the CLI containers: {e}");
        }
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Stopping => "stopping",
        Phase::Starting => "starting",
        Phase::WaitingReady => "waiting_ready",
        Phase::Restoring => "restoring",
        Phase::Resolving => "resolving",
        Phase::Pulling => "pulling",
        Phase::Unspecified => "unspecified",
    }
}

/// Swaps the fixture's service to `image` as `version`, timed at the hub; `stamps`
/// (filled by [`stamp_progress`]) give the time each phase was first reported.
async fn agent_swap(
    fx: &Fixture,
    stamps: &Stamps,
    image: &str,
    version: &str,
    publish: SocketAddr,
) -> AgentSwap {
    stamps.lock().expect("progress lock").clear();
    let spec = demo_spec(SERVICE, image, version, publish);
    let cmd = commands::command(
        commands::swap(spec, http_ready(READY_DEADLINE)),
        &fx.deployment,
        1,
    );
    let id = cmd.command_id.clone();
    let start = Instant::now();
    let result = fx.send_command(cmd).await;
    let wall = ms(start.elapsed());
    let swapped = expect_swap(&result);
    // Progress goes up the same stream before the result, so it has arrived by now.
    let mut phases = BTreeMap::new();
    for (at, p) in stamps.lock().expect("progress lock").iter() {
        if p.command_id == id {
            let t = ms(at.saturating_duration_since(start));
            phases.entry(phase_name(p.phase())).or_insert(t);
        }
    }
    AgentSwap {
        ready_after: swapped.ready_after_ms as f64,
        elapsed: result.elapsed_ms as f64,
        wall,
        phases,
    }
}

/// Progress messages with the time they reached the hub.
type Stamps = Arc<Mutex<Vec<(Instant, CommandProgress)>>>;

/// Records, in the background, when each progress message arrives at the hub.
fn stamp_progress(
    mut rx: broadcast::Receiver<(String, CommandProgress)>,
) -> (Stamps, tokio::task::JoinHandle<()>) {
    let seen = Stamps::default();
    let shared = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok((_, p)) => shared
                    .lock()
                    .expect("progress lock")
                    .push((Instant::now(), p)),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    (seen, task)
}

/// Parsed flags.
struct Args {
    rounds: usize,
    static_agent: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rounds: DEFAULT_ROUNDS,
        static_agent: None,
    };
    let mut flags = Flags::from_env();
    while let Some(a) = flags.flag() {
        match a.as_str() {
            "--rounds" => {
                args.rounds = flags.parsed(|n| *n >= 2, "--rounds takes a number >= 2")?;
            }
            "--static-agent" => {
                args.static_agent = Some(flags.path("--static-agent")?);
            }
            "-h" | "--help" => {
                return Err("usage: bench_agent [--rounds K] [--static-agent PATH]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    // The harness runs `$DROVER_BIN_DIR/drover-agent`: benchmark the release build.
    bench::run_main(
        "bench_agent",
        parse_args(),
        BinDir::Release,
        StopChildren::Term,
        run,
    )
}

async fn run(args: Args) -> ExitCode {
    let agent_bin = bin_path("drover-agent");
    println!(
        "bench_agent: agent binary {} ({}), {} rounds",
        agent_bin.display(),
        size_mib(&agent_bin),
        args.rounds
    );

    let fx = Fixture::start().await;
    on_abort(|c| {
        c.labels
            .push((drover_shared::labels::AGENT.into(), fx.name.clone()));
        c.image_prefixes.push(format!("{}/", fx.registry.host()));
    });

    // --- footprint, idle, before any command ---------------------------------------
    let agent_pid = child_with_args(&["drover-agent", &fx.name])
        .expect("the fixture's agent is a child of this process");
    tokio::time::sleep(IDLE).await;
    let idle_fresh = rss_kib(agent_pid).expect("agent RSS");

    // --- images: both prepared (pulled) before anything is timed -------------------
    let (_, v1) = fx.prepare(DemoImage::V1).await;
    let (_, v2) = fx.prepare(DemoImage::V2).await;
    let images = [(&v1.pinned, "v1"), (&v2.pinned, "v2")];

    let agent_publish = fx.publish_addr();
    let cli_publish = fx.publish_addr();
    let mut cli = CliBaseline::new(&drover_tests::unique_name("bench-cli"), cli_publish);
    let probe_proto = http_ready(READY_DEADLINE);
    let probe = ProbeSettings::from_proto(&probe_proto);
    let (stamps, stamp_task) = stamp_progress(fx.hub().progress());

    // Round 0 (untimed): both start on v1.
    agent_swap(&fx, &stamps, images[0].0, "v1", agent_publish).await;
    if let Err(e) = cli.swap(images[0].0, probe).await {
        eprintln!("bench_agent: {e}");
        return ExitCode::FAILURE;
    }

    let mut agent_runs: Vec<AgentSwap> = Vec::new();
    let mut cli_runs: Vec<CliSwap> = Vec::new();
    for round in 1..=args.rounds {
        let (image, version) = images[round % 2];
        // ABBA: alternate who goes first, so drift on the machine hits both alike.
        let agent_first = matches!(round % 4, 0 | 1);
        let (a, c) = if agent_first {
            let a = agent_swap(&fx, &stamps, image, version, agent_publish).await;
            (a, cli.swap(image, probe).await)
        } else {
            let c = cli.swap(image, probe).await;
            (
                agent_swap(&fx, &stamps, image, version, agent_publish).await,
                c,
            )
        };
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bench_agent: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "round {round:2} → {version} ({first} first): agent ready_after {:6.0} ms, elapsed {:6.0} ms, wall {:6.1} ms | CLI stop {:6.1} + run {:6.1} + ready {:6.1} = {:6.1} ms",
            a.ready_after,
            a.elapsed,
            a.wall,
            c.stop,
            c.run,
            c.ready,
            c.total,
            first = if agent_first { "agent" } else { "CLI" },
        );
        agent_runs.push(a);
        cli_runs.push(c);
    }
    stamp_task.abort();

    // --- footprint, idle, after the swaps ------------------------------------------
    tokio::time::sleep(IDLE).await;
    let idle_after = rss_kib(agent_pid).expect("agent RSS");

    // --- the static build, if it was built -----------------------------------------
    let static_agent = match &args.static_agent {
        Some(path) if path.is_file() => Some(static_footprint(&fx, path).await),
        Some(path) => {
            println!("static agent {} not found: skipped", path.display());
            None
        }
        None => None,
    };

    report(
        &args,
        &agent_bin,
        &agent_runs,
        &cli_runs,
        idle_fresh,
        idle_after,
        static_agent,
    );
    drop(cli);
    drop(fx);
    ExitCode::SUCCESS
}

/// Footprint of the static build: size, linkage, idle RSS once connected to the hub.
struct StaticFootprint {
    path: PathBuf,
    size: String,
    linkage: String,
    rss: Option<(u64, u64)>,
    docker_ok: bool,
}

async fn static_footprint(fx: &Fixture, path: &Path) -> StaticFootprint {
    let name = drover_tests::unique_name("bench-static");
    let _cleanup = DockerCleanup::for_agent(&name);
    // The same transport as the harness agent (mTLS with a certificate issued into a
    // state directory of its own), and its secrets on tmpfs, as the agent requires.
    let secrets = TmpfsDir::new();
    let mut args = fx.agent_connect_args(&name);
    args.extend([
        "--name".to_string(),
        name.clone(),
        "--heartbeat-interval".to_string(),
        drover_tests::agent::TEST_HEARTBEAT.to_string(),
        "--advertise".to_string(),
        fx.host_ip.to_string(),
        "--secrets-dir".to_string(),
        secrets.path().to_string_lossy().into_owned(),
    ]);
    let mut agent = ChildGuard::spawn(&format!("static agent {name}"), path, &args, &[]);
    let hub = fx.hub();
    let connected = hub
        .wait_for(Duration::from_secs(30), || {
            hub.host(&name).filter(|h| h.connected)
        })
        .await;
    let (rss, docker_ok) = match connected {
        Some(h) => {
            tokio::time::sleep(IDLE).await;
            (agent.pid().and_then(rss_kib), h.docker_error.is_none())
        }
        None => {
            println!(
                "static agent did not connect within 30 s:\n{}",
                agent.logs()
            );
            (None, false)
        }
    };
    agent.stop(Duration::from_secs(10));
    let linkage = std::process::Command::new("ldd")
        .arg(path)
        .output()
        .map(|o| {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if text.contains("not a dynamic executable") || text.contains("statically linked") {
                "static".to_string()
            } else {
                format!("dynamic ({} libs)", text.lines().count())
            }
        })
        .unwrap_or_else(|e| format!("unknown (ldd: {e})"));
    StaticFootprint {
        path: path.to_path_buf(),
        size: size_mib(path),
        linkage,
        rss,
        docker_ok,
    }
}

fn size_mib(path: &Path) -> String {
    std::fs::metadata(path)
        .map(|m| format!("{:.2} MiB", m.len() as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|e| format!("? ({e})"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(
    args: &Args,
    agent_bin: &Path,
    agent: &[AgentSwap],
    cli: &[CliSwap],
    idle_fresh: (u64, u64),
    idle_after: (u64, u64),
    static_agent: Option<StaticFootprint>,
) {
    let col = |f: fn(&AgentSwap) -> f64| Stats::of(&agent.iter().map(f).collect::<Vec<_>>());
    let ready_after = col(|a| a.ready_after);
    let elapsed = col(|a| a.elapsed);
    let wall = col(|a| a.wall);
    let ccol = |f: fn(&CliSwap) -> f64| Stats::of(&cli.iter().map(f).collect::<Vec<_>>());
    let cli_total = ccol(|c| c.total);
    let paired = |f: fn(&AgentSwap) -> f64| {
        Stats::of(
            &agent
                .iter()
                .zip(cli)
                .map(|(a, c)| f(a) / c.total)
                .collect::<Vec<_>>(),
        )
    };
    let ratio_ready = paired(|a| a.ready_after);
    let ratio_wall = paired(|a| a.wall);

    // Where the agent's time goes, from the hub's view of its progress messages.
    let phase = |name: &str| {
        let v: Vec<f64> = agent
            .iter()
            .filter_map(|a| a.phases.get(name).copied().filter(|t| !t.is_nan()))
            .collect();
        (!v.is_empty()).then(|| Stats::of(&v))
    };
    let (stopping, starting, waiting) =
        (phase("stopping"), phase("starting"), phase("waiting_ready"));

    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "=== bench_agent: {} rounds v1<->v2, interleaved ABBA; machine: {cores} cores, shared and noisy (ratios, not absolutes) ===",
        args.rounds
    );
    println!("swap latency, ms                          median      p90      min      max");
    let row = |label: &str, s: Stats| {
        println!(
            "  {label:<38} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
            s.median, s.p90, s.min, s.max
        )
    };
    row("agent ready_after_ms (receipt→ready)", ready_after);
    row("agent elapsed_ms (receipt→result)", elapsed);
    row("agent wall at the hub (send→result)", wall);
    row("docker CLI stop+run+ready", cli_total);
    row("  CLI: docker stop -t 3", ccol(|c| c.stop));
    row("  CLI: docker run -d", ccol(|c| c.run));
    row("  CLI: run→/ready passes", ccol(|c| c.ready));
    if let (Some(s1), Some(s2), Some(s3)) = (stopping, starting, waiting) {
        row("  agent: send→STOPPING (validate,create)", s1);
        row("  agent: send→STARTING (…+docker stop)", s2);
        row("  agent: send→WAITING_READY (…+start)", s3);
    }
    println!(
        "  ratio agent ready_after / CLI           {:>8.2} {:>8.2}   (per-round ratios; medians' ratio {:.2})  target <= 1.0: {}",
        ratio_ready.median,
        ratio_ready.p90,
        ready_after.median / cli_total.median,
        verdict(ratio_ready.median <= 1.0)
    );
    println!(
        "  ratio agent wall at hub / CLI           {:>8.2} {:>8.2}   (per-round ratios; medians' ratio {:.2})  target <= 1.0: {}",
        ratio_wall.median,
        ratio_wall.p90,
        wall.median / cli_total.median,
        verdict(ratio_wall.median <= 1.0)
    );
    println!("footprint");
    println!(
        "  release agent {}: {}",
        agent_bin.display(),
        size_mib(agent_bin)
    );
    println!(
        "  idle RSS, connected, before any command:  VmRSS {:.1} MiB (HWM {:.1} MiB)  target < 15 MiB: {}",
        mib(idle_fresh.0),
        mib(idle_fresh.1),
        verdict(mib(idle_fresh.0) < 15.0)
    );
    println!(
        "  idle RSS, after {} swaps:                 VmRSS {:.1} MiB (HWM {:.1} MiB)  target < 15 MiB: {}",
        args.rounds + 3,
        mib(idle_after.0),
        mib(idle_after.1),
        verdict(mib(idle_after.0) < 15.0)
    );
    match static_agent {
        Some(s) => {
            println!(
                "  static build {}: {}, {}, Docker reachable: {}",
                s.path.display(),
                s.size,
                s.linkage,
                s.docker_ok
            );
            match s.rss {
                Some((rss, hwm)) => println!(
                    "  static build idle RSS, connected:         VmRSS {:.1} MiB (HWM {:.1} MiB)  target < 15 MiB: {}",
                    mib(rss),
                    mib(hwm),
                    verdict(mib(rss) < 15.0)
                ),
                None => println!("  static build idle RSS: not measured (did not connect)"),
            }
        }
        None => println!("  static build: not measured (pass --static-agent PATH)"),
    }
    println!(
        "method: each round, the agent (over the real stream) and the docker CLI each swap their own container (own port) to the same digest-pinned, already-pulled image, grace {}s, probe GET /ready every {} ms (same loop code); who goes first alternates ABBA. The agent's create/list/prune steps are inside its times; the CLI's `docker rm` of the old container is not.",
        STOP_TIMEOUT.as_secs(),
        ProbeSettings::from_proto(&http_ready(READY_DEADLINE))
            .interval
            .as_millis()
    );
}
