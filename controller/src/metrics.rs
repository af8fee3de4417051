//! Prometheus metrics at `GET /metrics`: deploys by outcome, deploy durations, hosts by
//! phase in running deployments, and agent connections. Rendered on request from the
//! hub and a few counters; served by a tiny HTTP/1.1 responder (one endpoint, no
//! framework needed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info_span};

use crate::hub::AgentHub;
use crate::state::{DeploymentState, HostPhase};

/// Counters the rollout engine bumps.
#[derive(Debug, Default)]
pub struct Metrics {
    succeeded: AtomicU64,
    failed: AtomicU64,
    rolled_back: AtomicU64,
    paused: AtomicU64,
    /// Sum of finished deployments' durations, in ms.
    duration_ms_sum: AtomicU64,
    /// Hosts moved to a new version.
    hosts_swapped: AtomicU64,
    /// Phase of every host in a running deployment, by (deployment, host).
    host_phases: Mutex<BTreeMap<(String, String), HostPhase>>,
}

impl Metrics {
    /// A deployment ended in `state` after `duration_ms`.
    pub fn deployment_finished(&self, state: DeploymentState, duration_ms: u64) {
        let c = match state {
            DeploymentState::Succeeded => &self.succeeded,
            DeploymentState::RolledBack => &self.rolled_back,
            DeploymentState::Paused => &self.paused,
            _ => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.duration_ms_sum
            .fetch_add(duration_ms, Ordering::Relaxed);
    }

    /// A host of a running deployment moved to `phase`.
    pub fn host_phase(&self, deployment: &str, host: &str, phase: HostPhase) {
        let mut m = self.host_phases.lock().unwrap_or_else(|p| p.into_inner());
        m.insert((deployment.to_string(), host.to_string()), phase);
    }

    /// A deployment ended: its hosts leave the per-phase gauge.
    pub fn forget_deployment(&self, deployment: &str) {
        let mut m = self.host_phases.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|(d, _), _| d != deployment);
    }

    /// A host left the fleet: it leaves the per-phase gauge.
    pub fn forget_host(&self, host: &str) {
        let mut m = self.host_phases.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|(_, h), _| h != host);
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
        let _ = writeln!(
            out,
            "# HELP drover_agents Agents known to the controller, by connection state."
        );
        let _ = writeln!(out, "# TYPE drover_agents gauge");
        let _ = writeln!(out, "drover_agents{{state=\"connected\"}} {connected}");
        let _ = writeln!(
            out,
            "drover_agents{{state=\"lost\"}} {}",
            hosts.len() - connected
        );
        let _ = writeln!(
            out,
            "# HELP drover_deployments_total Finished deployments, by outcome."
        );
        let _ = writeln!(out, "# TYPE drover_deployments_total counter");
        for (outcome, c) in [
            ("succeeded", &self.succeeded),
            ("failed", &self.failed),
            ("rolled_back", &self.rolled_back),
            ("paused", &self.paused),
        ] {
            let _ = writeln!(
                out,
                "drover_deployments_total{{outcome=\"{outcome}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let finished: u64 = [
            &self.succeeded,
            &self.failed,
            &self.rolled_back,
            &self.paused,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
        let _ = writeln!(
            out,
            "# HELP drover_deployment_duration_seconds Wall time of finished deployments."
        );
        let _ = writeln!(out, "# TYPE drover_deployment_duration_seconds summary");
        let _ = writeln!(
            out,
            "drover_deployment_duration_seconds_sum {:.3}",
            self.duration_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "drover_deployment_duration_seconds_count {finished}");
        let _ = writeln!(
            out,
            "# HELP drover_deployment_hosts Hosts of running deployments, by phase."
        );
        let _ = writeln!(out, "# TYPE drover_deployment_hosts gauge");
        let mut by_phase: BTreeMap<&'static str, u64> = BTreeMap::new();
        {
            let m = self.host_phases.lock().unwrap_or_else(|p| p.into_inner());
            for phase in m.values() {
                *by_phase.entry(phase.as_str()).or_default() += 1;
            }
        }
        for (phase, n) in by_phase {
            let _ = writeln!(out, "drover_deployment_hosts{{phase=\"{phase}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP drover_hosts_swapped_total Hosts moved to a new version."
        );
        let _ = writeln!(out, "# TYPE drover_hosts_swapped_total counter");
        let _ = writeln!(
            out,
            "drover_hosts_swapped_total {}",
            self.hosts_swapped.load(Ordering::Relaxed)
        );
        out
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    hub: AgentHub,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(e) => { debug!(error = %e, "metrics accept failed"); continue; } },
            () = &mut shutdown => return,
        };
        let body = metrics.render(&hub);
        // Short-lived, bounded by the timeout; nothing to await beyond this request.
        tokio::spawn(
            async move {
                let mut buf = [0u8; 1024];
                let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf)).await else {
                    return;
                };
                let request = String::from_utf8_lossy(&buf[..n]);
                let response = if request.starts_with("GET /metrics ") {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            }
            .instrument(info_span!("metrics_request")),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_phases() {
        let m = Metrics::default();
        m.deployment_finished(DeploymentState::Succeeded, 1500);
        m.deployment_finished(DeploymentState::RolledBack, 500);
        m.host_phase("d-1", "h1", HostPhase::Draining);
        m.host_phase("d-1", "h2", HostPhase::Done);
        m.host_phase("d-1", "h3", HostPhase::Done);
        let out = m.render(&AgentHub::new(Default::default()));
        assert!(
            out.contains("drover_deployments_total{outcome=\"succeeded\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("drover_deployment_duration_seconds_sum 2.000"),
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
}
