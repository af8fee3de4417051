//! `bench_restore`: how long Drover takes to put a failed batch of three hosts back on
//! their previous version and in rotation, against one host's restore, measured in the
//! same run (the machine is shared and noisy, so the figure is a RATIO).
//!
//! One fleet ([`drover_tests::fleet::Fleet`]: real `drover serve`, N real agents, real
//! HAProxy, real registry, the demo app) on v1. Each round deploys the `never-ready` demo
//! build (its readiness never passes; each agent restores the previous container when the
//! readiness deadline passes) twice, interleaved: with batches of three (the first batch
//! fails, three hosts are restored) and with batches of one (one host is restored). A
//! sampler reads every server's HAProxy state every 10 ms; per host it finds the trip out
//! of rotation ([`drover_tests::haproxy::Excursion`]: drained, re-enabled, back UP).
//!
//! Two figures per deploy, medians over the rounds, batch of three / batch of one:
//!
//! - **drain to last UP**: from the first host of the batch drained to the last one back
//!   UP. This includes the swap and the readiness deadline, which run in parallel on the
//!   agents whatever the controller does afterwards, so a serial restore would show here
//!   only as `(one host) + 2 x (enable to UP)`: printed as the serial prediction.
//! - **back in rotation**: from the first host of the batch re-enabled to the last one
//!   back UP, the part of the restore the controller drives (fresh checks forced, `state
//!   ready`, wait until HAProxy reports UP). Parallel: ratio ~ 1; one after the other: ~ 3.
//!
//! ```text
//! bench_restore [--hosts N] [--rounds R]
//! ```
//!
//! Not a test: run it through `tests/bench.sh restore`.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::bench::{self, BinDir, Flags, StopChildren, median, ms, on_abort_fleet};
use drover_tests::fleet::{Fleet, FleetOptions, field};
use drover_tests::haproxy::Excursion;

/// How long the never-ready version keeps a host before its agent restores v1.
const READY_DEADLINE: Duration = Duration::from_secs(2);
/// How often HAProxy's server states are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// How long HAProxy may take to have every server UP between deploys.
const UP_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    hosts: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hosts: 4,
        rounds: 5,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--hosts" => a.hosts = flags.number_in(&flag, 4..=20)?,
            "--rounds" => a.rounds = flags.number_in(&flag, 1..=20)?,
            "-h" | "--help" => return Err("usage: bench_restore [--hosts N] [--rounds R]".into()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    // The fleet runs `$DROVER_BIN_DIR/{drover,drover-agent}`: the release build. On a
    // panic: SIGTERM the children, SIGKILL those left after 5 s.
    bench::run_main(
        "bench_restore",
        parse_args(),
        BinDir::Release,
        StopChildren::TermThenKill(Duration::from_secs(5)),
        run,
    )
}

/// One failed deploy's restore, in ms.
#[derive(Debug, Clone, Copy)]
struct Restore {
    /// Hosts restored.
    hosts: usize,
    /// First host drained to last host back UP.
    drain_to_up: f64,
    /// First host re-enabled to last host back UP.
    back_in_rotation: f64,
    /// The slowest host's own re-enable to UP.
    enable_to_up: f64,
}

/// Deploys `never-ready` with `spec` and measures the restore of the failed batch.
async fn failed_deploy(fleet: &Fleet, spec: &str) -> Result<Restore, String> {
    fleet.haproxy().wait_all_up(UP_TIMEOUT).await;
    let sampler = fleet.haproxy().sample_states(SAMPLE_EVERY);
    let version = DemoImage::NeverReady.tag();
    let run = fleet
        .drover(&["deploy", "-f", spec, "--version", version, "--json"])
        .await;
    let samples = sampler.stop().await;
    if run.code != Some(1) {
        return Err(format!(
            "the never-ready deploy did not fail: {}",
            run.describe()
        ));
    }
    let snapshot = run.final_snapshot();
    let failed: Vec<&str> = snapshot["hosts"]
        .as_array()
        .ok_or("no hosts in the snapshot")?
        .iter()
        .filter(|h| field(h, "phase") == "failed")
        .map(|h| field(h, "host"))
        .collect();
    let trips: Vec<Excursion> = failed
        .iter()
        .map(|h| {
            samples
                .excursion(h)
                .ok_or_else(|| format!("{h} was not seen back UP: {:?}", samples.history(h)))
        })
        .collect::<Result<_, _>>()?;
    let first_left = trips.iter().map(|t| t.left).min().ok_or("no failed host")?;
    let first_enabled = trips.iter().map(|t| t.reenabled).min().ok_or("none")?;
    let last_up = trips.iter().map(|t| t.up).max().ok_or("none")?;
    let enable_to_up = trips
        .iter()
        .map(|t| ms(t.up - t.reenabled))
        .fold(0.0, f64::max);
    Ok(Restore {
        hosts: failed.len(),
        drain_to_up: ms(last_up - first_left),
        back_in_rotation: ms(last_up - first_enabled),
        enable_to_up,
    })
}

async fn run(args: Args) -> ExitCode {
    println!(
        "bench_restore: {} hosts, {} rounds, readiness deadline {READY_DEADLINE:?}; {}",
        args.hosts,
        args.rounds,
        drover_tests::process::bin_path("drover").display()
    );
    let fleet = Fleet::start(FleetOptions {
        hosts: args.hosts,
        readiness_deadline: READY_DEADLINE,
        images: &[DemoImage::V1, DemoImage::NeverReady],
        ..FleetOptions::default()
    })
    .await;
    on_abort_fleet(&fleet);
    let three = fleet.write_spec("batch-3.toml", &fleet.spec_toml("3"));
    let one = fleet.write_spec("batch-1.toml", &fleet.spec_toml("1"));
    let (three, one) = (three.to_string_lossy(), one.to_string_lossy());
    let mut runs: Vec<(Restore, Restore)> = vec![];
    for round in 1..=args.rounds {
        let pair = async {
            let r3 = failed_deploy(&fleet, &three).await?;
            let r1 = failed_deploy(&fleet, &one).await?;
            Ok::<_, String>((r3, r1))
        }
        .await;
        match pair {
            Ok((r3, r1)) if r3.hosts == 3 && r1.hosts == 1 => {
                println!(
                    "round {round}: batch of 3: drain to last UP {:.0} ms, back in rotation {:.0} ms (slowest enable to UP {:.0} ms) | batch of 1: drain to UP {:.0} ms, back in rotation {:.0} ms",
                    r3.drain_to_up,
                    r3.back_in_rotation,
                    r3.enable_to_up,
                    r1.drain_to_up,
                    r1.back_in_rotation
                );
                runs.push((r3, r1));
            }
            Ok((r3, r1)) => {
                eprintln!(
                    "bench_restore: round {round}: {} and {} hosts restored, not 3 and 1",
                    r3.hosts, r1.hosts
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("bench_restore: round {round}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let med = |f: fn(&(Restore, Restore)) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let d3 = med(|r| r.0.drain_to_up);
    let d1 = med(|r| r.1.drain_to_up);
    let b3 = med(|r| r.0.back_in_rotation);
    let b1 = med(|r| r.1.back_in_rotation);
    println!("\nmedians over {} rounds:", runs.len());
    println!(
        "  drain to last UP:  batch of 3 {d3:.0} ms, batch of 1 {d1:.0} ms, ratio {:.2} (a serial restore would be about {:.0} ms, ratio {:.2})",
        d3 / d1,
        d1 + 2.0 * b1,
        (d1 + 2.0 * b1) / d1
    );
    println!(
        "  back in rotation:  batch of 3 {b3:.0} ms, batch of 1 {b1:.0} ms, ratio {:.2} (parallel ~ 1, one after the other ~ 3)",
        b3 / b1
    );
    drop(fleet);
    ExitCode::SUCCESS
}
