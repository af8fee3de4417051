//! Error budgets as stored: the watched (service, environment) targets, so a restarted
//! controller keeps sampling them, and the samples of each HAProxy's backend counters.
//!
//! Each sample row also keeps its step from the previous sample of its series
//! ([`crate::slo::step`], resets included) and when that previous sample was taken, so
//! a window's increase is one indexed sum over the rows inside it: a step counts when
//! both of its samples are inside. Rows older than their target's window are pruned.

use std::time::Duration;

use super::sql::{OptionalExtension, Row, params};

use super::{Store, StoreError, now_ms};
use crate::lb::RuntimeAddr;
use crate::slo::{Generation, Increase, Sample, SloSpec, SloTarget, step};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS slo_targets (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    runtime TEXT NOT NULL,
    backend TEXT NOT NULL,
    availability_ppm INTEGER NOT NULL,
    window_ms INTEGER NOT NULL,
    watched_ms INTEGER NOT NULL,
    PRIMARY KEY (service, environment)
);
CREATE TABLE IF NOT EXISTS slo_samples (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    series TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    prev_at_ms INTEGER,
    d_requests INTEGER NOT NULL,
    d_errors INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS slo_samples_window ON slo_samples(service, environment, at_ms);
CREATE INDEX IF NOT EXISTS slo_samples_series ON slo_samples(service, environment, series, at_ms);
"#;

/// What a window counted over every series of a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SloCounted {
    /// Requests and errors, summed over the steps inside the window.
    pub counted: Increase,
    /// The oldest sample inside the window (Unix ms), if any.
    pub oldest_ms: Option<u64>,
}

fn target_from_row(r: &Row<'_>) -> Result<SloTarget, StoreError> {
    let runtime: String = r.get(2)?;
    let runtime: Vec<String> = serde_json::from_str(&runtime).unwrap_or_default();
    let window_ms: u64 = r.get(5)?;
    Ok(SloTarget {
        service: r.get(0)?,
        environment: r.get(1)?,
        // Written from parsed addresses, so they parse back; a hand-edited bad one is
        // left out rather than failing every read.
        runtime: runtime.iter().filter_map(|a| a.parse().ok()).collect(),
        backend: r.get(3)?,
        spec: SloSpec {
            availability_ppm: r.get(4)?,
            window: Duration::from_millis(window_ms),
        },
    })
}

const TARGET_COLUMNS: &str =
    "service, environment, runtime, backend, availability_ppm, window_ms FROM slo_targets";

impl Store {
    /// Watches `target` (or replaces how it is watched: addresses, backend, SLO).
    pub async fn put_slo_target(&self, target: SloTarget) -> Result<(), StoreError> {
        self.with(move |c| {
            let runtime: Vec<String> = target.runtime.iter().map(RuntimeAddr::to_string).collect();
            let runtime = serde_json::to_string(&runtime).expect("strings serialize");
            c.execute(
                "INSERT INTO slo_targets (service, environment, runtime, backend, availability_ppm, window_ms, watched_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(service, environment) DO UPDATE SET runtime = excluded.runtime,
                    backend = excluded.backend, availability_ppm = excluded.availability_ppm,
                    window_ms = excluded.window_ms",
                params![
                    target.service,
                    target.environment,
                    runtime,
                    target.backend,
                    target.spec.availability_ppm,
                    target.spec.window.as_millis() as u64,
                    now_ms()
                ],
            )?;
            Ok(())
        })
        .await
    }

    /// Every watched target, by service and environment.
    pub async fn slo_targets(&self) -> Result<Vec<SloTarget>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {TARGET_COLUMNS} ORDER BY service, environment"
            ))?;
            let rows = stmt.query_map(params![], target_from_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// The watched target of `service` in `environment`, if any.
    pub async fn slo_target(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<SloTarget>, StoreError> {
        let (service, environment) = (service.to_owned(), environment.to_owned());
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {TARGET_COLUMNS} WHERE service = ?1 AND environment = ?2"),
                params![service, environment],
                target_from_row,
            )
            .optional()
        })
        .await
    }

    /// Stops watching `service` in `environment` and forgets its samples; false when it
    /// was not watched.
    pub async fn remove_slo_target(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<bool, StoreError> {
        let (service, environment) = (service.to_owned(), environment.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM slo_targets WHERE service = ?1 AND environment = ?2",
                params![service, environment],
            )?;
            tx.execute(
                "DELETE FROM slo_samples WHERE service = ?1 AND environment = ?2",
                params![service, environment],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    /// Records one sample of `series` (an HAProxy's runtime address) with its step from
    /// the series' previous sample.
    pub async fn record_slo_sample(
        &self,
        service: &str,
        environment: &str,
        series: &str,
        sample: Sample,
    ) -> Result<(), StoreError> {
        let (service, environment, series) = (
            service.to_owned(),
            environment.to_owned(),
            series.to_owned(),
        );
        self.with(move |c| {
            let tx = c.transaction()?;
            let prev: Option<Sample> = tx
                .query_row(
                    "SELECT at_ms, requests, errors, generation FROM slo_samples
                     WHERE service = ?1 AND environment = ?2 AND series = ?3
                     ORDER BY at_ms DESC LIMIT 1",
                    params![service, environment, series],
                    |r| {
                        Ok(Sample {
                            at_ms: r.get(0)?,
                            requests: r.get(1)?,
                            errors: r.get(2)?,
                            generation: Generation(r.get(3)?),
                        })
                    },
                )
                .optional()?;
            let d = prev.map_or_else(Increase::default, |p| step(&p, &sample));
            tx.execute(
                "INSERT INTO slo_samples (service, environment, series, at_ms, requests, errors, generation, prev_at_ms, d_requests, d_errors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    service,
                    environment,
                    series,
                    sample.at_ms,
                    sample.requests,
                    sample.errors,
                    sample.generation.0,
                    prev.map(|p| p.at_ms),
                    d.requests,
                    d.errors
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// What the samples of `service` in `environment` counted since `since_ms`: the sum
    /// of the steps whose two samples are both at or after it, over every series.
    pub async fn slo_counted(
        &self,
        service: &str,
        environment: &str,
        since_ms: u64,
    ) -> Result<SloCounted, StoreError> {
        let (service, environment) = (service.to_owned(), environment.to_owned());
        self.with(move |c| {
            c.query_row(
                "SELECT COALESCE(CAST(SUM(CASE WHEN prev_at_ms >= ?3 THEN d_requests END) AS BIGINT), 0),
                        COALESCE(CAST(SUM(CASE WHEN prev_at_ms >= ?3 THEN d_errors END) AS BIGINT), 0),
                        MIN(at_ms)
                 FROM slo_samples WHERE service = ?1 AND environment = ?2 AND at_ms >= ?3",
                params![service, environment, since_ms],
                |r| {
                    Ok(SloCounted {
                        counted: Increase {
                            requests: r.get(0)?,
                            errors: r.get(1)?,
                        },
                        oldest_ms: r.get(2)?,
                    })
                },
            )
        })
        .await
    }

    /// Deletes the samples of `service` in `environment` taken before `before_ms`;
    /// returns how many.
    pub async fn prune_slo_samples(
        &self,
        service: &str,
        environment: &str,
        before_ms: u64,
    ) -> Result<u64, StoreError> {
        let (service, environment) = (service.to_owned(), environment.to_owned());
        self.with(move |c| {
            let n = c.execute(
                "DELETE FROM slo_samples WHERE service = ?1 AND environment = ?2 AND at_ms < ?3",
                params![service, environment, before_ms],
            )?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slo::increase;

    use crate::store::test_db::{TestDb, on_both_backends};

    on_both_backends!(
        targets_round_trip_and_are_replaced_in_place,
        the_window_sum_matches_the_pure_increase_per_series,
        pruning_keeps_the_steps_inside_the_window,
    );

    fn target(env: &str) -> SloTarget {
        SloTarget {
            service: "web".into(),
            environment: env.into(),
            runtime: vec![
                "/run/haproxy/a.sock".parse().unwrap(),
                "127.0.0.1:9999".parse().unwrap(),
            ],
            backend: "web".into(),
            spec: SloSpec::parse("99.5%", "30d").unwrap(),
        }
    }

    fn s(at_ms: u64, requests: u64, errors: u64, generation: u64) -> Sample {
        Sample {
            at_ms,
            requests,
            errors,
            generation: Generation(generation),
        }
    }

    async fn targets_round_trip_and_are_replaced_in_place(db: TestDb) {
        let store = db.open().await;
        store.put_slo_target(target("production")).await.unwrap();
        store.put_slo_target(target("staging")).await.unwrap();
        let mut changed = target("production");
        changed.spec = SloSpec::parse("99.9", "7d").unwrap();
        changed.runtime.pop();
        store.put_slo_target(changed.clone()).await.unwrap();
        drop(store);
        // A restarted controller finds the same targets.
        let store = db.open().await;
        assert_eq!(
            store.slo_targets().await.unwrap(),
            vec![changed.clone(), target("staging")]
        );
        assert_eq!(
            store.slo_target("web", "production").await.unwrap(),
            Some(changed)
        );
        assert_eq!(store.slo_target("web", "qa").await.unwrap(), None);
        assert!(store.remove_slo_target("web", "staging").await.unwrap());
        assert!(!store.remove_slo_target("web", "staging").await.unwrap());
        assert_eq!(store.slo_targets().await.unwrap().len(), 1);
    }

    async fn the_window_sum_matches_the_pure_increase_per_series(db: TestDb) {
        let store = db.open().await;
        // Series a: a reset in the middle; series b: a reload with larger counters.
        let a = [
            s(1_000, 10, 0, 1),
            s(2_000, 30, 1, 1),
            s(3_000, 5, 0, 1),
            s(4_000, 25, 2, 1),
        ];
        let b = [
            s(1_500, 100, 1, 7),
            s(2_500, 200, 2, 7),
            s(3_500, 500, 9, 8),
        ];
        for x in a {
            store
                .record_slo_sample("web", "production", "a", x)
                .await
                .unwrap();
        }
        for x in b {
            store
                .record_slo_sample("web", "production", "b", x)
                .await
                .unwrap();
        }
        store
            .record_slo_sample("web", "staging", "a", s(3_000, 1, 1, 1))
            .await
            .unwrap();
        for since in [0, 1_000, 1_600, 2_000, 3_000, 3_600, 9_000] {
            let got = store.slo_counted("web", "production", since).await.unwrap();
            assert_eq!(
                got.counted,
                increase(&a, since) + increase(&b, since),
                "since {since}"
            );
        }
        let all = store.slo_counted("web", "production", 0).await.unwrap();
        assert_eq!(
            (all.counted.requests, all.counted.errors, all.oldest_ms),
            (20 + 5 + 20 + 100 + 500, 1 + 2 + 1 + 9, Some(1_000))
        );
        let none = store.slo_counted("web", "production", 9_000).await.unwrap();
        assert_eq!((none.counted, none.oldest_ms), (Increase::default(), None));
    }

    async fn pruning_keeps_the_steps_inside_the_window(db: TestDb) {
        let store = db.open().await;
        let a = [s(1_000, 10, 0, 1), s(2_000, 30, 1, 1), s(3_000, 60, 3, 1)];
        for x in a {
            store
                .record_slo_sample("web", "production", "a", x)
                .await
                .unwrap();
        }
        assert_eq!(
            store
                .prune_slo_samples("web", "production", 2_000)
                .await
                .unwrap(),
            1
        );
        let got = store.slo_counted("web", "production", 2_000).await.unwrap();
        assert_eq!(got.counted, increase(&a, 2_000));
        // The next sample steps from the last one kept.
        store
            .record_slo_sample("web", "production", "a", s(4_000, 70, 3, 1))
            .await
            .unwrap();
        let got = store.slo_counted("web", "production", 2_000).await.unwrap();
        assert_eq!(
            got.counted,
            Increase {
                requests: 40,
                errors: 2
            }
        );
    }
}
