//! Human durations in config files (`"500ms"`, `"10s"`, `"2m"`), for serde, and
//! durations rounded for people reading a message ([`human`]: `3.9 s`, not
//! `3.921222731s`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Deserializes a duration written as a human string, e.g. `"1m30s"`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse(&s).map_err(serde::de::Error::custom)
}

/// Serializes a duration as a human string.
pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*v).to_string())
}

/// Parses `"500ms"`, `"10s"`, `"1m30s"`, with an error that names the value.
pub fn parse(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write e.g. \"500ms\", \"10s\" or \"2m\"")
    })
}

/// The same for `Option<Duration>` fields.
pub mod option {
    use super::*;

    /// Deserializes an optional human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// `d` rounded for a person: `250 ms`, `3.9 s`, `42 s`, `2 min 5 s`, `1 h 5 min`.
pub fn human(d: Duration) -> Human {
    Human(d)
}

/// A duration displayed by [`human`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl std::fmt::Display for Human {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let s = self.0.as_secs();
        if ms < 1_000 {
            write!(f, "{ms} ms")
        } else if ms < 10_000 {
            // Tenths, rounded (3.96 s reads 4.0 s).
            let tenths = (ms + 50) / 100;
            write!(f, "{}.{} s", tenths / 10, tenths % 10)
        } else if s < 60 {
            write!(f, "{} s", (ms + 500) / 1_000)
        } else if s < 3_600 {
            match s % 60 {
                0 => write!(f, "{} min", s / 60),
                r => write!(f, "{} min {r} s", s / 60),
            }
        } else {
            match (s % 3_600) / 60 {
                0 => write!(f, "{} h", s / 3_600),
                m => write!(f, "{} h {m} min", s / 3_600),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_durations_are_rounded_to_what_a_person_reads() {
        use super::human;
        use std::time::Duration;
        let cases = [
            (Duration::from_micros(250_400), "250 ms"),
            (Duration::from_nanos(3_921_222_731), "3.9 s"),
            (Duration::from_millis(9_960), "10.0 s"),
            (Duration::from_millis(42_400), "42 s"),
            (Duration::from_secs(125), "2 min 5 s"),
            (Duration::from_secs(120), "2 min"),
            (Duration::from_secs(3_900), "1 h 5 min"),
        ];
        for (d, want) in cases {
            assert_eq!(human(d).to_string(), want, "{d:?}");
        }
    }

    #[test]
    fn parses_and_names_bad_values() {
        assert_eq!(super::parse("1m30s").unwrap().as_secs(), 90);
        assert!(
            super::parse("10 parsecs")
                .unwrap_err()
                .contains("10 parsecs")
        );
    }
}
