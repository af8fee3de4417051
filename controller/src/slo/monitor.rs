//! [`SloMonitor`]: samples every watched target's HAProxy backend counters each
//! interval, stores the samples, prunes those older than the target's window, and
//! keeps the `/metrics` gauges current; answers budget queries from the store.
//!
//! The targets are rows in the store, read at every round: watching one is a write,
//! and a restarted controller carries on with the same targets and history.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::{Budget, Generation, Sample, SloTarget};
use crate::lb::HaproxyRuntime;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, now_ms};

/// How the sampler runs.
#[derive(Debug, Clone, Copy)]
pub struct SloSettings {
    /// Time between two sampling rounds (`drover serve --slo-interval`).
    pub interval: Duration,
    /// Limit for one runtime API command.
    pub command_timeout: Duration,
}

impl Default for SloSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// One HAProxy that could not be read in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleFailure {
    /// The service.
    pub service: String,
    /// The environment.
    pub environment: String,
    /// The runtime API address.
    pub haproxy: String,
    /// What went wrong, in words.
    pub error: String,
}

/// What one round did.
#[derive(Debug, Clone, Default)]
pub struct SampleRound {
    /// Samples stored.
    pub recorded: usize,
    /// HAProxies that could not be read (their series simply have no sample this round).
    pub failures: Vec<SampleFailure>,
}

/// A handle on the error-budget sampler; cheap to clone.
#[derive(Clone)]
pub struct SloMonitor {
    inner: Arc<Inner>,
}

struct Inner {
    /// Targets and samples.
    store: Store,
    /// Where the gauges go.
    metrics: Arc<Metrics>,
    /// Interval and command timeout.
    settings: SloSettings,
    /// Wakes the sampler at once when a target is watched, for a first sample.
    wake: Notify,
}

impl SloMonitor {
    /// A monitor over `store`; nothing is sampled until [`SloMonitor::run`] or
    /// [`SloMonitor::sample_once`].
    pub fn new(store: Store, metrics: Arc<Metrics>, settings: SloSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                metrics,
                settings,
                wake: Notify::new(),
            }),
        }
    }

    /// Starts (or updates) sampling `target`; persisted, so a restart keeps it.
    pub async fn watch(&self, target: SloTarget) -> Result<(), StoreError> {
        info!(service = %target.service, environment = %target.environment,
            slo = %target.spec, backend = %target.backend, "watching the error budget");
        self.inner.store.put_slo_target(target).await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Stops sampling `service` in `environment` and forgets its samples; false when it
    /// was not watched.
    pub async fn unwatch(&self, service: &str, environment: &str) -> Result<bool, StoreError> {
        self.inner.metrics.slo.forget(service, environment);
        self.inner
            .store
            .remove_slo_target(service, environment)
            .await
    }

    /// The budget of `service` in `environment` now; `None` when it is not watched (no
    /// SLO). The deploy gate holds a deploy when `spent`, saying [`Budget::describe`].
    pub async fn budget(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Option<Budget>, StoreError> {
        match self.inner.store.slo_target(service, environment).await? {
            Some(t) => Ok(Some(self.budget_of(&t).await?)),
            None => Ok(None),
        }
    }

    /// The watched environments of `service`, by environment.
    pub async fn watched(&self, service: &str) -> Result<Vec<SloTarget>, StoreError> {
        let mut targets = self.inner.store.slo_targets().await?;
        targets.retain(|t| t.service == service);
        Ok(targets)
    }

    /// The budget of a watched target now.
    pub async fn budget_of(&self, t: &SloTarget) -> Result<Budget, StoreError> {
        let window_ms = t.spec.window.as_millis() as u64;
        let since = now_ms().saturating_sub(window_ms);
        let c = self
            .inner
            .store
            .slo_counted(&t.service, &t.environment, since)
            .await?;
        Ok(Budget::compute(
            &t.service,
            &t.environment,
            t.spec,
            c.counted,
            c.oldest_ms,
        ))
    }

    /// One round: reads every watched HAProxy at once, stores a sample per answer,
    /// prunes samples older than each window, and sets the gauges.
    pub async fn sample_once(&self) -> Result<SampleRound, StoreError> {
        let store = &self.inner.store;
        let targets = store.slo_targets().await?;
        let timeout = self.inner.settings.command_timeout;
        let reads = targets.iter().flat_map(|t| {
            t.runtime.iter().map(move |addr| async move {
                let rt = HaproxyRuntime::new(addr.clone(), timeout);
                let read = rt.backend_counters(&t.backend).await;
                (t, addr, read, now_ms())
            })
        });
        let mut round = SampleRound::default();
        for (t, addr, read, at_ms) in join_all(reads).await {
            match read {
                Ok((counters, process)) => {
                    let sample = Sample {
                        at_ms,
                        requests: counters.requests,
                        errors: counters.errors_5xx,
                        generation: Generation::new(process.pid, process.start_unix_s),
                    };
                    store
                        .record_slo_sample(&t.service, &t.environment, &addr.to_string(), sample)
                        .await?;
                    round.recorded += 1;
                }
                Err(e) => round.failures.push(SampleFailure {
                    service: t.service.clone(),
                    environment: t.environment.clone(),
                    haproxy: addr.to_string(),
                    error: e.to_string(),
                }),
            }
        }
        for t in &targets {
            let cutoff = now_ms().saturating_sub(t.spec.window.as_millis() as u64);
            let pruned = store
                .prune_slo_samples(&t.service, &t.environment, cutoff)
                .await?;
            if pruned > 0 {
                debug!(service = %t.service, environment = %t.environment, pruned, "old samples pruned");
            }
            self.inner.metrics.slo.set(&self.budget_of(t).await?);
        }
        Ok(round)
    }

    /// Samples every interval (and at once when a target is watched) until `shutdown`
    /// completes. An HAProxy that cannot be read is logged when it starts and stops
    /// failing, not at every round.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut tick =
            tokio::time::interval(self.inner.settings.interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failing: HashSet<(String, String, String)> = HashSet::new();
        info!(interval = ?self.inner.settings.interval, "error-budget sampler started");
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                _ = tick.tick() => {}
                () = self.inner.wake.notified() => {}
            }
            let round = tokio::select! {
                () = &mut shutdown => break,
                r = self.sample_once() => r,
            };
            match round {
                Ok(round) => {
                    let now: HashSet<_> = round
                        .failures
                        .iter()
                        .map(|f| (f.service.clone(), f.environment.clone(), f.haproxy.clone()))
                        .collect();
                    for f in &round.failures {
                        let key = (f.service.clone(), f.environment.clone(), f.haproxy.clone());
                        if !failing.contains(&key) {
                            warn!(service = %f.service, environment = %f.environment, haproxy = %f.haproxy,
                                error = %f.error, "cannot read the error budget's counters; trying again every interval");
                        }
                    }
                    for (service, environment, haproxy) in failing.difference(&now) {
                        info!(%service, %environment, %haproxy, "error-budget counters readable again");
                    }
                    failing = now;
                }
                Err(e) => {
                    warn!(error = %e, "error-budget sampling round failed; trying again next interval")
                }
            }
        }
        info!("error-budget sampler stopped");
    }
}
