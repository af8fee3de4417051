//! Failover of the controller in the middle of a deploy, with real parts (real `drover
//! serve`, 4 real agents, real Docker, registry and HAProxy): from SIGKILL of the
//! controller while a host swaps to the deployment's next host action (the first event
//! after the kill that moves a host, as the following `drover deploy` prints it).
//!
//! - replicas: three `drover serve` on PostgreSQL with `--leader-lease 3s`; the leader is
//!   killed and a standby takes over (the killed one is started again as a standby
//!   before the next round);
//! - baseline: one `drover serve` on SQLite killed and started again at once (what a
//!   service manager with no restart delay does).
//!
//! Rounds alternate between the two (and between v2 and v1). Prints each round and the
//! medians, and their ratio.

use std::process::ExitCode;
use std::time::Duration;

use drover_tests::bench::Flags;
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions, field, now_ms};

/// The median of whole milliseconds.
fn median(v: &[u64]) -> u64 {
    let v: Vec<f64> = v.iter().map(|ms| *ms as f64).collect();
    drover_tests::bench::median(&v) as u64
}

/// Deploys `version`, kills the controller (the leader) while batch 2's host swaps,
/// waits for a standby to lead (`replicas`) or starts the controller again, and returns
/// (kill → a controller acts again, kill → the deployment's next host action) in ms.
async fn round(fleet: &mut Fleet, version: &str, replicas: bool) -> Result<(u64, u64), String> {
    let (deploy, _, _) = fleet.spawn_deploy_until_swapping(version, 1).await;
    let killed = now_ms();
    let back = if replicas {
        let old = fleet.leader().await.ok_or("no leader")?;
        fleet.kill_replica(old);
        let _new = fleet
            .wait_leader_other_than(old, Duration::from_secs(30))
            .await;
        let back = now_ms() - killed;
        fleet.start_replica(old);
        back
    } else {
        fleet.restart_controller().await;
        now_ms() - killed
    };
    let run = deploy.finish(CLI_TIMEOUT).await;
    if run.code != Some(0) || field(&run.final_snapshot(), "state") != "succeeded" {
        return Err(format!("the deploy did not succeed: {}", run.describe()));
    }
    let (at, _) = run
        .first_host_event_after(killed)
        .ok_or("no host action after the kill")?;
    Ok((back, at - killed))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut rounds = 3usize;
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--rounds" => match flags.number_in(&flag, 1..=20) {
                Ok(n) => rounds = n,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(64);
                }
            },
            other => {
                eprintln!("unknown argument {other:?}; usage: bench_failover [--rounds N]");
                return ExitCode::from(64);
            }
        }
    }
    let options = |replicas| FleetOptions {
        hosts: 4,
        batch_size: "1",
        replicas,
        ..Default::default()
    };
    let mut ha = Fleet::start(options(3)).await;
    let mut single = Fleet::start(options(0)).await;
    println!(
        "4 hosts, batches of 1; SIGKILL of the controller while batch 2 swaps; ms from the kill"
    );
    let (mut ha_back, mut ha_action, mut single_action) = (vec![], vec![], vec![]);
    let mut version = "v2";
    for r in 1..=rounds {
        match round(&mut ha, version, true).await {
            Ok((back, action)) => {
                println!(
                    "round {r} replicas (lease 3 s): a standby leads after {back} ms, next host action after {action} ms"
                );
                ha_back.push(back);
                ha_action.push(action);
            }
            Err(e) => {
                eprintln!("round {r} replicas: {e}");
                return ExitCode::FAILURE;
            }
        }
        match round(&mut single, version, false).await {
            Ok((back, action)) => {
                println!(
                    "round {r} single controller restarted at once: answering after {back} ms, next host action after {action} ms"
                );
                single_action.push(action);
            }
            Err(e) => {
                eprintln!("round {r} single: {e}");
                return ExitCode::FAILURE;
            }
        }
        version = if version == "v2" { "v1" } else { "v2" };
    }
    let (a, b) = (median(&ha_action), median(&single_action));
    println!(
        "median: replicas {a} ms to the next host action (a standby led after {} ms; target under 5000 ms), a single controller restarted at once {b} ms; ratio {:.2}",
        median(&ha_back),
        a as f64 / b.max(1) as f64
    );
    ExitCode::SUCCESS
}
