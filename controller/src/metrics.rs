//! Prometheus metrics at `GET /metrics`: deploys by service and outcome, a histogram of
//! their durations, hosts by phase in running deployments, agent connections, and when
//! the controller's and each agent's certificate expires, and the delivery metrics
//! ([`dora`]). Counters and the histogram live here; gauges are read at each scrape from
//! the hub and the few states kept below; `prometheus-client` encodes them all
//! (OpenMetrics text), served by a small axum router on the metrics listener
//! ([`router`]).

pub mod dora;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::hub::AgentHub;
use crate::state::{DeploymentState, HostPhase};

/// Upper bounds, in seconds, of the deployment-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// The labels of one series, in order.
pub type Labels = Vec<(&'static str, String)>;

/// Labels from `(name, value)` pairs, the values escaped for the text format (the
/// encoder writes them as given).
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            (*k, v)
        })
        .collect()
}

/// Help texts are written as sentences; the encoder adds the final period.
fn help(text: &str) -> &str {
    text.trim_end_matches('.')
}

/// A histogram with the deployment-duration buckets.
fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Registers gauge `name` with one series per `(labels, value)`.
pub fn gauges(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, f64)>,
) {
    let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for (labels, v) in series {
        family.get_or_create(&labels).set(v);
    }
    registry.register(name, self::help(help), family);
}

/// Registers gauge `name`, whole numbers, with one series per `(labels, value)`.
fn counts(
    registry: &mut Registry,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels, i64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, v) in series {
        family.get_or_create(&labels).set(v);
    }
    registry.register(name, self::help(help), family);
}

/// Counters and gauges the rollout engine, the hub and the TLS layer update.
#[derive(Debug)]
pub struct Metrics {
    /// Finished deployments by service and outcome.
    finished: Family<Labels, Counter>,
    /// Durations of finished deployments, by service.
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    /// Hosts moved to a new version.
    hosts_swapped: Counter,
    /// Phase of every host in a running deployment, by (deployment, host).
    host_phases: Mutex<BTreeMap<(String, String), HostPhase>>,
    /// When the controller's serving certificate expires (Unix seconds; 0: none).
    controller_cert_not_after: AtomicI64,
    /// Error budget of every watched (service, environment), set by the SLO sampler.
    pub slo: crate::slo::SloGauges,
    /// The delivery metrics of the last 30 days, as last refreshed ([`dora::refresh`]).
    dora: Mutex<Vec<crate::dora::Dora>>,
    /// This controller's role among replicas (single when never set).
    leadership: std::sync::OnceLock<crate::leader::Leadership>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            finished: Family::default(),
            durations: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            hosts_swapped: Counter::default(),
            host_phases: Mutex::default(),
            controller_cert_not_after: AtomicI64::default(),
            slo: Default::default(),
            dora: Mutex::default(),
            leadership: std::sync::OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// A deployment of `service` ended in `state` after `duration_ms`. Only terminal
    /// states count: a paused deployment has not finished.
    pub fn deployment_finished(&self, service: &str, state: DeploymentState, duration_ms: u64) {
        if !state.is_terminal() {
            return;
        }
        self.finished
            .get_or_create(&labels(&[
                ("service", service),
                ("outcome", state.as_str()),
            ]))
            .inc();
        self.durations
            .get_or_create(&labels(&[("service", service)]))
            .observe(duration_ms as f64 / 1000.0);
    }

    /// The controller now serves a certificate valid until `not_after_unix`.
    pub fn controller_certificate(&self, not_after_unix: i64) {
        self.controller_cert_not_after
            .store(not_after_unix, Ordering::Relaxed);
    }

    /// A host of a running deployment moved to `phase`.
    pub fn host_phase(&self, deployment: &str, host: &str, phase: HostPhase) {
        lock(&self.host_phases).insert((deployment.to_string(), host.to_string()), phase);
    }

    /// A deployment ended: its hosts leave the per-phase gauge.
    pub fn forget_deployment(&self, deployment: &str) {
        lock(&self.host_phases).retain(|(d, _), _| d != deployment);
    }

    /// A host left the fleet: it leaves the per-phase gauge.
    pub fn forget_host(&self, host: &str) {
        lock(&self.host_phases).retain(|(_, h), _| h != host);
    }

    /// A host finished its swap.
    pub fn host_swapped(&self) {
        self.hosts_swapped.inc();
    }

    /// Reports `leadership` as the controller's role from now on.
    pub fn leadership(&self, leadership: crate::leader::Leadership) {
        let _ = self.leadership.set(leadership);
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self, hub: &AgentHub) -> String {
        let mut reg = Registry::default();
        let role = self
            .leadership
            .get()
            .map_or(crate::leader::Role::Single, crate::leader::Leadership::role);
        counts(
            &mut reg,
            "drover_controller_role",
            "This controller's role among replicas: 1 for the one it has (single, leader or standby).",
            ["single", "leader", "standby"]
                .map(|r| (labels(&[("role", r)]), i64::from(role.as_str() == r))),
        );
        let epoch = Gauge::<i64>::default();
        epoch.set(match role {
            crate::leader::Role::Leader { epoch } => i64::try_from(epoch).unwrap_or(i64::MAX),
            _ => 0,
        });
        reg.register(
            "drover_controller_epoch",
            help("The fencing epoch this controller leads under (0 unless it leads)."),
            epoch,
        );
        let hosts = hub.hosts();
        let connected = hosts.iter().filter(|h| h.connected).count() as i64;
        counts(
            &mut reg,
            "drover_agents",
            "Agents known to the controller, by connection state.",
            [
                (labels(&[("state", "connected")]), connected),
                (labels(&[("state", "lost")]), hosts.len() as i64 - connected),
            ],
        );
        reg.register(
            "drover_deployments",
            help("Finished deployments, by service and outcome."),
            self.finished.clone(),
        );
        reg.register(
            "drover_deployment_duration_seconds",
            help("Wall time of finished deployments, by service."),
            self.durations.clone(),
        );
        self.slo.register(&mut reg);
        let mut by_phase: BTreeMap<&'static str, i64> = BTreeMap::new();
        for phase in lock(&self.host_phases).values() {
            *by_phase.entry(phase.as_str()).or_default() += 1;
        }
        counts(
            &mut reg,
            "drover_deployment_hosts",
            "Hosts of running deployments, by phase.",
            by_phase
                .into_iter()
                .map(|(phase, n)| (labels(&[("phase", phase)]), n)),
        );
        reg.register(
            "drover_hosts_swapped",
            help("Hosts moved to a new version."),
            self.hosts_swapped.clone(),
        );
        let controller = self.controller_cert_not_after.load(Ordering::Relaxed);
        let certs = (controller > 0)
            .then(|| (labels(&[("subject", "controller")]), controller))
            .into_iter()
            .chain(hosts.iter().filter(|h| h.connected).filter_map(|h| {
                let at = h.cert_not_after_unix?;
                Some((labels(&[("subject", "agent"), ("host", &h.name)]), at))
            }));
        counts(
            &mut reg,
            "drover_certificate_expiry_timestamp_seconds",
            "When a certificate expires (Unix seconds): the controller's serving certificate, and each connected agent's.",
            certs,
        );
        self.register_dora(&mut reg);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &reg);
        out
    }
}

/// The `/metrics` endpoint, served on the metrics listener by the same HTTP stack as
/// the web interface ([`crate::web::serve_router`]).
pub fn router(metrics: Arc<Metrics>, hub: AgentHub) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = metrics.render(&hub);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_phases() {
        let m = Metrics::default();
        m.deployment_finished("web", DeploymentState::Succeeded, 1500);
        m.deployment_finished("web", DeploymentState::RolledBack, 500);
        m.host_phase("d-1", "h1", HostPhase::Draining);
        m.host_phase("d-1", "h2", HostPhase::Done);
        m.host_phase("d-1", "h3", HostPhase::Done);
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(
            out.contains("drover_deployments_total{service=\"web\",outcome=\"succeeded\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("drover_deployment_duration_seconds_sum{service=\"web\"} 2.0"),
            "{out}"
        );
        assert!(
            out.contains("drover_deployment_hosts{phase=\"done\"} 2"),
            "{out}"
        );
        m.forget_deployment("d-1");
        assert!(
            !m.render(&AgentHub::new(Default::default()))
                .contains("phase=\"done\"")
        );
    }

    #[test]
    fn durations_are_a_cumulative_histogram_per_service() {
        let m = Metrics::default();
        m.deployment_finished("web", DeploymentState::Succeeded, 5_000);
        m.deployment_finished("web", DeploymentState::Failed, 45_000);
        m.deployment_finished("api", DeploymentState::Succeeded, 9_000_000);
        let out = m.render(&AgentHub::new(Default::default()));
        for line in [
            "# TYPE drover_deployment_duration_seconds histogram",
            "drover_deployment_duration_seconds_bucket{le=\"10.0\",service=\"web\"} 1",
            "drover_deployment_duration_seconds_bucket{le=\"30.0\",service=\"web\"} 1",
            "drover_deployment_duration_seconds_bucket{le=\"60.0\",service=\"web\"} 2",
            "drover_deployment_duration_seconds_bucket{le=\"+Inf\",service=\"web\"} 2",
            "drover_deployment_duration_seconds_count{service=\"web\"} 2",
            "drover_deployment_duration_seconds_bucket{le=\"7200.0\",service=\"api\"} 0",
            "drover_deployment_duration_seconds_bucket{le=\"+Inf\",service=\"api\"} 1",
            "drover_deployments_total{service=\"web\",outcome=\"failed\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }

    #[test]
    fn a_paused_deployment_is_not_a_finished_one() {
        let m = Metrics::default();
        m.deployment_finished("web", DeploymentState::Paused, 1_000);
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(!out.contains("outcome=\"paused\""), "{out}");
        assert!(
            !out.contains("drover_deployment_duration_seconds_count"),
            "{out}"
        );
    }

    #[test]
    fn the_controller_certificate_expiry_is_a_gauge() {
        let m = Metrics::default();
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(!out.contains("subject=\"controller\""), "{out}");
        m.controller_certificate(1_800_000_000);
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(
            out.contains(
                "drover_certificate_expiry_timestamp_seconds{subject=\"controller\"} 1800000000"
            ),
            "{out}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.deployment_finished("a\"b\\c\nd", DeploymentState::Succeeded, 1);
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(out.contains("service=\"a\\\"b\\\\c\\nd\""), "{out}");
    }
}
