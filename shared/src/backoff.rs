//! Jittered exponential backoff for reconnect and retry loops.
//!
//! "Full jitter": each delay is uniform in `[0, min(max, base * 2^attempt)]`, so a fleet of
//! agents that lost the controller at the same instant does not reconnect in lockstep.

use std::time::Duration;

/// Delay schedule for one retry loop. Call [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First ceiling; doubles with every failed attempt.
    base: Duration,
    /// Upper bound of any single delay.
    max: Duration,
    /// Failed attempts since the last reset.
    attempt: u32,
}

impl Backoff {
    /// A schedule starting at `base` and never exceeding `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The ceiling for the current attempt (no jitter applied).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay to wait, and advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = ceiling.as_millis().min(u64::MAX as u128) as u64;
        // Never zero: a tight loop against a refusing peer helps nobody.
        Duration::from_millis(rand::random_range(millis / 10..=millis.max(1)))
    }

    /// Back to the first step, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = vec![];
        for _ in 0..6 {
            ceilings.push(b.ceiling().as_millis());
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn delay_is_within_ceiling_and_not_zero() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
        for _ in 0..100 {
            let c = b.ceiling();
            let d = b.next_delay();
            assert!(d <= c && d >= c / 10, "{d:?} outside [{:?}, {c:?}]", c / 10);
        }
    }
}
