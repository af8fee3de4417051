//! `drover deploy --plan` and `drover rollback --to` on a real fleet: the `drover` CLI
//! and controller processes, real agents on their own 127.0.0.N, the real Docker
//! engine, a real registry with htpasswd auth and a real HAProxy in front.
//!
//! A plan changes nothing (the same containers, the same HAProxy states, the same
//! history) and the deploy that follows moves the hosts in the planned batches; a
//! rollback to a version the hosts keep restarts it without a pull and without a failed
//! request. Each fleet removes its processes and containers when dropped, also when an
//! assertion fails.

use std::collections::BTreeMap;

use drover_tests::DemoImage;
use drover_tests::fleet::{Fleet, FleetOptions, PASSWORD_ENV};
use drover_tests::traffic::Traffic;
use serde_json::Value;

/// Host name to (running container id, version), from `drover hosts --json`.
async fn containers(fleet: &Fleet) -> BTreeMap<String, (String, String)> {
    fleet
        .hosts_json()
        .await
        .iter()
        .map(|h| {
            let web = &h["services"][0];
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (s(&h["name"]), (s(&web["container_id"]), s(&web["version"])))
        })
        .collect()
}

/// The hosts of each batch of a `--plan --json` object, in order.
fn planned_batches(plan: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for stage in plan["stages"].as_array().expect("stages") {
        for batch in stage["batches"].as_array().expect("batches") {
            let hosts = batch["hosts"].as_array().expect("hosts");
            out.push(
                hosts
                    .iter()
                    .map(|h| h["host"].as_str().unwrap_or("").to_string())
                    .collect(),
            );
        }
    }
    out
}

/// The hosts of each batch of a deployment snapshot, in order.
fn deployed_batches(snapshot: &Value) -> Vec<Vec<String>> {
    let mut by_batch: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for h in snapshot["hosts"].as_array().expect("hosts") {
        by_batch
            .entry(h["batch"].as_u64().expect("batch"))
            .or_default()
            .push(h["host"].as_str().unwrap_or("").to_string());
    }
    by_batch
        .into_values()
        .map(|mut b| {
            b.sort();
            b
        })
        .collect()
}

/// How many manifest requests the registry has served: a pull makes at least one.
fn manifest_requests(fleet: &Fleet) -> usize {
    fleet.registry().logs().matches("/manifests/").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_changes_nothing_and_the_deploy_follows_its_batches() {
    let fleet = Fleet::start(FleetOptions {
        batch_size: "2",
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let spec = fleet.spec_path().to_string_lossy().into_owned();
    let before = (
        containers(&fleet).await,
        fleet.servers().await,
        fleet.history_json().await,
    );

    let text = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v2", "--plan"])
        .await;
    assert_eq!(text.code, Some(0), "{}", text.describe());
    let out = &text.stdout;
    let digest = &fleet.pushed(DemoImage::V2).digest;
    assert!(
        out.contains(digest.as_str()),
        "the registry's digest: {out}"
    );
    assert!(out.contains("4 targets: 4 change"), "{out}");
    assert!(out.contains("at most 2 out of rotation"), "{out}");
    for h in fleet.hosts() {
        assert!(out.contains(&h.name), "{} in the plan: {out}", h.name);
    }
    assert!(out.contains("batch 1") && out.contains("batch 2"), "{out}");
    assert_eq!(out.matches("v1 -> v2").count(), 4, "{out}");

    let json = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v2", "--plan", "--json"])
        .await;
    assert_eq!(json.code, Some(0), "{}", json.describe());
    let plan = json.json().pop().expect("one JSON object");
    assert_eq!(plan["type"], "plan", "{plan}");
    let pinned = format!("{}/demo@{digest}", fleet.registry().host());
    assert_eq!(plan["pinned"], pinned.as_str(), "{plan}");
    let batches = planned_batches(&plan);
    assert_eq!(batches.len(), 2, "{plan}");

    // What the registry says about a tag it lacks, or about bad credentials, is shown.
    let missing = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v404", "--plan"])
        .await;
    assert_eq!(missing.code, Some(2), "{}", missing.describe());
    assert!(
        missing.stderr.contains("demo:v404 (HTTP 404)") && missing.stderr.contains("check the tag"),
        "{}",
        missing.describe()
    );
    let args = ["deploy", "-f", &spec, "--version", "v2", "--plan"];
    let mut cmd = fleet.cli(&args);
    cmd.env(PASSWORD_ENV, "not-the-password");
    let refused_auth = fleet.run_command(cmd, &args, None).await;
    assert_eq!(refused_auth.code, Some(2), "{}", refused_auth.describe());
    assert!(
        refused_auth
            .stderr
            .contains("refused the controller's credentials"),
        "{}",
        refused_auth.describe()
    );
    assert!(!refused_auth.describe().contains("not-the-password"));

    // A refusal exits 2 with the reason, and changes nothing either.
    let unknown = fleet.write_spec(
        "unknown-server.toml",
        &fleet.spec_toml("2").replace(
            "[load_balancer]\n",
            "[load_balancer]\nserver_name = \"nope-{host}\"\n",
        ),
    );
    let refused = fleet
        .drover(&[
            "deploy",
            "-f",
            &unknown.to_string_lossy(),
            "--version",
            "v2",
            "--plan",
        ])
        .await;
    assert_eq!(refused.code, Some(2), "{}", refused.describe());
    assert!(
        refused.stderr.contains("would be refused") && refused.stderr.contains("nope-"),
        "{}",
        refused.describe()
    );

    let after = (
        containers(&fleet).await,
        fleet.servers().await,
        fleet.history_json().await,
    );
    assert_eq!(after.0, before.0, "the same containers run");
    assert_eq!(after.1, before.1, "HAProxy's servers are as they were");
    assert_eq!(after.2, before.2, "the history is unchanged");

    let run = fleet.deploy("v2").await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(deployed_batches(&snapshot), batches, "{snapshot}");
    assert_eq!(fleet.history_json().await[0]["pinned"], pinned.as_str());
    fleet.assert_serves("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_v1_after_v3_restarts_v1_without_a_pull_or_a_failed_request() {
    let fleet = Fleet::start(FleetOptions {
        images: &[DemoImage::V1, DemoImage::V2, DemoImage::V3],
        ..Default::default()
    })
    .await;
    for v in ["v2", "v3"] {
        let run = fleet.deploy(v).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
    }

    let missing = fleet.drover(&["rollback", "web", "--to", "v9"]).await;
    assert_eq!(missing.code, Some(2), "{}", missing.describe());
    assert!(
        missing.stderr.contains("v9")
            && missing.stderr.contains("kept on every target host: v2, v1"),
        "names the versions kept: {}",
        missing.describe()
    );
    let plan = fleet
        .drover(&["rollback", "web", "--to", "v1", "--plan"])
        .await;
    assert_eq!(plan.code, Some(0), "{}", plan.describe());
    assert!(
        plan.stdout.starts_with("Plan: rollback of web v1"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("each host restarts the container it keeps"),
        "{}",
        plan.stdout
    );
    assert_eq!(
        plan.stdout.matches("v3 -> v1").count(),
        4,
        "{}",
        plan.stdout
    );

    let pulls_before = manifest_requests(&fleet);
    assert!(pulls_before > 0, "the registry logs the deploys' pulls");
    let traffic = Traffic::start(&fleet).await;
    let run = fleet
        .drover(&["rollback", "web", "--to", "v1", "--json"])
        .await;
    traffic.more(100).await;
    let seen = traffic.stop().await;
    assert_eq!(
        run.code,
        Some(0),
        "{}\n{}",
        run.describe(),
        fleet.controller_logs()
    );
    let snapshot = run.final_snapshot();
    assert_eq!(
        (snapshot["kind"].as_str(), snapshot["version"].as_str()),
        (Some("rollback"), Some("v1")),
        "{snapshot}"
    );
    seen.assert_no_failed_request();
    assert_eq!(seen.max_out(), 1, "{}", seen.summary());
    assert_eq!(manifest_requests(&fleet), pulls_before, "no host pulled");
    fleet.assert_serves("v1").await;
}
