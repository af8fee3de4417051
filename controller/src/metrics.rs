//! Prometheus metrics at `GET /metrics`: deploys by service and outcome, a histogram of
//! their durations, hosts by phase in running deployments, agent connections, and when
//! the controller's and each agent's certificate expires, and the delivery metrics
//! ([`dora`]). Rendered on request from the hub and a few counters; served by a tiny
//! axum router on the metrics listener ([`router`]).

pub mod dora;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::hub::AgentHub;
use crate::state::{DeploymentState, HostPhase};

/// Upper bounds, in seconds, of the deployment-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 10] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// The durations of one service's finished deployments, as a histogram.
#[derive(Debug, Default)]
struct Durations {
    /// Deployments that took at most each bucket's bound (not cumulative).
    buckets: [u64; DURATION_BUCKETS.len()],
    sum_seconds: f64,
    count: u64,
}

/// Counters and gauges the rollout engine, the hub and the TLS layer update.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Finished deployments by (service, outcome).
    finished: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Durations of finished deployments, by service.
    durations: Mutex<BTreeMap<String, Durations>>,
    /// Hosts moved to a new version.
    hosts_swapped: AtomicU64,
    /// Phase of every host in a running deployment, by (deployment, host).
    host_phases: Mutex<BTreeMap<(String, String), HostPhase>>,
    /// When the controller's serving certificate expires (Unix seconds; 0: none).
    controller_cert_not_after: AtomicI64,
    /// Error budget of every watched (service, environment), set by the SLO sampler.
    pub slo: crate::slo::SloGauges,
    /// The delivery metrics of the last 30 days, as last refreshed ([`dora::refresh`]).
    dora: Mutex<Vec<crate::dora::Dora>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `v` as a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// A deployment of `service` ended in `state` after `duration_ms`. Only terminal
    /// states count: a paused deployment has not finished.
    pub fn deployment_finished(&self, service: &str, state: DeploymentState, duration_ms: u64) {
        if !state.is_terminal() {
            return;
        }
        *lock(&self.finished)
            .entry((service.to_string(), state.as_str()))
            .or_default() += 1;
        let seconds = duration_ms as f64 / 1000.0;
        let mut durations = lock(&self.durations);
        let d = durations.entry(service.to_string()).or_default();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            d.buckets[i] += 1;
        }
        d.sum_seconds += seconds;
        d.count += 1;
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
        self.hosts_swapped.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self, hub: &AgentHub) -> String {
        let mut out = String::new();
        let hosts = hub.hosts();
        let connected = hosts.iter().filter(|h| h.connected).count();
        help(
            &mut out,
            "drover_agents",
            "gauge",
            "Agents known to the controller, by connection state.",
        );
        let _ = writeln!(out, "drover_agents{{state=\"connected\"}} {connected}");
        let _ = writeln!(
            out,
            "drover_agents{{state=\"lost\"}} {}",
            hosts.len() - connected
        );

        help(
            &mut out,
            "drover_deployments_total",
            "counter",
            "Finished deployments, by service and outcome.",
        );
        for ((service, outcome), n) in lock(&self.finished).iter() {
            let _ = writeln!(
                out,
                "drover_deployments_total{{service=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(service)
            );
        }
        self.render_durations(&mut out);
        self.slo.render(&mut out);

        help(
            &mut out,
            "drover_deployment_hosts",
            "gauge",
            "Hosts of running deployments, by phase.",
        );
        let mut by_phase: BTreeMap<&'static str, u64> = BTreeMap::new();
        for phase in lock(&self.host_phases).values() {
            *by_phase.entry(phase.as_str()).or_default() += 1;
        }
        for (phase, n) in by_phase {
            let _ = writeln!(out, "drover_deployment_hosts{{phase=\"{phase}\"}} {n}");
        }
        help(
            &mut out,
            "drover_hosts_swapped_total",
            "counter",
            "Hosts moved to a new version.",
        );
        let _ = writeln!(
            out,
            "drover_hosts_swapped_total {}",
            self.hosts_swapped.load(Ordering::Relaxed)
        );

        help(
            &mut out,
            "drover_certificate_expiry_timestamp_seconds",
            "gauge",
            "When a certificate expires (Unix seconds): the controller's serving certificate, and each connected agent's.",
        );
        let controller = self.controller_cert_not_after.load(Ordering::Relaxed);
        if controller > 0 {
            let _ = writeln!(
                out,
                "drover_certificate_expiry_timestamp_seconds{{subject=\"controller\"}} {controller}"
            );
        }
        for h in hosts.iter().filter(|h| h.connected) {
            if let Some(at) = h.cert_not_after_unix {
                let _ = writeln!(
                    out,
                    "drover_certificate_expiry_timestamp_seconds{{subject=\"agent\",host=\"{}\"}} {at}",
                    label(&h.name)
                );
            }
        }
        self.render_dora(&mut out);
        out
    }

    fn render_durations(&self, out: &mut String) {
        help(
            out,
            "drover_deployment_duration_seconds",
            "histogram",
            "Wall time of finished deployments, by service.",
        );
        for (service, d) in lock(&self.durations).iter() {
            let service = label(service);
            let mut cumulative = 0;
            for (bound, n) in DURATION_BUCKETS.iter().zip(d.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "drover_deployment_duration_seconds_bucket{{service=\"{service}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "drover_deployment_duration_seconds_bucket{{service=\"{service}\",le=\"+Inf\"}} {}",
                d.count
            );
            let _ = writeln!(
                out,
                "drover_deployment_duration_seconds_sum{{service=\"{service}\"}} {:.3}",
                d.sum_seconds
            );
            let _ = writeln!(
                out,
                "drover_deployment_duration_seconds_count{{service=\"{service}\"}} {}",
                d.count
            );
        }
    }
}

fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
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
                        "text/plain; version=0.0.4; charset=utf-8",
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
            out.contains("drover_deployment_duration_seconds_sum{service=\"web\"} 2.000"),
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
            "drover_deployment_duration_seconds_bucket{service=\"web\",le=\"10\"} 1",
            "drover_deployment_duration_seconds_bucket{service=\"web\",le=\"30\"} 1",
            "drover_deployment_duration_seconds_bucket{service=\"web\",le=\"60\"} 2",
            "drover_deployment_duration_seconds_bucket{service=\"web\",le=\"+Inf\"} 2",
            "drover_deployment_duration_seconds_count{service=\"web\"} 2",
            "drover_deployment_duration_seconds_bucket{service=\"api\",le=\"7200\"} 0",
            "drover_deployment_duration_seconds_bucket{service=\"api\",le=\"+Inf\"} 1",
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
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
