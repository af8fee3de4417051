//! The fencing token of a replica on a shared database: which lease holder this
//! controller is and the epoch it leads under (none while it does not lead). The
//! PostgreSQL store checks it in the transaction of every write; a replica whose epoch
//! was superseded writes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// This replica's identity in the leader lease and the epoch it leads under.
#[derive(Debug)]
pub struct Fence {
    /// The lease holder's name (unique per process start).
    holder: String,
    /// The epoch it leads under; 0 while it does not lead.
    epoch: AtomicU64,
}

impl Fence {
    /// A fence for `holder`, not leading yet.
    pub fn new(holder: String) -> Arc<Self> {
        Arc::new(Self {
            holder,
            epoch: AtomicU64::new(0),
        })
    }

    /// Leads under `epoch` from now on.
    pub fn set(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Leads no more: every write is refused from now on.
    pub fn clear(&self) {
        self.epoch.store(0, Ordering::SeqCst);
    }

    /// The epoch it leads under, if it leads.
    pub fn epoch(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::SeqCst)).filter(|e| *e > 0)
    }

    /// The lease holder's name.
    pub fn holder(&self) -> &str {
        &self.holder
    }
}
