//! Start-first handover (`rollout.order = "start-first"`) against real Docker, registry
//! and HAProxy, under keep-alive and close-per-request load: the new container starts
//! next to the old one on the service's other host port, HAProxy is pointed at it, and
//! the old one is stopped once its connections end. No server ever leaves rotation.

use std::net::SocketAddr;
use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use drover_tests::fleet::{CliRun, Fleet, FleetOptions, field, host_in_batch, phases};
use drover_tests::traffic::{Seen, Traffic};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The demo app's slow endpoint takes this long: longer than the spec's `stop_timeout`
/// (2 s), so a stop that did not wait for the old container's connections would cut it.
const SLOW_MS: u64 = 4000;

/// The fleet's spec, start-first: `host_ports = [P, P + 1]`.
fn start_first_spec(fleet: &Fleet, batch_size: &str) -> String {
    fleet.start_first_spec_toml(batch_size)
}

/// `drover <args...> -f <spec> --json` in the background, with the start-first spec.
fn spawn_with_spec(fleet: &Fleet, spec: &str, args: &[&str]) -> drover_tests::fleet::RunningCli {
    let path = fleet.write_spec("start-first.toml", spec);
    let path = path.to_string_lossy().into_owned();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-f", &path, "--json"]);
    fleet.spawn_drover(&all)
}

/// The running containers of `web` on every host, by host name.
async fn running(fleet: &Fleet) -> Vec<(String, Vec<String>)> {
    let mut out = vec![];
    for i in 0..fleet.hosts().len() {
        let up: Vec<String> = fleet
            .containers(i)
            .await
            .into_iter()
            .filter(|l| l.split_whitespace().nth(1) == Some("running"))
            .collect();
        out.push((fleet.host(i).name.clone(), up));
    }
    out
}

/// Every host runs exactly one container of the service, of `version`; HAProxy has every
/// server UP and READY and answers only `version`.
async fn assert_one_container_serving(fleet: &Fleet, version: &str) {
    for (host, up) in running(fleet).await {
        assert!(
            up.len() == 1 && up[0].split_whitespace().nth(2) == Some(version),
            "{host} runs {up:?}, expected one container of {version}"
        );
    }
    let servers = fleet.servers().await;
    assert!(
        servers
            .values()
            .all(|s| *s == (OpStatus::Up, AdminState::Ready)),
        "{servers:?}"
    );
    let through = fleet.lb_versions(2 * fleet.hosts().len()).await;
    assert_eq!(
        through.keys().collect::<Vec<_>>(),
        [version],
        "through HAProxy"
    );
}

/// Lets `traffic` answer 200 more requests, stops it, and asserts that none failed and
/// that no sample saw a server out of rotation.
async fn assert_no_request_failed_and_none_left_rotation(traffic: Traffic, what: &str) {
    traffic.more(200).await;
    let seen = traffic.stop().await;
    eprintln!(
        "{what}: {} requests, {} failed\n{}",
        seen.requests(),
        seen.failed(),
        seen.summary()
    );
    seen.assert_no_failed_request();
    assert_never_out_of_rotation(&seen);
}

/// No sample saw a server out of rotation: not DOWN, not drained, not in maintenance.
fn assert_never_out_of_rotation(seen: &Seen) {
    assert_eq!(seen.max_out(), 0, "{}", seen.summary());
    let admin_out = seen
        .samples
        .samples
        .iter()
        .map(|s| s.out_of_rotation().len())
        .max()
        .unwrap_or(0);
    assert_eq!(admin_out, 0, "admin state: {}", seen.summary());
    assert!(
        seen.samples.samples.len() > 20,
        "too few samples: {}",
        seen.summary()
    );
}

fn assert_succeeded(run: &CliRun, fleet: &Fleet) -> Value {
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
    snapshot
}

/// `GET /slow/<ms>` through `addr` on its own connection, with room for the wait.
async fn slow_request(addr: SocketAddr, ms: u64) -> Result<String, String> {
    assert!(addr.ip().is_loopback());
    let work = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET /slow/{ms} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, String>(String::from_utf8_lossy(&raw).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_millis(ms) + Duration::from_secs(20), work)
        .await
        .map_err(|_| "no answer in time".to_string())??;
    if answer.starts_with("HTTP/1.1 200") && answer.contains(&format!("slow={ms}")) {
        Ok(answer)
    } else {
        Err(format!("answered {answer:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_first_hands_over_and_back_without_a_server_leaving_rotation() {
    let fleet = Fleet::start(FleetOptions::default()).await;
    let spec = start_first_spec(&fleet, "1");
    let traffic = Traffic::start(&fleet).await;

    // Long requests in flight on every host while the first batch starts: each must
    // complete, answered by the old container that its handover leaves running until
    // its connections end.
    let mut deploy = spawn_with_spec(&fleet, &spec, &["deploy", "--version", "v2"]);
    deploy
        .wait_json(STEP_TIMEOUT, "the first host swapping", |v| {
            v["type"] == "event" && v["phase"] == "swapping"
        })
        .await;
    let frontend = fleet.haproxy().frontend_addr();
    let slow: Vec<_> = (0..2 * fleet.hosts().len())
        .map(|_| tokio::spawn(slow_request(frontend, SLOW_MS)))
        .collect();
    let run = deploy.finish(STEP_TIMEOUT).await;
    let snapshot = assert_succeeded(&run, &fleet);
    let mut slow_failed = vec![];
    for s in slow {
        if let Err(e) = s.await.expect("slow request task") {
            slow_failed.push(e);
        }
    }
    traffic.more(200).await;
    assert!(
        slow_failed.is_empty(),
        "long requests cut by the handover: {slow_failed:?}"
    );
    assert_one_container_serving(&fleet, "v2").await;
    // Every host's step times say how the old container went.
    let handovers: Vec<String> = run
        .json()
        .iter()
        .filter(|v| v["type"] == "event")
        .filter_map(|v| v["message"].as_str())
        .filter(|m| m.contains("UP on the new port after"))
        .map(str::to_string)
        .collect();
    eprintln!(
        "start-first v1 -> v2 in {:?} ({}): {handovers:#?}",
        run.took,
        field(&snapshot, "id")
    );
    assert_eq!(handovers.len(), fleet.hosts().len(), "{}", run.describe());

    // A rollback is the same handover in reverse: no pull, nothing out of rotation.
    // The rollback takes the spec of the deployment it undoes: start-first.
    let back = fleet
        .spawn_drover(&["rollback", "web", "--json"])
        .finish(STEP_TIMEOUT)
        .await;
    assert_succeeded(&back, &fleet);
    assert!(
        !back.describe().contains("pulling"),
        "a rollback pulls nothing: {}",
        back.describe()
    );
    assert_no_request_failed_and_none_left_rotation(traffic, "start-first and back").await;
    assert_one_container_serving(&fleet, "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_ready_version_is_removed_and_the_old_container_keeps_serving() {
    let fleet = Fleet::start(FleetOptions {
        readiness_deadline: Duration::from_secs(3),
        ..Default::default()
    })
    .await;
    let spec = start_first_spec(&fleet, "1");
    let traffic = Traffic::start(&fleet).await;
    let before: Vec<Vec<String>> = {
        let mut all = vec![];
        for i in 0..fleet.hosts().len() {
            all.push(fleet.containers(i).await);
        }
        all
    };
    let run = spawn_with_spec(&fleet, &spec, &["deploy", "--version", "never-ready"])
        .finish(STEP_TIMEOUT)
        .await;
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let snapshot = run.final_snapshot();
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    assert_no_request_failed_and_none_left_rotation(traffic, "a never-ready version").await;
    // The never-ready container is gone; the hosts run what they ran before, untouched.
    for (i, was) in before.iter().enumerate() {
        assert_eq!(&fleet.containers(i).await, was, "host {i}");
    }
    assert_one_container_serving(&fleet, "v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_and_an_agent_killed_mid_handover_end_with_one_container_pointed_at() {
    let mut fleet = Fleet::start(FleetOptions::default()).await;
    let spec = start_first_spec(&fleet, "1");
    let traffic = Traffic::start(&fleet).await;

    // The controller, killed while the host of batch 2 runs both containers.
    let (deploy, _) = deploy_until_both_run(&fleet, &spec, "v2").await;
    fleet.restart_controller().await;
    let run = deploy.finish(STEP_TIMEOUT).await;
    assert_succeeded(&run, &fleet);
    assert_one_container_serving(&fleet, "v2").await;

    // The agent of the host of batch 2, killed while it runs both containers.
    let (deploy, victim) = deploy_until_both_run(&fleet, &spec, "v1").await;
    fleet.kill_agent(victim);
    fleet.start_agent(victim).await;
    let run = deploy.finish(STEP_TIMEOUT).await;
    assert_succeeded(&run, &fleet);

    assert_no_request_failed_and_none_left_rotation(traffic, "killed mid-handover").await;
    assert_one_container_serving(&fleet, "v1").await;
}

/// Starts a start-first deploy of `version` and returns once the host of batch 2 runs
/// two containers of the service (mid-handover), with that host's index.
async fn deploy_until_both_run(
    fleet: &Fleet,
    spec: &str,
    version: &str,
) -> (drover_tests::fleet::RunningCli, usize) {
    let mut deploy = spawn_with_spec(fleet, spec, &["deploy", "--version", version]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let second = host_in_batch(&first, 1);
    let victim = fleet.index_of(&second);
    deploy
        .wait_json(STEP_TIMEOUT, &format!("{second} swapping"), |v| {
            v["host"] == second.as_str() && v["phase"] == "swapping"
        })
        .await;
    drover_tests::wait_until(
        STEP_TIMEOUT,
        &format!("two containers running on {second}"),
        || async {
            let up = fleet.containers(victim).await;
            up.iter()
                .filter(|l| l.split_whitespace().nth(1) == Some("running"))
                .count()
                == 2
        },
    )
    .await;
    (deploy, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_port_taken_by_another_process_is_refused_naming_the_key() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 2,
        ..Default::default()
    })
    .await;
    let spec = start_first_spec(&fleet, "1");
    // The plan says no host leaves rotation.
    let path = fleet.write_spec("plan.toml", &spec);
    let path = path.to_string_lossy().into_owned();
    let plan = fleet
        .drover(&["deploy", "-f", &path, "--version", "v2", "--plan"])
        .await;
    assert!(
        plan.code == Some(0)
            && plan
                .stdout
                .contains("no host leaves rotation (start-first)"),
        "{}",
        plan.describe()
    );
    // Something else holds host 0's alternate port.
    let h0 = fleet.host(0);
    let taken = std::net::TcpListener::bind((h0.ip, h0.addr.port() + 1)).expect("bind");
    let before = fleet.containers(0).await;
    let run = spawn_with_spec(&fleet, &spec, &["deploy", "--version", "v2"])
        .finish(STEP_TIMEOUT)
        .await;
    drop(taken);
    assert_ne!(run.code, Some(0), "{}", run.describe());
    let text = run.describe();
    assert!(
        text.contains("already in use") && text.contains("service.host_ports"),
        "{text}"
    );
    assert_eq!(fleet.containers(0).await, before, "host 0 untouched");
    assert_one_container_serving(&fleet, "v1").await;
}
