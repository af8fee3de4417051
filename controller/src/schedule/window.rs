//! Deploy windows (`[[schedule.windows]]`): the hours in which a rollout may start or go
//! on, and what a scheduled deploy does when its time passed while the controller was down.
//!
//! A window is a wall-clock span (`start`..`end`) on some weekdays in one IANA zone.
//! Days are those of the window's zone, and a window whose end is before its start
//! crosses midnight and belongs to the day it starts on (`fri 22:00-02:00` ends on
//! Saturday). Around daylight-saving changes a window is the shortest stretch of absolute
//! time holding every instant whose wall-clock time lies in `[start, end)` that day:
//!
//! - in a gap, a missing `start` or `end` moves to the jump itself, so `02:00-03:00` on
//!   the spring-forward day in Berlin never opens and `02:30-04:00` opens at 03:00;
//! - in a fold, `start` takes the first of the two instants and `end` the second, so
//!   `02:00-03:00` on the fall-back day in Berlin stays open two hours.
//!
//! A scheduled deploy that the controller finds late ([`missed_decision`]) runs if it is
//! at most `missed_grace` late with `missed = "run"`, or at most [`ON_TIME_TOLERANCE`]
//! late with `missed = "skip"` (and never less than that with `run`); otherwise it is
//! skipped, with how late it was.

use std::time::Duration;

use drover_shared::duration;
use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

/// How far ahead [`Windows::next_open`] and [`Windows::closes_at`] look.
const HORIZON_DAYS: i64 = 400;

/// A missed deploy started within this long of its time counts as on time, even with
/// `missed = "skip"` (a controller restart takes a few seconds).
pub const ON_TIME_TOLERANCE: Duration = Duration::from_secs(60);

/// `[schedule]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// When rollouts may run; none means any time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowSpec>,
    /// `run` (default) or `skip`: what a scheduled deploy whose time passed while the
    /// controller was down does when the controller is back.
    #[serde(default)]
    pub missed: Missed,
    /// With `missed = "run"`, how late a missed deploy may still start (default 15m).
    #[serde(default = "default_grace", with = "duration")]
    pub missed_grace: Duration,
}

impl Default for ScheduleSpec {
    fn default() -> Self {
        Self {
            windows: Vec::new(),
            missed: Missed::default(),
            missed_grace: default_grace(),
        }
    }
}

fn default_grace() -> Duration {
    Duration::from_secs(15 * 60)
}

/// `[[schedule.windows]]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Weekdays the window opens on (`mon`..`sun`, `monday`, ranges such as `mon-fri` or
    /// `fri-mon`); default every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<String>>,
    /// Wall-clock opening time, `HH:MM`.
    pub start: String,
    /// Wall-clock closing time, `HH:MM`; before `start` means the window crosses midnight.
    pub end: String,
    /// IANA zone of `days`, `start` and `end` (default `UTC`).
    #[serde(default = "default_zone")]
    pub time_zone: String,
}

fn default_zone() -> String {
    "UTC".into()
}

/// What a scheduled deploy does when the controller finds its time already passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Start it if it is at most `missed_grace` late.
    #[default]
    Run,
    /// Start it only if it is at most [`ON_TIME_TOLERANCE`] late.
    Skip,
}

/// Why a `[schedule]` section was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// The time zone is not in the time zone database.
    #[error(
        "invalid value for `{key}`: unknown time zone {zone:?}; use an IANA name such as \"Europe/Berlin\" or \"UTC\""
    )]
    UnknownZone {
        /// The key, e.g. `schedule.windows[0].time_zone`.
        key: String,
        /// The name given.
        zone: String,
    },
    /// A day that is neither a weekday name nor a range of them.
    #[error(
        "invalid value for `{key}`: {value:?} is not a day; write mon, tue, wed, thu, fri, sat, sun or a range such as \"mon-fri\""
    )]
    BadDay {
        /// The key, e.g. `schedule.windows[0].days`.
        key: String,
        /// The entry given.
        value: String,
    },
    /// `days = []`: a window that never opens.
    #[error(
        "invalid value for `{key}`: the list is empty, so the window never opens; leave `days` out for every day"
    )]
    NoDays {
        /// The key, e.g. `schedule.windows[0].days`.
        key: String,
    },
    /// A time that is not `HH:MM`.
    #[error(
        "invalid value for `{key}`: {value:?} is not a time of day; write HH:MM, e.g. \"02:00\""
    )]
    BadTime {
        /// The key, e.g. `schedule.windows[0].start`.
        key: String,
        /// The value given.
        value: String,
    },
    /// `start == end`: the length of the window is unclear.
    #[error(
        "invalid value for `{key}`: start and end are both {time:?}; give a window of some length (end before start crosses midnight)"
    )]
    Empty {
        /// The key, e.g. `schedule.windows[0]`.
        key: String,
        /// The time given for both.
        time: String,
    },
}

/// A validated `[schedule]` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// When rollouts may run.
    pub windows: Windows,
    /// What a missed scheduled deploy does.
    pub missed: MissedPolicy,
}

impl ScheduleSpec {
    /// Checks every window and builds the schedule.
    pub fn validate(&self) -> Result<Schedule, WindowError> {
        Ok(Schedule {
            windows: Windows::validate(&self.windows)?,
            missed: MissedPolicy {
                missed: self.missed,
                grace: self.missed_grace,
            },
        })
    }
}

impl Schedule {
    /// The canonical `[schedule]` section: parses back to this schedule.
    pub fn to_spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            windows: self.windows.to_specs(),
            missed: self.missed.missed,
            missed_grace: self.missed.grace,
        }
    }
}

/// The rule for scheduled deploys found late (the controller was down at their time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissedPolicy {
    /// Run or skip.
    pub missed: Missed,
    /// How late a deploy may start with [`Missed::Run`].
    pub grace: Duration,
}

impl Default for MissedPolicy {
    fn default() -> Self {
        Self {
            missed: Missed::Run,
            grace: default_grace(),
        }
    }
}

impl MissedPolicy {
    /// The latest a deploy may start after its time: `max(grace, ON_TIME_TOLERANCE)` with
    /// `run`, [`ON_TIME_TOLERANCE`] with `skip`.
    pub fn limit(&self) -> Duration {
        match self.missed {
            Missed::Run => self.grace.max(ON_TIME_TOLERANCE),
            Missed::Skip => ON_TIME_TOLERANCE,
        }
    }
}

/// What to do with a scheduled deploy now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedDecision {
    /// Its time has come (and it is not too late): start it.
    Run,
    /// It is later than the policy allows: record it as skipped.
    Skip {
        /// How late it is.
        missed_by: Duration,
    },
    /// Its time is still ahead.
    NotYet,
}

/// Decides a deploy scheduled for `scheduled` at `now`: `NotYet` before its time, `Run`
/// while at most [`MissedPolicy::limit`] late (the limit itself included), `Skip` after.
pub fn missed_decision(
    scheduled: Timestamp,
    now: Timestamp,
    policy: &MissedPolicy,
) -> MissedDecision {
    if now < scheduled {
        return MissedDecision::NotYet;
    }
    let missed_by = now.duration_since(scheduled).unsigned_abs();
    if missed_by <= policy.limit() {
        MissedDecision::Run
    } else {
        MissedDecision::Skip { missed_by }
    }
}

/// One validated window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Bit `n` set: opens on the weekday `n` days after Monday.
    days: u8,
    /// Wall-clock opening time.
    start: Time,
    /// Wall-clock closing time; before `start` means the next day.
    end: Time,
    /// Zone of the days and times.
    tz: TimeZone,
    /// The zone's name as given (trimmed), which `tz` was looked up by.
    zone: String,
}

/// Windows are equal when they are written the same: same days, times and zone name.
impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        (self.days, self.start, self.end, &self.zone)
            == (other.days, other.start, other.end, &other.zone)
    }
}

impl Eq for Window {}

/// How a wall-clock edge that a DST change skips or repeats maps to an instant.
#[derive(Clone, Copy)]
enum Edge {
    /// First instant of a fold.
    Open,
    /// Second instant of a fold.
    Close,
}

impl Window {
    /// Validates `spec`; `key` is its place in the spec (`schedule.windows[0]`).
    pub fn validate(spec: &WindowSpec, key: &str) -> Result<Self, WindowError> {
        let days = parse_days(spec.days.as_deref(), &format!("{key}.days"))?;
        let time = |value: &str, field: &str| {
            parse_time(value).ok_or_else(|| WindowError::BadTime {
                key: format!("{key}.{field}"),
                value: value.to_string(),
            })
        };
        let start = time(&spec.start, "start")?;
        let end = time(&spec.end, "end")?;
        if start == end {
            return Err(WindowError::Empty {
                key: key.to_string(),
                time: spec.start.clone(),
            });
        }
        let zone = spec.time_zone.trim().to_string();
        let tz = TimeZone::get(&zone).map_err(|_| WindowError::UnknownZone {
            key: format!("{key}.time_zone"),
            zone: spec.time_zone.clone(),
        })?;
        Ok(Self {
            days,
            start,
            end,
            tz,
            zone,
        })
    }

    /// The canonical `[[schedule.windows]]` entry: parses back to this window.
    pub fn to_spec(&self) -> WindowSpec {
        let hhmm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        let days = (self.days != EVERY_DAY).then(|| {
            DAY_NAMES
                .iter()
                .enumerate()
                .filter(|&(i, _)| self.days & (1 << i) != 0)
                .map(|(_, &(short, _))| short.to_string())
                .collect()
        });
        WindowSpec {
            days,
            start: hhmm(self.start),
            end: hhmm(self.end),
            time_zone: self.zone.clone(),
        }
    }

    /// The window in words: `mon-fri 02:00-05:00 Europe/Berlin`, `every day ...`; runs of
    /// three or more days read as ranges.
    pub fn describe(&self) -> String {
        let hhmm = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        let days = if self.days == EVERY_DAY {
            "every day".to_string()
        } else {
            day_ranges(self.days)
        };
        format!(
            "{days} {}-{} {}",
            hhmm(self.start),
            hhmm(self.end),
            self.zone
        )
    }

    /// The window opening on `day`, as `[open, close)`; `None` on other weekdays and when
    /// a DST gap swallows it.
    pub fn on(&self, day: Date) -> Option<(Timestamp, Timestamp)> {
        if self.days & (1 << day.weekday().to_monday_zero_offset()) == 0 {
            return None;
        }
        let end_day = if self.end < self.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        let open = self.instant(day.to_datetime(self.start), Edge::Open)?;
        let close = self.instant(end_day.to_datetime(self.end), Edge::Close)?;
        (open < close).then_some((open, close))
    }

    /// The opening of this window holding `at`, if any.
    fn holding(&self, at: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let today = self.tz.to_datetime(at).date();
        [today.yesterday().ok(), Some(today)]
            .into_iter()
            .flatten()
            .filter_map(|d| self.on(d))
            .find(|&(open, close)| open <= at && at < close)
    }

    /// The first opening strictly after `at`, within the horizon.
    fn next_opening(&self, at: Timestamp) -> Option<Timestamp> {
        let mut day = self.tz.to_datetime(at).date().yesterday().ok()?;
        for _ in 0..HORIZON_DAYS {
            if let Some((open, _)) = self.on(day)
                && open > at
            {
                return Some(open);
            }
            day = day.tomorrow().ok()?;
        }
        None
    }

    fn instant(&self, dt: DateTime, edge: Edge) -> Option<Timestamp> {
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).ok(),
            AmbiguousOffset::Gap { after, .. } => super::gap_jump(&self.tz, dt, after),
            AmbiguousOffset::Fold { before, after } => match edge {
                Edge::Open => before,
                Edge::Close => after,
            }
            .to_timestamp(dt)
            .ok(),
        }
    }
}

/// Every configured window; open when any one is. No windows means always open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Windows {
    windows: Vec<Window>,
}

impl Windows {
    /// Validates `[[schedule.windows]]`; errors name the key (`schedule.windows[1].days`).
    pub fn validate(specs: &[WindowSpec]) -> Result<Self, WindowError> {
        let windows = specs
            .iter()
            .enumerate()
            .map(|(i, w)| Window::validate(w, &format!("schedule.windows[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Self { windows })
    }

    /// The canonical `[[schedule.windows]]` entries.
    pub fn to_specs(&self) -> Vec<WindowSpec> {
        self.windows.iter().map(Window::to_spec).collect()
    }

    /// Every window in words (see [`Window::describe`]).
    pub fn describe(&self) -> Vec<String> {
        self.windows.iter().map(Window::describe).collect()
    }

    /// True when no window is configured (rollouts may run at any time).
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether a rollout may run at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.holding(at).is_some())
    }

    /// `at` itself when open, else the next instant a window opens; `None` only if no
    /// window opens within a year and a month (none ever will).
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        self.windows.iter().filter_map(|w| w.next_opening(at)).min()
    }

    /// When the open stretch starting at `at` ends, across windows that overlap or touch:
    /// `Some(at)` when closed at `at`, `None` when it never ends (no windows, or windows
    /// that leave no gap for more than a year).
    pub fn closes_at(&self, at: Timestamp) -> Option<Timestamp> {
        if self.windows.is_empty() {
            return None;
        }
        let horizon = at
            .checked_add(jiff::SignedDuration::from_hours(24 * HORIZON_DAYS))
            .unwrap_or(Timestamp::MAX);
        let mut end = at;
        while let Some(close) = self
            .windows
            .iter()
            .filter_map(|w| w.holding(end))
            .map(|(_, close)| close)
            .max()
        {
            if close >= horizon {
                return None;
            }
            end = close;
        }
        Some(end)
    }
}

/// `HH:MM` (or `H:MM`), 00:00 to 23:59.
fn parse_time(s: &str) -> Option<Time> {
    let (h, m) = s.trim().split_once(':')?;
    let number = |t: &str, lengths: std::ops::RangeInclusive<usize>| {
        (lengths.contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse::<i8>().ok())
            .flatten()
    };
    Time::new(number(h, 1..=2)?, number(m, 2..=2)?, 0, 0).ok()
}

const DAY_NAMES: [(&str, &str); 7] = [
    ("mon", "monday"),
    ("tue", "tuesday"),
    ("wed", "wednesday"),
    ("thu", "thursday"),
    ("fri", "friday"),
    ("sat", "saturday"),
    ("sun", "sunday"),
];

/// Bit set of every weekday.
const EVERY_DAY: u8 = 0x7f;

/// The days of bit set `days` (bit 0 = Monday) as `mon-fri,sun`: runs of three or more
/// days joined.
fn day_ranges(days: u8) -> String {
    let on: Vec<usize> = (0..7).filter(|i| days & (1 << i) != 0).collect();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < on.len() {
        let mut j = i;
        while j + 1 < on.len() && on[j + 1] == on[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}-{}", DAY_NAMES[on[i]].0, DAY_NAMES[on[j]].0));
        } else {
            parts.extend(on[i..=j].iter().map(|d| DAY_NAMES[*d].0.to_string()));
        }
        i = j + 1;
    }
    parts.join(",")
}

/// Days as a bit set (bit 0 = Monday); `None` is every day.
fn parse_days(days: Option<&[String]>, key: &str) -> Result<u8, WindowError> {
    let Some(days) = days else {
        return Ok(EVERY_DAY);
    };
    if days.is_empty() {
        return Err(WindowError::NoDays {
            key: key.to_string(),
        });
    }
    let day = |s: &str| {
        let s = s.trim().to_ascii_lowercase();
        DAY_NAMES
            .iter()
            .position(|&(short, long)| s == short || s == long)
    };
    let mut mask = 0u8;
    for entry in days {
        let bad = || WindowError::BadDay {
            key: key.to_string(),
            value: entry.clone(),
        };
        let (first, last) = match entry.split_once('-') {
            Some((a, b)) => (day(a).ok_or_else(bad)?, day(b).ok_or_else(bad)?),
            None => {
                let d = day(entry).ok_or_else(bad)?;
                (d, d)
            }
        };
        // A range may wrap over the weekend: fri-mon is fri, sat, sun, mon.
        let mut d = first;
        loop {
            mask |= 1 << d;
            if d == last {
                break;
            }
            d = (d + 1) % 7;
        }
    }
    Ok(mask)
}
