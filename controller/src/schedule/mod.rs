//! Time-based rules for rollouts, as pure functions of an instant: deploy windows and
//! missed schedules ([`window`]), parsing `drover deploy --at` ([`at`]), and the
//! injectable clock that supplies "now" ([`clock`]). Nothing here sleeps or reads the
//! system clock except [`SystemClock`].

pub mod at;
pub mod clock;
pub mod window;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

pub use at::{AtError, parse_at};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use window::{
    Missed, MissedDecision, MissedPolicy, ON_TIME_TOLERANCE, Schedule, ScheduleSpec, Window,
    WindowError, WindowSpec, Windows, missed_decision,
};

/// The instant of the daylight-saving jump that skips the wall-clock time `dt` in `tz`;
/// `after` is the offset in force after the jump.
fn gap_jump(tz: &TimeZone, dt: DateTime, after: Offset) -> Option<Timestamp> {
    // Read with the later offset, a skipped time lands before the jump.
    let probe = after.to_timestamp(dt).ok()?;
    tz.following(probe).next().map(|t| t.timestamp())
}

#[cfg(test)]
mod tests;
