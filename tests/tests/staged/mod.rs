//! What the staged-rollout and schedule tests share: their spec, load split into epochs
//! around the controller's events, readers of the CLI's JSON, and the operator identity.
#![allow(dead_code)] // each test file uses part of it

use std::collections::BTreeMap;
use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use drover_proto::v1 as proto;
use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::tls::{self, Identity, Role};
use drover_tests::fleet::{As, CliRun, Fleet, field, now_ms};
use drover_tests::haproxy::{SamplerGuard, Samples};
use drover_tests::load::{Load, LoadOptions, LoadReport};
use drover_tests::wait_until;
use serde_json::Value;
use tokio::time::Instant;

/// How often the sampler reads HAProxy's server states.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(25);
/// How long a deployment may take to reach a given state.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long the loads may take to answer a given number of requests.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// The canary's bake in the staged specs: long enough that a breach is caught inside it.
pub const BAKE: &str = "20s";
/// `[canary] interval` of the staged specs.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// `$USER` of the CLI runs that steer deployments, so the history can be checked.
pub const OPERATOR: &str = "canary-operator";

/// A canary stage of one host baking [`BAKE`], then the rest of the fleet; canary
/// analysis every [`INTERVAL`], judged after a few requests.
pub fn staged(extra_canary: &str) -> String {
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
pub struct Epoch {
    pub instant: Instant,
    pub wall_ms: u64,
}

impl Epoch {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall_ms: now_ms(),
        }
    }

    pub fn wall_ms(&self, at: Instant) -> u64 {
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
pub struct Traffic {
    pub keep_alive: Load,
    pub close: Load,
    pub sampler: SamplerGuard,
    pub epoch: Epoch,
}

/// What the traffic saw.
pub struct Seen {
    pub keep_alive: LoadReport,
    pub close: LoadReport,
    pub samples: Samples,
    pub epoch: Epoch,
}

impl Traffic {
    /// Starts sampling and both loads; returns once requests flow through HAProxy.
    pub async fn start(fleet: &Fleet) -> Self {
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
    pub async fn more(&self, n: u64) {
        let (ka, cl) = (self.keep_alive.completed(), self.close.completed());
        wait_until(
            LOAD_TIMEOUT,
            &format!("{n} more requests in both loads"),
            || async { self.keep_alive.completed() >= ka + n && self.close.completed() >= cl + n },
        )
        .await;
    }

    pub async fn stop(self) -> Seen {
        Seen {
            keep_alive: self.keep_alive.stop().await,
            close: self.close.stop().await,
            samples: self.sampler.stop().await,
            epoch: self.epoch,
        }
    }
}

/// Failure reasons counted by their first line.
pub fn by_kind(reasons: &[String]) -> BTreeMap<String, usize> {
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
pub struct Failures {
    /// `500` answered by the canary version (its body names it).
    pub canary_500: u64,
    /// Any other HTTP status (e.g. HAProxy's own 502/503).
    pub other_http: Vec<String>,
    /// Connect, send, read errors and timeouts.
    pub connection: Vec<String>,
    /// Wall-clock time (Unix ms) of the first canary 500.
    pub first_canary_500_ms: Option<u64>,
    /// Wall-clock times of the first and last failure of any kind.
    pub span_ms: Option<(u64, u64)>,
}

impl Seen {
    pub fn reports(&self) -> [&LoadReport; 2] {
        [&self.keep_alive, &self.close]
    }

    pub fn requests(&self) -> u64 {
        self.keep_alive.sent + self.close.sent
    }

    /// Every failure, sorted into kinds; `canary_version` is what the canary's 500s name.
    pub fn failures(&self, canary_version: &str) -> Failures {
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
    pub fn max_out(&self) -> usize {
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
    pub fn crowded(&self, n: usize) -> Vec<String> {
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
    pub fn out_before(&self, wall_ms: u64) -> Vec<String> {
        self.samples
            .samples
            .iter()
            .filter(|s| self.epoch.wall_ms(s.at) < wall_ms)
            .flat_map(|s| s.out_of_rotation().into_iter().map(str::to_string))
            .collect()
    }

    pub fn summary(&self) -> String {
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

/// The host of batch 1: the canary (the fleets roll in batches of one).
pub fn canary_of(snapshot: &Value) -> String {
    snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["batch"].as_u64() == Some(1))
        .map(|h| field(h, "host").to_string())
        .unwrap_or_else(|| panic!("no host in batch 1: {snapshot}"))
}

/// The events (`{"type": "event"}`) a following CLI printed.
pub fn events_of(run: &CliRun) -> Vec<Value> {
    run.json()
        .into_iter()
        .filter(|v| v["type"] == "event")
        .collect()
}

/// When the deployment entered `state`, from its events.
pub fn state_at(events: &[Value], state: &str) -> Option<u64> {
    events
        .iter()
        .find(|e| e["state"] == state)
        .and_then(|e| e["at_ms"].as_u64())
}

/// The states a deployment went through, in order.
pub fn states(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["state"].as_str().map(str::to_string))
        .collect()
}

/// Every event of deployment `id`, replayed by the operator API's watch stream (the
/// deployment must have ended, or the stream would wait for more).
pub async fn recorded_events(fleet: &Fleet, id: &str) -> Vec<proto::DeploymentEvent> {
    watch_events(fleet.operator_client().await, id).await
}

pub async fn watch_events(
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

pub async fn operator(url: &str) -> OperatorClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("controller url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    OperatorClient::new(channel)
}

/// `drover <args>` as operator [`OPERATOR`] (a deployer's certificate from the fleet CA),
/// to its end.
pub async fn drover_as_operator(fleet: &Fleet, args: &[&str]) -> CliRun {
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
pub fn operator_id() -> String {
    OPERATOR.to_string()
}
