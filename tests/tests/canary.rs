//! Staged canary rollouts, operator gates and schedules, end to end with real parts: the
//! `drover` CLI and controller, four real agents each publishing on its own 127.0.0.N,
//! the real Docker engine, a real registry with htpasswd auth, and a real HAProxy in
//! front, with HTTP load through HAProxy where the behaviour is about traffic.
//!
//! - a canary that answers 5xx is caught from HAProxy's counters during its bake and
//!   rolled back; every failed request is one of its own 500s, and no other host ran it;
//! - a canary that crashes after passing readiness is caught through its agent;
//! - a manual gate waits for `drover promote`, and `drover abort` there rolls back;
//! - `drover deploy --at` fires at its time (not before), after a controller that was
//!   SIGKILLed across that time comes back, and not at all once cancelled;
//! - a deploy window holds a deploy until a manual clock (controller in-process) opens it.
//!
//! Every test builds its own fleet (unique names, addresses and ports) so they run in
//! parallel, and removes its processes and containers when dropped, also on failure.
//! Tests wait on conditions with deadlines; where a test shows that something does NOT
//! happen, it waits a bounded time for it and expects the wait to run out.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use drover_controller::schedule::ManualClock;
use drover_controller::server::{ServeSettings, run as serve};
use drover_proto::v1 as proto;
use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::tls::{self, Identity, Role};
use drover_tests::docker::docker;
use drover_tests::fleet::{As, CLI_TIMEOUT, CliRun, Fleet, FleetOptions, now_ms, version_of};
use drover_tests::haproxy::{Haproxy, HaproxyOptions, SamplerGuard, Samples};
use drover_tests::load::{Load, LoadOptions, LoadReport};
use drover_tests::{Agent, DemoImage, DockerCleanup, Registry, wait_until};
use serde_json::Value;
use tokio::time::Instant;

/// How often the sampler reads HAProxy's server states.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// How long a deployment may take to reach a given state.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the loads may take to answer a given number of requests.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The canary's bake in the staged specs: long enough that a breach is caught inside it.
const BAKE: &str = "20s";
/// `[canary] interval` of the staged specs.
const INTERVAL: Duration = Duration::from_secs(1);
/// `$USER` of the CLI runs that steer deployments, so the history can be checked.
const OPERATOR: &str = "canary-operator";

/// A canary stage of one host baking [`BAKE`], then the rest of the fleet; canary
/// analysis every [`INTERVAL`], judged after a few requests.
fn staged(extra_canary: &str) -> String {
    format!(
        r#"
[[rollout.stage]]
hosts = "1"
bake = "{BAKE}"

[[rollout.stage]]
hosts = "100%"

[canary]
interval = "{}ms"
min_requests = 10
{extra_canary}
"#,
        INTERVAL.as_millis()
    )
}

// ----- traffic ---------------------------------------------------------------------

/// A tokio instant and the wall-clock time (Unix ms) it stands for, so load outcomes can
/// be compared with the controller's event times (both clocks are this machine's).
#[derive(Debug, Clone, Copy)]
struct Epoch {
    instant: Instant,
    wall_ms: u64,
}

impl Epoch {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    fn wall_ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.wall_ms + (at - self.instant).as_millis() as u64
        } else {
            self.wall_ms
                .saturating_sub((self.instant - at).as_millis() as u64)
        }
    }
}

/// HTTP through HAProxy (keep-alive and one connection per request) and HAProxy's
/// server states, recorded while a test acts.
struct Traffic {
    keep_alive: Load,
    close: Load,
    sampler: SamplerGuard,
    epoch: Epoch,
}

/// What the traffic saw.
struct Seen {
    keep_alive: LoadReport,
    close: LoadReport,
    samples: Samples,
    epoch: Epoch,
}

impl Traffic {
    /// Starts sampling and both loads; returns once requests flow through HAProxy.
    async fn start(fleet: &Fleet) -> Self {
        let load = |keep_alive| {
            let opts = LoadOptions {
                keep_alive,
                concurrency: 1,
                max_requests: 300_000,
                max_duration: Duration::from_secs(200),
                request_timeout: Duration::from_secs(5),
            };
            Load::start(fleet.haproxy().frontend_addr(), opts)
        };
        let t = Self {
            epoch: Epoch::now(),
            sampler: fleet.haproxy().sample_states(SAMPLE_EVERY),
            keep_alive: load(true),
            close: load(false),
        };
        t.more(50).await;
        t
    }

    /// Waits until both loads answered `n` more requests.
    async fn more(&self, n: u64) {
        let (ka, cl) = (self.keep_alive.completed(), self.close.completed());
        wait_until(
            LOAD_TIMEOUT,
            &format!("{n} more requests in both loads"),
            || async { self.keep_alive.completed() >= ka + n && self.close.completed() >= cl + n },
        )
        .await;
    }

    async fn stop(self) -> Seen {
        Seen {
            keep_alive: self.keep_alive.stop().await,
            close: self.close.stop().await,
            samples: self.sampler.stop().await,
            epoch: self.epoch,
        }
    }
}

/// Failure reasons counted by their first line.
fn by_kind(reasons: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in reasons {
        let line = r
            .lines()
            .find(|l| l.contains("HTTP") || !l.trim().is_empty());
        let key: String = line.unwrap_or(r).chars().take(80).collect();
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Failed requests by kind.
#[derive(Debug, Default)]
struct Failures {
    /// `500` answered by the canary version (its body names it).
    canary_500: u64,
    /// Any other HTTP status (e.g. HAProxy's own 502/503).
    other_http: Vec<String>,
    /// Connect, send, read errors and timeouts.
    connection: Vec<String>,
    /// Wall-clock time (Unix ms) of the first canary 500.
    first_canary_500_ms: Option<u64>,
    /// Wall-clock times of the first and last failure of any kind.
    span_ms: Option<(u64, u64)>,
}

impl Seen {
    fn reports(&self) -> [&LoadReport; 2] {
        [&self.keep_alive, &self.close]
    }

    fn requests(&self) -> u64 {
        self.keep_alive.sent + self.close.sent
    }

    /// Every failure, sorted into kinds; `canary_version` is what the canary's 500s name.
    fn failures(&self, canary_version: &str) -> Failures {
        let mut f = Failures::default();
        let marker = format!("version={canary_version}");
        for report in self.reports() {
            for (at, reason) in &report.failures {
                let ms = self.epoch.wall_ms(*at);
                f.span_ms = Some(match f.span_ms {
                    None => (ms, ms),
                    Some((a, b)) => (a.min(ms), b.max(ms)),
                });
                if reason.starts_with("HTTP 500") && reason.contains(&marker) {
                    f.canary_500 += 1;
                    f.first_canary_500_ms = Some(f.first_canary_500_ms.map_or(ms, |m| m.min(ms)));
                } else if reason.starts_with("HTTP ") {
                    f.other_http.push(reason.clone());
                } else {
                    f.connection.push(reason.clone());
                }
            }
        }
        f
    }

    /// The most servers Drover had out of rotation (admin state DRAIN or MAINT) in one
    /// sample. Read from the admin state rather than the health status: on this shared
    /// machine HAProxy's 100 ms check timeout sometimes marks an untouched host DOWN for
    /// a moment, which is no doing of the deploy (`crowded` shows those in messages).
    fn max_out(&self) -> usize {
        self.samples
            .samples
            .iter()
            .map(|s| {
                s.servers
                    .values()
                    .filter(|(_, admin)| *admin != AdminState::Ready)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// The samples with more than `n` servers out of rotation (status not UP), with
    /// their time and states, for messages.
    fn crowded(&self, n: usize) -> Vec<String> {
        self.samples
            .samples
            .iter()
            .filter(|s| {
                s.servers
                    .values()
                    .filter(|(st, _)| *st != OpStatus::Up)
                    .count()
                    > n
            })
            .map(|s| format!("{} ms: {:?}", self.epoch.wall_ms(s.at), s.servers))
            .collect()
    }

    /// Did any server leave rotation (status or admin state) before `wall_ms`?
    fn out_before(&self, wall_ms: u64) -> Vec<String> {
        self.samples
            .samples
            .iter()
            .filter(|s| self.epoch.wall_ms(s.at) < wall_ms)
            .flat_map(|s| s.out_of_rotation().into_iter().map(str::to_string))
            .collect()
    }

    fn summary(&self) -> String {
        format!(
            "keep-alive: {}\nclose: {}\nsamples: {}, max out of rotation {}, sampler errors {}; samples with more than one out: {:?}",
            self.keep_alive.summary(),
            self.close.summary(),
            self.samples.samples.len(),
            self.max_out(),
            self.samples.errors.len(),
            self.crowded(1)
        )
    }
}

// ----- reading the CLI's JSON --------------------------------------------------------

/// `name` as a JSON string field of `v`.
fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("")
}

/// Host name to phase, from a deployment snapshot.
fn phases(snapshot: &Value) -> BTreeMap<String, String> {
    snapshot["hosts"]
        .as_array()
        .expect("a snapshot lists its hosts")
        .iter()
        .map(|h| (field(h, "host").to_string(), field(h, "phase").to_string()))
        .collect()
}

/// The host of batch 1: the canary (the fleets roll in batches of one).
fn canary_of(snapshot: &Value) -> String {
    snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["batch"].as_u64() == Some(1))
        .map(|h| field(h, "host").to_string())
        .unwrap_or_else(|| panic!("no host in batch 1: {snapshot}"))
}

/// The events (`{"type": "event"}`) a following CLI printed.
fn events_of(run: &CliRun) -> Vec<Value> {
    run.json()
        .into_iter()
        .filter(|v| v["type"] == "event")
        .collect()
}

/// When the deployment entered `state`, from its events.
fn state_at(events: &[Value], state: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| e["state"] == state)
        .and_then(|e| e["at_ms"].as_u64())
}

/// The states a deployment went through, in order.
fn states(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["state"].as_str().map(str::to_string))
        .collect()
}

/// Every event of deployment `id`, replayed by the operator API's watch stream (the
/// deployment must have ended, or the stream would wait for more).
async fn recorded_events(fleet: &Fleet, id: &str) -> Vec<proto::DeploymentEvent> {
    watch_events(fleet.operator_client().await, id).await
}

async fn watch_events(
    mut client: OperatorClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<proto::DeploymentEvent> {
    let mut stream = client
        .watch(proto::WatchRequest {
            id: id.to_string(),
            after_seq: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("watch {id}: {s:?}"))
        .into_inner();
    let mut events = vec![];
    let read = async {
        while let Some(msg) = stream.message().await.expect("watch stream") {
            if let Some(proto::watch_event::Body::Event(e)) = msg.body {
                events.push(e);
            }
        }
    };
    tokio::time::timeout(STEP_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("the watch of {id} did not end: has it ended?"));
    events
}

async fn operator(url: &str) -> OperatorClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("controller url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    OperatorClient::new(channel)
}

/// `drover status ID --json --no-follow`: the deployment's snapshot now.
async fn status(fleet: &Fleet, id: &str) -> Value {
    fleet
        .drover(&["status", id, "--json", "--no-follow"])
        .await
        .final_snapshot()
}

/// States a deployment never leaves.
const TERMINAL: [&str; 5] = ["succeeded", "failed", "rolled_back", "cancelled", "skipped"];

/// Waits until deployment `id` ends; returns its snapshot.
async fn wait_terminal(fleet: &Fleet, id: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(fleet, id).await;
        if TERMINAL.contains(&field(&s, "state")) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "deployment {id} did not end within {timeout:?}: {s}\n{}",
            fleet.controller_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until deployment `id` is in `state`; panics with the last snapshot when the
/// time runs out or the deployment ends in another state.
async fn wait_state(fleet: &Fleet, id: &str, state: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = status(fleet, id).await;
        let now = field(&s, "state");
        if now == state {
            return s;
        }
        assert!(
            Instant::now() < deadline && !TERMINAL.contains(&now),
            "deployment {id} did not reach {state} (within {timeout:?}): {s}\n{}",
            fleet.controller_logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `drover <args>` as operator [`OPERATOR`] (a deployer's certificate from the fleet CA),
/// to its end.
async fn drover_as_operator(fleet: &Fleet, args: &[&str]) -> CliRun {
    let cert = fleet.dir().join(format!("{OPERATOR}.crt"));
    let key = fleet.dir().join(format!("{OPERATOR}.key"));
    if !cert.exists() {
        let issued = fleet
            .pki()
            .authority()
            .issue(
                &Identity::Operator {
                    name: OPERATOR.into(),
                    role: Role::Deployer,
                },
                Duration::from_secs(3600),
            )
            .expect("issue the operator's certificate");
        tls::write_private(&key, issued.key_pem.as_bytes()).expect("write the key");
        tls::write_public(&cert, issued.cert_pem.as_bytes()).expect("write the certificate");
    }
    fleet.drover_as(&As::Cert { cert, key }, args).await
}

/// Who the history names for [`drover_as_operator`]: the name in its certificate.
fn operator_id() -> String {
    OPERATOR.to_string()
}

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
    let at_gate = status(fleet, &id).await;
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
        field(&status(&fleet, &a).await, "state"),
        "scheduled",
        "before its time"
    );
    let a_done = wait_state(&fleet, &a, "succeeded", STEP_TIMEOUT).await;
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
    let c_now = status(&fleet, &c).await;
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
    let snapshot = wait_terminal(fleet, &id, STEP_TIMEOUT).await;
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

/// The controller served in this process on a manual clock. Dropping it stops it.
struct InProcessController {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessController {
    async fn start(clock: &ManualClock, database: std::path::PathBuf) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("address");
        let settings = ServeSettings {
            hub: Default::default(),
            deployer: Default::default(),
            database,
            shutdown_grace: Duration::from_secs(2),
            metrics: None,
            clock: clock.shared(),
            security: drover_controller::server::Security::InsecureDev,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            if let Err(e) = serve(listener, settings, async move {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("in-process controller stopped: {e}");
            }
        });
        Self {
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The flags that connect an agent to it, keeping its state in `state_dir`.
    fn agent_args(&self, state_dir: &std::path::Path) -> Vec<String> {
        vec![
            "--controller".into(),
            self.url(),
            "--insecure-dev".into(),
            "--state-dir".into(),
            state_dir.to_string_lossy().into_owned(),
        ]
    }

    /// Stops it gracefully (bounded).
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for InProcessController {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// `n` distinct loopback addresses and one port free on all of them.
fn loopback_ips_and_port(n: usize) -> (Vec<Ipv4Addr>, u16) {
    for _ in 0..20 {
        let mut ips: Vec<Ipv4Addr> = vec![];
        while ips.len() < n {
            let ip = drover_tests::loopback_host();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        let port = drover_tests::free_port(ips[0]);
        if ips.iter().all(|ip| TcpListener::bind((*ip, port)).is_ok()) {
            return (ips, port);
        }
    }
    panic!("no port free on {n} loopback addresses after 20 tries");
}

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
        let (ips, port) = loopback_ips_and_port(n);
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
