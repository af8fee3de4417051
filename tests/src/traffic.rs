//! HTTP load through HAProxy (one load with keep-alive, one with a new connection per
//! request) and a sampler of HAProxy's server states, recorded while a test acts, and
//! what they saw: failed requests, servers out of rotation.

use std::time::Duration;

use drover_controller::lb::OpStatus;

use crate::fleet::Fleet;
use crate::haproxy::{SamplerGuard, Samples, StateSample};
use crate::load::{Load, LoadReport};
use crate::wait_until;

/// How often the sampler reads HAProxy's server states.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// How long the loads may take to answer a given number of requests.
const LOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP through HAProxy (keep-alive and not) and HAProxy's server states, recorded
/// while a test acts.
pub struct Traffic {
    pub keep_alive: Load,
    pub close: Load,
    pub sampler: SamplerGuard,
}

/// What the traffic saw.
pub struct Seen {
    pub keep_alive: LoadReport,
    pub close: LoadReport,
    pub samples: Samples,
}

impl Traffic {
    /// Starts sampling and both loads; returns once requests flow through HAProxy.
    pub async fn start(fleet: &Fleet) -> Self {
        let t = Self {
            sampler: fleet.haproxy().sample_states(SAMPLE_EVERY),
            keep_alive: fleet.load(true),
            close: fleet.load(false),
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
        }
    }
}

impl Seen {
    /// The most servers HAProxy had out of rotation in one sample. Read from the
    /// `show stat` status alone (`DRAIN`, `DOWN`, `MAINT` are out), which one command
    /// returns atomically; the admin state comes from a second command and may be a
    /// few microseconds newer.
    pub fn max_out(&self) -> usize {
        self.samples
            .samples
            .iter()
            .map(|s| out_of(s).len())
            .max()
            .unwrap_or(0)
    }

    pub fn requests(&self) -> u64 {
        self.keep_alive.sent + self.close.sent
    }

    pub fn failed(&self) -> u64 {
        self.keep_alive.failed + self.close.failed
    }

    pub fn summary(&self) -> String {
        let max = self.max_out();
        let first = self.samples.samples.first().map(|s| s.at);
        // The first sample with the most servers out, and how each of them got there.
        let worst = self
            .samples
            .samples
            .iter()
            .find(|s| max > 1 && out_of(s).len() == max)
            .map(|s| {
                let names = out_of(s);
                let histories: Vec<String> = names
                    .iter()
                    .map(|n| format!("{n}: {:?}", self.samples.history(n)))
                    .collect();
                format!(
                    "\n  at +{:?}: {:?}\n  {}",
                    first.map(|f| s.at - f).unwrap_or_default(),
                    s.servers,
                    histories.join("\n  ")
                )
            })
            .unwrap_or_default();
        format!(
            "keep-alive: {}\nclose: {}\nsamples: {}, max out of rotation {max} (status) / {} (status+admin), sampler errors {}{worst}",
            self.keep_alive.summary(),
            self.close.summary(),
            self.samples.samples.len(),
            self.samples.max_out_of_rotation(),
            self.samples.errors.len()
        )
    }

    pub fn assert_no_failed_request(&self) {
        assert_eq!(self.keep_alive.failed, 0, "{}", self.summary());
        assert_eq!(self.close.failed, 0, "{}", self.summary());
        assert!(
            self.keep_alive.ok > 0 && self.close.ok > 0,
            "{}",
            self.summary()
        );
    }
}

/// The servers out of rotation in one sample, by their `show stat` status.
pub fn out_of(sample: &StateSample) -> Vec<&str> {
    sample
        .servers
        .iter()
        .filter(|(_, (status, _))| *status != OpStatus::Up)
        .map(|(name, _)| name.as_str())
        .collect()
}
