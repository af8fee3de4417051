//! The error-budget arithmetic, pure: how much a cumulative counter grew between
//! samples (with resets), and what is left of a budget. Exact on whole numbers, no I/O.
//!
//! A series is one HAProxy's backend counters, sampled over time. Its increase over a
//! window is what a monitoring system's `increase()` counts, without extrapolation to
//! the window's edges: the sum of the steps between consecutive samples inside the
//! window. A step whose counter went down, or whose HAProxy is another process (a
//! reload or a restart: new generation), counts the new value: everything since the
//! reset. So a restarted HAProxy whose counters already passed the old ones is still
//! read as a reset, not as a small increase.

use std::fmt::Write as _;

use super::spec::{PPM, SloSpec};

/// Which HAProxy process produced a sample: its pid and start time, from `show info`.
/// Two samples of one series with different generations have counters that started
/// from zero independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation of the process `pid` started at `start_unix_s` (Linux pids stay
    /// below 2^22, so both fit one integer and SQLite stores it as one).
    pub fn new(pid: u32, start_unix_s: u64) -> Self {
        Self((start_unix_s << 22) | u64::from(pid & 0x3f_ffff))
    }
}

/// One reading of a backend's cumulative counters on one HAProxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read, Unix ms.
    pub at_ms: u64,
    /// Requests the backend handled since the process started (`req_tot`).
    pub requests: u64,
    /// Of those, answered 5xx (`hrsp_5xx`), HAProxy's own 502/503/504 included.
    pub errors: u64,
    /// The process that counted them.
    pub generation: Generation,
}

/// Requests and errors counted over an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Increase {
    /// Requests.
    pub requests: u64,
    /// 5xx answers among them.
    pub errors: u64,
}

impl std::ops::Add for Increase {
    type Output = Increase;
    fn add(self, o: Increase) -> Increase {
        Increase {
            requests: self.requests + o.requests,
            errors: self.errors + o.errors,
        }
    }
}

/// What happened between two consecutive samples of one series. A reset (another
/// generation, or either counter lower than before) counts `cur` whole.
pub fn step(prev: &Sample, cur: &Sample) -> Increase {
    let reset = prev.generation != cur.generation
        || cur.requests < prev.requests
        || cur.errors < prev.errors;
    if reset {
        Increase {
            requests: cur.requests,
            errors: cur.errors,
        }
    } else {
        Increase {
            requests: cur.requests - prev.requests,
            errors: cur.errors - prev.errors,
        }
    }
}

/// The increase of one series over its samples with `at_ms >= since_ms` (in time order).
pub fn increase(series: &[Sample], since_ms: u64) -> Increase {
    let inside: Vec<&Sample> = series.iter().filter(|s| s.at_ms >= since_ms).collect();
    inside
        .windows(2)
        .map(|w| step(w[0], w[1]))
        .fold(Increase::default(), |a, b| a + b)
}

/// A service's error budget in one environment, computed once from what was counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// The service.
    pub service: String,
    /// The environment (`production`).
    pub environment: String,
    /// The target and window.
    pub spec: SloSpec,
    /// Requests and errors counted over the window, every HAProxy added up.
    pub counted: Increase,
    /// Achieved availability (`1 - errors / requests`); `None` without requests.
    pub availability: Option<f64>,
    /// Errors the window allows: `requests * (1 - target)`.
    pub allowed_errors: f64,
    /// `allowed_errors - errors`: below zero once overspent.
    pub remaining_errors: f64,
    /// `remaining_errors / allowed_errors`: 1 untouched, 0 spent, below 0 overspent;
    /// 1 without requests.
    pub remaining_ratio: f64,
    /// No budget left: deploys into this environment are held.
    pub spent: bool,
    /// The oldest sample inside the window (Unix ms): the budget covers only the time
    /// since then when it is younger than the window. `None`: no sample yet.
    pub measured_since_ms: Option<u64>,
}

impl Budget {
    /// The budget of `spec` given what the window counted. No requests: nothing spent.
    pub fn compute(
        service: &str,
        environment: &str,
        spec: SloSpec,
        counted: Increase,
        measured_since_ms: Option<u64>,
    ) -> Self {
        // Errors cannot outnumber requests; two counters read a moment apart might.
        let errors = counted.errors.min(counted.requests);
        let counted = Increase {
            requests: counted.requests,
            errors,
        };
        let allowed_errors =
            counted.requests as f64 * (PPM - u64::from(spec.availability_ppm)) as f64 / PPM as f64;
        let remaining_errors = allowed_errors - errors as f64;
        let (availability, remaining_ratio, spent) = if counted.requests == 0 {
            (None, 1.0, false)
        } else {
            (
                Some(1.0 - errors as f64 / counted.requests as f64),
                remaining_errors / allowed_errors,
                remaining_errors <= 0.0,
            )
        };
        Self {
            service: service.to_string(),
            environment: environment.to_string(),
            spec,
            counted,
            availability,
            allowed_errors,
            remaining_errors,
            remaining_ratio,
            spent,
            measured_since_ms,
        }
    }

    /// One sentence for people, and for the deploy gate's refusal when spent.
    pub fn describe(&self) -> String {
        let Self {
            service,
            environment,
            spec,
            counted,
            ..
        } = self;
        let of = format!(
            "{} of {} allowed ({spec}, {} {})",
            plural(counted.errors, "error"),
            count(self.allowed_errors),
            thousands(counted.requests),
            if counted.requests == 1 {
                "request"
            } else {
                "requests"
            },
        );
        if counted.requests == 0 {
            format!(
                "error budget of {service} in {environment}: no requests counted in the last {} yet, nothing spent ({spec})",
                spec.window_text()
            )
        } else if self.spent {
            format!(
                "error budget of {service} in {environment} is spent: {of}; deploys are held until it recovers; a rollback still goes through; an admin may override with --override --reason"
            )
        } else {
            format!(
                "error budget of {service} in {environment}: {}% left, {of}",
                (self.remaining_errors * 100.0 / self.allowed_errors).floor()
            )
        }
    }
}

/// `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An allowed count: whole when it is (`25`), else with one decimal (`12.5`, `0.3`).
fn count(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        thousands(x as u64)
    } else {
        let mut s = String::new();
        let _ = write!(s, "{x:.1}");
        s
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{} {word}s", thousands(n))
    }
}

#[cfg(test)]
mod tests;
