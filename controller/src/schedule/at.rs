//! Parsing the instant of a scheduled deploy (`drover deploy --at`). An exact instant
//! (RFC 3339 with `Z` or an offset) is taken as is; a wall-clock time needs an IANA zone,
//! and one that the zone skips (DST gap) or repeats (DST fold) is refused with an
//! explanation rather than silently moved.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};
use jiff::{Timestamp, Zoned};

/// The accepted forms, quoted by every error.
const FORMS: &str = "write an RFC 3339 instant (2026-12-01T02:00:00Z, 2026-12-01T02:00:00+01:00) \
     or a local time with an IANA zone (2026-12-01T02:00 Europe/Berlin, \
     2026-12-01 02:00 America/New_York, 2026-12-01T02:00[Europe/Berlin])";

/// Why a `--at` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    /// Not a date and time in any accepted form.
    #[error("invalid time {value:?}: {reason}; {FORMS}")]
    Invalid {
        /// The value as given.
        value: String,
        /// What did not parse.
        reason: String,
    },
    /// A wall-clock time with neither an offset nor a time zone.
    #[error("time {value:?} has no offset or time zone, so it names no instant; {FORMS}")]
    MissingZone {
        /// The value as given.
        value: String,
    },
    /// The zone is not in the time zone database.
    #[error(
        "unknown time zone {zone:?} in {value:?}: use an IANA name such as Europe/Berlin or UTC; {FORMS}"
    )]
    UnknownZone {
        /// The value as given.
        value: String,
        /// The zone name that was not found.
        zone: String,
    },
    /// The wall-clock time is skipped by a daylight-saving change (a gap).
    #[error("{value} does not exist: clocks jump from {from} to {to}; pick another time")]
    Nonexistent {
        /// The value as given.
        value: String,
        /// Wall-clock time at which the clocks jump (`02:00`).
        from: String,
        /// Wall-clock time they jump to (`03:00`).
        to: String,
    },
    /// The wall-clock time happens twice because clocks go back (a fold).
    #[error(
        "{value} is ambiguous: clocks go back, so it happens twice, first at {first} and again at {second}; \
         add the offset to choose, e.g. {civil}{first}[{zone}] or {civil}{second}[{zone}]"
    )]
    Ambiguous {
        /// The value as given.
        value: String,
        /// The wall-clock time, ISO form (`2026-10-25T02:30:00`).
        civil: String,
        /// The zone name.
        zone: String,
        /// Offset of the first occurrence (`+02:00`).
        first: String,
        /// Offset of the second occurrence (`+01:00`).
        second: String,
    },
}

/// Parses the instant of a scheduled deploy; see [`AtError`] for what is refused.
pub fn parse_at(s: &str) -> Result<Timestamp, AtError> {
    let value = s.trim();
    let invalid = |reason: String| AtError::Invalid {
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let (civil, zone) = if let Some(head) = value.strip_suffix(']') {
        let (civil, zone) = head
            .split_once('[')
            .ok_or_else(|| invalid("unbalanced ']'".into()))?;
        (civil.trim(), zone.trim())
    } else if let Ok(ts) = value.parse::<Timestamp>() {
        return Ok(ts);
    } else {
        match value.rsplit_once(char::is_whitespace) {
            // A trailing word that starts with a digit is part of the time, not a zone.
            Some((civil, zone)) if !zone.starts_with(|c: char| c.is_ascii_digit()) => {
                (civil.trim(), zone)
            }
            _ => {
                return match value.parse::<DateTime>() {
                    Ok(_) => Err(AtError::MissingZone {
                        value: value.to_string(),
                    }),
                    Err(e) => Err(invalid(e.to_string())),
                };
            }
        }
    };
    if !civil.contains(':') {
        return Err(invalid("it has no time of day (HH:MM)".into()));
    }
    let exact = civil.parse::<Timestamp>().is_ok();
    let dt = if exact {
        None
    } else {
        Some(
            civil
                .parse::<DateTime>()
                .map_err(|e| invalid(e.to_string()))?,
        )
    };
    let tz = TimeZone::get(zone).map_err(|_| AtError::UnknownZone {
        value: value.to_string(),
        zone: zone.to_string(),
    })?;
    match dt {
        Some(dt) => resolve(value, zone, &tz, dt),
        // An offset chooses the instant; jiff checks that it is one the zone uses.
        None => format!("{civil}[{zone}]")
            .parse::<Zoned>()
            .map(|z| z.timestamp())
            .map_err(|e| invalid(e.to_string())),
    }
}

/// The one instant `dt` names in `tz`, or why there is none.
fn resolve(value: &str, zone: &str, tz: &TimeZone, dt: DateTime) -> Result<Timestamp, AtError> {
    let invalid = |e: jiff::Error| AtError::Invalid {
        value: value.to_string(),
        reason: e.to_string(),
    };
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(dt).map_err(invalid),
        AmbiguousOffset::Gap { before, after } => {
            let (from, to) = match super::gap_jump(tz, dt, after) {
                Some(jump) => (before.to_datetime(jump), after.to_datetime(jump)),
                None => (dt, dt),
            };
            Err(AtError::Nonexistent {
                value: value.to_string(),
                from: from.strftime("%H:%M").to_string(),
                to: to.strftime("%H:%M").to_string(),
            })
        }
        AmbiguousOffset::Fold { before, after } => Err(AtError::Ambiguous {
            value: value.to_string(),
            civil: dt.strftime("%Y-%m-%dT%H:%M:%S").to_string(),
            zone: zone.to_string(),
            first: offset_text(before),
            second: offset_text(after),
        }),
    }
}

/// `+02:00`, `-05:00`, `+05:45`.
fn offset_text(o: Offset) -> String {
    let secs = o.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let secs = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}
