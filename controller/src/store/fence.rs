//! Whether this controller leads, and at which epoch: what a PostgreSQL store checks
//! against the `drover_leader` row before each write, so a replica that lost the
//! lease (and has not noticed yet) cannot write over its successor's work.
//!
//! Who leads is decided elsewhere (the lease loop sets and clears the fence, and moves
//! its deadline on at each renewal); the store, the hub and the load balancer driver
//! only read it. The deadline is read on the monotonic clock at every check, so a
//! process that was stalled past it (stopped, paused, starved) refuses from its first
//! instruction after waking, before the lease loop has even run again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// This replica's claim to lead: its holder name and the epoch it holds (0: none).
#[derive(Debug)]
pub struct Fence {
    /// The name written in `drover_leader.holder` when this replica leads.
    holder: String,
    /// The lease's epoch while leading; 0 while not.
    epoch: AtomicU64,
    /// Nanoseconds after `base` from which the claim no longer holds (`u64::MAX`: no
    /// deadline).
    until: AtomicU64,
    /// The origin of `until`.
    base: Instant,
}

impl Fence {
    /// A fence for `holder`, not leading yet.
    pub fn new(holder: String) -> Arc<Fence> {
        Arc::new(Fence {
            holder,
            epoch: AtomicU64::new(0),
            until: AtomicU64::new(u64::MAX),
            base: Instant::now(),
        })
    }

    /// Leads at `epoch` (0 is the same as [`Fence::clear`]), with no deadline until
    /// [`Fence::hold_until`] sets one.
    pub fn set(&self, epoch: u64) {
        self.until.store(u64::MAX, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The claim holds until `deadline` and no longer: past it [`Fence::epoch`] is
    /// `None` even if nobody cleared the fence. The lease loop moves it on at each
    /// renewal that succeeds, to the moment it would step down.
    pub fn hold_until(&self, deadline: Instant) {
        let nanos = deadline.saturating_duration_since(self.base).as_nanos();
        self.until.store(
            u64::try_from(nanos).unwrap_or(u64::MAX - 1),
            Ordering::SeqCst,
        );
    }

    /// Leads no more.
    pub fn clear(&self) {
        self.epoch.store(0, Ordering::SeqCst);
    }

    /// The epoch held, `None` when not leading or past the deadline.
    pub fn epoch(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let until = self.until.load(Ordering::SeqCst);
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        (epoch != 0 && (until == u64::MAX || now < until)).then_some(epoch)
    }

    /// The holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leads_only_between_set_and_clear() {
        let f = Fence::new("a".into());
        assert_eq!((f.holder(), f.epoch()), ("a", None));
        f.set(3);
        assert_eq!(f.epoch(), Some(3));
        f.clear();
        assert_eq!(f.epoch(), None);
    }

    #[test]
    fn a_claim_past_its_deadline_holds_no_more_though_nobody_cleared_it() {
        let f = Fence::new("a".into());
        f.set(2);
        f.hold_until(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(f.epoch(), Some(2));
        // What a process stalled past its deadline sees on waking: the deadline is
        // behind the monotonic clock.
        f.hold_until(Instant::now());
        assert_eq!(f.epoch(), None);
        // A renewal moves it on again.
        f.hold_until(Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(f.epoch(), Some(2));
    }
}
