//! Staged canary rollouts and operator gates, end to end with real parts: the
//! `drover` CLI and controller, four real agents each publishing on its own 127.0.0.N,
//! the real Docker engine, a real registry with htpasswd auth, and a real HAProxy in
//! front, with HTTP load through HAProxy where the behaviour is about traffic.
//!
//! - a canary that answers 5xx is caught from HAProxy's counters during its bake and
//!   rolled back; every failed request is one of its own 500s, and no other host ran it;
//! - a canary that crashes after passing readiness is caught through its agent;
//! - a manual gate waits for `drover promote`, and `drover abort` there rolls back.
//!
//! Scheduled deploys and deploy windows are in `schedule.rs`.
//!
//! Every test builds its own fleet (unique names, addresses and ports) so they run in
//! parallel, and removes its processes and containers when dropped, also on failure.
//! Tests wait on conditions with deadlines; where a test shows that something does NOT
//! happen, it waits a bounded time for it and expects the wait to run out.

mod staged;

use drover_tests::DemoImage;
use drover_tests::docker::docker;
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions, field, phases};
use serde_json::Value;
use staged::*;

// ----- what runs where ---------------------------------------------------------------

/// Containers (any state) of `version` that host `host`'s agent created, with their
/// Docker state.
async fn containers(host: &str, version: &str) -> Vec<String> {
    let agent = format!("label={}={host}", drover_shared::labels::AGENT);
    let version = format!("label={}={version}", drover_shared::labels::VERSION);
    docker(&[
        "ps",
        "-a",
        "--filter",
        &agent,
        "--filter",
        &version,
        "--format",
        "{{.ID}} {{.State}}",
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .lines()
    .map(str::to_string)
    .collect()
}

/// Only `canary` ever had a container of `version`; every other host has none.
async fn assert_only_canary_ran(fleet: &Fleet, canary: &str, version: &str) {
    for h in fleet.hosts() {
        let ran = containers(&h.name, version).await;
        if h.name == canary {
            assert!(!ran.is_empty(), "the canary {canary} never ran {version}");
            assert!(
                ran.iter()
                    .all(|c| !c.ends_with("running") && !c.ends_with("restarting")),
                "{version} still runs on the canary after the rollback: {ran:?}"
            );
        } else {
            assert!(ran.is_empty(), "{} ran {version}: {ran:?}", h.name);
        }
    }
}

// ----- 1. a canary answering 5xx -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_answering_5xx_is_caught_from_haproxy_counters_and_rolled_back() {
    let fleet = Fleet::start(FleetOptions {
        images: &[DemoImage::V1],
        ..Default::default()
    })
    .await;
    // The faulty build, published under an ordinary version tag.
    fleet
        .registry()
        .push(&DemoImage::V3FiveXx.local_ref(), "demo:v3")
        .await;
    let spec = fleet.write_spec("canary.toml", &(fleet.spec_toml("1") + &staged("")));
    let spec = spec.to_string_lossy().into_owned();
    let traffic = Traffic::start(&fleet).await;

    let run = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v3", "--json"])
        .await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    let counters = fleet.haproxy().servers().await;

    let snapshot = run.final_snapshot();
    let canary = canary_of(&snapshot);
    let events = events_of(&run);
    let failures = seen.failures("v3");
    let (baking, rolling_back) = (
        state_at(&events, "baking"),
        state_at(&events, "rolling_back"),
    );
    let detection = failures
        .first_canary_500_ms
        .zip(rolling_back)
        .map(|(bad, rb)| rb as i64 - bad as i64);
    eprintln!(
        "v1 -> v3 (5xx) canary {canary}: exit {:?} in {:?}; {} requests, failures {:?}; first 500 -> rolling_back {detection:?} ms (interval {INTERVAL:?}); baking -> rolling_back {:?} ms\nerror: {}\n{}",
        run.code,
        run.took,
        seen.requests(),
        (
            failures.canary_500,
            failures.other_http.len(),
            failures.connection.len()
        ),
        baking.zip(rolling_back).map(|(b, r)| r - b),
        field(&snapshot, "error"),
        seen.summary()
    );

    // Ended rolled back, naming the signal, the host and the values.
    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    let error = field(&snapshot, "error");
    for part in [
        "canary breach in stage 1",
        "error rate",
        "5xx",
        canary.as_str(),
    ] {
        assert!(
            error.contains(part),
            "the error names {part:?}: {error}\n{}",
            fleet.controller_logs()
        );
    }
    assert!(
        error.contains('%') && error.chars().any(|c| c.is_ascii_digit()),
        "the error gives the values: {error}"
    );
    let breach = events
        .iter()
        .find(|e| field(e, "message").contains("canary breach"))
        .unwrap_or_else(|| panic!("no breach event: {}", run.describe()));
    assert_eq!(field(breach, "host"), canary, "{breach}");
    let seq = states(&events);
    let pos = |s: &str| seq.iter().position(|x| x == s);
    assert!(
        pos("baking") < pos("rolling_back")
            && pos("baking").is_some()
            && pos("rolling_back") < pos("rolled_back"),
        "states: {seq:?}"
    );
    // Caught inside the bake, from HAProxy's counters, well before the bake ended.
    let (baking, rolling_back) = (baking.expect("baking"), rolling_back.expect("rolling_back"));
    assert!(
        rolling_back - baking < 10_000,
        "caught {} ms into a {BAKE} bake",
        rolling_back - baking
    );

    // Only the canary moved, and it is back.
    let p = phases(&snapshot);
    assert_eq!(p[&canary], "rolled_back", "{snapshot}");
    assert!(
        p.iter()
            .filter(|(h, _)| **h != canary)
            .all(|(_, ph)| ph == "prepared"),
        "the rest of the fleet was untouched: {snapshot}"
    );

    // Every failed request was a 500 of the canary version; none a connection error,
    // none from another host (HAProxy counted 5xx on the canary's server only, exactly
    // as many as the loads saw).
    assert!(failures.canary_500 > 0, "{}", seen.summary());
    assert!(
        failures.other_http.is_empty() && failures.connection.is_empty(),
        "failures beyond the canary's 500s: {failures:?}\n{}",
        seen.summary()
    );
    for s in &counters {
        if s.server == canary {
            assert_eq!(
                s.http_5xx, failures.canary_500,
                "5xx counted by HAProxy on {canary} vs 500s seen by the loads: {s:?}"
            );
        } else {
            assert_eq!(
                (s.http_5xx, s.conn_errors, s.resp_errors),
                (0, 0, 0),
                "{}: {s:?}",
                s.server
            );
        }
    }
    assert!(seen.max_out() <= 1, "{}", seen.summary());

    // The rest of the fleet never ran v3; the history says only the canary changed.
    assert_only_canary_ran(&fleet, &canary, "v3").await;
    let history = fleet.history_json().await;
    let d = &history[0];
    assert_eq!(
        (field(d, "id"), field(d, "state")),
        (field(&snapshot, "id"), "rolled_back"),
        "{d}"
    );
    let touched: Vec<&str> = d["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .filter(|h| h["started_ms"].as_u64() > Some(0))
        .map(|h| field(h, "host"))
        .collect();
    assert_eq!(touched, [canary.as_str()], "history: {d}");
    fleet.assert_serves("v1").await;
}

// ----- 2. a canary that crashes after passing readiness -------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_crashes_seconds_in_is_caught_through_its_agent_and_rolled_back() {
    let fleet = Fleet::start(FleetOptions {
        images: &[DemoImage::V1, DemoImage::CrashLater],
        ..Default::default()
    })
    .await;
    // Error-rate judging off: this test is about the container signal from the agent
    // (the crash also costs a few requests, which HAProxy's counters would see).
    let spec = fleet.write_spec(
        "crash.toml",
        &(fleet.spec_toml("1") + &staged("max_error_rate = 1.0")),
    );
    let spec = spec.to_string_lossy().into_owned();
    let traffic = Traffic::start(&fleet).await;

    let run = fleet
        .drover(&["deploy", "-f", &spec, "--version", "crash-later", "--json"])
        .await;
    traffic.more(100).await;
    let seen = traffic.stop().await;

    let snapshot = run.final_snapshot();
    let canary = canary_of(&snapshot);
    let events = events_of(&run);
    let failures = seen.failures("crash-later");
    let canary_done = events
        .iter()
        .find(|e| e["host"] == canary.as_str() && e["phase"] == "done")
        .and_then(|e| e["at_ms"].as_u64());
    let rolling_back = state_at(&events, "rolling_back");
    eprintln!(
        "v1 -> crash-later canary {canary}: exit {:?} in {:?}; in rotation -> rolling_back {:?} ms; {} requests, failures: 500s {}, other HTTP {:?}, connection {:?}\nerror: {}\n{}",
        run.code,
        run.took,
        canary_done
            .zip(rolling_back)
            .map(|(d, r)| r as i64 - d as i64),
        seen.requests(),
        failures.canary_500,
        by_kind(&failures.other_http),
        by_kind(&failures.connection),
        field(&snapshot, "error"),
        seen.summary()
    );

    assert_eq!(run.code, Some(1), "{}", run.describe());
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    let error = field(&snapshot, "error");
    assert!(
        error.contains("canary breach in stage 1")
            && error.contains(&format!("container on canary {canary}"))
            && ["restarted", "exited", "restarting", "dead"]
                .iter()
                .any(|w| error.contains(w)),
        "the error names the host and the container signal: {error}\n{}",
        fleet.controller_logs()
    );
    let seq = states(&events);
    assert!(
        seq.iter().position(|s| s == "baking") < seq.iter().position(|s| s == "rolling_back"),
        "caught in the bake: {seq:?}"
    );
    let p = phases(&snapshot);
    assert_eq!(p[&canary], "rolled_back", "{snapshot}");
    assert!(
        p.iter()
            .filter(|(h, _)| **h != canary)
            .all(|(_, ph)| ph == "prepared"),
        "{snapshot}"
    );
    // Whatever failed, failed while the crashing canary was in the fleet.
    if let Some((first, last)) = failures.span_ms {
        let (from, to) = (
            canary_done.unwrap_or(0).saturating_sub(5_000),
            state_at(&events, "rolled_back").unwrap_or(u64::MAX),
        );
        assert!(
            first >= from && last <= to,
            "failures outside the canary's life ({from}..{to}): {first}..{last}"
        );
    }
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    assert_only_canary_ran(&fleet, &canary, "crash-later").await;
    fleet.assert_serves("v1").await;
}

// ----- 3. a manual gate -------------------------------------------------------------

/// Deploys `version` with a manual gate after the canary and waits at the gate; returns
/// the following CLI, the deployment id and the canary.
async fn deploy_to_the_gate(
    fleet: &Fleet,
    spec: &str,
    version: &str,
    from: &str,
) -> (drover_tests::fleet::RunningCli, String, String) {
    let mut deploy = fleet.spawn_drover(&["deploy", "-f", spec, "--version", version, "--json"]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&first, "id").to_string();
    let canary = canary_of(&first);
    deploy
        .wait_json(STEP_TIMEOUT, "awaiting_promotion", |v| {
            v["state"] == "awaiting_promotion"
        })
        .await;
    let at_gate = fleet.status(&id).await;
    assert_eq!(field(&at_gate, "state"), "awaiting_promotion", "{at_gate}");
    let p = phases(&at_gate);
    assert_eq!(p[&canary], "done", "{at_gate}");
    assert!(
        p.iter()
            .filter(|(h, _)| **h != canary)
            .all(|(_, ph)| ph == "prepared"),
        "only the canary moved before the gate: {at_gate}"
    );
    for (i, h) in fleet.hosts().iter().enumerate() {
        let want = if h.name == canary { version } else { from };
        assert_eq!(
            fleet.host_version(i).await.as_deref(),
            Ok(want),
            "{} at the gate",
            h.name
        );
    }
    (deploy, id, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_gate_waits_for_promote_and_abort_there_rolls_the_canary_back() {
    let fleet = Fleet::start(FleetOptions {
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let gated = fleet.spec_toml("1")
        + "\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n\n[[rollout.stage]]\nhosts = \"100%\"\n";
    let spec = fleet.write_spec("gated.toml", &gated);
    let spec = spec.to_string_lossy().into_owned();
    let who = operator_id();

    // Run 1: promote at the gate.
    let traffic = Traffic::start(&fleet).await;
    let (deploy, id, canary) = deploy_to_the_gate(&fleet, &spec, "v2", "v1").await;
    let promote = drover_as_operator(&fleet, &["promote", &id]).await;
    let run = deploy.finish(CLI_TIMEOUT).await;
    let again = drover_as_operator(&fleet, &["promote", &id]).await;
    traffic.more(50).await;
    let seen = traffic.stop().await;
    eprintln!(
        "gate, promoted: canary {canary}; promote exit {:?} ({}), deploy exit {:?} in {:?}; {} requests, {} failed",
        promote.code,
        promote.stdout.trim(),
        run.code,
        run.took,
        seen.requests(),
        seen.keep_alive.failed + seen.close.failed
    );
    assert_eq!(promote.code, Some(0), "{}", promote.describe());
    assert!(promote.stdout.contains(&id), "{}", promote.describe());
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "succeeded", "{snapshot}");
    assert!(
        phases(&snapshot).values().all(|p| p == "done"),
        "{snapshot}"
    );
    assert_eq!(
        again.code,
        Some(0),
        "promote is safe to repeat: {}",
        again.describe()
    );
    let promoted: Vec<Value> = events_of(&run)
        .into_iter()
        .filter(|e| field(e, "message").contains("promoted by"))
        .collect();
    assert!(
        promoted
            .iter()
            .any(|e| field(e, "message") == format!("stage 1 promoted by {who}")),
        "the deployment's events name who promoted ({who}): {promoted:?}"
    );
    let recorded = recorded_events(&fleet, &id).await;
    assert!(
        recorded
            .iter()
            .any(|e| e.message.contains(&format!("promoted by {who}"))),
        "the recorded history names who promoted: {recorded:?}"
    );
    for report in seen.reports() {
        assert_eq!(report.failed, 0, "{}", seen.summary());
    }
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    fleet.assert_serves("v2").await;

    // Run 2: abort at the gate.
    let (deploy, id, canary) = deploy_to_the_gate(&fleet, &spec, "v1", "v2").await;
    let abort = drover_as_operator(&fleet, &["abort", &id]).await;
    let run = deploy.finish(CLI_TIMEOUT).await;
    let again = drover_as_operator(&fleet, &["abort", &id]).await;
    let late = drover_as_operator(&fleet, &["promote", &id]).await;
    eprintln!(
        "gate, aborted: canary {canary}; abort exit {:?}, deploy exit {:?} in {:?}, abort again {:?}, promote after the end {:?}: {}",
        abort.code,
        run.code,
        run.took,
        again.code,
        late.code,
        late.stderr.trim()
    );
    assert_eq!(abort.code, Some(0), "{}", abort.describe());
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    assert!(
        field(&snapshot, "error").contains(&format!("abort requested by {who}")),
        "{snapshot}"
    );
    let p = phases(&snapshot);
    assert_eq!(p[&canary], "rolled_back", "{snapshot}");
    assert!(
        p.iter()
            .filter(|(h, _)| **h != canary)
            .all(|(_, ph)| ph == "prepared"),
        "{snapshot}"
    );
    assert_eq!(
        again.code,
        Some(0),
        "abort is safe to repeat: {}",
        again.describe()
    );
    assert_eq!(late.code, Some(2), "{}", late.describe());
    assert!(late.stderr.contains("ended"), "{}", late.describe());
    let history = fleet.history_json().await;
    assert_eq!(
        (field(&history[0], "id"), field(&history[0], "state")),
        (id.as_str(), "rolled_back"),
        "{history:?}"
    );
    assert!(
        field(&history[0], "error").contains(&format!("abort requested by {who}")),
        "the history names who aborted: {}",
        history[0]
    );
    fleet.assert_serves("v2").await;
}
