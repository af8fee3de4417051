//! `slo = { availability = "99.5%", window = "30d" }`: a service's availability target
//! in one environment, parsed once from its two strings into exact fields (parts per
//! million, whole minutes) and written back in one canonical form.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One million: availability is kept in parts per million, so `99.5%` is exact.
pub const PPM: u64 = 1_000_000;

/// The shortest window: a budget over less is noise.
const MIN_WINDOW: Duration = Duration::from_secs(60);
/// The longest window: samples are kept for the whole window.
const MAX_WINDOW: Duration = Duration::from_secs(90 * 86_400);

/// An availability target over a rolling window, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SloSpec {
    /// Share of requests that must not fail, in parts per million (`99.5%` = 995,000);
    /// strictly between 500,000 and 1,000,000.
    pub availability_ppm: u32,
    /// The rolling window the target holds over: whole minutes, from 1 minute to 90 days.
    pub window: Duration,
}

/// `slo` as written in the spec: both values are strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// `"99.5%"` or `"99.5"`.
    pub availability: String,
    /// `"30d"`, `"12h"` or `"90m"`.
    pub window: String,
}

/// Why an `slo` was refused; the message names the key and what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {reason}")]
pub struct SloSpecError {
    /// `slo.availability` or `slo.window`.
    pub key: &'static str,
    /// What is wrong and what to write instead.
    pub reason: String,
}

impl From<SloSpecError> for crate::spec::SpecError {
    fn from(e: SloSpecError) -> Self {
        crate::spec::SpecError::Invalid {
            key: e.key.to_string(),
            reason: e.reason,
        }
    }
}

impl SloSpec {
    /// Parses the two strings of an `slo` table.
    pub fn parse(availability: &str, window: &str) -> Result<Self, SloSpecError> {
        Ok(Self {
            availability_ppm: parse_availability(availability)?,
            window: parse_window(window)?,
        })
    }

    /// Parses the table as deserialized.
    pub fn from_raw(raw: &RawSlo) -> Result<Self, SloSpecError> {
        Self::parse(&raw.availability, &raw.window)
    }

    /// The canonical form (`"99.5%"`, `"30d"`), which parses back to the same spec.
    pub fn to_raw(&self) -> RawSlo {
        RawSlo {
            availability: self.availability_text(),
            window: self.window_text(),
        }
    }

    /// The target as a fraction (`0.995`).
    pub fn target(&self) -> f64 {
        f64::from(self.availability_ppm) / PPM as f64
    }

    /// `99.5%`: the target as a percentage, without trailing zeros.
    pub fn availability_text(&self) -> String {
        let whole = self.availability_ppm / 10_000;
        let frac = self.availability_ppm % 10_000;
        if frac == 0 {
            return format!("{whole}%");
        }
        let digits = format!("{frac:04}");
        format!("{whole}.{}%", digits.trim_end_matches('0'))
    }

    /// `30d`, `12h` or `90m`: the window in its largest whole unit.
    pub fn window_text(&self) -> String {
        let minutes = self.window.as_secs() / 60;
        if minutes.is_multiple_of(1_440) {
            format!("{}d", minutes / 1_440)
        } else if minutes.is_multiple_of(60) {
            format!("{}h", minutes / 60)
        } else {
            format!("{minutes}m")
        }
    }
}

impl fmt::Display for SloSpec {
    /// `99.5% over 30d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} over {}",
            self.availability_text(),
            self.window_text()
        )
    }
}

fn parse_availability(text: &str) -> Result<u32, SloSpecError> {
    let bad = |why: &str| SloSpecError {
        key: "slo.availability",
        reason: format!("{text:?} {why}; write a percentage such as \"99.5%\" or \"99.9%\""),
    };
    let number = text.trim().trim_end_matches('%').trim_end();
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac)) {
        return Err(bad("is not a percentage"));
    }
    if frac.len() > 4 {
        return Err(bad("has more than 4 decimals"));
    }
    let whole: u64 = whole.parse().map_err(|_| bad("is not a percentage"))?;
    let frac: u64 = format!("{frac:0<4}").parse().unwrap_or(0);
    let ppm = whole.saturating_mul(10_000).saturating_add(frac);
    if ppm >= PPM {
        return Err(bad("leaves no error budget at all (it must be below 100%)"));
    }
    if ppm < PPM / 2 {
        return Err(bad(
            "is below 50% (a fraction such as 0.995 reads as 0.995%)",
        ));
    }
    Ok(ppm as u32)
}

fn parse_window(text: &str) -> Result<Duration, SloSpecError> {
    let bad = |why: &str| SloSpecError {
        key: "slo.window",
        reason: format!(
            "{text:?} {why}; write a whole number of days, hours or minutes such as \"30d\", \"7d\", \"12h\" or \"90m\""
        ),
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad("is not a duration"))?;
    let minutes = match unit.trim() {
        "d" => n.saturating_mul(1_440),
        "h" => n.saturating_mul(60),
        "m" => n,
        "" => return Err(bad("has no unit")),
        _ => return Err(bad("has an unknown unit")),
    };
    let window = Duration::from_secs(minutes.saturating_mul(60));
    if window < MIN_WINDOW {
        return Err(bad("is shorter than a minute"));
    }
    if window > MAX_WINDOW {
        return Err(bad("is longer than 90d"));
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_percentages_with_or_without_the_sign() {
        for (text, ppm) in [
            ("99.5%", 995_000),
            ("99.5", 995_000),
            (" 99.95 % ", 999_500),
            ("99.9999%", 999_999),
            ("90%", 900_000),
            ("50", 500_000),
        ] {
            assert_eq!(parse_availability(text), Ok(ppm), "{text}");
        }
    }

    #[test]
    fn refuses_nonsense_availability_naming_the_key() {
        for text in [
            "100%", "0.995", "abc", "", "99,5%", "-99", "99.99999", "1e2", "99.5%%x",
        ] {
            let e = parse_availability(text).unwrap_err();
            assert_eq!(e.key, "slo.availability", "{text}");
            assert!(e.reason.contains("\"99.5%\""), "{text}: {e}");
        }
        let e = SloSpec::parse("100", "30d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid value for `slo.availability`: \"100\" leaves no error budget at all (it must be below 100%); write a percentage such as \"99.5%\" or \"99.9%\""
        );
    }

    #[test]
    fn parses_windows_in_days_hours_and_minutes() {
        let day = 86_400;
        for (text, secs) in [
            ("30d", 30 * day),
            ("12h", 12 * 3_600),
            ("90m", 90 * 60),
            ("1m", 60),
            ("90d", 90 * day),
        ] {
            assert_eq!(parse_window(text), Ok(Duration::from_secs(secs)), "{text}");
        }
        for text in ["30", "30s", "0d", "91d", "d", "1.5d", "thirty days", ""] {
            let e = parse_window(text).unwrap_err();
            assert_eq!(e.key, "slo.window", "{text}");
            assert!(e.reason.contains("\"30d\""), "{text}: {e}");
        }
    }

    #[test]
    fn the_canonical_form_parses_back_to_the_same_spec() {
        for (a, w, canon) in [
            ("99.5", "720h", ("99.5%", "30d")),
            ("99.90%", "36h", ("99.9%", "36h")),
            ("99.9999", "90m", ("99.9999%", "90m")),
            ("95", "7d", ("95%", "7d")),
        ] {
            let spec = SloSpec::parse(a, w).unwrap();
            let raw = spec.to_raw();
            assert_eq!((raw.availability.as_str(), raw.window.as_str()), canon);
            assert_eq!(SloSpec::from_raw(&raw), Ok(spec));
        }
        let spec = SloSpec::parse("99.5%", "30d").unwrap();
        assert_eq!(spec.to_string(), "99.5% over 30d");
        assert!((spec.target() - 0.995).abs() < 1e-12);
    }

    #[test]
    fn the_raw_form_refuses_unknown_keys_in_toml() {
        #[derive(Deserialize)]
        struct Env {
            slo: RawSlo,
        }
        let ok: Env =
            toml::from_str(r#"slo = { availability = "99.5%", window = "30d" }"#).expect("parses");
        assert_eq!(
            SloSpec::from_raw(&ok.slo).unwrap().availability_ppm,
            995_000
        );
        let typo = toml::from_str::<Env>(r#"slo = { availabilty = "99.5%", window = "30d" }"#);
        assert!(typo.is_err());
    }
}
