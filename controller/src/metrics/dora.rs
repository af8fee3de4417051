//! The delivery metrics (DORA) on `/metrics`: gauges per service and environment over
//! the last 30 days, with the default rollback window. Recomputed by a periodic task
//! ([`refresh`], every [`REFRESH`]) rather than at scrape time: a scrape only formats
//! what the last refresh left, so it never waits on the database, and a long history
//! costs one query a minute whatever the number of scrapers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Metrics, lock};
use crate::dora::{DEFAULT_ROLLBACK_WINDOW_MS, DEFAULT_WINDOW_MS, Dora, Settings};
use crate::store::{Store, now_ms};

/// A gauge's samples of one row: `(quantile label or "", value)`.
type Samples = fn(&Dora) -> Vec<(&'static str, f64)>;

/// How often the gauges are recomputed.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Recomputes the gauges now and every `every` until `stop`; a failed read keeps the
/// previous values and is logged.
pub async fn refresh(
    store: Store,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let end_ms = now_ms();
        let settings = Settings {
            start_ms: end_ms.saturating_sub(DEFAULT_WINDOW_MS),
            end_ms,
            rollback_window_ms: DEFAULT_ROLLBACK_WINDOW_MS,
        };
        match store.dora(settings, None, None).await {
            Ok(rows) => metrics.set_dora(rows),
            Err(e) => {
                warn!(error = %e, "cannot compute the delivery metrics; /metrics keeps the previous values")
            }
        }
    }
}

impl Metrics {
    /// The delivery metrics the gauges show from now on.
    pub fn set_dora(&self, rows: Vec<Dora>) {
        *lock(&self.dora) = rows;
    }

    pub(super) fn register_dora(&self, reg: &mut prometheus_client::registry::Registry) {
        let rows = lock(&self.dora);
        let gauges: [(&str, &str, Samples); 5] = [
            (
                "drover_dora_deployments",
                "Deploys that succeeded in the last 30 days, by service and environment.",
                |d| vec![("", d.deploys as f64)],
            ),
            (
                "drover_dora_deployments_per_day",
                "Deploys that succeeded per day over the last 30 days.",
                |d| vec![("", d.deploys_per_day)],
            ),
            (
                "drover_dora_lead_time_seconds",
                "Release commit to deploy success over the last 30 days (median and p90; deploys without a commit time left out).",
                |d| {
                    d.lead_time.map_or(vec![], |l| {
                        vec![
                            ("0.5", l.median_ms as f64 / 1000.0),
                            ("0.9", l.p90_ms as f64 / 1000.0),
                        ]
                    })
                },
            ),
            (
                "drover_dora_change_failure_ratio",
                "Failed changes over finished deploys in the last 30 days (failed, rolled back, or reverted within an hour).",
                |d| d.change_failure_rate.map_or(vec![], |r| vec![("", r)]),
            ),
            (
                "drover_dora_time_to_restore_seconds",
                "Median time from a failed change's start to the next success, over the last 30 days.",
                |d| {
                    d.time_to_restore_ms
                        .map_or(vec![], |t| vec![("0.5", t as f64 / 1000.0)])
                },
            ),
        ];
        for (name, text, values) in gauges {
            let series = rows.iter().flat_map(|d| {
                values(d).into_iter().map(|(quantile, v)| {
                    let mut labels =
                        super::labels(&[("service", &d.service), ("environment", &d.environment)]);
                    if !quantile.is_empty() {
                        labels.push(("quantile", quantile.to_string()));
                    }
                    (labels, v)
                })
            });
            super::gauges(reg, name, text, series);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dora::Spread;
    use crate::hub::AgentHub;

    #[test]
    fn gauges_per_service_and_environment_skip_what_is_not_measured() {
        let m = Metrics::default();
        m.set_dora(vec![Dora {
            service: "web".into(),
            environment: "production".into(),
            deploys: 6,
            deploys_per_day: 0.2,
            lead_time: Some(Spread {
                median_ms: 90_000,
                p90_ms: 600_000,
            }),
            lead_time_measured: 6,
            lead_time_unknown: 0,
            finished_deploys: 8,
            failed_changes: 2,
            change_failure_rate: Some(0.25),
            time_to_restore_ms: None,
            restored: 0,
            unrestored: 2,
        }]);
        let out = m.render(&AgentHub::new(Default::default()));
        for line in [
            "# TYPE drover_dora_deployments_per_day gauge",
            "drover_dora_deployments{service=\"web\",environment=\"production\"} 6.0",
            "drover_dora_deployments_per_day{service=\"web\",environment=\"production\"} 0.2",
            "drover_dora_lead_time_seconds{service=\"web\",environment=\"production\",quantile=\"0.5\"} 90.0",
            "drover_dora_lead_time_seconds{service=\"web\",environment=\"production\",quantile=\"0.9\"} 600.0",
            "drover_dora_change_failure_ratio{service=\"web\",environment=\"production\"} 0.25",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
        assert!(
            !out.contains("drover_dora_time_to_restore_seconds{"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_refresh_reads_the_store_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.set_dora(vec![]);
        let stop = CancellationToken::new();
        let task = tokio::spawn(refresh(store, metrics.clone(), REFRESH, stop.clone()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the refresh stops when told")
            .unwrap();
    }
}
