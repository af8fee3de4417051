//! End-to-end rollouts with real parts only: the `drover` CLI and controller processes,
//! four real agents each publishing on its own 127.0.0.N, the real Docker engine, a real
//! registry with htpasswd auth, and a real HAProxy in front, while two loads (one with
//! keep-alive, one with a new connection per request) send HTTP through HAProxy and a
//! sampler records every server's state.
//!
//! Every test builds its own [`Fleet`] (unique names, addresses, ports), so they run in
//! parallel; each fleet removes its processes and containers when dropped, also when an
//! assertion fails.

use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use drover_proto::v1::DeployRequest;
use drover_tests::fleet::{
    CLI_TIMEOUT, Fleet, FleetOptions, field, host_in_batch, hosts_in_phase, phases,
};
use drover_tests::traffic::Traffic;
use tokio::time::Instant;

/// How long a deployment may take to show a given step.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// What Prometheus scrapes after `succeeded` successful deploys of `service` on an mTLS
/// fleet: their outcome and durations by service, and when the controller's and every
/// connected agent's certificate expire.
async fn assert_scraped(fleet: &Fleet, service: &str, succeeded: usize) {
    let metrics = drover_tests::http::get(fleet.metrics_addr(), "/metrics")
        .await
        .expect("GET /metrics")
        .body;
    let mut wanted = vec![
        format!(
            "drover_deployments_total{{service=\"{service}\",outcome=\"succeeded\"}} {succeeded}"
        ),
        format!("drover_deployment_duration_seconds_count{{service=\"{service}\"}} {succeeded}"),
        format!(
            "drover_deployment_duration_seconds_bucket{{le=\"+Inf\",service=\"{service}\"}} {succeeded}"
        ),
        "drover_certificate_expiry_timestamp_seconds{subject=\"controller\"} ".to_string(),
    ];
    for h in fleet.hosts() {
        wanted.push(format!(
            "drover_certificate_expiry_timestamp_seconds{{subject=\"agent\",host=\"{}\"}} ",
            h.name
        ));
    }
    for w in wanted {
        assert!(
            metrics.lines().any(|l| l.starts_with(&w)),
            "{w:?} not in\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_of_one_rolls_v1_to_v2_without_a_failed_request() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let run = fleet.deploy("v2").await;
    let done = Instant::now();
    traffic.more(200).await;
    let seen = traffic.stop().await;
    eprintln!(
        "v1 -> v2, batch 1: deploy exit {:?} in {:?}; {} requests, {} failed\n{}",
        run.code,
        run.took,
        seen.requests(),
        seen.failed(),
        seen.summary()
    );

    assert_eq!(
        run.code,
        Some(0),
        "{}\n{}",
        run.describe(),
        fleet.controller_logs()
    );
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "succeeded", "{snapshot}");
    assert!(
        phases(&snapshot).values().all(|p| p == "done"),
        "{snapshot}"
    );
    assert_eq!(snapshot["batches"], 4, "{snapshot}");
    // The fleet's first deploy (v1) and this one.
    assert_scraped(&fleet, field(&snapshot, "service"), 2).await;
    seen.assert_no_failed_request();
    for load in [&seen.keep_alive, &seen.close] {
        let after = load.versions_since(done);
        assert_eq!(
            after.keys().collect::<Vec<_>>(),
            ["v2"],
            "after the deploy: {after:?}; {}",
            load.summary()
        );
        assert!(load.versions.contains_key("v1"), "{}", load.summary());
    }
    // One batch (one host) out of rotation at a time, and every host went through it.
    assert_eq!(seen.max_out(), 1, "{}", seen.summary());
    for h in fleet.hosts() {
        assert!(
            seen.samples.saw_in_order(
                &h.name,
                &[
                    |s, a| *s == OpStatus::Up && a == AdminState::Ready,
                    |s, _| *s != OpStatus::Up,
                    |s, a| *s == OpStatus::Up && a == AdminState::Ready,
                ]
            ),
            "{} never left rotation and came back: {:?}",
            h.name,
            seen.samples.history(&h.name)
        );
    }

    // The history records the deploy with its digest and per-host timings.
    let history = fleet.history_json().await;
    assert_eq!(history.len(), 2, "{history:?}");
    let d = &history[0];
    let pinned = format!(
        "{}/demo@{}",
        fleet.registry().host(),
        fleet.pushed(drover_tests::DemoImage::V2).digest
    );
    assert_eq!(
        (field(d, "id"), field(d, "version"), field(d, "state")),
        (field(&snapshot, "id"), "v2", "succeeded"),
        "{d}"
    );
    assert_eq!(field(d, "pinned"), pinned, "{d}");
    assert!(d["finished_ms"].as_u64() >= d["created_ms"].as_u64(), "{d}");
    for h in d["hosts"].as_array().expect("hosts") {
        let (start, end) = (h["started_ms"].as_u64(), h["finished_ms"].as_u64());
        assert!(
            field(h, "phase") == "done"
                && start > Some(0)
                && end >= start
                && h["duration_ms"].as_u64().is_some(),
            "host timings in the history: {h}"
        );
    }
    fleet.assert_serves("v2").await;
    for h in fleet.hosts_json().await {
        assert!(
            h["services"][0]["digest"]
                .as_str()
                .is_some_and(|dg| pinned.ends_with(dg)),
            "drover hosts digest: {h}"
        );
    }

    // The registry password went to the CLI's environment only.
    let password = fleet.registry().password();
    let mut seen_by = vec![("deploy output", run.describe())];
    seen_by.push(("controller log", fleet.controller_logs()));
    seen_by.push(("history", format!("{history:?}")));
    for i in 0..fleet.hosts().len() {
        seen_by.push(("agent log", fleet.agent_logs(i)));
    }
    for (what, text) in seen_by {
        assert!(
            !text.contains(password),
            "the registry password is in the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_never_gets_ready_is_rolled_back_and_v1_keeps_serving() {
    let fleet = Fleet::start(FleetOptions {
        readiness_deadline: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let traffic = Traffic::start(&fleet).await;

    let run = fleet.deploy("never-ready").await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "v1 -> never-ready: deploy exit {:?} in {:?}; {} requests, {} failed\n{}",
        run.code,
        run.took,
        seen.requests(),
        seen.failed(),
        seen.summary()
    );

    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert!(
        ["rolled_back", "failed"].contains(&field(&snapshot, "state")),
        "{snapshot}"
    );
    let failed = hosts_in_phase(&snapshot, "failed");
    assert_eq!(
        failed.len(),
        1,
        "the first batch fails, nothing after: {snapshot}"
    );
    assert!(
        field(failed[0], "error").contains("ready"),
        "the error says why: {snapshot}"
    );
    assert!(
        phases(&snapshot)
            .values()
            .all(|p| ["failed", "prepared", "rolled_back"].contains(&p.as_str())),
        "{snapshot}"
    );
    seen.assert_no_failed_request();
    assert_eq!(
        seen.keep_alive.versions.keys().collect::<Vec<_>>(),
        ["v1"],
        "{}",
        seen.summary()
    );
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    fleet.assert_serves("v1").await;

    // The same fleet, whole-fleet batches: a container that cannot be created fails the
    // deploy before anything is drained.
    let all = fleet.spec_toml("100%");
    let with = |extra: &str, tables: &str| {
        let text = all.replacen(
            "host_ip = \"advertise\"",
            &format!("host_ip = \"advertise\"\n{extra}"),
            1,
        );
        format!("{text}\n{tables}")
    };
    let missing = with("mounts = [\"/nonexistent/drover-missing:/data:ro\"]", "");
    let traffic = Traffic::start(&fleet).await;
    let run = deploy_spec(&fleet, "missing-mount.toml", &missing, "v2").await;
    traffic.more(50).await;
    let seen = traffic.stop().await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert!(
        snapshot["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .all(|h| {
                field(h, "phase") != "failed"
                    || field(h, "error").contains("/nonexistent/drover-missing")
            }),
        "the error names the mount: {snapshot}"
    );
    assert_eq!(seen.max_out(), 0, "nothing drained: {}", seen.summary());
    seen.assert_no_failed_request();
    fleet.assert_serves("v1").await;

    // An old container that ignores SIGTERM is killed at the stop timeout and the report
    // says so, with the fix; with `init = true` the same app stops at once.
    let ignoring = "[service.env]\nDEMO_IGNORE_SIGTERM = \"1\"\n";
    let steps = [
        ("v2", with("init = true", ignoring), false),
        ("v1", with("", ignoring), false),
        ("v2", all.clone(), true),
    ];
    for (i, (version, text, killed)) in steps.into_iter().enumerate() {
        // A grace well above a loaded engine's plain stop (about 1 s for four at once).
        let text = text.replace("stop_timeout = \"2s\"", "stop_timeout = \"5s\"");
        let run = deploy_spec(&fleet, &format!("sigterm-{i}.toml"), &text, version).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
        let snapshot = run.final_snapshot();
        for h in snapshot["hosts"].as_array().expect("hosts") {
            let steps = &h["steps"];
            let stop = steps["stop_ms"].as_u64().unwrap_or(0);
            let note = steps["notes"]["stop"].as_str().unwrap_or("");
            assert_eq!(!note.is_empty(), killed, "deploy {i}, {h}");
            if killed {
                assert!(stop >= 5_000, "killed at the 5 s stop timeout: {h}");
                assert!(
                    note.contains("ignored SIGTERM") && note.contains("init = true"),
                    "{h}"
                );
            } else {
                assert!(stop < 5_000, "deploy {i} stopped before the timeout: {h}");
            }
            for step in ["drain_ms", "create_ms", "start_ms", "ready_ms", "up_ms"] {
                assert!(steps[step].as_u64().is_some(), "deploy {i}: no {step}: {h}");
            }
        }
        if killed {
            // The host's event says it too, as it happens.
            assert!(
                run.stdout.contains("killed after 5.0s"),
                "{}",
                run.describe()
            );
        }
    }
    fleet.assert_serves("v2").await;
}

/// `drover deploy` of `version` with the spec `text` (written as `name`), to its end.
async fn deploy_spec(
    fleet: &Fleet,
    name: &str,
    text: &str,
    version: &str,
) -> drover_tests::fleet::CliRun {
    let path = fleet.write_spec(name, text);
    let path = path.to_string_lossy().into_owned();
    fleet
        .drover(&["deploy", "-f", &path, "--version", version, "--json"])
        .await
}

/// When a test kills the agent of the host planned for batch 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KillAgent {
    /// While the controller waits for that host's swap: a command in flight is lost.
    WhileItSwaps,
    /// While batch 1 swaps: the controller knows the host is lost before its batch.
    BeforeItsBatch,
}

/// A v1 -> v2 deploy during which the agent of the host of batch 2 is SIGKILLed at
/// `when`. Checks that the deploy ends non-zero naming that host, that no request
/// failed, that no other host is out of rotation, and that the report tells the truth
/// about every host. Returns the fleet and the victim's index.
async fn deploy_losing_an_agent(when: KillAgent) -> (Fleet, usize) {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let mut deploy = fleet.spawn_deploy("v2");
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let victim = host_in_batch(&first, 1);
    let watched = match when {
        KillAgent::WhileItSwaps => victim.clone(),
        KillAgent::BeforeItsBatch => host_in_batch(&first, 0),
    };
    deploy
        .wait_json(STEP_TIMEOUT, &format!("{watched} swapping"), |v| {
            v["host"] == watched.as_str() && v["phase"] == "swapping"
        })
        .await;
    let i = fleet.index_of(&victim);
    fleet.kill_agent(i);
    // Reconnect grace (5 s) plus the rollback of batch 1: well under a minute.
    let run = deploy.finish(Duration::from_secs(60)).await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "agent of {victim} killed {when:?}: deploy exit {:?} in {:?}; {} requests, {} failed\n{}",
        run.code,
        run.took,
        seen.requests(),
        seen.failed(),
        seen.summary()
    );

    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    eprintln!("final snapshot: {snapshot}");
    let phases = phases(&snapshot);
    let victim_phase = phases[&victim].as_str();
    assert!(
        ["left_drained", "failed"].contains(&victim_phase),
        "{victim}: {snapshot}"
    );
    let row = snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["host"] == victim.as_str())
        .expect("the victim's row");
    assert!(
        field(row, "error").contains(&victim),
        "the error names the host: {row}"
    );
    seen.assert_no_failed_request();
    // The plan's budget (one host) out of rotation at every sample, the lost host
    // included: while it is left drained, no other host is rolled back.
    assert!(seen.max_out() <= 1, "{}", seen.summary());

    // The report tells the truth: a left-drained host is out of rotation, every other
    // host is in rotation and serves the version its phase says.
    let servers = fleet.servers().await;
    for h in snapshot["hosts"].as_array().expect("hosts") {
        let name = field(h, "host");
        let (status, admin) = &servers[name];
        if name == victim {
            match when {
                // A command in flight was lost: its state is unknown, so it is left
                // drained and says so (or its agent restored it before dying).
                KillAgent::WhileItSwaps if victim_phase == "left_drained" => {
                    assert_ne!(*admin, AdminState::Ready, "{name}: {servers:?}");
                }
                KillAgent::WhileItSwaps => {}
                // Known lost before its batch: never drained, still serving v1.
                KillAgent::BeforeItsBatch => {
                    assert_eq!(victim_phase, "failed", "{snapshot}");
                    assert_eq!(
                        (status, *admin),
                        (&OpStatus::Up, AdminState::Ready),
                        "{name}: {servers:?}"
                    );
                }
            }
            continue;
        }
        assert_eq!(
            (status, *admin),
            (&OpStatus::Up, AdminState::Ready),
            "{name} is not in rotation: {servers:?}; {snapshot}"
        );
        let expect = match field(h, "phase") {
            "done" => field(h, "to_version"),
            _ => field(h, "from_version"),
        };
        assert_eq!(
            fleet.host_version(fleet.index_of(name)).await.as_deref(),
            Ok(expect),
            "{name}: {snapshot}"
        );
    }
    (fleet, i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_its_host_swaps_leaves_it_reported_and_the_rest_in_rotation() {
    let (mut fleet, i) = deploy_losing_an_agent(KillAgent::WhileItSwaps).await;
    // Once its agent is back, the host is known again and a redeploy finishes the job.
    fleet.start_agent(i).await;
    let again = fleet.deploy("v2").await;
    assert_eq!(
        again.code,
        Some(0),
        "{}\n{}",
        again.describe(),
        fleet.controller_logs()
    );
    fleet.assert_serves("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_lost_before_its_batch_leaves_its_host_reported_and_the_rest_in_rotation() {
    deploy_losing_an_agent(KillAgent::BeforeItsBatch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_deploy_resumes_it_and_the_following_cli_reconnects() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let mut deploy = fleet.spawn_deploy("v2");
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&first, "id").to_string();
    let second = host_in_batch(&first, 1);
    deploy
        .wait_json(STEP_TIMEOUT, &format!("{second} swapping"), |v| {
            v["host"] == second.as_str() && v["phase"] == "swapping"
        })
        .await;
    let killed_at = Instant::now();
    fleet.restart_controller().await;
    let back_after = killed_at.elapsed();
    // The CLI that followed the deploy says it lost the controller, reconnects, and
    // follows the resumed deployment to its success: exit 0, never a false failure.
    let followed = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(followed.code, Some(0), "{}", followed.describe());
    assert_eq!(
        field(&followed.final_snapshot(), "state"),
        "succeeded",
        "{}",
        followed.describe()
    );
    let notices: Vec<String> = followed
        .json()
        .iter()
        .filter(|v| v["type"] == "notice")
        .map(|v| v["message"].to_string())
        .collect();
    assert!(
        notices.iter().any(|m| m.contains("lost the controller"))
            && notices.iter().any(|m| m.contains("reconnected")),
        "{notices:?}"
    );

    let status = fleet.drover(&["status", &id, "--json"]).await;
    traffic.more(200).await;
    let seen = traffic.stop().await;
    eprintln!(
        "controller killed while {second} swapped, back after {back_after:?}: status exit {:?}, {:?} after the restart; {} requests, {} failed\n{}",
        status.code,
        status.took,
        seen.requests(),
        seen.failed(),
        seen.summary()
    );

    assert_eq!(
        status.code,
        Some(0),
        "{}\n{}",
        status.describe(),
        fleet.controller_logs()
    );
    let snapshot = status.final_snapshot();
    assert_eq!(
        (field(&snapshot, "id"), field(&snapshot, "state")),
        (id.as_str(), "succeeded"),
        "{snapshot}"
    );
    assert!(
        snapshot["epoch"].as_u64() >= Some(2),
        "resumed under a new epoch: {snapshot}"
    );
    seen.assert_no_failed_request();
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    let history = fleet.history_json().await;
    assert_eq!(
        (field(&history[0], "id"), field(&history[0], "state")),
        (id.as_str(), "succeeded"),
        "{history:?}"
    );
    fleet.assert_serves("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_of_a_running_service_is_refused_naming_the_running_one() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let mut first = fleet.spawn_deploy("v2");
    let snapshot = first
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&snapshot, "id").to_string();
    let second = fleet.deploy("v2").await;
    let run = first.finish(CLI_TIMEOUT).await;
    let seen = traffic.stop().await;
    eprintln!(
        "concurrent deploy: second exit {:?} in {:?}, first exit {:?} in {:?}; {} requests, {} failed",
        second.code,
        second.took,
        run.code,
        run.took,
        seen.requests(),
        seen.failed()
    );

    assert_eq!(second.code, Some(2), "{}", second.describe());
    assert!(
        second.stderr.contains(&id),
        "the refusal names the running deployment {id}: {}",
        second.describe()
    );
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let history = fleet.history_json().await;
    assert_eq!(
        history.len(),
        2,
        "the refused deploy is not recorded: {history:?}"
    );
    seen.assert_no_failed_request();
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    fleet.assert_serves("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_an_unknown_key_is_refused_before_anything_happens() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let text = fleet.spec_toml("1").replace("batch_size =", "batch_sise =");
    assert!(text.contains("batch_sise"));
    let path = fleet.write_spec("typo.toml", &text);
    let path = path.to_string_lossy().into_owned();
    let run = fleet
        .drover(&["deploy", "-f", &path, "--version", "v2"])
        .await;
    // A client that skips the CLI's own check meets the controller's.
    let direct = fleet
        .operator_client()
        .await
        .deploy(DeployRequest {
            spec_toml: text.clone(),
            version: "v2".into(),
            requested_by: "rollout-test".into(),
            ..Default::default()
        })
        .await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "unknown key: exit {:?} in {:?}; {} requests, {} failed, max out {}",
        run.code,
        run.took,
        seen.requests(),
        seen.failed(),
        seen.max_out()
    );

    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(run.stderr.contains("batch_sise"), "{}", run.describe());
    let status = direct.expect_err("the controller must refuse the spec");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("batch_sise"), "{status:?}");
    let history = fleet.history_json().await;
    assert_eq!(
        history.len(),
        1,
        "only the first deploy is recorded: {history:?}"
    );
    assert_eq!(field(&history[0], "version"), "v1");
    seen.assert_no_failed_request();
    assert_eq!(seen.max_out(), 0, "nothing drained: {}", seen.summary());
    fleet.assert_serves("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_does_not_exist_is_refused_before_anything_is_recorded() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let traffic = Traffic::start(&fleet).await;

    let run = fleet.deploy("nope").await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    eprintln!(
        "missing image: exit {:?} in {:?}; {} requests, {} failed, max out {}",
        run.code,
        run.took,
        seen.requests(),
        seen.failed(),
        seen.max_out()
    );

    // The registry is asked when the release is made: refused, nothing recorded.
    assert_eq!(run.code, Some(2), "{}", run.describe());
    assert!(
        run.stderr.contains("demo:nope (HTTP 404)") && run.stderr.contains("nothing was changed"),
        "the refusal names the image: {}",
        run.describe()
    );
    let history = fleet.history_json().await;
    assert_eq!(history.len(), 1, "only the first deploy: {history:?}");
    let releases = fleet.drover(&["releases", "web", "--json"]).await;
    let releases = releases.json().pop().expect("one object");
    assert_eq!(
        releases["releases"].as_array().map(Vec::len),
        Some(1),
        "no release of the missing tag: {releases}"
    );
    seen.assert_no_failed_request();
    assert_eq!(seen.max_out(), 0, "nothing drained: {}", seen.summary());
    assert_eq!(
        seen.samples.max_out_of_rotation(),
        0,
        "nothing drained: {}",
        seen.summary()
    );
    fleet.assert_serves("v1").await;
}
