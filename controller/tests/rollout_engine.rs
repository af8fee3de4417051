//! The rollout engine against scripted agents, without Docker or HAProxy.
//!
//! The agents here are fakes (in-process gRPC clients answering from a script): this
//! covers the controller's state machine (batches, failure, rollback, pause, locks) in
//! milliseconds. The same paths run against real Docker, HAProxy and registry in
//! `tests/tests/rollout.rs`.

mod common;

use std::time::Duration;

use common::*;
use drover_proto::v1 as proto;

#[tokio::test]
async fn success_moves_every_host_in_batches_after_one_prepare_each() {
    let c = Controller::start().await;
    let log = c.fleet(5, Script::default()).await;
    let mut client = c.client().await;
    let d = deploy_and_wait(&mut client, spec(""), "v2").await;
    assert_eq!(d.state, proto::DeploymentState::Succeeded as i32, "{d:?}");
    assert_eq!(d.batches, 3);
    assert!(phases(&d).values().all(|p| *p == proto::HostPhase::Done));
    assert_eq!(d.pinned, "reg/web@sha256:v2");
    let log = log.lock().unwrap().clone();
    // Every prepare happens before the first swap.
    let first_swap = log.iter().position(|(_, k, _)| *k == "swap").unwrap();
    assert_eq!(
        log[..first_swap]
            .iter()
            .filter(|(_, k, _)| *k == "prepare")
            .count(),
        5
    );
    assert_eq!(log.iter().filter(|(_, k, _)| *k == "swap").count(), 5);
}

#[tokio::test]
async fn failure_rolls_back_changed_hosts_and_leaves_untouched_alone() {
    let c = Controller::start().await;
    // Batches: [h0 h1] [h2 h3] [h4]. h2 fails: h0, h1 (done) and h3 (same batch, done)
    // return to v1; h4 is never touched.
    let log = c
        .fleet(
            5,
            Script {
                failing: vec![("h2".into(), "v2".into())],
                ..Default::default()
            },
        )
        .await;
    let mut client = c.client().await;
    let d = deploy_and_wait(&mut client, spec(""), "v2").await;
    assert_eq!(d.state, proto::DeploymentState::RolledBack as i32, "{d:?}");
    assert!(
        d.error.contains("h2") && d.error.contains("never became ready"),
        "{}",
        d.error
    );
    let p = phases(&d);
    assert_eq!(p["h0"], proto::HostPhase::RolledBack);
    assert_eq!(p["h1"], proto::HostPhase::RolledBack);
    assert_eq!(p["h2"], proto::HostPhase::Failed);
    assert_eq!(p["h3"], proto::HostPhase::RolledBack);
    assert_eq!(p["h4"], proto::HostPhase::Prepared);
    let log = log.lock().unwrap().clone();
    assert!(
        !log.iter().any(|(h, k, _)| h == "h4" && *k != "prepare"),
        "the last batch never starts: {log:?}"
    );
    for h in ["h0", "h1", "h3"] {
        assert!(
            log.iter()
                .any(|(x, k, v)| x == h && *k == "rollback" && v == "v1"),
            "{h} back to v1: {log:?}"
        );
    }
    assert!(
        !log.iter().any(|(x, k, _)| x == "h2" && *k == "rollback"),
        "the failed host was restored by its agent"
    );
}

#[tokio::test]
async fn pause_policy_waits_then_abort_rolls_back_with_who_asked() {
    let c = Controller::start().await;
    let log = c
        .fleet(
            4,
            Script {
                failing: vec![("h2".into(), "v2".into())],
                ..Default::default()
            },
        )
        .await;
    let mut client = c.client().await;
    let id = start_deploy(&mut client, spec("on_failure = \"pause\""), "v2", 0).await;
    let d = wait_state(&mut client, &id, proto::DeploymentState::Paused).await;
    let p = phases(&d);
    assert_eq!(p["h0"], proto::HostPhase::Done);
    assert_eq!(p["h2"], proto::HostPhase::Failed);
    assert!(!log.lock().unwrap().iter().any(|(_, k, _)| *k == "rollback"));
    // Abort twice: safe, and recorded with who asked.
    for _ in 0..2 {
        control(
            &mut client,
            &id,
            proto::ControlAction::Abort,
            "carol@laptop",
        )
        .await
        .unwrap();
    }
    let d = wait_state(&mut client, &id, proto::DeploymentState::RolledBack).await;
    assert!(d.error.contains("carol@laptop"), "{}", d.error);
    assert_eq!(phases(&d)["h0"], proto::HostPhase::RolledBack);
    let err = control(&mut client, &id, proto::ControlAction::Resume, "carol")
        .await
        .unwrap_err();
    assert!(err.message().contains("already ended"), "{}", err.message());
}

#[tokio::test]
async fn operator_pause_stops_between_batches_and_resume_finishes() {
    let clock = manual_clock("2026-11-23T10:00:00Z");
    let c =
        Controller::start_with(clock.shared(), tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let log = c.fleet(3, Script::default()).await;
    let mut client = c.client().await;
    // Scheduled a minute ahead on the test's clock: the pause is recorded before the
    // rollout starts, and the rollout stops at its first checkpoint, before any batch.
    let at = clock.now_ms() + 60_000;
    let id = start_deploy(
        &mut client,
        spec("batch_size = 1").replace("batch_size = 2\n", ""),
        "v2",
        at,
    )
    .await;
    control(&mut client, &id, proto::ControlAction::Pause, "dave")
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    let d = wait_state(&mut client, &id, proto::DeploymentState::Paused).await;
    assert!(
        phases(&d)
            .values()
            .all(|p| *p == proto::HostPhase::Prepared),
        "{d:?}"
    );
    let swaps = |log: &Log| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| *k == "swap")
            .count()
    };
    assert_eq!(swaps(&log), 0, "no host was swapped while paused");
    control(&mut client, &id, proto::ControlAction::Resume, "dave")
        .await
        .unwrap();
    let d = wait_state(&mut client, &id, proto::DeploymentState::Succeeded).await;
    assert!(phases(&d).values().all(|p| *p == proto::HostPhase::Done));
    assert_eq!(swaps(&log), 3);
}

#[tokio::test]
async fn scheduled_deploy_can_be_listed_and_cancelled() {
    let c = Controller::start().await;
    let log = c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let id = start_deploy(&mut client, spec(""), "v2", now_ms() + 3_600_000).await;
    let d = client
        .get_deployment(proto::GetDeploymentRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, proto::DeploymentState::Scheduled as i32);
    let listed = client
        .list_deployments(proto::ListDeploymentsRequest {
            scheduled_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.deployments.len(), 1);
    for _ in 0..2 {
        control(&mut client, &id, proto::ControlAction::Cancel, "erin")
            .await
            .unwrap();
    }
    let d = wait_state(&mut client, &id, proto::DeploymentState::Cancelled).await;
    assert!(d.error.contains("erin"));
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing was sent to any host"
    );
    // The service is free again.
    let again = start_deploy(&mut client, spec(""), "v2", 0).await;
    wait_state(&mut client, &again, proto::DeploymentState::Succeeded).await;
}

#[tokio::test]
async fn second_deploy_of_a_service_is_refused_while_the_first_runs() {
    let c = Controller::start().await;
    c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let first = client
        .deploy(proto::DeployRequest {
            spec_toml: spec("stop_timeout = \"1s\""),
            version: "v2".into(),
            requested_by: "alice@ci".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let second = client
        .deploy(proto::DeployRequest {
            spec_toml: spec(""),
            version: "v3".into(),
            requested_by: "bob".into(),
            ..Default::default()
        })
        .await;
    // The first may already be done on a fast machine; only then is the second accepted.
    if let Err(status) = second {
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(
            status.message().contains(&first.id) && status.message().contains("alice@ci"),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn refusals_name_the_bad_value_and_record_nothing() {
    let c = Controller::start().await;
    c.fleet(1, Script::default()).await;
    let mut client = c.client().await;
    let cases = [
        (spec("").replace("role=web", "role=db"), "v2", "role=db"),
        (spec("batch_sise = 1"), "v2", "batch_sise"),
        (spec(""), "v 2", "v 2"),
    ];
    for (text, version, needle) in cases {
        let err = client
            .deploy(proto::DeployRequest {
                spec_toml: text,
                version: version.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
    }
    let history = client
        .list_deployments(proto::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(history.deployments.is_empty());
}

#[tokio::test]
async fn rollback_returns_to_the_previous_successful_version_without_pulling() {
    let c = Controller::start().await;
    let log = c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    assert_eq!(
        deploy_and_wait(&mut client, spec(""), "v2").await.state,
        proto::DeploymentState::Succeeded as i32
    );
    // Another version, then back.
    let d3 = deploy_and_wait(&mut client, spec(""), "v3").await;
    assert_eq!(d3.state, proto::DeploymentState::Succeeded as i32);
    log.lock().unwrap().clear();
    let r = client
        .rollback(proto::RollbackRequest {
            service: "web".into(),
            requested_by: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(r.kind, "rollback");
    let mut stream = client
        .watch(proto::WatchRequest {
            id: r.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while stream.message().await.unwrap().is_some() {}
    let r = client
        .get_deployment(proto::GetDeploymentRequest { id: r.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state, proto::DeploymentState::Succeeded as i32, "{r:?}");
    assert_eq!(r.version, "v2");
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().all(|(_, k, v)| *k == "rollback" && v == "v2"),
        "{log:?}"
    );
}

#[tokio::test]
async fn manual_gate_waits_for_promote_then_finishes() {
    let c = Controller::start().await;
    let log = c.fleet(4, Script::default()).await;
    let mut client = c.client().await;
    let staged = spec("").replace(
        "[rollout]\nbatch_size = 2\n",
        "[rollout]\nbatch_size = 1\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n[[rollout.stage]]\nhosts = \"100%\"\n",
    );
    let id = start_deploy(&mut client, staged, "v2", 0).await;
    let d = wait_state(&mut client, &id, proto::DeploymentState::AwaitingPromotion).await;
    assert_eq!(d.stages, 2);
    assert!(d.hold.contains("drover promote"), "{}", d.hold);
    let swapped: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, k, _)| *k == "swap")
        .cloned()
        .collect();
    assert_eq!(
        swapped.len(),
        1,
        "only the canary moved before the gate: {swapped:?}"
    );
    for _ in 0..2 {
        control(&mut client, &id, proto::ControlAction::Promote, "frank")
            .await
            .unwrap();
    }
    let d = wait_state(&mut client, &id, proto::DeploymentState::Succeeded).await;
    assert!(phases(&d).values().all(|p| *p == proto::HostPhase::Done));
    let events = client
        .watch(proto::WatchRequest { id, after_seq: 0 })
        .await
        .unwrap()
        .into_inner();
    let mut events = events;
    let mut promoted_by = false;
    while let Some(ev) = events.message().await.unwrap() {
        if let Some(proto::watch_event::Body::Event(e)) = ev.body {
            promoted_by |= e.message.contains("promoted by frank");
        }
    }
    assert!(promoted_by, "the history names who promoted");
}

#[tokio::test]
async fn window_holds_the_deploy_until_it_opens() {
    // Monday 2026-11-23 01:00 UTC; the window opens at 02:00 UTC.
    let clock = manual_clock("2026-11-23T01:00:00Z");
    let c =
        Controller::start_with(clock.shared(), tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let log = c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let windowed = format!(
        "{}\n[[schedule.windows]]\ndays = [\"mon-fri\"]\nstart = \"02:00\"\nend = \"04:00\"\ntime_zone = \"UTC\"\n",
        spec("")
    );
    let id = start_deploy(&mut client, windowed, "v2", 0).await;
    let d = wait_state(&mut client, &id, proto::DeploymentState::Scheduled).await;
    assert!(log.lock().unwrap().is_empty());
    let _ = d;
    clock.advance(Duration::from_secs(3600));
    wait_state(&mut client, &id, proto::DeploymentState::Succeeded).await;
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| *k == "swap")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_deploy_scheduled_before_a_restart_fires_after_it() {
    let clock = manual_clock("2026-11-23T01:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let db_dir = dir.path().to_path_buf();
    let first = Controller::start_with(clock.shared(), dir, "127.0.0.1:0").await;
    let addr = first.addr;
    first.fleet(2, Script::default()).await;
    let mut client = first.client().await;
    let at = clock.now_ms() + 60_000;
    let id = start_deploy(&mut client, spec(""), "v2", at).await;
    wait_state(&mut client, &id, proto::DeploymentState::Scheduled).await;
    // The controller goes away (its database stays); time passes its start time.
    let kept = first.stop().await;
    clock.advance(Duration::from_secs(90));
    let second = Controller::start_with(clock.shared(), kept, &addr.to_string()).await;
    assert_eq!(second.dir.as_ref().unwrap().path(), db_dir.as_path());
    let log = second.fleet(2, Script::default()).await;
    let mut client = second.client().await;
    let d = wait_state(&mut client, &id, proto::DeploymentState::Succeeded).await;
    assert!(d.epoch >= 2, "resumed under a new epoch");
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| *k == "swap")
            .count(),
        2
    );
}

#[tokio::test]
async fn a_missed_deploy_is_skipped_when_the_spec_says_so() {
    let clock = manual_clock("2026-11-23T01:00:00Z");
    let dir = tempfile::tempdir().unwrap();
    let first = Controller::start_with(clock.shared(), dir, "127.0.0.1:0").await;
    let addr = first.addr;
    first.fleet(1, Script::default()).await;
    let mut client = first.client().await;
    let skip = format!("{}\n[schedule]\nmissed = \"skip\"\n", spec(""));
    let id = start_deploy(&mut client, skip, "v2", clock.now_ms() + 60_000).await;
    wait_state(&mut client, &id, proto::DeploymentState::Scheduled).await;
    let kept = first.stop().await;
    clock.advance(Duration::from_secs(3600));
    let second = Controller::start_with(clock.shared(), kept, &addr.to_string()).await;
    let log = second.fleet(1, Script::default()).await;
    let mut client = second.client().await;
    let d = wait_state(&mut client, &id, proto::DeploymentState::Skipped).await;
    assert!(
        d.error.contains("passed") && d.error.contains("skip"),
        "{}",
        d.error
    );
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn abort_while_a_window_holds_between_stages_rolls_back_under_the_lock() {
    // Monday 2026-11-23 02:00 UTC: the window (02:00-03:00) is open for the canary stage.
    let clock = manual_clock("2026-11-23T02:00:00Z");
    let c =
        Controller::start_with(clock.shared(), tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    let log = c.fleet(3, Script::default()).await;
    let mut client = c.client().await;
    let staged = format!(
        "{}\n[[schedule.windows]]\ndays = [\"mon-sun\"]\nstart = \"02:00\"\nend = \"03:00\"\ntime_zone = \"UTC\"\n",
        spec("").replace(
            "[rollout]\nbatch_size = 2\n",
            "[rollout]\nbatch_size = 1\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n[[rollout.stage]]\nhosts = \"100%\"\n",
        )
    );
    let id = start_deploy(&mut client, staged, "v2", 0).await;
    wait_state(&mut client, &id, proto::DeploymentState::AwaitingPromotion).await;
    // The window closes while the canary waits; the promoted rollout is then held.
    clock.advance(Duration::from_secs(3600));
    control(&mut client, &id, proto::ControlAction::Promote, "gina")
        .await
        .unwrap();
    let d = wait_state(&mut client, &id, proto::DeploymentState::Held).await;
    assert!(d.hold.contains("deploy window"), "{}", d.hold);
    // `drover schedule list` shows it: it waits for a window, like a scheduled one.
    let listed = client
        .list_deployments(proto::ListDeploymentsRequest {
            scheduled_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .deployments;
    assert!(
        listed
            .iter()
            .any(|l| l.id == id && l.state == proto::DeploymentState::Held as i32),
        "{listed:?}"
    );
    // Held is not "not started": a schedule cancel is refused and says to abort.
    let err = control(&mut client, &id, proto::ControlAction::Cancel, "gina")
        .await
        .unwrap_err();
    assert!(err.message().contains("drover abort"), "{}", err.message());
    // The service stays locked while held.
    let second = client
        .deploy(proto::DeployRequest {
            spec_toml: spec(""),
            version: "v3".into(),
            requested_by: "hank".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(second.code(), tonic::Code::Aborted, "{}", second.message());
    control(&mut client, &id, proto::ControlAction::Abort, "gina")
        .await
        .unwrap();
    let d = wait_state(&mut client, &id, proto::DeploymentState::RolledBack).await;
    let rolled_back: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, k, _)| *k == "rollback")
        .cloned()
        .collect();
    assert_eq!(
        rolled_back.len(),
        1,
        "the canary went back: {rolled_back:?}"
    );
    assert_eq!(
        phases(&d)
            .values()
            .filter(|p| **p == proto::HostPhase::RolledBack)
            .count(),
        1
    );
    // Only the transition that ended it released the lock.
    start_deploy(&mut client, spec(""), "v3", 0).await;
}

#[tokio::test]
async fn a_cancel_racing_a_fresh_deploy_either_wins_cleanly_or_is_refused() {
    let c = Controller::start().await;
    let log = c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let (mut cancelled, mut refused) = (0, 0);
    for i in 0..20 {
        let before = log.lock().unwrap().len();
        let id = start_deploy(&mut client, spec(""), &format!("v{i}"), 0).await;
        match control(&mut client, &id, proto::ControlAction::Cancel, "ivan").await {
            Ok(_) => {
                cancelled += 1;
                wait_state(&mut client, &id, proto::DeploymentState::Cancelled).await;
                assert_eq!(
                    log.lock().unwrap().len(),
                    before,
                    "a cancelled deployment sent nothing to any host"
                );
            }
            Err(status) => {
                refused += 1;
                assert!(
                    status.message().contains("has started"),
                    "{}",
                    status.message()
                );
                wait_state(&mut client, &id, proto::DeploymentState::Succeeded).await;
            }
        }
    }
    // Either way the lock was released exactly once: the next deploy starts.
    let last = start_deploy(&mut client, spec(""), "v-last", 0).await;
    wait_state(&mut client, &last, proto::DeploymentState::Succeeded).await;
    assert_eq!(cancelled + refused, 20);
}
