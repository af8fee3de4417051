//! The plan's batch size is a promise about capacity: hosts left drained by a lost
//! agent count against it, so a rollback never takes more hosts out of rotation than
//! the plan allows. Against scripted agents (see `common`).

mod common;

use std::time::Duration;

use common::*;
use drover_controller::rollout::DeployerSettings;
use drover_proto::v1 as proto;

/// A controller whose rollouts give a vanished agent 300 ms to come back.
async fn controller() -> Controller {
    let settings = DeployerSettings {
        reconnect_grace: Duration::from_millis(300),
        ..Default::default()
    };
    Controller::start_tuned(
        drover_controller::schedule::SystemClock::shared(),
        tempfile::tempdir().unwrap(),
        "127.0.0.1:0",
        settings,
    )
    .await
}

/// A spec whose swaps give up on a lost agent quickly: the wait for an agent that
/// vanished mid-swap is the reconnect grace plus the readiness deadline plus the stop
/// timeout (an agent restarted mid-swap reconciles first, then reports).
fn quick_spec(batch_size: &str) -> String {
    let rollout = format!("{batch_size}\nstop_timeout = \"100ms\"\n");
    format!(
        "{}[readiness]\ninterval = \"50ms\"\ndeadline = \"100ms\"\n",
        spec(&rollout).replacen("batch_size = 2\n", "", 1)
    )
}

fn h1_vanishes_swapping_to_v2() -> Script {
    Script {
        vanish: vec![("h1".into(), "v2".into())],
        ..Default::default()
    }
}

/// (host, version) of every rollback command the fake agents received.
fn rollbacks(log: &Log) -> Vec<(String, String)> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(_, kind, _)| *kind == "rollback")
        .map(|(h, _, v)| (h.clone(), v.clone()))
        .collect()
}

#[tokio::test]
async fn a_host_left_drained_by_a_lost_agent_uses_the_batch_budget() {
    let c = controller().await;
    // Batches of one, in name order: h0 moves to v2, then h1's agent vanishes mid-swap.
    let log = c.fleet(3, h1_vanishes_swapping_to_v2()).await;
    let mut client = c.client().await;
    let d = deploy_and_wait(&mut client, quick_spec("batch_size = 1"), "v2").await;

    let phases = phases(&d);
    assert_eq!(phases["h1"], proto::HostPhase::LeftDrained, "{d:?}");
    // Rolling h0 back would put a second host out of rotation with batch_size = 1: it
    // stays on v2, in rotation, and says why; the deployment does not claim a rollback.
    assert_eq!(phases["h0"], proto::HostPhase::Done, "{d:?}");
    assert_eq!(phases["h2"], proto::HostPhase::Prepared, "{d:?}");
    assert_eq!(d.state, proto::DeploymentState::Failed as i32, "{d:?}");
    let h0 = d.hosts.iter().find(|h| h.host == "h0").unwrap();
    assert!(
        h0.error.contains("h1 left drained") && h0.error.contains("allows 1 out at once"),
        "{}",
        h0.error
    );
    let rollbacks: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, kind, _)| *kind == "rollback")
        .cloned()
        .collect();
    assert!(
        rollbacks.is_empty(),
        "no host was rolled back: {rollbacks:?}"
    );
}

#[tokio::test]
async fn with_room_in_the_budget_the_rollback_goes_on_beside_a_drained_host() {
    let c = controller().await;
    // Batches of two: h0 and h1 together; h1's agent vanishes, h0 moves to v2.
    let log = c.fleet(4, h1_vanishes_swapping_to_v2()).await;
    let mut client = c.client().await;
    let d = deploy_and_wait(&mut client, quick_spec("batch_size = 2"), "v2").await;

    let phases = phases(&d);
    assert_eq!(phases["h1"], proto::HostPhase::LeftDrained, "{d:?}");
    assert_eq!(phases["h0"], proto::HostPhase::RolledBack, "{d:?}");
    assert_eq!(d.state, proto::DeploymentState::Failed as i32, "{d:?}");
    assert_eq!(rollbacks(&log), [("h0".to_string(), "v1".to_string())]);
}
