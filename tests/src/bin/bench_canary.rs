//! `bench_canary`: how fast a staged rollout's canary analysis catches a version that
//! answers 5xx, under load, with real parts only.
//!
//! One fleet ([`drover_tests::fleet::Fleet`]: real `drover serve`, N real agents, real
//! HAProxy, real registry, the demo app) on v1, and the `v3-5xx` demo build (every 5th
//! request answers 500) pushed as `demo:v3`. Each run deploys v3 with a canary stage of
//! one host baking long enough, `[canary] interval` as given, while two loads (keep-alive
//! and one connection per request) send `GET /` through HAProxy; the canary is caught and
//! rolled back, and the fleet is on v1 again for the next run.
//!
//! Measured per run: **detection**, from the first 500 the load generator saw (its own
//! clock, mapped to wall time) to the deployment's `rolling_back` state event (the
//! controller's clock; both are this machine's). The target is detection under
//! `interval + 2 s`; the margin printed is `detection - interval`. The detection is also
//! split, from the deployment's own events, into: first 500 -> bake starts, bake starts
//! -> breach recorded, breach -> `rolling_back`.
//!
//! ```text
//! bench_canary [--hosts N] [--interval 1s] [--repeat R]
//! ```
//!
//! Runs the `drover` and `drover-agent` next to its own executable (the same build:
//! `target/release` when built with `--release`), unless `DROVER_BIN_DIR` says otherwise.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::bench::{self, BinDir, Flags, StopChildren, on_abort_fleet};
use drover_tests::fleet::{Fleet, FleetOptions, now_ms, version_of};
use drover_tests::load::{Load, LoadOptions, LoadReport};
use serde_json::Value;
use tokio::time::Instant;

/// Detection must stay under the interval plus this.
const TARGET_MARGIN_MS: i64 = 2_000;
/// The canary bakes this long: far longer than any detection, so a miss shows.
const BAKE: &str = "60s";
/// The load keeps running this long after a run, to catch late failures.
const SETTLE: Duration = Duration::from_millis(300);

// ----- arguments -------------------------------------------------------------------

struct Args {
    hosts: usize,
    interval: Duration,
    repeat: usize,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| (&s[..i], &s[i..]));
    let n: u64 = n.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        _ => None,
    }
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hosts: 4,
        interval: Duration::from_secs(1),
        repeat: 3,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--hosts" => a.hosts = flags.number_in(&flag, 2..=20)?,
            "--interval" => {
                a.interval = parse_duration(&flags.value(&flag)?)
                    .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(30))
                    .ok_or("--interval takes 100ms..30s, e.g. 1s or 500ms")?
            }
            "--repeat" => a.repeat = flags.number_in(&flag, 1..=20)?,
            "-h" | "--help" => {
                return Err("usage: bench_canary [--hosts N] [--interval 1s] [--repeat R]".into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

// ----- one run ---------------------------------------------------------------------

/// What one run measured (wall-clock times in Unix ms).
struct Run {
    canary: String,
    outcome: String,
    requests: u64,
    canary_500: u64,
    other_failures: Vec<String>,
    first_500: Option<u64>,
    baking: Option<u64>,
    breach: Option<u64>,
    rolling_back: Option<u64>,
    error: String,
}

impl Run {
    fn detection(&self) -> Option<i64> {
        Some(self.rolling_back? as i64 - self.first_500? as i64)
    }
}

/// A tokio instant and the wall-clock time it stands for.
struct Epoch {
    instant: Instant,
    wall_ms: u64,
}

impl Epoch {
    fn wall_ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.wall_ms + (at - self.instant).as_millis() as u64
        } else {
            self.wall_ms
                .saturating_sub((self.instant - at).as_millis() as u64)
        }
    }
}

fn load(fleet: &Fleet, keep_alive: bool) -> Load {
    Load::start(
        fleet.haproxy().frontend_addr(),
        LoadOptions {
            keep_alive,
            concurrency: 1,
            max_requests: 500_000,
            max_duration: Duration::from_secs(180),
            request_timeout: Duration::from_secs(5),
        },
    )
}

/// Waits (bounded) until both loads answered a few requests.
async fn flowing(a: &Load, b: &Load) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.completed() < 50 || b.completed() < 50 {
        if Instant::now() > deadline {
            return Err("the loads got no answers through HAProxy within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Deploys v3 once under load and reads what happened.
async fn run_once(fleet: &Fleet, spec: &str) -> Result<Run, String> {
    let (ka, cl) = (load(fleet, true), load(fleet, false));
    let epoch = Epoch {
        instant: Instant::now(),
        wall_ms: now_ms(),
    };
    flowing(&ka, &cl).await?;
    let run = fleet
        .drover(&["deploy", "-f", spec, "--version", "v3", "--json"])
        .await;
    tokio::time::sleep(SETTLE).await;
    let reports: [LoadReport; 2] = [ka.stop().await, cl.stop().await];
    let json = run.json();
    let snapshot = json
        .iter()
        .rev()
        .find(|v| v["type"] == "deployment")
        .ok_or_else(|| format!("no final snapshot: {}", run.describe()))?;
    let events: Vec<&Value> = json.iter().filter(|v| v["type"] == "event").collect();
    let state_at = |state: &str| {
        events
            .iter()
            .find(|e| e["state"] == state)
            .and_then(|e| e["at_ms"].as_u64())
    };
    let canary = snapshot["hosts"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h["batch"] == 1))
        .and_then(|h| h["host"].as_str())
        .unwrap_or("?")
        .to_string();
    let mut r = Run {
        canary,
        outcome: snapshot["state"].as_str().unwrap_or("?").to_string(),
        requests: reports.iter().map(|r| r.sent).sum(),
        canary_500: 0,
        other_failures: vec![],
        first_500: None,
        baking: state_at("baking"),
        breach: events
            .iter()
            .find(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("canary breach"))
            })
            .and_then(|e| e["at_ms"].as_u64()),
        rolling_back: state_at("rolling_back"),
        error: snapshot["error"].as_str().unwrap_or("").to_string(),
    };
    for report in &reports {
        for (at, reason) in &report.failures {
            if reason.starts_with("HTTP 500") && reason.contains("version=v3") {
                r.canary_500 += 1;
                let ms = epoch.wall_ms(*at);
                r.first_500 = Some(r.first_500.map_or(ms, |f| f.min(ms)));
            } else {
                r.other_failures
                    .push(reason.lines().next().unwrap_or("").to_string());
            }
        }
    }
    Ok(r)
}

/// Every host answers v1 on its own address again.
async fn fleet_on_v1(fleet: &Fleet) -> Result<(), String> {
    for h in fleet.hosts() {
        match version_of(h.addr).await {
            Ok(v) if v == "v1" => {}
            other => return Err(format!("{} answers {other:?} after the run", h.name)),
        }
    }
    Ok(())
}

// ----- report ----------------------------------------------------------------------

fn ms(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn diff(a: Option<u64>, b: Option<u64>) -> Option<i64> {
    Some(b? as i64 - a? as i64)
}

fn report(args: &Args, runs: &[Run]) {
    let interval = args.interval.as_millis() as i64;
    println!();
    println!(
        "canary detection of a 5xx version (v3-5xx: 20% of requests answer 500), {} hosts, [canary] interval = {interval} ms, target: detection < interval + {TARGET_MARGIN_MS} ms",
        args.hosts
    );
    println!(
        "{:>3}  {:<18} {:>8} {:>6} {:>6}  {:>11} {:>12} {:>12}  {:>9} {:>8} {:>8}  verdict",
        "run",
        "canary",
        "requests",
        "500s",
        "other",
        "500->bake",
        "bake->breach",
        "breach->rb",
        "detection",
        "interval",
        "margin",
    );
    let mut margins = vec![];
    for (i, r) in runs.iter().enumerate() {
        let detection = r.detection();
        let margin = detection.map(|d| d - interval);
        if let Some(m) = margin {
            margins.push(m);
        }
        let verdict = match (r.outcome.as_str(), margin) {
            ("rolled_back", Some(m)) if m < TARGET_MARGIN_MS => "ok".to_string(),
            ("rolled_back", Some(_)) => "SLOW".to_string(),
            (outcome, _) => format!("MISSED ({outcome})"),
        };
        println!(
            "{:>3}  {:<18} {:>8} {:>6} {:>6}  {:>11} {:>12} {:>12}  {:>9} {:>8} {:>8}  {verdict}",
            i + 1,
            r.canary,
            r.requests,
            r.canary_500,
            r.other_failures.len(),
            ms(diff(r.first_500, r.baking)),
            ms(diff(r.baking, r.breach)),
            ms(diff(r.breach, r.rolling_back)),
            ms(detection),
            interval,
            ms(margin)
        );
    }
    if let Some(r) = runs.first() {
        println!("breach reported (run 1): {}", r.error);
    }
    let others: Vec<&String> = runs.iter().flat_map(|r| &r.other_failures).collect();
    if !others.is_empty() {
        println!("failures other than the canary's own 500s: {others:?}");
    }
    margins.sort_unstable();
    if let (Some(min), Some(max)) = (margins.first(), margins.last()) {
        println!(
            "margin (detection - interval): min {min} ms, median {} ms, max {max} ms over {} runs; target < {TARGET_MARGIN_MS} ms: {}",
            margins[margins.len() / 2],
            margins.len(),
            if *max < TARGET_MARGIN_MS && margins.len() == runs.len() {
                "met"
            } else {
                "NOT met"
            }
        );
    }
}

// ----- main ------------------------------------------------------------------------

fn main() -> ExitCode {
    // Benchmark the build this program belongs to; on a panic, SIGKILL the children.
    bench::run_main(
        "bench_canary",
        parse_args(),
        BinDir::OwnDir,
        StopChildren::Kill,
        run,
    )
}

async fn run(args: Args) -> ExitCode {
    println!(
        "bench_canary: {} hosts, interval {:?}, {} run(s); {}",
        args.hosts,
        args.interval,
        args.repeat,
        drover_tests::process::bin_path("drover").display()
    );
    let started = Instant::now();
    let fleet = Fleet::start(FleetOptions {
        hosts: args.hosts,
        batch_size: "1",
        readiness_deadline: Duration::from_secs(15),
        images: &[DemoImage::V1],
        initial: Some(DemoImage::V1),
        ..FleetOptions::default()
    })
    .await;
    on_abort_fleet(&fleet);
    fleet
        .registry()
        .push(&DemoImage::V3FiveXx.local_ref(), "demo:v3")
        .await;
    let spec = format!(
        "{}\n[[rollout.stage]]\nhosts = \"1\"\nbake = \"{BAKE}\"\n\n[[rollout.stage]]\nhosts = \"100%\"\n\n[canary]\ninterval = \"{}ms\"\nmin_requests = 10\n",
        fleet.spec_toml("1"),
        args.interval.as_millis()
    );
    let spec = fleet.write_spec("canary.toml", &spec);
    let spec = spec.to_string_lossy().into_owned();
    println!(
        "fleet up on v1 in {:.1} s (HAProxy {}, controller {})",
        started.elapsed().as_secs_f64(),
        fleet.haproxy().frontend_addr(),
        fleet.controller_url()
    );
    let mut runs = vec![];
    let outcome = async {
        for i in 1..=args.repeat {
            let r = run_once(&fleet, &spec).await?;
            println!(
                "run {i}: canary {} {} after {} requests; detection {} ms",
                r.canary,
                r.outcome,
                r.requests,
                ms(r.detection())
            );
            let rolled_back = r.outcome == "rolled_back";
            runs.push(r);
            if !rolled_back {
                return Err(format!("run {i} was not rolled back"));
            }
            fleet_on_v1(&fleet).await?;
        }
        Ok::<_, String>(())
    }
    .await;
    report(&args, &runs);
    drop(fleet);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_canary: {e}");
            ExitCode::FAILURE
        }
    }
}
