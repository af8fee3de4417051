//! Plans (`drover deploy --plan`, `drover rollback --plan`) and `drover rollback --to`
//! against scripted agents: a plan sends no command, records nothing and takes no lock;
//! it is refused exactly as the deploy would be; the deploy then follows it.

mod common;

use std::time::Duration;

use common::*;
use drover_proto::v1 as proto;
use proto::plan_request::Request;

fn deploy_req(spec: String, version: &str) -> proto::DeployRequest {
    proto::DeployRequest {
        spec_toml: spec,
        version: version.into(),
        requested_by: "test".into(),
        ..Default::default()
    }
}

async fn plan(
    client: &mut proto::operator_client::OperatorClient<tonic::transport::Channel>,
    request: Request,
) -> Result<proto::PlanResponse, tonic::Status> {
    client
        .plan(proto::PlanRequest {
            request: Some(request),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn history(
    client: &mut proto::operator_client::OperatorClient<tonic::transport::Channel>,
) -> Vec<(String, i32)> {
    client
        .list_deployments(proto::ListDeploymentsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .deployments
        .into_iter()
        .map(|d| (d.id, d.state))
        .collect()
}

/// (host, stage, batch) of every row, sorted by host.
fn layout(hosts: &[proto::DeploymentHostInfo]) -> Vec<(String, u32, u32)> {
    let mut rows: Vec<_> = hosts
        .iter()
        .map(|h| (h.host.clone(), h.stage, h.batch))
        .collect();
    rows.sort();
    rows
}

fn staged_spec() -> String {
    spec("").replace(
        "[rollout]\nbatch_size = 2\n",
        "[rollout]\nbatch_size = 2\n[[rollout.stage]]\nhosts = \"1\"\nbake = \"30s\"\npromotion = \"manual\"\n[[rollout.stage]]\nhosts = \"100%\"\n",
    )
}

#[tokio::test]
async fn a_plan_sends_nothing_records_nothing_and_the_deploy_follows_it() {
    let c = Controller::start().await;
    let log = c.fleet(5, Script::default()).await;
    let mut client = c.client().await;
    let before = history(&mut client).await;

    let p = plan(
        &mut client,
        Request::Deploy(deploy_req(staged_spec(), "v2")),
    )
    .await
    .unwrap();
    assert_eq!((p.kind.as_str(), p.version.as_str()), ("deploy", "v2"));
    assert!(p.pulls);
    assert_eq!(p.hosts.len(), 5);
    assert!(p.hosts.iter().all(|h| h.from_version == "v1"));
    let stages: Vec<_> = p.stages.iter().map(|s| (s.hosts, s.manual)).collect();
    assert_eq!(stages, vec![(1, true), (4, false)]);
    assert_eq!(p.stages[0].bake_ms, 30_000);
    assert_eq!(p.max_out_of_rotation, 2);
    assert!(p.held_by.is_empty() && p.starts_ms == 0, "{p:?}");
    // `reg/web` lives on a registry the controller does not ask.
    assert!(p.pinned.is_empty());
    assert!(
        p.digest_note.starts_with("resolved at pull time"),
        "{}",
        p.digest_note
    );

    // Nothing happened: no command to any agent, nothing in the history, no lock.
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    assert_eq!(history(&mut client).await, before);
    let again = plan(
        &mut client,
        Request::Deploy(deploy_req(staged_spec(), "v2")),
    )
    .await
    .unwrap();
    assert_eq!(
        layout(&again.hosts),
        layout(&p.hosts),
        "a plan is deterministic"
    );

    // The deploy moves exactly the planned canary and batches.
    let id = start_deploy(&mut client, staged_spec(), "v2", 0).await;
    // The canary is done and bakes before the manual gate.
    let d = wait_state(&mut client, &id, proto::DeploymentState::Baking).await;
    assert_eq!(layout(&d.hosts), layout(&p.hosts));
    let canary: Vec<_> = p.hosts.iter().filter(|h| h.stage == 0).collect();
    let swapped: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, k, _)| *k == "swap")
        .map(|(h, _, _)| h.clone())
        .collect();
    assert_eq!(swapped, vec![canary[0].host.clone()]);

    // While it runs, a plan is refused as a deploy would be: the lock is held.
    let err = plan(&mut client, Request::Deploy(deploy_req(spec(""), "v3")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert!(err.message().contains(&id), "{}", err.message());
}

#[tokio::test]
async fn a_plan_is_refused_with_the_deploys_own_reason() {
    let c = Controller::start().await;
    c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let cases = [
        (spec("").replace("role=web", "role=db"), "v2", "role=db"),
        (spec("batch_sise = 1"), "v2", "batch_sise"),
        (spec(""), "v 2", "v 2"),
        (
            format!("{}\n[secrets]\nnames = [\"DB_PASSWORD\"]\n", spec("")),
            "v2",
            "drover secret set web DB_PASSWORD",
        ),
    ];
    for (text, version, needle) in cases {
        let planned = plan(
            &mut client,
            Request::Deploy(deploy_req(text.clone(), version)),
        )
        .await
        .unwrap_err();
        let deployed = client.deploy(deploy_req(text, version)).await.unwrap_err();
        assert!(
            planned.message().contains(needle),
            "{needle}: {}",
            planned.message()
        );
        assert_eq!(planned.code(), deployed.code(), "{needle}");
        assert_eq!(planned.message(), deployed.message(), "{needle}");
    }
    let err = plan(
        &mut client,
        Request::Rollback(proto::RollbackRequest {
            service: "web".into(),
            ..Default::default()
        }),
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("no successful deployment"),
        "{}",
        err.message()
    );
    assert!(history(&mut client).await.is_empty());
}

#[tokio::test]
async fn a_plan_says_when_a_closed_window_holds_the_deploy() {
    // Monday 2026-11-23 01:00 UTC; the window opens at 02:00 UTC.
    let clock = manual_clock("2026-11-23T01:00:00Z");
    let c =
        Controller::start_with(clock.shared(), tempfile::tempdir().unwrap(), "127.0.0.1:0").await;
    c.fleet(2, Script::default()).await;
    let mut client = c.client().await;
    let windowed = format!(
        "{}\n[[schedule.windows]]\ndays = [\"mon-fri\"]\nstart = \"02:00\"\nend = \"04:00\"\ntime_zone = \"UTC\"\n",
        spec("")
    );
    let p = plan(&mut client, Request::Deploy(deploy_req(windowed, "v2")))
        .await
        .unwrap();
    assert_eq!(p.windows, vec!["mon-fri 02:00-04:00 UTC"]);
    assert!(p.held_by.contains("closed now"), "{}", p.held_by);
    assert_eq!(p.starts_ms, clock.now_ms() + 3_600_000);
    assert!(history(&mut client).await.is_empty());
}

#[tokio::test]
async fn rollback_to_a_kept_version_restarts_it_and_refuses_one_not_kept() {
    let c = Controller::start().await;
    let log = c.fleet(3, Script::default()).await;
    let mut client = c.client().await;
    for v in ["v2", "v3"] {
        let d = deploy_and_wait(&mut client, spec(""), v).await;
        assert_eq!(d.state, proto::DeploymentState::Succeeded as i32, "{d:?}");
    }
    log.lock().unwrap().clear();
    let to = |v: &str| proto::RollbackRequest {
        service: "web".into(),
        requested_by: "test".into(),
        to_version: v.into(),
        ..Default::default()
    };

    let err = client.rollback(to("v9")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("v9") && err.message().contains("v2, v1, v0"),
        "names what every host keeps: {}",
        err.message()
    );
    let planned = plan(&mut client, Request::Rollback(to("v9")))
        .await
        .unwrap_err();
    assert_eq!(planned.message(), err.message());

    let p = plan(&mut client, Request::Rollback(to("v1")))
        .await
        .unwrap();
    assert_eq!((p.kind.as_str(), p.version.as_str()), ("rollback", "v1"));
    assert!(!p.pulls);
    // v1 ran before this controller rolled anything out: no digest recorded for it.
    assert_eq!((p.image.as_str(), p.pinned.as_str()), ("reg/web:v1", ""));
    assert!(p.digest_note.contains("not recorded"), "{}", p.digest_note);
    assert!(
        p.hosts
            .iter()
            .all(|h| h.from_version == "v3" && h.to_version == "v1")
    );
    assert!(log.lock().unwrap().is_empty());

    let r = client
        .rollback(to("v1"))
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    let r = wait_state(&mut client, &r.id, proto::DeploymentState::Succeeded).await;
    assert_eq!(r.version, "v1");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log.iter().all(|(_, k, v)| *k == "rollback" && v == "v1"),
        "no pull, back to v1: {log:?}"
    );
}

/// The `drover` binary against this controller, plaintext.
async fn drover(c: &Controller, args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"))
            .args(args)
            .args([
                "--controller",
                &format!("http://{}", c.addr),
                "--insecure-dev",
            ])
            .env_remove("DROVER_TOKEN")
            .output(),
    )
    .await
    .expect("the CLI answers")
    .expect("run drover");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_prints_the_plan_as_text_or_json_and_exits_2_when_refused() {
    let c = Controller::start().await;
    let log = c.fleet(3, Script::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("drover.toml");
    std::fs::write(&file, spec("")).unwrap();
    let file = file.to_str().unwrap();

    let (code, out, err) = drover(&c, &["deploy", "-f", file, "--version", "v2", "--plan"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("Plan: deploy of web v2 (nothing has been changed)"),
        "{out}"
    );
    assert!(out.contains("batch 1") && out.contains("batch 2"), "{out}");
    assert!(out.contains("h0") && out.contains("v1 -> v2"), "{out}");
    assert!(out.contains("3 targets: 3 change"), "{out}");
    assert!(
        out.contains(&format!("To do it: drover deploy -f {file} --version v2")),
        "{out}"
    );

    let (code, out, err) = drover(
        &c,
        &["deploy", "-f", file, "--version", "v2", "--plan", "--json"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["type"], "plan");
    assert_eq!(v["kind"], "deploy");
    assert_eq!(v["version"], "v2");
    assert_eq!(v["pinned"], serde_json::Value::Null);
    assert_eq!(v["changing_hosts"], 3);
    assert_eq!(v["max_out_of_rotation"], 2);
    let batches = v["stages"][0]["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[0]["batch"], 1);
    assert_eq!(batches[0]["hosts"][0]["host"], "h0");
    assert_eq!(batches[0]["hosts"][0]["from_version"], "v1");
    assert_eq!(batches[0]["hosts"][0]["changes"], true);

    std::fs::write(
        dir.path().join("drover.toml"),
        spec("").replace("role=web", "role=db"),
    )
    .unwrap();
    let (code, out, err) = drover(&c, &["deploy", "-f", file, "--version", "v2", "--plan"]).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("would be refused") && err.contains("role=db"),
        "{err}"
    );
    let (code, out, _) = drover(
        &c,
        &["deploy", "-f", file, "--version", "v2", "--plan", "--json"],
    )
    .await;
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["type"], "refused");
    assert!(v["reason"].as_str().unwrap().contains("role=db"), "{v}");

    let (code, _, err) = drover(&c, &["rollback", "web", "--to", "v0", "--plan"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no successful deployment"), "{err}");
    assert!(log.lock().unwrap().is_empty());
}
