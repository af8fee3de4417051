//! An agent SIGKILLed in the middle of a swap and started again, end to end with real
//! parts only: the `drover` CLI and controller processes, a real `drover-agent`, the
//! real Docker engine, a real registry and a real HAProxy (see [`Fleet`]).
//!
//! The window between "old container stopped" and "new container ready" is hit without
//! timing luck: the new version is the demo app's `never-ready` variant (its `/ready`
//! answers 503 forever), so the agent provably sits in that window, until the readiness
//! deadline, once Docker shows v1 exited and the new container running.
//!
//! The fleet removes its processes and containers when dropped, also when an assertion
//! fails.

use std::time::Duration;

use drover_controller::lb::AdminState;
use drover_tests::docker::{ManagedContainer, managed_by};
use drover_tests::fleet::{Fleet, FleetOptions};
use drover_tests::{http, wait_for};
use serde_json::Value;

/// How long a deployment may take to show a given step, or Docker a given state.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// The readiness deadline of the spec: how long the never-ready version holds the
/// agent in the window, counted from the new container's start.
const READINESS_DEADLINE: Duration = Duration::from_secs(15);

/// The web containers of agent `host`: (running, exited, created), by version.
async fn by_state(host: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    let all = managed_by(host).await;
    let of = |state: &str| -> Vec<String> {
        all.iter()
            .filter(|c| c.state == state)
            .map(|c| c.version.clone())
            .collect()
    };
    (of("running"), of("exited"), of("created"))
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("")
}

/// The row of `host` in a deployment snapshot.
fn host_row<'a>(snapshot: &'a Value, host: &str) -> &'a Value {
    snapshot["hosts"]
        .as_array()
        .expect("a snapshot lists its hosts")
        .iter()
        .find(|h| h["host"] == host)
        .unwrap_or_else(|| panic!("no row for {host}: {snapshot}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_swap_serves_one_version_again_and_hosts_tells_the_truth() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 1,
        readiness_deadline: READINESS_DEADLINE,
        ..FleetOptions::default()
    })
    .await;
    let host = fleet.host(0).name.clone();
    let addr = fleet.host(0).addr;

    // Into the window: v1 stopped by the swap, the new container running, not ready.
    let mut deploy = fleet.spawn_deploy("never-ready");
    deploy
        .wait_json(STEP_TIMEOUT, &format!("{host} swapping"), |v| {
            v["host"] == host.as_str() && v["phase"] == "swapping"
        })
        .await;
    wait_for(
        READINESS_DEADLINE / 2,
        "v1 exited and never-ready running",
        || async {
            match by_state(&host).await {
                (running, exited, _) if running == ["never-ready"] && exited == ["v1"] => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await;
    let ready = http::get(addr, "/ready").await.map(|r| r.status);
    assert_eq!(ready, Ok(503), "the new container is not ready");
    fleet.kill_agent(0);

    // The controller waits its reconnect grace for the agent, then gives up on the host:
    // its state is unknown, so it is left drained and says so.
    let run = deploy.finish(Duration::from_secs(60)).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    let row = host_row(&snapshot, &host);
    assert_eq!(field(row, "phase"), "left_drained", "{snapshot}");
    assert!(field(row, "error").contains(&host), "{row}");
    let servers = fleet.servers().await;
    assert_ne!(servers[&host].1, AdminState::Ready, "{servers:?}");
    // What the dead agent left: nothing serves on the host.
    assert_eq!(
        by_state(&host).await,
        (vec!["never-ready".into()], vec!["v1".into()], vec![])
    );

    // Started again, the agent undoes the handover before it reports to the controller.
    let before = managed_by(&host).await;
    fleet.start_agent(0).await;
    let after = managed_by(&host).await;
    let v1 = |cs: &[ManagedContainer]| cs.iter().find(|c| c.version == "v1").cloned();
    assert_eq!(
        after,
        vec![ManagedContainer {
            state: "running".into(),
            ..v1(&before).expect("v1 was kept")
        }],
        "exactly the kept v1 container, running again; the never-ready one removed\n{}",
        fleet.agent_logs(0)
    );
    assert_eq!(fleet.host_version(0).await.as_deref(), Ok("v1"));
    assert_eq!(
        http::get(addr, "/ready").await.map(|r| r.status),
        Ok(200),
        "{addr} is ready again"
    );
    let logs = fleet.agent_logs(0);
    let steps: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("commands::reconcile") || l.contains("reconciled"))
        .collect();
    eprintln!("what the restarted agent did:\n{}", steps.join("\n"));
    for words in [
        "running but never reported ready: an interrupted handover",
        "not ready: undoing the interrupted handover",
        "restored: it runs and is ready",
    ] {
        assert!(logs.contains(words), "the agent logs {words:?}:\n{logs}");
    }

    // `drover hosts` tells the truth, in JSON and in the table.
    let hosts = fleet.hosts_json().await;
    let web: Vec<&Value> = hosts[0]["services"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["service"] == "web").collect())
        .unwrap_or_default();
    assert!(
        hosts[0]["connected"] == true
            && web.len() == 1
            && field(web[0], "version") == "v1"
            && field(web[0], "state") == "CONTAINER_STATE_RUNNING",
        "drover hosts: {hosts:?}"
    );
    let table = fleet.drover(&["hosts"]).await;
    assert_eq!(table.code, Some(0), "{}", table.describe());
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(&host))
        .unwrap_or_else(|| panic!("no line for {host}: {}", table.stdout));
    assert!(line.ends_with("web v1 running"), "{line}");

    // The host is usable: the next deploy finishes and puts it back in rotation.
    let again = fleet.deploy("v2").await;
    assert_eq!(
        again.code,
        Some(0),
        "{}\n{}",
        again.describe(),
        fleet.controller_logs()
    );
    fleet.assert_serves("v2").await;
    let (running, _, created) = by_state(&host).await;
    assert_eq!((running, created), (vec!["v2".to_string()], vec![]));
}
