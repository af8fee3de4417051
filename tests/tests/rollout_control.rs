//! How a rollout stops, end to end with real parts (the `drover` CLI, real agents, the
//! real Docker engine, a real registry with htpasswd auth, a real HAProxy in front) and
//! HTTP load through HAProxy with every server's state sampled:
//!
//! - a failing batch of three hosts is put back on its previous version and in rotation
//!   all at once, not one host after the other;
//! - `drover abort` while a deploy window holds a deployment between stages rolls the
//!   canary back while the service stays locked, and `drover schedule cancel` there is
//!   refused (controller in-process on a manual clock, as the window needs);
//! - a cancel racing a fresh deploy either ends it before any host is touched, or is
//!   refused and the deployment runs to its end.
//!
//! Every test builds its own fleet (unique names, addresses and ports) and removes its
//! processes and containers when dropped, also on failure. Tests wait on conditions with
//! deadlines, never on sleeps.

use std::time::Duration;

use drover_controller::lb::AdminState;
use drover_controller::schedule::ManualClock;
use drover_proto::v1 as proto;
use drover_proto::v1::operator_client::OperatorClient;
use drover_tests::DemoImage;
use drover_tests::fleet::{
    CLI_TIMEOUT, CliRun, Fleet, FleetOptions, TERMINAL, Transport, field, host_in_batch, phases,
};
use drover_tests::haproxy::Excursion;
use drover_tests::traffic::Traffic;
use serde_json::Value;
use tokio::time::Instant;
use tonic::transport::Channel;

/// How long a deployment may take to reach a given state.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// `run` was refused with nothing changed (exit 2), saying `what`.
fn assert_refused(run: &CliRun, what: &str) {
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains(what), "{}", run.describe());
}

/// The id a `drover deploy --detach --json` printed, or `None` when it was refused.
fn started_id(run: &CliRun) -> Option<String> {
    run.json()
        .iter()
        .find(|v| v["type"] == "started")
        .map(|v| field(v, "id").to_string())
}

// ----- 1. a failing batch of three --------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_of_three_is_restored_in_parallel() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 4,
        batch_size: "3",
        readiness_deadline: Duration::from_secs(3),
        images: &[DemoImage::V1, DemoImage::NeverReady],
        ..Default::default()
    })
    .await;
    let traffic = Traffic::start(&fleet).await;

    let run = fleet.deploy(DemoImage::NeverReady.tag()).await;
    traffic.more(100).await;
    let seen = traffic.stop().await;

    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert!(
        ["rolled_back", "failed"].contains(&field(&snapshot, "state")),
        "{snapshot}"
    );
    let batch: Vec<&Value> = snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter(|h| h["batch"] == 1)
        .collect();
    assert_eq!(
        batch.len(),
        3,
        "the first batch has three hosts: {snapshot}"
    );
    for h in &batch {
        assert_eq!(field(h, "phase"), "failed", "{snapshot}");
        assert!(
            field(h, "error").contains("ready"),
            "the error names the readiness failure: {h}"
        );
    }
    assert!(
        phases(&snapshot)
            .values()
            .all(|p| p == "failed" || p == "prepared"),
        "nothing after the failing batch: {snapshot}"
    );

    // The three restores overlapped: every one of the three was re-enabled before the
    // first of them came back UP. Back UP takes fresh health checks after the re-enable
    // (`rise` checks), so restoring one host after the other would have the first one UP
    // before the next is even re-enabled.
    let names: Vec<&str> = batch.iter().map(|h| field(h, "host")).collect();
    let trips: Vec<(&str, Excursion)> = names
        .iter()
        .map(|n| {
            let trip = seen.samples.excursion(n).unwrap_or_else(|| {
                panic!(
                    "{n} never left rotation and came back: {:?}\n{}",
                    seen.samples.history(n),
                    seen.summary()
                )
            });
            (*n, trip)
        })
        .collect();
    let t0 = trips
        .iter()
        .map(|(_, t)| t.left)
        .min()
        .expect("three trips");
    let at = |i: Instant| (i - t0).as_millis();
    for (n, t) in &trips {
        eprintln!(
            "{n}: drained +{} ms, re-enabled +{} ms, back UP +{} ms (enable to UP {} ms)",
            at(t.left),
            at(t.reenabled),
            at(t.up),
            (t.up - t.reenabled).as_millis()
        );
    }
    let last_reenabled = trips.iter().map(|(_, t)| t.reenabled).max().expect("trips");
    let first_up = trips.iter().map(|(_, t)| t.up).min().expect("trips");
    let last_up = trips.iter().map(|(_, t)| t.up).max().expect("trips");
    let last_left = trips.iter().map(|(_, t)| t.left).max().expect("trips");
    let mut enable_to_up: Vec<u128> = trips
        .iter()
        .map(|(_, t)| (t.up - t.reenabled).as_millis())
        .collect();
    enable_to_up.sort();
    eprintln!(
        "batch of 3 never-ready: deploy exit {:?} in {:?}; last re-enabled +{} ms, first UP +{} ms, last UP +{} ms; UP spread {} ms vs one host's enable to UP {} ms (median); {} requests, {} failed\n{}",
        run.code,
        run.took,
        at(last_reenabled),
        at(first_up),
        at(last_up),
        (last_up - first_up).as_millis(),
        enable_to_up[1],
        seen.requests(),
        seen.failed(),
        seen.summary()
    );
    assert!(
        last_left < first_up,
        "the three were drained together: {trips:?}"
    );
    assert!(
        last_reenabled <= first_up,
        "the restores ran one after the other: a host was UP again (+{} ms) before the last was re-enabled (+{} ms): {trips:?}",
        at(first_up),
        at(last_reenabled)
    );

    seen.assert_no_failed_request();
    assert_eq!(
        seen.keep_alive.versions.keys().collect::<Vec<_>>(),
        ["v1"],
        "{}",
        seen.summary()
    );
    assert!(seen.max_out() <= 3, "{}", seen.summary());
    fleet.assert_serves("v1").await;
}

// ----- 2. abort while a deploy window holds the rollout between stages ----------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_during_a_window_hold_rolls_the_canary_back_with_the_lock_held() {
    // Monday 2026-11-23 02:00 UTC: the window (02:00-03:00) is open for the canary.
    let clock = ManualClock::new("2026-11-23T02:00:00Z".parse().expect("a timestamp"));
    let fleet = Fleet::start(FleetOptions {
        hosts: 3,
        images: &[DemoImage::V1, DemoImage::V2],
        transport: Transport::InsecureDev,
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let staged = fleet.spec_toml("1")
        + "\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n\n[[rollout.stage]]\nhosts = \"100%\"\n\n[[schedule.windows]]\ndays = [\"mon-sun\"]\nstart = \"02:00\"\nend = \"03:00\"\ntime_zone = \"UTC\"\n";
    let staged = fleet.write_spec("staged.toml", &staged);
    let staged = staged.to_string_lossy().into_owned();
    let plain = fleet.spec_path().to_string_lossy().into_owned();
    let deploy_v1 = [
        "deploy",
        "-f",
        &plain,
        "--version",
        "v1",
        "--detach",
        "--json",
    ];
    let traffic = Traffic::start(&fleet).await;

    // The canary stage runs and waits for promotion.
    let mut deploy = fleet.spawn_drover(&["deploy", "-f", &staged, "--version", "v2", "--json"]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&first, "id").to_string();
    let canary = host_in_batch(&first, 0);
    deploy
        .wait_json(STEP_TIMEOUT, "awaiting_promotion", |v| {
            v["state"] == "awaiting_promotion"
        })
        .await;

    // The window closes while the canary waits; the promoted rollout is held.
    clock.advance(Duration::from_secs(2 * 3600));
    let promote = fleet.drover(&["promote", &id]).await;
    assert_eq!(promote.code, Some(0), "{}", promote.describe());
    fleet.wait_state(&id, "held", STEP_TIMEOUT).await;
    let info = fleet
        .operator_client()
        .await
        .get_deployment(proto::GetDeploymentRequest { id: id.clone() })
        .await
        .expect("get the deployment")
        .into_inner();
    assert!(info.hold.contains("deploy window"), "{info:?}");
    let listed = fleet.drover(&["schedule", "list", "--json"]).await;
    assert_eq!(listed.code, Some(0), "{}", listed.describe());
    let listed_while_held = listed.json().iter().any(|v| field(v, "id") == id);

    // Held is not "not started": a schedule cancel is refused and says to abort.
    let cancel = fleet.drover(&["schedule", "cancel", &id]).await;
    assert_refused(&cancel, &format!("drover abort {id}"));
    // The service stays locked while held.
    let second = fleet.drover(&deploy_v1).await;
    assert_refused(&second, &id);
    let still = fleet.status(&id).await;
    assert_eq!(field(&still, "state"), "held", "{still}");
    for (i, h) in fleet.hosts().iter().enumerate() {
        let want = if h.name == canary { "v2" } else { "v1" };
        assert_eq!(
            fleet.host_version(i).await.as_deref(),
            Ok(want),
            "{} while held",
            h.name
        );
    }

    // Abort: the canary goes back; deploys are refused until that ended.
    let abort = fleet.drover(&["abort", &id]).await;
    assert_eq!(abort.code, Some(0), "{}", abort.describe());
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut refusals = 0;
    let next = loop {
        let run = fleet.drover(&deploy_v1).await;
        if let Some(next) = started_id(&run) {
            break next;
        }
        assert_refused(&run, &id);
        refusals += 1;
        assert!(
            Instant::now() < deadline,
            "deploys still refused {STEP_TIMEOUT:?} after the abort: {}",
            fleet.status(&id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let aborted = fleet.status(&id).await;
    let followed = deploy.finish(CLI_TIMEOUT).await;
    let next_done = fleet.wait_terminal(&next, STEP_TIMEOUT).await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "held {id}: canary {canary}; cancel exit {:?}: {}; {refusals} deploys refused after the abort, then {next} accepted ({}); schedule list while held shows it: {listed_while_held}; {} requests, {} failed\n{}",
        cancel.code,
        cancel.stderr.trim(),
        field(&next_done, "state"),
        seen.requests(),
        seen.failed(),
        seen.summary()
    );

    assert_eq!(field(&aborted, "state"), "rolled_back", "{aborted}");
    let p = phases(&aborted);
    assert_eq!(p[&canary], "rolled_back", "{aborted}");
    assert!(
        p.iter()
            .filter(|(h, _)| **h != canary)
            .all(|(_, ph)| ph == "prepared"),
        "only the canary was touched: {aborted}"
    );
    assert_eq!(followed.code, Some(1), "{}", followed.describe());
    assert_eq!(
        field(&followed.final_snapshot(), "state"),
        "rolled_back",
        "{}",
        followed.describe()
    );
    // The lock was released by the end of the rollback, not before.
    assert!(
        refusals > 0,
        "the first deploy after the abort was accepted: the rollback cannot have ended yet"
    );
    assert!(
        aborted["finished_ms"].as_u64() <= next_done["created_ms"].as_u64(),
        "the next deploy was recorded before the rollback ended: {aborted}\n{next_done}"
    );
    assert_eq!(field(&next_done, "state"), "succeeded", "{next_done}");
    seen.assert_no_failed_request();
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    fleet.assert_serves("v1").await;
    assert!(
        listed_while_held,
        "`drover schedule list` did not show {id} while a deploy window held it: {}",
        listed.describe()
    );
}

// ----- 3. a cancel racing a fresh deploy ----------------------------------------------

/// How a round of the race starts the deploy and sends the cancel.
#[derive(Debug, Clone, Copy)]
enum Race {
    /// `drover deploy` spawned, `drover schedule cancel ID` once it printed the id.
    CliThenCli,
    /// `drover deploy` spawned, the operator API's cancel once it printed the id.
    CliThenApi,
    /// The operator API's deploy, and its cancel right after the answer.
    ApiThenApi,
}

/// How a round ended.
enum Outcome {
    /// The cancel won; the `drover deploy` that followed it, if one did.
    Cancelled(Option<CliRun>),
    /// The cancel was refused (the message); the deployment ran on.
    Refused(String),
}

/// Starts a deploy of `version` and cancels it as `race` says, through `client` (an
/// operator API client connected beforehand, so the cancel follows the deploy's answer
/// as closely as it can); returns its id and what the cancel did.
async fn race(
    fleet: &Fleet,
    client: &OperatorClient<Channel>,
    race: Race,
    version: &str,
) -> (String, Outcome) {
    let cancel_api = |id: String| async move {
        let r = client
            .clone()
            .control(proto::ControlRequest {
                id: id.clone(),
                action: proto::ControlAction::Cancel as i32,
                requested_by: "cancel-race".into(),
            })
            .await;
        r.map(drop).map_err(|s| s.message().to_string())
    };
    let (id, cancel, cli) = match race {
        Race::ApiThenApi => {
            let spec = std::fs::read_to_string(fleet.spec_path()).expect("read the spec");
            let d = client
                .clone()
                .deploy(proto::DeployRequest {
                    spec_toml: spec,
                    version: version.to_string(),
                    requested_by: "cancel-race".into(),
                    registry_auth: Some(fleet.registry().auth()),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|s| panic!("deploy {version} refused: the lock is held? {s:?}"))
                .into_inner()
                .deployment
                .expect("the deployment");
            let cancel = cancel_api(d.id.clone()).await;
            (d.id, cancel, None)
        }
        Race::CliThenCli | Race::CliThenApi => {
            let mut deploy = fleet.spawn_deploy(version);
            let first = deploy
                .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
                    v["type"] == "deployment"
                })
                .await;
            let id = field(&first, "id").to_string();
            let cancel = match race {
                Race::CliThenCli => {
                    let run = fleet.drover(&["schedule", "cancel", &id]).await;
                    match run.code {
                        Some(0) => Ok(()),
                        Some(2) => Err(run.stderr.clone()),
                        _ => panic!("{}", run.describe()),
                    }
                }
                _ => cancel_api(id.clone()).await,
            };
            (id, cancel, Some(deploy.finish(CLI_TIMEOUT).await))
        }
    };
    match cancel {
        Ok(()) => (id, Outcome::Cancelled(cli)),
        Err(message) => {
            if let Some(run) = cli {
                assert_eq!(run.code, Some(0), "{}", run.describe());
            }
            (id, Outcome::Refused(message))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_a_fresh_deploy_either_ends_it_untouched_or_is_refused() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 3,
        batch_size: "2",
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let client = fleet.operator_client().await;
    let traffic = Traffic::start(&fleet).await;
    let rounds = [
        Race::ApiThenApi,
        Race::CliThenApi,
        Race::CliThenCli,
        Race::ApiThenApi,
        Race::ApiThenApi,
        Race::ApiThenApi,
    ];
    let mut current = "v1";
    let mut tally = (0, 0);
    for (round, how) in rounds.into_iter().enumerate() {
        let target = if current == "v1" { "v2" } else { "v1" };
        // The spec keeps 2 stopped containers: the last round's prune may still be running.
        let before = fleet.containers_once_pruned(2).await;
        let (id, outcome) = race(&fleet, &client, how, target).await;
        let snapshot = fleet.wait_terminal(&id, STEP_TIMEOUT).await;
        match outcome {
            Outcome::Cancelled(cli) => {
                tally.0 += 1;
                eprintln!("round {round} ({how:?}, {current} -> {target}): cancelled");
                assert_eq!(field(&snapshot, "state"), "cancelled", "{snapshot}");
                for h in snapshot["hosts"].as_array().expect("hosts") {
                    assert!(
                        field(h, "phase") == "pending" && h["started_ms"] == 0,
                        "a host of a cancelled deployment was touched: {snapshot}"
                    );
                }
                if let Some(run) = cli {
                    assert_eq!(
                        field(&run.final_snapshot(), "state"),
                        "cancelled",
                        "{}",
                        run.describe()
                    );
                }
                for (i, h) in fleet.hosts().iter().enumerate() {
                    assert_eq!(
                        fleet.containers(i).await,
                        before[i],
                        "{}'s containers changed under a cancelled deployment",
                        h.name
                    );
                }
                let servers = fleet.servers().await;
                assert!(
                    servers.values().all(|(_, a)| *a == AdminState::Ready),
                    "{servers:?}"
                );
                for (i, h) in fleet.hosts().iter().enumerate() {
                    assert_eq!(
                        fleet.host_version(i).await.as_deref(),
                        Ok(current),
                        "{}",
                        h.name
                    );
                }
            }
            Outcome::Refused(message) => {
                tally.1 += 1;
                eprintln!(
                    "round {round} ({how:?}, {current} -> {target}): cancel refused: {message}"
                );
                assert!(
                    message.contains("has started")
                        && message.contains(&format!("drover abort {id}")),
                    "{message}"
                );
                assert_eq!(field(&snapshot, "state"), "succeeded", "{snapshot}");
                current = target;
                fleet.assert_serves(current).await;
            }
        }
        assert!(TERMINAL.contains(&field(&snapshot, "state")));
    }
    // Either way the lock was released: one more deploy runs to its end.
    let target = if current == "v1" { "v2" } else { "v1" };
    let last = fleet.deploy(target).await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "cancel race: {} cancelled, {} refused; last deploy exit {:?}; {} requests, {} failed\n{}",
        tally.0,
        tally.1,
        last.code,
        seen.requests(),
        seen.failed(),
        seen.summary()
    );
    assert_eq!(last.code, Some(0), "{}", last.describe());
    seen.assert_no_failed_request();
    assert!(seen.max_out() <= 2, "{}", seen.summary());
    fleet.assert_serves(target).await;
}
