//! `bench_rollout`: a whole fleet rolled by Drover against what people do by hand, as
//! RATIOS measured in the same run (the machine is shared and noisy).
//!
//! One fleet ([`drover_tests::fleet::Fleet`]: real `drover serve`, N real release
//! agents, real HAProxy, real registry, the demo app), one load through HAProxy (keep-alive
//! and one-connection-per-request workers at once), three ways to move the fleet to the
//! other version, one after the other, each under the same load:
//!
//! 1. `drover deploy` (batches of the spec's size, pre-pull, drain, swap, ready, enable);
//! 2. a careful script, host by host: drain through the HAProxy runtime API and wait for
//!    the sessions to end, `docker pull`, `docker stop`, `docker run`, wait until `/ready`
//!    passes, enable and wait until HAProxy reports the server UP (the same runtime calls
//!    and polls Drover uses: generous to the script);
//! 3. a naive script, host by host: `docker stop`, `docker run`, wait until `/ready`
//!    passes; no drain.
//!
//! Prints failed requests of each (Drover should be 0), wall times and the ratio of
//! Drover's to the careful script's (targets: Drover < 10 s, >= 3x faster), and splits
//! Drover's wall time, from its own events, into waiting on Docker and readiness, waiting
//! on HAProxy, and the rest: controller + agent overhead (target < 10 %).
//!
//! The fleet runs with mTLS, as in production. `--tls-cost` measures instead what mTLS
//! costs this deploy: an mTLS fleet and an `--insecure-dev` fleet side by side, the same
//! deploy under load on each, interleaved, `--repeat` rounds; medians and their ratio
//! (target: mTLS under 5 % slower). See [`tls_cost`].
//!
//! Not a test: run it through `tests/bench.sh` (`rollout`, or `tls` for `--tls-cost`).
//!
//! ```text
//! bench_rollout [--hosts N] [--batch 25%] [--repeat R] [--tls-cost]
//!               [--check-timeout-ms MS] [--check-inter-ms MS]
//! ```

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use drover_controller::lb::AdminState;
use drover_shared::probe::{ProbeSettings, http_check, wait_ready};
use drover_tests::DemoImage;
use drover_tests::bench::{
    self, BinDir, Flags, StopChildren, median, ms, on_abort, on_abort_fleet, remove_labelled,
    verdict,
};
use drover_tests::docker::docker;
use drover_tests::fleet::{CliRun, Fleet, FleetHost, FleetOptions, Transport, now_ms};
use drover_tests::load::{Load, LoadReport};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Label on every container the scripts run (value: this run), so cleanup finds them.
const SCRIPT_LABEL: &str = "org.drover-bench.run";
/// The same grace, drain timeout and readiness interval as the fleet's spec.
const STOP_GRACE_S: &str = "2";
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const UP_TIMEOUT: Duration = Duration::from_secs(30);
const READY_INTERVAL: Duration = Duration::from_millis(100);
const READY_DEADLINE: Duration = Duration::from_secs(15);
/// Load keeps running this long after an approach ends, to catch late failures.
const SETTLE: Duration = Duration::from_millis(500);

// ----- the scripts -------------------------------------------------------------------

/// How the scripts do their work, and the containers they ran (removed on drop).
struct Scripts {
    /// Value of [`SCRIPT_LABEL`] on their containers.
    run: String,
    /// A docker CLI config logged in to the fleet's registry (a person is logged in).
    docker_config: tempfile::TempDir,
    /// Containers created so far (for unique names).
    created: usize,
}

/// Where one script run spent its time, summed over hosts, in ms.
#[derive(Debug, Clone, Default)]
struct ScriptTimes {
    /// Start to end.
    wall: f64,
    /// Drain, wait for sessions, enable, wait UP.
    lb: f64,
    /// `docker pull`.
    pull: f64,
    /// `docker stop`.
    stop: f64,
    /// `docker run -d`.
    run: f64,
    /// From `docker run` returning to `/ready` passing.
    ready: f64,
}

impl Scripts {
    async fn new(fleet: &Fleet) -> Self {
        let run = drover_tests::unique_name("bench-script");
        on_abort(|c| c.labels.push((SCRIPT_LABEL.into(), run.clone())));
        let docker_config = tempfile::Builder::new()
            .prefix("drover-bench-docker-")
            .tempdir()
            .expect("tempdir");
        let registry = fleet.registry();
        let mut child = tokio::process::Command::new("docker")
            .arg("--config")
            .arg(docker_config.path())
            .args([
                "login",
                "--username",
                &registry.username,
                "--password-stdin",
                &registry.host(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(registry.password().as_bytes())
            .await
            .expect("write the password");
        drop(stdin);
        let out = child.wait_with_output().await.expect("docker login");
        assert!(
            out.status.success(),
            "docker login {} failed: {}",
            registry.host(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            run,
            docker_config,
            created: 0,
        }
    }

    /// The running container serving `host`: the script's own, else the agent's.
    async fn running_on(&self, host: &FleetHost) -> Result<String, String> {
        for filter in [
            format!("label=org.drover-bench.host={}", host.name),
            format!("label={}={}", drover_shared::labels::AGENT, host.name),
        ] {
            let out = docker(&[
                "ps",
                "-q",
                "--filter",
                &filter,
                "--filter",
                "status=running",
            ])
            .await?;
            if let Some(id) = out.split_whitespace().next() {
                return Ok(id.to_string());
            }
        }
        Err(format!("nothing runs on host {}", host.name))
    }

    /// `docker stop` what runs on `host`, `docker run` `image` in its place, wait until
    /// `/ready` passes; adds the times to `t`.
    async fn replace(
        &mut self,
        host: &FleetHost,
        image: &str,
        t: &mut ScriptTimes,
    ) -> Result<(), String> {
        let old = self.running_on(host).await?;
        self.created += 1;
        let name = format!("{}-{}", self.run, self.created);
        let labels = [
            format!("{SCRIPT_LABEL}={}", self.run),
            format!("org.drover-bench.host={}", host.name),
        ];
        let publish = format!("{}:8080", host.addr);
        let start = Instant::now();
        docker(&["stop", "-t", STOP_GRACE_S, &old]).await?;
        let stopped = Instant::now();
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &labels[0],
            "--label",
            &labels[1],
            "--restart",
            "unless-stopped",
            "-p",
            &publish,
            image,
        ])
        .await?;
        let ran = Instant::now();
        t.stop += ms(stopped - start);
        t.run += ms(ran - stopped);
        let probe = ProbeSettings {
            interval: READY_INTERVAL,
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            deadline: READY_DEADLINE,
        };
        let addr = host.addr;
        wait_ready(probe, || http_check(addr, "/ready", 0))
            .await
            .map_err(|e| format!("{name} on {} never became ready: {e}", host.name))?;
        t.ready += ms(ran.elapsed());
        // A person keeps the stopped container around, like the agent does.
        Ok(())
    }

    /// Host by host: drain and wait for the sessions, pull, stop, run, ready, enable, UP.
    async fn careful(&mut self, fleet: &Fleet, image: &str) -> Result<ScriptTimes, String> {
        let lb = fleet.haproxy().load_balancer();
        let config = self.docker_config.path().to_string_lossy().into_owned();
        let mut t = ScriptTimes::default();
        let start = Instant::now();
        for host in fleet.hosts() {
            let s = Instant::now();
            lb.drain(&host.name).await.map_err(|e| e.to_string())?;
            lb.wait_drained(&host.name, DRAIN_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            t.lb += ms(s.elapsed());
            let s = Instant::now();
            docker(&["--config", &config, "pull", "--quiet", image]).await?;
            t.pull += ms(s.elapsed());
            self.replace(host, image, &mut t).await?;
            let s = Instant::now();
            lb.enable(&host.name).await.map_err(|e| e.to_string())?;
            lb.wait_up(&host.name, UP_TIMEOUT)
                .await
                .map_err(|e| e.to_string())?;
            t.lb += ms(s.elapsed());
        }
        t.wall = ms(start.elapsed());
        Ok(t)
    }

    /// Host by host: stop, run, ready. No drain.
    async fn naive(&mut self, fleet: &Fleet, image: &str) -> Result<ScriptTimes, String> {
        let mut t = ScriptTimes::default();
        let start = Instant::now();
        for host in fleet.hosts() {
            self.replace(host, image, &mut t).await?;
        }
        t.wall = ms(start.elapsed());
        Ok(t)
    }

    /// Removes the scripts' containers (so Drover can take the hosts back).
    fn remove_containers(&self) {
        if let Err(e) = remove_labelled(SCRIPT_LABEL, &self.run) {
            eprintln!("bench_rollout: cleanup: {e}");
        }
    }
}

impl Drop for Scripts {
    fn drop(&mut self) {
        self.remove_containers();
    }
}

// ----- one approach under load -------------------------------------------------------

/// What one approach did, and what the load around it (if any) saw.
struct Run {
    label: String,
    /// Ran under load.
    load: bool,
    /// Wall time in ms.
    wall: f64,
    keep_alive: LoadReport,
    close: LoadReport,
    /// Most servers out of rotation in any HAProxy sample.
    max_out: OutOfRotation,
    /// Set for the scripts.
    script: Option<ScriptTimes>,
    /// Set for Drover.
    split: Option<Split>,
}

/// Runs `work`, under the fleet's load (keep-alive and close workers at once) when
/// `load`; returns its output, the two load reports (empty without load) and the most
/// servers HAProxy had out of rotation in any 100 ms sample.
async fn measure<T>(
    fleet: &Fleet,
    load: bool,
    work: impl Future<Output = T>,
) -> (T, LoadReport, LoadReport, OutOfRotation) {
    let sampler = fleet.haproxy().sample_states(Duration::from_millis(100));
    let loads = load.then(|| (fleet.load(true), fleet.load(false)));
    if let Some((a, b)) = &loads {
        wait_progress(a, b).await;
    }
    let out_value = work.await;
    let (ka, cl) = match loads {
        Some((a, b)) => {
            tokio::time::sleep(SETTLE).await;
            (a.stop().await, b.stop().await)
        }
        None => (LoadReport::default(), LoadReport::default()),
    };
    let samples = sampler.stop().await;
    let drained = samples
        .samples
        .iter()
        .map(|s| {
            s.servers
                .values()
                .filter(|(_, admin)| *admin != AdminState::Ready)
                .count()
        })
        .max()
        .unwrap_or(0);
    // The sample with the most servers out, named, to tell a deploy's drain from a
    // health check that flapped elsewhere.
    let worst = samples
        .samples
        .iter()
        .max_by_key(|s| s.out_of_rotation().len())
        .filter(|s| !s.out_of_rotation().is_empty())
        .map(|s| {
            s.out_of_rotation()
                .into_iter()
                .map(|name| {
                    let (status, admin) = &s.servers[name];
                    format!("{name}={status:?}/{admin:?}")
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let out = OutOfRotation {
        any: samples.max_out_of_rotation(),
        drained,
        worst,
    };
    (out_value, ka, cl, out)
}

/// The most servers HAProxy had out of rotation in any one sample.
#[derive(Debug, Clone, Default)]
struct OutOfRotation {
    /// Not UP, or not READY (drained or in maintenance): what clients feel.
    any: usize,
    /// Admin state not READY: what the deployer itself took out.
    drained: usize,
    /// The servers out in the worst sample, with their (status, admin) states.
    worst: String,
}

/// Waits until both loads answered a few requests (bounded).
async fn wait_progress(a: &Load, b: &Load) {
    let until = Instant::now() + Duration::from_secs(10);
    while (a.completed() < 20 || b.completed() < 20) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----- Drover's time, split from its own events --------------------------------------

/// Drover's wall time split by what it waited on, in ms.
#[derive(Debug, Clone, Default)]
struct Split {
    /// `drover deploy` process start to exit.
    cli_wall: f64,
    /// Deployment created to finished (controller clock).
    controller_wall: f64,
    /// PREPARING to PREPARED: agents pulling in parallel.
    pull: f64,
    /// Per batch, the slowest host's agent-reported `ready_after_ms` (receipt to ready:
    /// Docker inspect/list/create/stop/start plus the readiness probe).
    docker_ready: f64,
    /// Per batch, the slowest host's drain wait ("drained in") plus enable→UP.
    lb: f64,
    /// The enable→UP part of `lb`.
    lb_up: f64,
    /// Every host's `ready_after_ms`, summed (for the batches' parallelism).
    ready_sum: f64,
    /// Batches seen.
    batches: usize,
    /// Parts of the overhead, for the report.
    parts: Vec<(String, f64)>,
    /// Set when the events could not be read.
    problem: Option<String>,
    /// The agents' own steps (from their logs), per host.
    agent: Vec<(&'static str, Vec<f64>)>,
}

impl Split {
    fn external(&self) -> f64 {
        self.pull + self.docker_ready + self.lb
    }
    fn overhead_cli(&self) -> f64 {
        self.cli_wall - self.external()
    }
    fn overhead_controller(&self) -> f64 {
        self.controller_wall - self.external()
    }
}

/// `1.2s` / `340ms` (the controller's `fmt_ms`) following `after` in `text`.
fn duration_after(text: &str, after: &str) -> Option<f64> {
    let rest = &text[text.find(after)? + after.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    if let Some(n) = token.strip_suffix("ms") {
        n.parse().ok()
    } else {
        token
            .strip_suffix('s')
            .and_then(|n| n.parse::<f64>().ok())
            .map(|s| s * 1000.0)
    }
}

/// Splits a finished `drover deploy --json` run (see [`Split`]).
fn split(run: &CliRun, cli_start_ms: u64) -> Split {
    let mut s = Split {
        cli_wall: ms(run.took),
        ..Split::default()
    };
    let json = run.json();
    let events: Vec<&Value> = json.iter().filter(|v| v["type"] == "event").collect();
    let snap = match json.iter().rev().find(|v| v["type"] == "deployment") {
        Some(v) => v,
        None => {
            s.problem = Some("no deployment snapshot in the CLI's output".into());
            return s;
        }
    };
    let num = |v: &Value| v.as_u64().unwrap_or(0) as f64;
    let (created, finished) = (num(&snap["created_ms"]), num(&snap["finished_ms"]));
    s.controller_wall = finished - created;
    let at = |e: &Value| num(&e["at_ms"]);
    let first = |pred: &dyn Fn(&Value) -> bool| events.iter().find(|e| pred(e)).map(|e| at(e));
    let (Some(preparing), Some(prepared)) = (
        first(&|e| e["state"] == "preparing"),
        first(&|e| e["phase"] == "prepared"),
    ) else {
        s.problem = Some("no preparing/prepared events".into());
        return s;
    };
    s.pull = prepared - preparing;
    s.parts.push((
        "CLI start → deployment created (CLI start, connect, validate, plan, store)".into(),
        created - cli_start_ms as f64,
    ));
    s.parts.push((
        "created → PREPARING (lock, record, start)".into(),
        preparing - created,
    ));

    let mut batches: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for h in snap["hosts"].as_array().into_iter().flatten() {
        let name = h["host"].as_str().unwrap_or_default().to_string();
        batches
            .entry(h["batch"].as_u64().unwrap_or(0))
            .or_default()
            .push(name);
    }
    s.batches = batches.len();
    let mut prev_end = prepared;
    let (mut drain_gap, mut swap_gap, mut between) = (0.0, 0.0, 0.0);
    for hosts in batches.values() {
        let of_batch = |phase: &str| -> Vec<&Value> {
            events
                .iter()
                .copied()
                .filter(|e| {
                    e["phase"] == phase
                        && hosts.iter().any(|h| e["host"].as_str() == Some(h.as_str()))
                })
                .collect()
        };
        let min_at = |v: &[&Value]| v.iter().map(|e| at(e)).fold(f64::INFINITY, f64::min);
        let max_at = |v: &[&Value]| v.iter().map(|e| at(e)).fold(0.0, f64::max);
        let (draining, swapping, enabling, done) = (
            of_batch("draining"),
            of_batch("swapping"),
            of_batch("enabling"),
            of_batch("done"),
        );
        if draining.is_empty() || swapping.is_empty() || enabling.is_empty() || done.is_empty() {
            s.problem = Some(format!("batch {hosts:?}: missing phase events"));
            return s;
        }
        let drained = events
            .iter()
            .filter(|e| hosts.iter().any(|h| e["host"].as_str() == Some(h.as_str())))
            .filter_map(|e| {
                let m = e["message"].as_str()?;
                duration_after(m, "drained in ").or_else(|| duration_after(m, "timeout after "))
            })
            .fold(0.0, f64::max);
        let readies: Vec<f64> = enabling
            .iter()
            .filter_map(|e| duration_after(e["message"].as_str()?, "ready after "))
            .collect();
        let ready = readies.iter().copied().fold(0.0, f64::max);
        s.ready_sum += readies.iter().sum::<f64>();
        let up = max_at(&done) - max_at(&enabling);
        s.docker_ready += ready;
        s.lb += drained + up;
        s.lb_up += up;
        between += min_at(&draining) - prev_end;
        drain_gap += min_at(&swapping) - min_at(&draining) - drained;
        swap_gap += min_at(&enabling) - min_at(&swapping) - ready;
        prev_end = max_at(&done);
    }
    s.parts.push((
        "before each batch (after the previous one / the pull)".into(),
        between,
    ));
    s.parts.push((
        "drain segment beyond the slowest drain wait".into(),
        drain_gap,
    ));
    s.parts.push((
        "swap segment beyond the slowest agent's ready_after (RPC, agent prune/report, store)"
            .into(),
        swap_gap,
    ));
    s.parts.push((
        "last host done → deployment finished".into(),
        finished - prev_end,
    ));
    s.parts.push((
        "deployment finished → CLI exit".into(),
        (cli_start_ms as f64 + s.cli_wall) - finished,
    ));
    s
}

/// The fleet's HAProxy `fastinter` and `downinter`, ms: the cadence of the checks that
/// bring a re-enabled server UP.
const FAST_CHECK_MS: u64 = 100;

// ----- main --------------------------------------------------------------------------

struct Args {
    hosts: usize,
    batch: String,
    repeat: usize,
    /// Compare the same deploy over mTLS and plaintext instead (see [`tls_cost`]).
    tls_cost: bool,
    /// HAProxy's `timeout check` for the fleet (none: a check may take `inter`, 1 s).
    check_timeout: Option<Duration>,
    /// HAProxy's `inter` for the fleet (none: 1 s).
    check_inter: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hosts: 10,
        batch: "25%".into(),
        repeat: 1,
        tls_cost: false,
        check_timeout: None,
        check_inter: None,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--hosts" => a.hosts = flags.number_in(&flag, 1..=40)?,
            "--batch" => a.batch = flags.value(&flag)?,
            "--repeat" => a.repeat = flags.number_in(&flag, 1..=20)?,
            "--tls-cost" => a.tls_cost = true,
            "--check-timeout-ms" => {
                let ms = flags.number_in(&flag, 10..=10_000)?;
                a.check_timeout = Some(Duration::from_millis(ms as u64));
            }
            "--check-inter-ms" => {
                let ms = flags.number_in(&flag, 10..=10_000)?;
                a.check_inter = Some(Duration::from_millis(ms as u64));
            }
            "-h" | "--help" => {
                return Err(
                    "usage: bench_rollout [--hosts N] [--batch 25%] [--repeat R] [--tls-cost] [--check-timeout-ms MS] [--check-inter-ms MS]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    // The fleet runs `$DROVER_BIN_DIR/{drover,drover-agent}`: benchmark the release build.
    // On a panic: SIGTERM the children, SIGKILL those left after 5 s.
    bench::run_main(
        "bench_rollout",
        parse_args(),
        BinDir::Release,
        StopChildren::TermThenKill(Duration::from_secs(5)),
        run,
    )
}

async fn run(args: Args) -> ExitCode {
    if args.tls_cost {
        return tls_cost(&args).await;
    }
    let drover = drover_tests::process::bin_path("drover");
    let agent = drover_tests::process::bin_path("drover-agent");
    println!(
        "bench_rollout: {} hosts, batches of {}, {} repetition(s); {} and {}",
        args.hosts,
        args.batch,
        args.repeat,
        drover.display(),
        agent.display()
    );
    let started = Instant::now();
    let fleet = Fleet::start(FleetOptions {
        hosts: args.hosts,
        batch_size: &args.batch,
        readiness_deadline: READY_DEADLINE,
        images: &[DemoImage::V1, DemoImage::V2],
        initial: Some(DemoImage::V1),
        check_timeout: args.check_timeout,
        check_inter: args.check_inter,
        ..FleetOptions::default()
    })
    .await;
    on_abort_fleet(&fleet);
    if let Some(t) = args.check_timeout {
        println!("HAProxy: timeout check {} ms", t.as_millis());
    }
    if let Some(t) = args.check_inter {
        println!("HAProxy: inter {} ms", t.as_millis());
    }
    println!(
        "fleet up on v1 in {:.1} s (registry {}, HAProxy {}, controller {}, {:?})",
        started.elapsed().as_secs_f64(),
        fleet.registry().host(),
        fleet.haproxy().frontend_addr(),
        fleet.controller_url(),
        fleet.transport()
    );
    let scripts = Scripts::new(&fleet).await;
    let mut bench = Bench {
        v1: fleet.pushed(DemoImage::V1).reference.clone(),
        fleet,
        scripts,
        batch: args.batch.clone(),
        runs: vec![],
    };
    let outcome = async {
        for rep in 1..=args.repeat {
            if rep > 1 {
                bench.restore().await?;
            }
            // Speed: no load, so that the load's CPU does not blur the comparison.
            bench.drover(rep, false).await?;
            bench.careful(rep, false).await?;
            bench.restore().await?;
            // Zero downtime: the same fleet under load.
            bench.drover(rep, true).await?;
            bench.careful(rep, true).await?;
            bench.naive(rep, true).await?;
            // Start-first (service.host_ports = [P, P + 1]): v1 → v2 under load, then back
            // to v1 without load, which ends every host on port P again.
            bench.restore().await?;
            bench.start_first(rep, true, "v2").await?;
            bench.start_first(rep, false, "v1").await?;
        }
        Ok::<_, String>(())
    }
    .await;
    report(&args, &bench.runs);
    drop(bench);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_rollout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The fleet, the scripts and what was measured so far. Fields drop in order: the
/// scripts' containers go before the fleet.
struct Bench {
    scripts: Scripts,
    fleet: Fleet,
    v1: String,
    batch: String,
    runs: Vec<Run>,
}

impl Bench {
    /// Gives the hosts back to Drover on v1 (untimed): the scripts' containers go, then
    /// one all-at-once deploy.
    async fn restore(&mut self) -> Result<(), String> {
        self.scripts.remove_containers();
        let spec = self
            .fleet
            .write_spec("restore.toml", &self.fleet.spec_toml("100%"));
        let spec = spec.to_string_lossy().into_owned();
        let r = self
            .fleet
            .drover(&["deploy", "-f", &spec, "--version", "v1", "--json"])
            .await;
        if r.code != Some(0) {
            return Err(format!("restoring v1 failed: {}", r.describe()));
        }
        self.fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        Ok(())
    }

    /// `drover deploy` v1 → v2.
    async fn drover(&mut self, rep: usize, load: bool) -> Result<(), String> {
        let cli_start_ms = now_ms();
        let (d, ka, cl, max_out) = measure(&self.fleet, load, self.fleet.deploy("v2")).await;
        if d.code != Some(0) {
            return Err(format!("drover deploy failed: {}", d.describe()));
        }
        let mut sp = split(&d, cli_start_ms);
        let id = d.final_snapshot()["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        sp.agent = agent_steps(&self.fleet, &id);
        self.record(
            rep,
            load,
            format!("drover deploy v1→v2 (batches {})", self.batch),
            ms(d.took),
            (ka, cl, max_out),
            None,
            Some(sp),
        );
        self.fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        Ok(())
    }

    /// `drover deploy` to `version` with `rollout.order = "start-first"`.
    async fn start_first(&mut self, rep: usize, load: bool, version: &str) -> Result<(), String> {
        let text = self.fleet.start_first_spec_toml(&self.batch);
        let spec = self.fleet.write_spec("start-first.toml", &text);
        let spec = spec.to_string_lossy().into_owned();
        let args = ["deploy", "-f", &spec, "--version", version, "--json"];
        let deploy = self.fleet.drover(&args);
        let (d, ka, cl, max_out) = measure(&self.fleet, load, deploy).await;
        if d.code != Some(0) {
            return Err(format!(
                "drover deploy (start-first) failed: {}",
                d.describe()
            ));
        }
        self.record(
            rep,
            load,
            format!("start-first drover →{version} (batches {})", self.batch),
            ms(d.took),
            (ka, cl, max_out),
            None,
            None,
        );
        self.fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        Ok(())
    }

    /// The careful script, v2 → v1.
    async fn careful(&mut self, rep: usize, load: bool) -> Result<(), String> {
        let (r, ka, cl, max_out) = measure(
            &self.fleet,
            load,
            self.scripts.careful(&self.fleet, &self.v1),
        )
        .await;
        let t = r.map_err(|e| format!("the careful script failed: {e}"))?;
        self.record(
            rep,
            load,
            "script host by host, drain (v2→v1)".into(),
            t.wall,
            (ka, cl, max_out),
            Some(t),
            None,
        );
        self.fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        Ok(())
    }

    /// The naive script, v1 → v2.
    async fn naive(&mut self, rep: usize, load: bool) -> Result<(), String> {
        // No pull in the naive script: v2 by the digest Drover's deploy pulled it by.
        let pushed = self.fleet.pushed(DemoImage::V2);
        let local = format!("{}/demo@{}", self.fleet.registry().host(), pushed.digest);
        let (r, ka, cl, max_out) =
            measure(&self.fleet, load, self.scripts.naive(&self.fleet, &local)).await;
        let t = r.map_err(|e| format!("the naive script failed: {e}"))?;
        self.record(
            rep,
            load,
            "naive script, no drain (v1→v2)".into(),
            t.wall,
            (ka, cl, max_out),
            Some(t),
            None,
        );
        self.fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        rep: usize,
        load: bool,
        label: String,
        wall: f64,
        (keep_alive, close, max_out): (LoadReport, LoadReport, OutOfRotation),
        script: Option<ScriptTimes>,
        split: Option<Split>,
    ) {
        println!(
            "[{rep}] {label}{}: {:.2} s, failed {} + {} of {} + {} requests, at most {} servers out of rotation ({} drained by admin state)",
            if load { " under load" } else { "" },
            wall / 1000.0,
            keep_alive.failed,
            close.failed,
            keep_alive.sent,
            close.sent,
            max_out.any,
            max_out.drained,
        );
        if !max_out.worst.is_empty() {
            println!("      worst sample: {}", max_out.worst);
        }
        self.runs.push(Run {
            label,
            load,
            wall,
            keep_alive,
            close,
            max_out,
            script,
            split,
        });
    }
}

// ----- the agents' own timeline, from their logs --------------------------------------

/// The steps of one swap as the agent logs them, in order.
const AGENT_STEPS: [(&str, &str, &str); 5] = [
    (
        "command received",
        "creating",
        "received → creating: checks, image inspect, list + inspect containers",
    ),
    (
        "creating",
        "stopping",
        "creating → stopping: docker create + inspect",
    ),
    (
        "stopping",
        "starting",
        "stopping → starting: docker stop (demo app exits on SIGTERM)",
    ),
    (
        "starting",
        "ready",
        "starting → ready: docker start + readiness probe",
    ),
    (
        "ready",
        "command finished",
        "ready → finished: prune, list, report",
    ),
];

/// Per step of [`AGENT_STEPS`], its duration on each host for the swap of deployment
/// `id`, read from the agents' logs (text format, UTC timestamps).
fn agent_steps(fleet: &Fleet, id: &str) -> Vec<(&'static str, Vec<f64>)> {
    let mut out: Vec<(&'static str, Vec<f64>)> = AGENT_STEPS
        .iter()
        .map(|(_, _, what)| (*what, vec![]))
        .collect();
    for (i, host) in fleet.hosts().iter().enumerate() {
        let needle = format!("command_id={id}/swap/{}", host.name);
        let mut at: BTreeMap<String, f64> = BTreeMap::new();
        for line in fleet.agent_logs(i).lines() {
            let line = strip_ansi(line);
            if !line.contains(&needle) {
                continue;
            }
            let Some(t) = seconds_of_day(&line) else {
                continue;
            };
            let Some(msg) = line
                .split(" drover_agent::")
                .nth(1)
                .and_then(|r| r.split_once(": "))
                .map(|(_, m)| m)
            else {
                continue;
            };
            for (from, to, _) in AGENT_STEPS {
                for word in [from, to] {
                    if msg.starts_with(word) {
                        at.entry(word.to_string()).or_insert(t);
                    }
                }
            }
        }
        for (k, (from, to, _)) in AGENT_STEPS.iter().enumerate() {
            if let (Some(a), Some(b)) = (at.get(*from), at.get(*to)) {
                out[k].1.push((b - a) * 1000.0);
            }
        }
    }
    out
}

/// The line without ANSI colour sequences.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Seconds since midnight of a line starting `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn seconds_of_day(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

// ----- report ------------------------------------------------------------------------

fn first_failures(r: &LoadReport) -> String {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, why) in &r.failures {
        // Fold addresses and numbers so that equal reasons count together.
        let key: String = why.chars().take(70).collect();
        *reasons.entry(key).or_default() += 1;
    }
    reasons
        .iter()
        .take(3)
        .map(|(k, n)| format!("{n}× {k}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn report(args: &Args, runs: &[Run]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "=== bench_rollout: {} hosts (one shared Docker engine), batches {}, {} repetition(s); load = 2 keep-alive + 2 close-per-request workers through HAProxy; machine: {cores} cores, shared and noisy (ratios, not absolutes) ===",
        args.hosts, args.batch, args.repeat
    );
    println!(
        "  {:<40} {:>5} {:>8} {:>11} {:>11} {:>9} {:>12}",
        "approach", "load", "wall s", "failed k-a", "failed cls", "sent", "max out/drn"
    );
    for r in runs {
        println!(
            "  {:<40} {:>5} {:>8.2} {:>11} {:>11} {:>9} {:>12}",
            r.label,
            if r.load { "yes" } else { "no" },
            r.wall / 1000.0,
            r.keep_alive.failed,
            r.close.failed,
            r.keep_alive.sent + r.close.sent,
            format!("{}/{}", r.max_out.any, r.max_out.drained)
        );
    }
    println!(
        "  (max out/drn: most servers HAProxy had out of rotation (not UP or not READY) / drained by admin state, in any 100 ms sample)"
    );
    for r in runs
        .iter()
        .filter(|r| r.keep_alive.failed + r.close.failed > 0)
    {
        println!(
            "    {} failures: keep-alive [{}] close [{}]",
            r.label,
            first_failures(&r.keep_alive),
            first_failures(&r.close)
        );
    }
    for r in runs {
        if let Some(t) = &r.script {
            let n = args.hosts as f64;
            println!(
                "    {}{}: per host (mean ms): docker pull {:.0} + stop {:.0} + run {:.0}, /ready {:.0}, HAProxy drain+UP {:.0}, rest {:.0}",
                r.label,
                if r.load { " under load" } else { "" },
                t.pull / n,
                t.stop / n,
                t.run / n,
                t.ready / n,
                t.lb / n,
                (t.wall - t.pull - t.stop - t.run - t.ready - t.lb) / n
            );
        }
    }

    let pick = |prefix: &str, load: bool| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.label.starts_with(prefix) && r.load == load)
            .collect()
    };
    let wall = |v: &[&Run]| median(&v.iter().map(|r| r.wall).collect::<Vec<_>>());
    let failed =
        |v: &[&Run]| -> u64 { v.iter().map(|r| r.keep_alive.failed + r.close.failed).sum() };
    let loaded = (
        pick("drover", true),
        pick("script", true),
        pick("naive", true),
    );
    println!("zero downtime (under load)");
    println!(
        "  failed requests: drover {} | careful script {} | naive script {}   target drover = 0: {}",
        failed(&loaded.0),
        failed(&loaded.1),
        failed(&loaded.2),
        verdict(failed(&loaded.0) == 0 && !loaded.0.is_empty())
    );
    println!("speed (medians)");
    for (load, what) in [(false, "no load"), (true, "under load")] {
        let (d, c) = (wall(&pick("drover", load)), wall(&pick("script", load)));
        println!(
            "  {what:<10}: drover {:.2} s vs host by host {:.2} s: ratio drover/script {:.2} ({:.1}x faster)   targets: < 10 s: {}, >= 3x: {}",
            d / 1000.0,
            c / 1000.0,
            d / c,
            c / d,
            verdict(d < 10_000.0),
            verdict(c / d >= 3.0)
        );
    }
    let (sf_load, sf_idle) = (pick("start-first", true), pick("start-first", false));
    if !sf_load.is_empty() {
        let (sf, script, stop_first) = (
            wall(&sf_load),
            wall(&pick("script", true)),
            wall(&pick("drover", true)),
        );
        let out = sf_load.iter().map(|r| r.max_out.any).max().unwrap_or(0);
        println!("start-first (medians)");
        println!(
            "  under load: start-first {:.2} s vs host by host {:.2} s: {:.1}x faster (target >= 3x: {}); vs stop-first {:.2} s: ratio start-first/stop-first {:.2}; failed requests {} (target 0: {}); most servers out of rotation {out} (target 0: {})",
            sf / 1000.0,
            script / 1000.0,
            script / sf,
            verdict(script / sf >= 3.0),
            stop_first / 1000.0,
            sf / stop_first,
            failed(&sf_load),
            verdict(failed(&sf_load) == 0),
            verdict(out == 0)
        );
        let idle = wall(&sf_idle);
        println!(
            "  no load: start-first {:.2} s for the whole {}-host deploy (target < 3 s: {})",
            idle / 1000.0,
            args.hosts,
            verdict(idle < 3000.0)
        );
    }
    println!(
        "controller + agent overhead: share of drover's wall time not spent waiting on Docker, readiness or HAProxy"
    );
    for r in runs.iter().filter(|r| r.split.is_some()) {
        let Some(s) = &r.split else { continue };
        let load = if r.load { "under load" } else { "no load" };
        if let Some(p) = &s.problem {
            println!("  [{load}] not split: {p}");
            continue;
        }
        println!(
            "  [{load}] CLI wall {:.0} ms = pull {:.0} + Docker&readiness {:.0} + HAProxy {:.0} (drain {:.0}, enable→UP {:.0}) + overhead {:.0} ms → overhead {:.1} %   target < 10 %: {}",
            s.cli_wall,
            s.pull,
            s.docker_ready,
            s.lb,
            s.lb - s.lb_up,
            s.lb_up,
            s.overhead_cli(),
            100.0 * s.overhead_cli() / s.cli_wall,
            verdict(s.overhead_cli() / s.cli_wall < 0.10)
        );
        println!(
            "  [{load}] enable→UP per batch {:.0} ms vs 2 fast check intervals + 50 ms = {} ms (the fleet's fastinter/downinter {} ms, rise 2): {}",
            s.lb_up / s.batches.max(1) as f64,
            2 * FAST_CHECK_MS + 50,
            FAST_CHECK_MS,
            verdict(s.lb_up / s.batches.max(1) as f64 <= (2 * FAST_CHECK_MS + 50) as f64)
        );
        println!(
            "  [{load}] controller wall (created→finished) {:.0} ms → overhead {:.0} ms = {:.1} % (without the CLI process's own start and follow)",
            s.controller_wall,
            s.overhead_controller(),
            100.0 * s.overhead_controller() / s.controller_wall
        );
        println!(
            "  [{load}] batch parallelism: Σ hosts' ready_after {:.0} ms / Σ batches' slowest {:.0} ms = {:.2} (hosts per batch if swaps ran truly in parallel; 1.0 if the shared engine serialised them)",
            s.ready_sum,
            s.docker_ready,
            s.ready_sum / s.docker_ready
        );
        println!("  [{load}] the overhead, {} batches:", s.batches);
        for (what, v) in &s.parts {
            println!("    {v:>7.0} ms  {what}");
        }
        println!(
            "  [{load}] inside the agents' ready_after (from their logs, per host: median / max ms):"
        );
        for (what, v) in &s.agent {
            if v.is_empty() {
                println!(
                    "    {:>7} / {:>7}     {what} (not found in the logs)",
                    "-", "-"
                );
            } else {
                let max = v.iter().copied().fold(0.0, f64::max);
                println!("    {:>7.0} / {:>7.0}  {what}", median(v), max);
            }
        }
    }
    println!(
        "method: Drover's events (`drover deploy --json`, ms timestamps from the controller) give each step; waits are: the pull (PREPARING→PREPARED, agents in parallel), per batch the slowest agent's ready_after_ms (command receipt→ready: Docker calls + readiness probe) and the slowest drain wait (\"drained in\") plus enable→UP (HAProxy). Overhead = wall − those waits: CLI start and follow, gRPC, store writes, the agent's work after ready (prune, state report), gaps between steps. The scripts use the same HAProxy runtime calls and 50 ms polls as Drover, the docker CLI for pull/stop/run, and the same /ready probe loop (100 ms). Every \"host\" is a loopback address on ONE Docker engine, so a batch's swaps share that engine and these 2 cores."
    );
}

// ----- the cost of mTLS --------------------------------------------------------------

/// One timed `drover deploy` of the mTLS comparison.
struct TlsRun {
    transport: Transport,
    round: usize,
    /// `drover deploy` process start to exit, ms.
    cli: f64,
    /// Deployment created → finished on the controller's clock, ms.
    controller: f64,
    /// The controller wall minus the waits on Docker, readiness and HAProxy, ms (NaN when
    /// the events could not be split).
    overhead: f64,
    /// Those waits, ms: the pull, the batches' slowest ready_after, drain + enable→UP.
    pull: f64,
    docker_ready: f64,
    lb: f64,
    /// CPU the controller process used from before the deploy to its end, ms (NaN when
    /// it could not be read).
    controller_cpu: f64,
    /// The same, summed over the fleet's agent processes.
    agents_cpu: f64,
    /// Failed requests of the load (keep-alive + close) / sent.
    failed: u64,
    sent: u64,
}

/// `--tls-cost`: the speed benchmark's deploy (N hosts, the spec's batches, under load)
/// on two fleets at once, one with mTLS (the default: `ca init`, enrolled agents, the CLI
/// with the admin certificate) and one with `--insecure-dev` everywhere. Deploys alternate
/// between them, in the order mTLS, plaintext, plaintext, mTLS, ... so that drift of the
/// shared machine falls on both; one untimed deploy per fleet first, so no timed deploy
/// pulls. Prints every deploy, the medians per transport and their ratio (target: mTLS
/// under 5 % slower).
async fn tls_cost(args: &Args) -> ExitCode {
    println!(
        "bench_rollout --tls-cost: {} hosts per fleet, batches of {}, {} round(s) under load; {}",
        args.hosts,
        args.batch,
        args.repeat,
        drover_tests::process::bin_path("drover").display(),
    );
    let mut fleets = vec![];
    for transport in [Transport::Mtls, Transport::InsecureDev] {
        let started = Instant::now();
        let fleet = Fleet::start(FleetOptions {
            hosts: args.hosts,
            batch_size: &args.batch,
            readiness_deadline: READY_DEADLINE,
            images: &[DemoImage::V1, DemoImage::V2],
            initial: Some(DemoImage::V1),
            transport,
            ..FleetOptions::default()
        })
        .await;
        on_abort_fleet(&fleet);
        println!(
            "{} fleet up on v1 in {:.1} s (controller {})",
            transport_label(transport),
            started.elapsed().as_secs_f64(),
            fleet.controller_url()
        );
        fleets.push(fleet);
    }
    let mut runs = vec![];
    let outcome = async {
        for fleet in &fleets {
            let d = fleet.deploy("v2").await;
            if d.code != Some(0) {
                return Err(format!("the warm-up deploy failed: {}", d.describe()));
            }
            fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
        }
        for round in 1..=args.repeat {
            let version = if round % 2 == 1 { "v1" } else { "v2" };
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            for i in order {
                let run = tls_deploy(&fleets[i], round, version).await?;
                println!(
                    "[{round}] {:<9} deploy →{version} under load: CLI {:.2} s, controller {:.2} s = pull {:.0} + Docker&readiness {:.0} + HAProxy {:.0} + overhead {:.0} ms; CPU controller {:.0} ms, agents {:.0} ms; failed {} of {} requests",
                    transport_label(run.transport),
                    run.cli / 1000.0,
                    run.controller / 1000.0,
                    run.pull,
                    run.docker_ready,
                    run.lb,
                    run.overhead,
                    run.controller_cpu,
                    run.agents_cpu,
                    run.failed,
                    run.sent
                );
                runs.push(run);
            }
        }
        Ok::<_, String>(())
    }
    .await;
    tls_report(args, &runs);
    drop(fleets);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_rollout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One timed deploy of `fleet` to `version` under load.
async fn tls_deploy(fleet: &Fleet, round: usize, version: &str) -> Result<TlsRun, String> {
    let cpu0 = fleet_cpu(fleet);
    let cli_start_ms = now_ms();
    let (d, ka, cl, _) = measure(fleet, true, fleet.deploy(version)).await;
    let cpu = fleet_cpu(fleet);
    if d.code != Some(0) {
        return Err(format!(
            "drover deploy ({}) failed: {}",
            transport_label(fleet.transport()),
            d.describe()
        ));
    }
    let sp = split(&d, cli_start_ms);
    let overhead = if sp.problem.is_some() {
        f64::NAN
    } else {
        sp.overhead_controller()
    };
    fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
    Ok(TlsRun {
        transport: fleet.transport(),
        round,
        cli: ms(d.took),
        controller: sp.controller_wall,
        overhead,
        pull: sp.pull,
        docker_ready: sp.docker_ready,
        lb: sp.lb,
        controller_cpu: cpu.0 - cpu0.0,
        agents_cpu: cpu.1 - cpu0.1,
        failed: ka.failed + cl.failed,
        sent: ka.sent + cl.sent,
    })
}

/// CPU time used so far, in ms, by the fleet's controller and, summed, by its agents
/// (NaN where a process could not be read). The controller is found among this
/// process's children by its `--listen` address.
fn fleet_cpu(fleet: &Fleet) -> (f64, f64) {
    let listen = fleet.controller_addr().to_string();
    let controller = bench::child_pids().into_iter().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.contains(&b"serve".as_slice()) && args.contains(&listen.as_bytes())
    });
    let cpu = |pid: Option<u32>| {
        pid.and_then(bench::cpu_seconds)
            .map_or(f64::NAN, |s| s * 1000.0)
    };
    let agents = (0..fleet.hosts().len())
        .map(|i| cpu(fleet.agent_pid(i)))
        .sum();
    (cpu(controller), agents)
}

/// What the report reads from a [`TlsRun`].
type Measure = fn(&TlsRun) -> f64;

fn transport_label(t: Transport) -> &'static str {
    match t {
        Transport::Mtls => "mTLS",
        Transport::InsecureDev => "plaintext",
    }
}

fn tls_report(args: &Args, runs: &[TlsRun]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let of = |t: Transport, f: Measure| -> Vec<f64> {
        runs.iter()
            .filter(|r| r.transport == t)
            .map(f)
            .filter(|v| !v.is_nan())
            .collect()
    };
    // Per round, mTLS / plaintext of the two deploys run back to back.
    let paired = |f: Measure| -> Vec<f64> {
        (1..=args.repeat)
            .filter_map(|round| {
                let pick = |t: Transport| {
                    runs.iter()
                        .find(|r| r.round == round && r.transport == t)
                        .map(f)
                };
                Some(pick(Transport::Mtls)? / pick(Transport::InsecureDev)?)
            })
            .filter(|v| v.is_finite())
            .collect()
    };
    println!();
    println!(
        "=== bench_rollout --tls-cost: the cost of mTLS on a {}-host deploy, batches {}, under load (2 keep-alive + 2 close-per-request workers through HAProxy); {} round(s), mTLS and plaintext fleets side by side, deploys interleaved (mTLS, plaintext, plaintext, mTLS, ...); machine: {cores} cores, shared and noisy (ratios, not absolutes) ===",
        args.hosts, args.batch, args.repeat
    );
    println!(
        "  {:<5} {:<9} {:>8} {:>13} {:>12} {:>12}",
        "round", "transport", "CLI s", "controller s", "overhead ms", "failed/sent"
    );
    for r in runs {
        println!(
            "  {:<5} {:<9} {:>8.2} {:>13.2} {:>12.0} {:>12}",
            r.round,
            transport_label(r.transport),
            r.cli / 1000.0,
            r.controller / 1000.0,
            r.overhead,
            format!("{}/{}", r.failed, r.sent)
        );
    }
    let rows: [(&str, Measure); 8] = [
        ("CLI wall (drover deploy start → exit)", |r| r.cli),
        ("controller wall (created → finished)", |r| r.controller),
        ("  waiting on the pull (agents in parallel)", |r| r.pull),
        (
            "  waiting on Docker and readiness (slowest per batch)",
            |r| r.docker_ready,
        ),
        ("  waiting on HAProxy (drain, enable→UP)", |r| r.lb),
        ("controller CPU during the deploy", |r| r.controller_cpu),
        ("agents' CPU during the deploy (all hosts)", |r| {
            r.agents_cpu
        }),
        (
            "controller overhead (wall − Docker/readiness/HAProxy waits)",
            |r| r.overhead,
        ),
    ];
    println!("medians (ms) and mTLS / plaintext");
    for (what, f) in rows {
        let (t, p) = (of(Transport::Mtls, f), of(Transport::InsecureDev, f));
        let (mt, mp) = (median(&t), median(&p));
        let pairs = paired(f);
        println!(
            "  {what:<62}: mTLS {mt:>7.0} | plaintext {mp:>7.0} | ratio of medians {:.3} ({:+.1} %, {:+.0} ms) | paired ratios: median {:.3}, range {:.2}–{:.2}",
            mt / mp,
            100.0 * (mt / mp - 1.0),
            mt - mp,
            median(&pairs),
            pairs.iter().copied().fold(f64::NAN, f64::min),
            pairs.iter().copied().fold(f64::NAN, f64::max),
        );
    }
    let (t, p) = (
        median(&of(Transport::Mtls, |r| r.cli)),
        median(&of(Transport::InsecureDev, |r| r.cli)),
    );
    println!(
        "  target: mTLS under 5 % slower (CLI wall, ratio of medians {:.3}): {}",
        t / p,
        verdict(t / p < 1.05)
    );
    let cpu_delta =
        |f: Measure| median(&of(Transport::Mtls, f)) - median(&of(Transport::InsecureDev, f));
    let (d_ctl, d_agents) = (cpu_delta(|r| r.controller_cpu), cpu_delta(|r| r.agents_cpu));
    println!(
        "  CPU that mTLS adds per deploy (medians): controller {d_ctl:+.0} ms, agents {d_agents:+.0} ms (all {} hosts) = {:.2} % of the plaintext deploy's CLI wall: at most what mTLS can add to the deploy's time, were none of it hidden behind the waits (less noisy than the wall ratio)",
        args.hosts,
        100.0 * (d_ctl + d_agents) / p
    );
    let failed: u64 = runs.iter().map(|r| r.failed).sum();
    println!(
        "  failed requests under load, all deploys: {failed}   target 0: {}",
        verdict(failed == 0 && !runs.is_empty())
    );
    println!(
        "method: two fleets of {} real agents each (one shared Docker engine), one enrolled over mTLS and one --insecure-dev, both up for the whole run; each round deploys both to the same version, back to back, alternating which goes first; every timed deploy swaps images already present (one untimed deploy per fleet first). Overhead as in the default run: the controller's wall time minus the pull, each batch's slowest ready_after and drain/enable→UP waits.",
        args.hosts
    );
}
