//! Human durations in config files (`"500ms"`, `"10s"`, `"2m"`), for serde.

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

#[cfg(test)]
mod tests {
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
