//! Controller replicas on PostgreSQL, end to end with real parts: a throwaway
//! PostgreSQL cluster of the test's own, three (or two) real `drover serve` replicas
//! with a 3 s leader lease, real agents given every replica's address, the real Docker
//! engine, a real registry and a real HAProxy under load.
//!
//! - SIGKILL of the leader in the middle of a batch: a standby takes the lease, resumes
//!   the deployment from the database and finishes it; no request fails, no host is
//!   left drained, no host is swapped twice (Docker's events and the agents' logs); a
//!   browser signed in on the old leader stays signed in on the new one.
//! - SIGSTOP of the leader past its lease, while its canary bakes: a standby takes over
//!   and finishes the deployment; SIGCONT: the old leader's bake round is refused, its
//!   command to the canary's agent and its write alike (both in its log), and it steps
//!   down (exit 75).
//! - A browser on a standby's web interface is told who leads; when the leader dies its
//!   page, reloading itself, shows the interface once its own replica leads.
//! - PostgreSQL restarted during a deploy: the leader waits for it, carries on, and the
//!   deployment succeeds.
//!
//! Every fleet is removed when dropped, also on failure; waits are on conditions with
//! deadlines.

use std::process::Command;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_tests::browser::Browser;
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions, LEASE, field, now_ms};
use drover_tests::traffic::Traffic;
use drover_tests::wait_until;

/// Longest wait for one step of a rollout.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// The fleet: 4 hosts, one per batch, under `replicas` replicas (each serving the web
/// interface too with `web`).
async fn fleet(replicas: usize, web: bool) -> Fleet {
    Fleet::start(FleetOptions {
        hosts: 4,
        batch_size: "1",
        replicas,
        web,
        ..Default::default()
    })
    .await
}

/// Two stages: one canary host baking 8 s, then the rest; a canary round every 2 s.
const STAGED: &str = r#"
[[rollout.stage]]
hosts = "1"
bake = "8s"

[[rollout.stage]]
hosts = "100%"

[canary]
interval = "2s"
"#;

/// Unix ms as Docker's `--since` takes it (seconds with a fraction).
fn docker_time(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Containers Docker started for host `name` between the Unix ms `since` and `until`.
fn docker_starts(name: &str, since: u64, until: u64) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "events",
            "--since",
            &docker_time(since),
            "--until",
            &docker_time(until),
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--filter",
            &format!("label=drover.agent={name}"),
            "--format",
            "{{.Actor.Attributes.name}}",
        ])
        .output()
        .expect("run docker events");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every host started exactly one container during the deploy (Docker's events) and
/// its agent created exactly one container of version `version` (its log).
fn assert_swapped_once(fleet: &Fleet, since_ms: u64, version: &str) {
    let until = now_ms() + 1000;
    for (i, h) in fleet.hosts().iter().enumerate() {
        let starts = docker_starts(&h.name, since_ms, until);
        assert_eq!(starts.len(), 1, "{} started {starts:?}", h.name);
        let logs = fleet.agent_logs(i);
        let created = logs
            .lines()
            .filter(|l| l.contains("creating") && l.contains(&format!("version={version}")))
            .count();
        assert_eq!(
            created, 1,
            "{} created {created} containers of {version}:\n{logs}",
            h.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_resumes_and_finishes_a_deploy_whose_leader_was_killed_mid_batch() {
    let mut fleet = fleet(3, true).await;
    let traffic = Traffic::start(&fleet).await;
    let old = fleet.leader().await.expect("a replica leads");
    let since_ms = now_ms();
    // A browser signed in on the leader's web interface.
    let token = fleet.api_token("ha-viewer", "viewer").await;
    let browser = fleet
        .replica_web_client(old)
        .sign_in(&token)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let (deploy, id, second) = fleet.spawn_deploy_until_swapping("v2", 1).await;
    let killed_ms = now_ms();
    fleet.kill_replica(old);
    let new = fleet
        .wait_leader_other_than(old, Duration::from_secs(20))
        .await;
    let leads_ms = now_ms();

    // The CLI that followed the deploy follows it across the change of leader.
    let followed = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(
        followed.code,
        Some(0),
        "{}\n{}",
        followed.describe(),
        fleet.controller_logs()
    );
    let snapshot = followed.final_snapshot();
    assert_eq!(
        (field(&snapshot, "id"), field(&snapshot, "state")),
        (id.as_str(), "succeeded"),
        "{snapshot}"
    );
    let resumed = followed.first_host_event_after(killed_ms + 1);
    traffic.more(200).await;
    let seen = traffic.stop().await;
    eprintln!(
        "leader replica-{old} killed while {second} swapped; replica-{new} led {} ms later; next host action {:?} ms after the kill; {} requests, {} failed\n{}",
        leads_ms - killed_ms,
        resumed.as_ref().map(|(at, m)| (at - killed_ms, m.clone())),
        seen.requests(),
        seen.failed(),
        seen.summary()
    );
    seen.assert_no_failed_request();
    assert!(seen.max_out() <= 1, "{}", seen.summary());
    assert!(
        snapshot["epoch"].as_u64() >= Some(2),
        "resumed under a new epoch: {snapshot}"
    );
    let logs = fleet.replica_logs(new);
    assert!(
        logs.contains("took the leader lease") && logs.contains("resuming deployment"),
        "{logs}"
    );
    fleet.haproxy().wait_all_up(STEP_TIMEOUT).await;
    fleet.assert_serves("v2").await;
    assert_swapped_once(&fleet, since_ms, "v2");

    // The roles, as an operator sees them: whoami through every address, and metrics.
    let me = fleet.drover(&["whoami"]).await;
    assert!(
        me.code == Some(0) && me.stdout.contains("controller: leader (epoch 2)"),
        "{}",
        me.describe()
    );
    let third = 3 - old - new;
    // The browser's session holds on the new leader (replicas share the session key);
    // the standby's web interface names the leader.
    let overview = |i| {
        let client = fleet.replica_web_client(i);
        let cookie = browser.cookie.clone();
        async move {
            client
                .get("/", Some(&cookie))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let page = overview(new).await;
    assert!(
        page.status == 200 && page.text().contains(&browser.csrf),
        "the session did not follow the failover: {}",
        page.describe()
    );
    let standby = overview(third).await;
    assert!(
        standby.status == 503 && standby.text().contains(&fleet.replica_url(new)),
        "{}",
        standby.describe()
    );
    for (i, role) in [(new, "leader"), (third, "standby")] {
        let metrics = drover_tests::http::get(fleet.replica_metrics(i), "/metrics")
            .await
            .expect("metrics");
        assert!(
            metrics
                .body
                .contains(&format!("drover_controller_role{{role=\"{role}\"}} 1")),
            "replica-{i}: {}",
            metrics.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_is_fenced_when_it_wakes_and_steps_down() {
    let mut fleet = fleet(2, false).await;
    let spec = fleet.write_spec("staged.toml", &(fleet.spec_toml("1") + STAGED));
    let traffic = Traffic::start(&fleet).await;
    let old = fleet.leader().await.expect("a replica leads");
    let since_ms = now_ms();

    // Frozen while its canary bakes: a loop that, once awake, has a round due at once
    // (a command to the canary's agent, then a write of the round).
    let mut deploy = fleet.spawn_drover(&[
        "deploy",
        "-f",
        &spec.to_string_lossy(),
        "--version",
        "v2",
        "--json",
    ]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&first, "id").to_string();
    deploy
        .wait_json(STEP_TIMEOUT, "stage 1 baking", |v| v["state"] == "baking")
        .await;
    // Freeze it inside the wait between two rounds (each round asks the canary's agent,
    // then writes what it read, in milliseconds; the wait is the rest of the 2 s
    // interval): right after its first round was written, as read from the leader.
    let client = fleet.operator_client().await;
    wait_until(STEP_TIMEOUT, "the bake's first round", || {
        let (mut client, id) = (client.clone(), id.clone());
        async move {
            let info = client
                .get_deployment(proto::GetDeploymentRequest { id })
                .await
                .map(|r| r.into_inner());
            // The record written as the bake began has measured_ms == started_ms.
            info.is_ok_and(|d| {
                d.bakes
                    .first()
                    .is_some_and(|b| b.measured_ms > b.started_ms)
            })
        }
    })
    .await;
    fleet.signal_replica(old, "-STOP");
    let new = fleet.wait_leader_other_than(old, LEASE * 6).await;
    // Let the new leader act under its epoch for a while, then wake the old one.
    let progressed = fleet.drover(&["status", &id, "--json"]).await;
    let woke_ms = now_ms();
    fleet.signal_replica(old, "-CONT");
    let exit = fleet.wait_replica_exit(old, Duration::from_secs(20)).await;

    let followed = deploy.finish(CLI_TIMEOUT).await;
    let seen = traffic.stop().await;
    let old_logs = fleet.replica_logs(old);
    eprintln!(
        "replica-{old} frozen, replica-{new} leads; the old one exited with {exit:?}; {} requests, {} failed\n{old_logs}",
        seen.requests(),
        seen.failed(),
    );
    assert_eq!(
        exit.code(),
        Some(75),
        "steps down with EX_TEMPFAIL:\n{old_logs}"
    );
    assert!(old_logs.contains("stepping down"), "{old_logs}");
    // Once awake it took no rollout step: what it tried was refused (the command to
    // the canary's agent, the write of its bake round), and it said so.
    let woke = jiff::Timestamp::from_millisecond(i64::try_from(woke_ms).unwrap())
        .unwrap()
        .to_string();
    let after: Vec<&str> = old_logs
        .lines()
        .filter(|l| l.get(..woke.len()) >= Some(woke.as_str()))
        .collect();
    for refusal in [
        "refused to command the host: this controller is no longer the leader",
        "rollout stopped: this controller is no longer the leader, so its write was refused",
    ] {
        assert!(
            after.iter().any(|l| l.contains(refusal)),
            "no {refusal:?} after waking:\n{old_logs}"
        );
    }
    for line in after {
        let acted = ["draining", "swapping to", "enabling", "runs v2", "batch "]
            .iter()
            .any(|step| line.contains("rollout::flight") && line.contains(step));
        assert!(!acted, "acted after waking: {line}\n{old_logs}");
    }
    assert_eq!(
        followed.code,
        Some(0),
        "{}\n{}",
        followed.describe(),
        fleet.controller_logs()
    );
    let snapshot = followed.final_snapshot();
    assert_eq!(
        field(&snapshot, "state"),
        "succeeded",
        "{snapshot}\n{}",
        progressed.describe()
    );
    seen.assert_no_failed_request();
    fleet.haproxy().wait_all_up(STEP_TIMEOUT).await;
    fleet.assert_serves("v2").await;
    assert_swapped_once(&fleet, since_ms, "v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_a_standby_sees_who_leads_and_gets_the_app_once_its_replica_leads() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 1,
        replicas: 2,
        web: true,
        ..Default::default()
    })
    .await;
    let leader = fleet.leader().await.expect("a replica leads");
    let standby = 1 - leader;
    let browser = Browser::start(&fleet.replica_web_url(standby)).await;
    browser.goto("/").await;
    browser
        .wait_for("main[data-page=standby]", STEP_TIMEOUT)
        .await;
    let says = browser.text("#standby").await;
    assert!(
        says.contains(&format!("The leader is {}", fleet.replica_url(leader))),
        "{says}"
    );
    browser.screenshot("ha-standby").await;
    // The leader dies; the page, reloading itself, shows the interface (its sign-in)
    // once this replica leads, with nobody touching it.
    fleet.kill_replica(leader);
    fleet
        .wait_leader_other_than(leader, Duration::from_secs(20))
        .await;
    browser.wait_path("/sign-in", STEP_TIMEOUT).await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_deploy_pauses_the_leader_and_the_deploy_succeeds() {
    let fleet = fleet(2, false).await;
    let traffic = Traffic::start(&fleet).await;
    let since_ms = now_ms();

    let (deploy, _id, second) = fleet.spawn_deploy_until_swapping("v2", 1).await;
    let pg = fleet.postgres();
    tokio::task::block_in_place(|| pg.restart()).expect("restart PostgreSQL");

    let followed = deploy.finish(CLI_TIMEOUT).await;
    let seen = traffic.stop().await;
    eprintln!(
        "PostgreSQL restarted while {second} swapped; {} requests, {} failed\n{}",
        seen.requests(),
        seen.failed(),
        fleet.controller_logs()
    );
    assert_eq!(
        followed.code,
        Some(0),
        "{}\n{}",
        followed.describe(),
        fleet.controller_logs()
    );
    assert_eq!(field(&followed.final_snapshot(), "state"), "succeeded");
    seen.assert_no_failed_request();
    fleet.haproxy().wait_all_up(STEP_TIMEOUT).await;
    fleet.assert_serves("v2").await;
    assert_swapped_once(&fleet, since_ms, "v2");
}
