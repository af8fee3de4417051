//! Canary analysis: HAProxy's per-server counters over a bake, canary hosts against the
//! rest of the fleet. Pure: the bake loop feeds it counter snapshots, it says whether a
//! threshold of the spec's `[canary]` section is breached, which signal, on which host,
//! with the values.

use std::collections::BTreeMap;

use crate::lb::ServerStatus;
use crate::spec::CanarySection;

/// Counters of one server, summed over every HAProxy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    /// HTTP responses of any class.
    pub responses: u64,
    /// 5xx responses.
    pub http_5xx: u64,
    /// Connection and response errors (`econ` + `eresp`).
    pub errors: u64,
    /// Average response time over recent requests, ms (a gauge, not a counter).
    pub response_time_ms: u64,
}

impl Counters {
    /// Sums one server's rows from every HAProxy (response time: the worst).
    pub fn from_statuses(rows: &[ServerStatus]) -> Self {
        rows.iter().fold(Self::default(), |acc, r| Self {
            responses: acc.responses + r.responses,
            http_5xx: acc.http_5xx + r.http_5xx,
            errors: acc.errors + r.conn_errors + r.resp_errors,
            response_time_ms: acc.response_time_ms.max(r.response_time_ms),
        })
    }

    /// What happened since `earlier` (counters are monotonic; a reset counts from zero).
    pub fn since(&self, earlier: &Self) -> Self {
        let d = |now: u64, then: u64| if now >= then { now - then } else { now };
        Self {
            responses: d(self.responses, earlier.responses),
            http_5xx: d(self.http_5xx, earlier.http_5xx),
            errors: d(self.errors, earlier.errors),
            response_time_ms: self.response_time_ms,
        }
    }

    fn bad(&self) -> u64 {
        self.http_5xx + self.errors
    }
}

/// A threshold breach: what to tell the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The canary host.
    pub host: String,
    /// What breached, with the values.
    pub message: String,
}

fn rate(bad: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        bad as f64 / total as f64
    }
}

/// Checks every canary host's deltas against the baseline's (all other hosts summed).
pub fn evaluate(
    canary: &BTreeMap<String, Counters>,
    baseline: &BTreeMap<String, Counters>,
    limits: &CanarySection,
) -> Option<Breach> {
    let base = baseline
        .values()
        .fold(Counters::default(), |a, c| Counters {
            responses: a.responses + c.responses,
            http_5xx: a.http_5xx + c.http_5xx,
            errors: a.errors + c.errors,
            response_time_ms: a.response_time_ms.max(c.response_time_ms),
        });
    let base_rate = rate(base.bad(), base.responses + base.errors);
    let base_judged = base.responses >= limits.min_requests;
    for (host, c) in canary {
        let total = c.responses + c.errors;
        if total < limits.min_requests {
            continue;
        }
        let r = rate(c.bad(), total);
        let over_ratio = !base_judged || r > limits.max_error_ratio * base_rate;
        if r > limits.max_error_rate && over_ratio {
            return Some(Breach {
                host: host.clone(),
                message: format!(
                    "error rate {:.1}% ({} 5xx + {} connection errors of {} requests) on canary {host}, against {:.1}% on the baseline ({} of {}); limits: {:.1}% and {}x the baseline",
                    r * 100.0,
                    c.http_5xx,
                    c.errors,
                    total,
                    base_rate * 100.0,
                    base.bad(),
                    base.responses + base.errors,
                    limits.max_error_rate * 100.0,
                    limits.max_error_ratio
                ),
            });
        }
        if base_judged
            && base.response_time_ms > 0
            && c.response_time_ms > limits.min_response_time_ms
            && c.response_time_ms as f64
                > limits.max_response_time_ratio * base.response_time_ms as f64
        {
            return Some(Breach {
                host: host.clone(),
                message: format!(
                    "response time {}ms on canary {host} against {}ms on the baseline (limit {}x)",
                    c.response_time_ms, base.response_time_ms, limits.max_response_time_ratio
                ),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CanarySection {
        CanarySection::default()
    }

    fn c(responses: u64, http_5xx: u64, rt: u64) -> Counters {
        Counters {
            responses,
            http_5xx,
            errors: 0,
            response_time_ms: rt,
        }
    }

    fn map(pairs: &[(&str, Counters)]) -> BTreeMap<String, Counters> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn healthy_canary_passes() {
        let canary = map(&[("h1", c(100, 0, 5))]);
        let base = map(&[("h2", c(300, 0, 5)), ("h3", c(300, 0, 6))]);
        assert_eq!(evaluate(&canary, &base, &limits()), None);
    }

    #[test]
    fn five_xx_canary_breaches_with_values() {
        let canary = map(&[("h1", c(100, 20, 5))]);
        let base = map(&[("h2", c(300, 0, 5))]);
        let b = evaluate(&canary, &base, &limits()).unwrap();
        assert_eq!(b.host, "h1");
        assert!(
            b.message.contains("20.0%") && b.message.contains("h1"),
            "{}",
            b.message
        );
    }

    #[test]
    fn fleet_wide_errors_do_not_blame_the_canary() {
        // The baseline fails as much: not the new version's fault.
        let canary = map(&[("h1", c(100, 20, 5))]);
        let base = map(&[("h2", c(300, 60, 5))]);
        assert_eq!(evaluate(&canary, &base, &limits()), None);
    }

    #[test]
    fn too_few_requests_are_not_judged() {
        let canary = map(&[("h1", c(3, 3, 5))]);
        assert_eq!(evaluate(&canary, &BTreeMap::new(), &limits()), None);
    }

    #[test]
    fn slow_canary_breaches() {
        let canary = map(&[("h1", c(100, 0, 900))]);
        let base = map(&[("h2", c(300, 0, 20))]);
        let b = evaluate(&canary, &base, &limits()).unwrap();
        assert!(b.message.contains("900ms"), "{}", b.message);
    }

    #[test]
    fn deltas_handle_counter_resets() {
        let before = c(100, 5, 1);
        let after = c(30, 1, 1);
        assert_eq!(after.since(&before).responses, 30);
        assert_eq!(c(150, 7, 1).since(&before), c(50, 2, 1));
    }
}
