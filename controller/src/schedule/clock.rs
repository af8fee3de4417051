//! Where "now" comes from. Schedules and deploy windows never read the system clock
//! themselves: they take a [`Clock`], so tests move time by hand with [`ManualClock`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;

/// A source of the current instant.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// A clock shared by the components that need one.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock as a [`SharedClock`].
    pub fn shared() -> SharedClock {
        Arc::new(Self)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that moves only when told to, for tests. Clones share one instant, so a test
/// keeps a clone and moves the time seen by the code under test.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// The instant every clone reports.
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock to `ts` (backwards too, to test clock jumps).
    pub fn set(&self, ts: Timestamp) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = ts;
    }

    /// Moves the clock forward by `by`, stopping at [`Timestamp::MAX`].
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add(by).unwrap_or(Timestamp::MAX);
    }

    /// This clock as a [`SharedClock`] (sharing the same instant).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
