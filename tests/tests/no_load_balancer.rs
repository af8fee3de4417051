//! A service without a load balancer (`[load_balancer] kind = "none"`), end to end with
//! real parts (the `drover` CLI, real agents, the real Docker engine, a real registry):
//! the plan says hosts are not drained, a deploy moves every host batch by batch with
//! no host ever `draining`, a never-ready version is rolled back, and the fleet's HAProxy
//! (running, but not the service's load balancer here) is never touched: every server's
//! admin state stays READY throughout. Hosts are asked directly, not through HAProxy.
//!
//! The fleet is the test's own (unique names, addresses and ports) and is removed when
//! dropped, also on failure. Waits are on conditions with deadlines, never on sleeps.

use std::time::Duration;

use drover_controller::lb::AdminState;
use drover_tests::DemoImage;
use drover_tests::fleet::{CliRun, Fleet, FleetOptions, field, hosts_in_phase, phases};
use drover_tests::traffic::SAMPLE_EVERY;
use serde_json::Value;

/// No event of `run` put a host in phase `draining`, and no host's steps include a drain
/// or an enable on a load balancer.
fn assert_never_drained(run: &CliRun) {
    let drained: Vec<Value> = run
        .json()
        .into_iter()
        .filter(|e| e["type"] == "event" && e["phase"] == "draining")
        .collect();
    assert!(drained.is_empty(), "draining events: {drained:?}");
    let snapshot = run.final_snapshot();
    for h in snapshot["hosts"].as_array().expect("hosts") {
        let steps = h["steps"].as_object().expect("steps");
        assert!(
            !steps.contains_key("drain_ms") && !steps.contains_key("up_ms"),
            "a host drained or enabled on a load balancer: {h}"
        );
    }
}

/// The version every host answers on its own address.
async fn versions(fleet: &Fleet) -> Vec<Result<String, String>> {
    let mut out = vec![];
    for i in 0..fleet.hosts().len() {
        out.push(fleet.host_version(i).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_none_rolls_and_rolls_back_without_draining_any_host() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 3,
        batch_size: "1",
        readiness_deadline: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    // The fleet's own spec (what `Fleet::deploy` uses), without its load balancer.
    std::fs::write(fleet.spec_path(), fleet.no_load_balancer_spec_toml("1"))
        .expect("write the spec");
    let spec = fleet.spec_path().to_string_lossy().into_owned();
    let sampler = fleet.haproxy().sample_states(SAMPLE_EVERY);

    let plan = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v2", "--plan"])
        .await;
    assert_eq!(plan.code, Some(0), "{}", plan.describe());
    assert!(
        plan.stdout.contains("hosts are not drained")
            && plan.stdout.contains("at most 1 out of service at once"),
        "{}",
        plan.describe()
    );

    let v2 = DemoImage::V2.tag();
    let run = fleet.deploy(v2).await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "succeeded", "{snapshot}");
    assert_eq!(snapshot["batches"], 3, "one host per batch: {snapshot}");
    assert!(
        phases(&snapshot).values().all(|p| p == "done"),
        "{snapshot}"
    );
    assert_never_drained(&run);
    assert!(
        run.stdout.contains("not drained: no load balancer"),
        "each host says why it was not drained: {}",
        run.describe()
    );
    let all_v2: Vec<Result<String, String>> = vec![Ok(v2.to_string()); 3];
    assert_eq!(versions(&fleet).await, all_v2);

    // A version that never gets ready: its host goes back to v2, and so does the fleet.
    let run = fleet.deploy(DemoImage::NeverReady.tag()).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    let failed = hosts_in_phase(&snapshot, "failed");
    assert_eq!(failed.len(), 1, "the first batch's host failed: {snapshot}");
    assert!(
        field(failed[0], "error").contains("ready"),
        "the error names the readiness failure: {}",
        failed[0]
    );
    assert!(
        phases(&snapshot)
            .values()
            .all(|p| p == "failed" || p == "prepared"),
        "nothing after the failing batch: {snapshot}"
    );
    assert_never_drained(&run);
    assert_eq!(versions(&fleet).await, all_v2);

    // HAProxy runs in front of the hosts, but it is not this spec's load balancer: no
    // server was ever drained or put in maintenance (health checks may see a host down
    // while it swaps; that is HAProxy's own doing).
    let samples = sampler.stop().await;
    assert!(!samples.samples.is_empty(), "no HAProxy sample was read");
    for h in fleet.hosts() {
        let history = samples.history(&h.name);
        assert!(
            !history.is_empty() && history.iter().all(|(_, admin)| *admin == AdminState::Ready),
            "{} changed admin state in HAProxy: {history:?}",
            h.name
        );
    }
}
