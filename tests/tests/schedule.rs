//! Scheduled deploys and deploy windows, end to end with real parts: the `drover` CLI and
//! controller, real agents each publishing on its own 127.0.0.N, the real Docker engine,
//! a real registry and a real HAProxy in front.
//!
//! - `drover deploy --at` fires at its time (not before), after a controller that was
//!   SIGKILLed across that time comes back, and not at all once cancelled;
//! - `drover schedule list` shows only deployments that wait;
//! - a deploy window holds a deploy until a manual clock (controller in-process) opens it.
//!
//! Every test builds its own fleet (unique names, addresses and ports) so they run in
//! parallel, and removes its processes and containers when dropped, also on failure.
//! Where a test shows that something does NOT happen, it waits a bounded time for it and
//! expects the wait to run out.

mod staged;

use std::net::SocketAddr;
use std::time::Duration;

use drover_controller::schedule::ManualClock;
use drover_proto::v1 as proto;
use drover_proto::v1::operator_client::OperatorClient;
use drover_tests::fleet::{
    Fleet, FleetOptions, InProcessController, field, now_ms, phases, version_of,
};
use drover_tests::haproxy::{Haproxy, HaproxyOptions};
use drover_tests::load::{Load, LoadOptions, LoadReport};
use drover_tests::{Agent, DemoImage, DockerCleanup, Registry, wait_until};
use serde_json::Value;
use staged::*;
use tokio::time::Instant;

// ----- 4. scheduled deploys with the real binary and real time ------------------------

/// `ms` (Unix) in RFC 3339, UTC, whole seconds.
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil from days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A whole second at least `after` from now, as Unix ms.
fn at_in(after: Duration) -> u64 {
    (now_ms() + after.as_millis() as u64).div_ceil(1000) * 1000
}

/// `drover deploy --at` of `version` at `at_ms`; returns the deployment id.
async fn schedule(fleet: &Fleet, version: &str, at_ms: u64) -> String {
    let spec = fleet.spec_path().to_string_lossy().into_owned();
    let at = rfc3339(at_ms);
    let run = drover_as_operator(
        fleet,
        &[
            "deploy",
            "-f",
            &spec,
            "--version",
            version,
            "--at",
            &at,
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let started = run
        .json()
        .into_iter()
        .find(|v| v["type"] == "started")
        .unwrap_or_else(|| panic!("no id printed: {}", run.describe()));
    assert!(
        now_ms() < at_ms,
        "scheduling {at} took too long: {}",
        run.describe()
    );
    field(&started, "id").to_string()
}

/// `drover schedule list --json`: (id, state) of every deployment it lists.
async fn schedule_list(fleet: &Fleet) -> Vec<(String, String)> {
    let run = fleet.drover(&["schedule", "list", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.json()
        .iter()
        .map(|v| (field(v, "id").to_string(), field(v, "state").to_string()))
        .collect()
}

/// The ids `drover schedule list` shows as waiting. The state filter should not be
/// needed, but the controller lists every deployment there (see
/// `schedule_list_shows_only_deployments_that_wait`).
async fn scheduled_ids(fleet: &Fleet) -> Vec<String> {
    schedule_list(fleet)
        .await
        .into_iter()
        .filter(|(_, state)| state == "scheduled")
        .map(|(id, _)| id)
        .collect()
}

/// Every host row of the snapshot started at or after `at_ms`.
fn hosts_started_after(snapshot: &Value, at_ms: u64) -> bool {
    snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .all(|h| h["started_ms"].as_u64().is_some_and(|s| s >= at_ms))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_deploys_fire_on_time_across_a_controller_kill_and_not_once_cancelled() {
    let mut fleet = Fleet::start(FleetOptions {
        batch_size: "2",
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let epoch = Epoch::now();
    let sampler = fleet.haproxy().sample_states(SAMPLE_EVERY);

    // C: scheduled, then cancelled: it never runs.
    let c_at = at_in(Duration::from_secs(3));
    let c = schedule(&fleet, "v2", c_at).await;
    assert!(scheduled_ids(&fleet).await.contains(&c));
    let cancel = drover_as_operator(&fleet, &["schedule", "cancel", &c]).await;
    assert_eq!(cancel.code, Some(0), "{}", cancel.describe());
    assert!(cancel.stdout.contains("cancelled"), "{}", cancel.describe());
    assert!(!scheduled_ids(&fleet).await.contains(&c));

    // A: listed, then fires at its time, not before.
    let a_at = at_in(Duration::from_secs(4));
    let a = schedule(&fleet, "v2", a_at).await;
    let listed = fleet.drover(&["schedule", "list"]).await;
    assert!(
        listed.stdout.contains(&a) && listed.stdout.contains(&rfc3339(a_at)),
        "{}",
        listed.describe()
    );
    assert_eq!(
        field(&fleet.status(&a).await, "state"),
        "scheduled",
        "before its time"
    );
    let a_done = fleet.wait_state(&a, "succeeded", STEP_TIMEOUT).await;
    let fired = now_ms();
    let samples = sampler.stop().await;
    let seen = Seen {
        keep_alive: LoadReport::default(),
        close: LoadReport::default(),
        samples,
        epoch,
    };
    let a_events = recorded_events(&fleet, &a).await;
    let a_start = a_events
        .iter()
        .find(|e| e.message == "start time reached")
        .map(|e| e.at_ms);
    eprintln!(
        "scheduled A for {} ({a_at}): started at {a_start:?} (+{:?} ms), succeeded by {fired}; HAProxy samples {}",
        rfc3339(a_at),
        a_start.map(|s| s as i64 - a_at as i64),
        seen.samples.samples.len()
    );
    assert!(
        a_start.is_some_and(|s| s >= a_at),
        "A started before its time: {a_events:?}"
    );
    assert!(
        hosts_started_after(&a_done, a_at),
        "a host changed before {a_at}: {a_done}"
    );
    let early = seen.out_before(a_at);
    assert!(
        early.is_empty(),
        "servers out of rotation before A's time: {early:?}"
    );
    assert!(!seen.samples.samples.is_empty());
    fleet.assert_serves("v2").await;

    // C's time has passed and it stayed cancelled, untouched.
    assert!(now_ms() > c_at);
    let c_now = fleet.status(&c).await;
    assert_eq!(field(&c_now, "state"), "cancelled", "{c_now}");
    assert!(
        phases(&c_now).values().all(|p| p == "pending"),
        "a cancelled deploy touched a host: {c_now}"
    );
    let c_events = recorded_events(&fleet, &c).await;
    assert!(
        c_events.iter().any(|e| e
            .message
            .contains(&format!("cancelled by {}", operator_id())))
            && !c_events.iter().any(|e| e.message == "start time reached"),
        "{c_events:?}"
    );

    // B: the controller is SIGKILLed right after scheduling it and comes back only
    // after its time has passed; B fires after the restart (missed = "run").
    let b = across_a_controller_kill(&mut fleet, "v1").await;
    let b_state = field(&b.snapshot, "state").to_string();
    let history = fleet.history_json().await;
    let outcome = |id: &str| {
        history
            .iter()
            .find(|d| field(d, "id") == id)
            .map(|d| field(d, "state").to_string())
    };
    assert_eq!(
        (outcome(&a), outcome(&b.id), outcome(&c)),
        (
            Some("succeeded".into()),
            Some(b_state.clone()),
            Some("cancelled".into())
        ),
        "the history records all three: {history:?}"
    );
    assert!(scheduled_ids(&fleet).await.is_empty());
    // Whether B finishes is `a_deploy_scheduled_across_a_controller_kill_succeeds`'s
    // concern; here: the fleet is where B's outcome says.
    if b_state == "succeeded" {
        fleet.assert_serves("v1").await;
    } else {
        assert!(
            phases(&b.snapshot)
                .values()
                .all(|p| p == "pending" || p == "prepared" || p == "rolled_back"),
            "{}",
            b.snapshot
        );
        fleet.assert_serves("v2").await;
    }
}

/// A deploy scheduled right before the controller is SIGKILLed, and where it ended.
struct AcrossKill {
    id: String,
    /// Its final snapshot.
    snapshot: Value,
}

/// Schedules `version` 5 s ahead, SIGKILLs the controller at once, waits until the start
/// time has passed, restarts the controller and waits for the deploy to end. Checks
/// that it fired after the restart (and only then), under a new epoch.
async fn across_a_controller_kill(fleet: &mut Fleet, version: &str) -> AcrossKill {
    let at = at_in(Duration::from_secs(5));
    let id = schedule(fleet, version, at).await;
    fleet.kill_controller();
    wait_until(
        Duration::from_secs(15),
        "the start time to pass while the controller is down",
        || async { now_ms() > at + 300 },
    )
    .await;
    let restarted = now_ms();
    fleet.start_controller().await;
    let snapshot = fleet.wait_terminal(&id, STEP_TIMEOUT).await;
    let events = recorded_events(fleet, &id).await;
    let started = events
        .iter()
        .find(|e| e.message == "start time reached")
        .map(|e| e.at_ms);
    eprintln!(
        "scheduled {id} ({version}) for {}, controller killed, restarted {} ms late: start time reached at {started:?}, epoch {}, ended {}: {}",
        rfc3339(at),
        restarted - at,
        snapshot["epoch"],
        field(&snapshot, "state"),
        field(&snapshot, "error")
    );
    assert!(
        snapshot["epoch"].as_u64() >= Some(2),
        "resumed under a new epoch: {snapshot}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("controller restarted"))
            && started.is_some_and(|s| s >= restarted),
        "it fired after the restart: {events:?}"
    );
    assert!(
        snapshot["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .all(|h| h["started_ms"]
                .as_u64()
                .is_none_or(|s| s == 0 || s >= restarted)),
        "a host changed before the restart: {snapshot}"
    );
    AcrossKill { id, snapshot }
}

/// The full expectation for a deploy whose time passed while the controller was down:
/// it fires after the restart and finishes. Credentials given to the CLI are never stored,
/// so the restarted controller pulls with the ones it holds (`--registry-auth-file`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_scheduled_across_a_controller_kill_succeeds() {
    let mut fleet = Fleet::start(FleetOptions {
        batch_size: "2",
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let b = across_a_controller_kill(&mut fleet, "v2").await;
    assert_eq!(
        field(&b.snapshot, "state"),
        "succeeded",
        "{}\n{}",
        b.snapshot,
        fleet.controller_logs()
    );
    fleet.assert_serves("v2").await;
}

/// `drover schedule list` is for deployments waiting for their time or a window; a
/// finished one does not belong there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_list_shows_only_deployments_that_wait() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 1,
        images: &[DemoImage::V1],
        ..Default::default()
    })
    .await;
    let listed = schedule_list(&fleet).await;
    assert!(
        listed.is_empty(),
        "nothing waits, yet `drover schedule list` lists {listed:?}"
    );
}

// ----- 5. a deploy window, with the controller in-process on a manual clock ----------

/// A fleet around an in-process controller. Fields drop in declaration order: the
/// controller, the agents, their containers, HAProxy, the registry, the directory.
struct WindowFleet {
    controller: InProcessController,
    agents: Vec<Agent>,
    _cleanup: DockerCleanup,
    haproxy: Haproxy,
    registry: Registry,
    _dir: tempfile::TempDir,
    hosts: Vec<(String, SocketAddr)>,
    role: String,
}

impl WindowFleet {
    async fn start(clock: &ManualClock, n: usize) -> Self {
        tokio::task::spawn_blocking(drover_tests::ensure_demo_images)
            .await
            .expect("building the demo images panicked");
        let role = drover_tests::unique_name("window");
        let (ips, port) = drover_tests::fleet::loopback_ips_and_port(n);
        let hosts: Vec<(String, SocketAddr)> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("{role}-{}", i + 1), SocketAddr::from((*ip, port))))
            .collect();
        let mut cleanup = DockerCleanup::default();
        for (name, _) in &hosts {
            cleanup.agent(name);
        }
        let registry = Registry::start().await;
        for v in [DemoImage::V1, DemoImage::V2] {
            registry.push_demo(v).await;
        }
        let servers: Vec<(&str, SocketAddr)> =
            hosts.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        // As in the fleet: checks of `GET /ready` get 1 s (`inter`) to answer, so a
        // loaded machine does not fail untouched hosts; transitions still show quickly.
        let opts = HaproxyOptions {
            check_path: "/ready".to_string(),
            check_params: "inter 1s fastinter 100ms downinter 100ms rise 2 fall 2".to_string(),
            ..HaproxyOptions::default()
        };
        let haproxy = Haproxy::start("web", &servers, opts).await;
        let dir = tempfile::Builder::new()
            .prefix("drover-window-")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "").expect("write agent.toml");
        let controller = InProcessController::start(clock, dir.path().join("drover.db")).await;
        let config = config.to_string_lossy().into_owned();
        let agents = hosts
            .iter()
            .map(|(name, addr)| {
                let ip = addr.ip().to_string();
                let state = dir.path().join(name);
                Agent::spawn(
                    &controller.agent_args(&state),
                    name,
                    &[("role", role.as_str())],
                    &["--advertise", &ip, "--config", &config],
                )
            })
            .collect();
        let fleet = Self {
            controller,
            agents,
            _cleanup: cleanup,
            haproxy,
            registry,
            _dir: dir,
            hosts,
            role,
        };
        let client = fleet.client().await;
        let names: Vec<String> = fleet.hosts.iter().map(|(n, _)| n.clone()).collect();
        let connected = drover_tests::poll(Duration::from_secs(40), || {
            let mut client = client.clone();
            let names = names.clone();
            async move {
                let hosts = client
                    .list_hosts(proto::ListHostsRequest::default())
                    .await
                    .map_err(|s| s.to_string())?
                    .into_inner()
                    .hosts;
                let missing: Vec<&String> = names
                    .iter()
                    .filter(|n| !hosts.iter().any(|h| &h.name == *n && h.connected))
                    .collect();
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!("not connected: {missing:?}"))
                }
            }
        })
        .await;
        if let Err(e) = connected {
            panic!("{e}\n{}", fleet.logs());
        }
        fleet
    }

    async fn client(&self) -> OperatorClient<tonic::transport::Channel> {
        operator(&self.controller.url()).await
    }

    fn logs(&self) -> String {
        self.agents
            .iter()
            .map(Agent::logs)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The service spec, with `extra` appended.
    fn spec(&self, extra: &str) -> String {
        format!(
            r#"[service]
name = "web"
image = "{registry}/demo"
port = 8080
host_ip = "advertise"
host_port = {port}

[targets]
selector = "role={role}"

[readiness]
interval = "100ms"
timeout = "1s"
deadline = "15s"

[rollout]
batch_size = "2"
stop_timeout = "2s"
drain_timeout = "5s"
up_timeout = "30s"
pull_timeout = "60s"

[load_balancer]
runtime = ["unix:{socket}"]
backend = "web"
{extra}"#,
            registry = self.registry.host(),
            port = self.hosts[0].1.port(),
            role = self.role,
            socket = self.haproxy.admin_socket().display(),
        )
    }

    /// Starts a deploy of `version`; returns what the controller recorded.
    async fn deploy(&self, spec: String, version: &str) -> proto::DeploymentInfo {
        self.client()
            .await
            .deploy(proto::DeployRequest {
                spec_toml: spec,
                version: version.to_string(),
                requested_by: "window-test".into(),
                registry_auth: Some(self.registry.auth()),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("deploy {version} refused: {s:?}"))
            .into_inner()
            .deployment
            .expect("the deployment")
    }

    async fn get(&self, id: &str) -> proto::DeploymentInfo {
        self.client()
            .await
            .get_deployment(proto::GetDeploymentRequest { id: id.to_string() })
            .await
            .unwrap_or_else(|s| panic!("get {id}: {s:?}"))
            .into_inner()
    }

    async fn wait_state(&self, id: &str, state: proto::DeploymentState) -> proto::DeploymentInfo {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let d = self.get(id).await;
            if d.state == state as i32 {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} did not reach {state:?}: {d:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The version each host answers on its own address.
    async fn versions(&self) -> Vec<Result<String, String>> {
        let mut out = vec![];
        for (_, addr) in &self.hosts {
            out.push(version_of(*addr).await);
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_window_holds_the_rollout_until_the_manual_clock_opens_it() {
    // Monday 2026-11-23 01:00 UTC; the window opens at 02:00 UTC.
    let clock = ManualClock::new("2026-11-23T01:00:00Z".parse().expect("a timestamp"));
    let fleet = WindowFleet::start(&clock, 3).await;
    let first = fleet.deploy(fleet.spec(""), "v1").await;
    fleet
        .wait_state(&first.id, proto::DeploymentState::Succeeded)
        .await;
    fleet.haproxy.wait_all_up(Duration::from_secs(30)).await;
    let load = Load::start(
        fleet.haproxy.frontend_addr(),
        LoadOptions {
            concurrency: 1,
            max_requests: 200_000,
            max_duration: Duration::from_secs(120),
            ..Default::default()
        },
    );
    let epoch = Epoch::now();
    let sampler = fleet.haproxy.sample_states(SAMPLE_EVERY);

    let windowed = fleet.spec(
        "\n[[schedule.windows]]\ndays = [\"mon-fri\"]\nstart = \"02:00\"\nend = \"04:00\"\ntime_zone = \"UTC\"\n",
    );
    let d = fleet.deploy(windowed, "v2").await;
    assert_eq!(d.state, proto::DeploymentState::Scheduled as i32, "{d:?}");
    // The hold is recorded with when the window opens.
    let held = drover_tests::wait_for(STEP_TIMEOUT, "the window hold", || async {
        let d = fleet.get(&d.id).await;
        if d.hold.contains("window") {
            Ok(d)
        } else {
            Err(format!("{d:?}"))
        }
    })
    .await;
    assert!(
        held.hold.contains("2026-11-23T02:00:00"),
        "the hold says when: {}",
        held.hold
    );
    // Nothing moves while the window is closed: wait a bounded time for any change and
    // expect the wait to run out.
    let moved = drover_tests::poll(Duration::from_secs(3), || async {
        let d = fleet.get(&d.id).await;
        let touched = d.state != proto::DeploymentState::Scheduled as i32
            || d.hosts
                .iter()
                .any(|h| h.started_ms > 0 || h.phase != proto::HostPhase::Pending as i32);
        if touched { Ok(d) } else { Err(()) }
    })
    .await;
    assert!(
        moved.is_err(),
        "the deploy moved with the window closed: {moved:?}"
    );
    assert!(
        fleet
            .versions()
            .await
            .iter()
            .all(|v| v.as_deref() == Ok("v1")),
        "{:?}",
        fleet.versions().await
    );
    let listed = fleet
        .client()
        .await
        .list_deployments(proto::ListDeploymentsRequest {
            scheduled_only: true,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list scheduled")
        .into_inner()
        .deployments;
    assert!(listed.iter().any(|l| l.id == d.id), "{listed:?}");

    // The window opens.
    let opened = now_ms();
    clock.advance(Duration::from_secs(3600));
    let done = fleet
        .wait_state(&d.id, proto::DeploymentState::Succeeded)
        .await;
    let samples = sampler.stop().await;
    let report = load.stop().await;
    let events = watch_events(fleet.client().await, &d.id).await;
    eprintln!(
        "window: held until the clock moved at {opened}; {} ms to succeeded; load {}",
        done.finished_ms.saturating_sub(opened),
        report.summary()
    );
    assert!(
        done.hosts.iter().all(|h| h.started_ms >= opened),
        "a host moved before the window opened: {done:?}"
    );
    let early: Vec<&str> = samples
        .samples
        .iter()
        .filter(|s| epoch.wall_ms(s.at) < opened)
        .flat_map(|s| s.out_of_rotation())
        .collect();
    assert!(
        early.is_empty(),
        "out of rotation before the window: {early:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("held until the deploy window opens"))
            && events
                .iter()
                .any(|e| e.message == "start time reached" && e.at_ms >= opened),
        "{events:?}"
    );
    assert_eq!(report.failed, 0, "{}", report.summary());
    assert!(
        fleet
            .versions()
            .await
            .iter()
            .all(|v| v.as_deref() == Ok("v2")),
        "{:?}",
        fleet.versions().await
    );
    fleet.controller.shutdown().await;
}
