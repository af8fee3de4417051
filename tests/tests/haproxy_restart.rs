//! HAProxy reloaded (`-sf`, same config) and restarted while a batch is drained, in the
//! middle of a real rollout under load: the new processes have lost the runtime states,
//! Drover notices (process start in `show info`), sets them again, says so in the
//! events, and the rollout ends with every server UP on the new version.
//!
//! Requests cut by the reload or restart itself (connections closed or refused while
//! HAProxy changes process, 503s while the new process's checks have not passed yet) are
//! counted apart from the rest, which must be none.

use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use drover_tests::fleet::{Fleet, FleetOptions, field, phases};
use drover_tests::traffic::Traffic;
use serde_json::Value;
use tokio::time::Instant;

const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// After a reload or restart returns, how long its own failures may go on: the new
/// process brings servers UP after `rise` checks (the fleet's `inter 1s` first).
const SETTLE: Duration = Duration::from_secs(4);

/// An event that puts a host of batch `batch` (from 1) in `phase`.
fn in_batch(batch: u64, phase: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| v["type"] == "event" && v["phase"] == phase && v["batch"] == batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_and_a_restart_mid_batch_get_the_states_back_and_the_rollout_ends_up() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;
    let mut deploy = fleet.spawn_deploy("v2");

    let mut windows: Vec<(Instant, Instant)> = vec![];
    // Batch 1 swapping (drained): reload. Batch 3 swapping: restart.
    deploy
        .wait_json(STEP_TIMEOUT, "batch 1 swapping", in_batch(1, "swapping"))
        .await;
    let start = Instant::now();
    fleet.haproxy_mut().reload().await;
    windows.push((start, Instant::now() + SETTLE));
    deploy
        .wait_json(STEP_TIMEOUT, "batch 3 swapping", in_batch(3, "swapping"))
        .await;
    let start = Instant::now();
    fleet.haproxy_mut().restart().await;
    windows.push((start, Instant::now() + SETTLE));

    let run = deploy.finish(STEP_TIMEOUT).await;
    traffic.more(200).await;
    let seen = traffic.stop().await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "succeeded", "{snapshot}");
    assert!(
        phases(&snapshot).values().all(|p| p == "done"),
        "{snapshot}"
    );
    let notices = run
        .json()
        .into_iter()
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("restarted or reloaded"))
        })
        .count();
    assert!(notices >= 2, "both noticed: {}", run.describe());

    // Every server UP and READY on the new process, every host on v2.
    for s in fleet.haproxy().servers().await {
        assert_eq!(
            (s.status.clone(), s.admin),
            (OpStatus::Up, AdminState::Ready),
            "{s:?}"
        );
    }
    fleet.assert_serves("v2").await;

    // Failures while HAProxy changed process are its own; none outside those windows.
    let mut by_restart = 0;
    let mut by_rollout = vec![];
    for load in [&seen.keep_alive, &seen.close] {
        for (at, why) in &load.failures {
            if windows.iter().any(|(from, to)| at >= from && at <= to) {
                by_restart += 1;
            } else {
                by_rollout.push(why.clone());
            }
        }
    }
    eprintln!(
        "{} requests; cut by the reload/restart: {by_restart}; otherwise failed: {}\n{}",
        seen.requests(),
        by_rollout.len(),
        seen.summary()
    );
    assert!(by_rollout.is_empty(), "{by_rollout:?}");
}
