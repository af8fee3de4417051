//! Whether this controller leads, and at which epoch: what a PostgreSQL store checks
//! against the `drover_leader` row before each write, so a replica that lost the
//! lease (and has not noticed yet) cannot write over its successor's work.
//!
//! Who leads is decided elsewhere (the lease loop sets and clears the fence); the
//! store only reads it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// This replica's claim to lead: its holder name and the epoch it holds (0: none).
#[derive(Debug)]
pub struct Fence {
    /// The name written in `drover_leader.holder` when this replica leads.
    holder: String,
    /// The lease's epoch while leading; 0 while not.
    epoch: AtomicU64,
}

impl Fence {
    /// A fence for `holder`, not leading yet.
    pub fn new(holder: String) -> Arc<Fence> {
        Arc::new(Fence {
            holder,
            epoch: AtomicU64::new(0),
        })
    }

    /// Leads at `epoch` (0 is the same as [`Fence::clear`]).
    pub fn set(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Leads no more.
    pub fn clear(&self) {
        self.epoch.store(0, Ordering::SeqCst);
    }

    /// The epoch held, `None` when not leading.
    pub fn epoch(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::SeqCst)).filter(|e| *e != 0)
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
}
