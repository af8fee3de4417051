use std::time::Duration;

use jiff::civil::Weekday;
use jiff::{Timestamp, Zoned};
use serde::Deserialize;

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// An instant written as a wall-clock time with an explicit offset and zone.
fn zoned(s: &str) -> Timestamp {
    s.parse::<Zoned>().unwrap().timestamp()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    schedule: ScheduleSpec,
}

fn parse_doc(text: &str) -> Result<ScheduleSpec, String> {
    toml::from_str::<Doc>(text)
        .map(|d| d.schedule)
        .map_err(|e| e.to_string())
}

fn window(days: Option<&[&str]>, start: &str, end: &str, zone: &str) -> WindowSpec {
    WindowSpec {
        days: days.map(|d| d.iter().map(|s| s.to_string()).collect()),
        start: start.into(),
        end: end.into(),
        time_zone: zone.into(),
    }
}

fn windows(specs: &[WindowSpec]) -> Windows {
    Windows::validate(specs).unwrap()
}

mod clock {
    use super::*;

    #[test]
    fn manual_clock_clones_share_one_instant() {
        let clock = ManualClock::new(ts("2026-12-01T00:00:00Z"));
        let shared: SharedClock = clock.shared();
        clock.advance(Duration::from_secs(90));
        assert_eq!(shared.now(), ts("2026-12-01T00:01:30Z"));
        clock.set(ts("2026-11-30T00:00:00Z"));
        assert_eq!(shared.now(), ts("2026-11-30T00:00:00Z"), "set may go back");
        clock.set(Timestamp::MAX);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), Timestamp::MAX, "advance saturates");
    }

    #[test]
    fn system_clock_reads_the_wall_clock() {
        let before = Timestamp::now();
        let now = SystemClock::shared().now();
        assert!(before <= now && now <= Timestamp::now());
    }
}

mod at {
    use super::*;

    #[test]
    fn exact_instants() {
        assert_eq!(
            parse_at("2026-12-01T02:00:00Z").unwrap(),
            ts("2026-12-01T02:00:00Z")
        );
        assert_eq!(
            parse_at("2026-12-01T02:00:00+01:00").unwrap(),
            ts("2026-12-01T01:00:00Z")
        );
        assert_eq!(
            parse_at("  2026-12-01T02:00:00-05:00 ").unwrap(),
            ts("2026-12-01T07:00:00Z")
        );
    }

    #[test]
    fn local_times_with_a_zone() {
        let berlin = ts("2026-12-01T01:00:00Z");
        assert_eq!(parse_at("2026-12-01T02:00 Europe/Berlin").unwrap(), berlin);
        assert_eq!(parse_at("2026-12-01 02:00 Europe/Berlin").unwrap(), berlin);
        assert_eq!(parse_at("2026-12-01T02:00[Europe/Berlin]").unwrap(), berlin);
        assert_eq!(
            parse_at("2026-12-01 02:00 America/New_York").unwrap(),
            ts("2026-12-01T07:00:00Z")
        );
        // Summer time applies in July.
        assert_eq!(
            parse_at("2026-07-01T02:00 America/New_York").unwrap(),
            ts("2026-07-01T06:00:00Z")
        );
        assert_eq!(
            parse_at("2026-12-01T02:00 UTC").unwrap(),
            ts("2026-12-01T02:00:00Z")
        );
    }

    #[test]
    fn an_offset_with_a_zone_must_agree() {
        assert_eq!(
            parse_at("2026-12-01T02:00+01:00[Europe/Berlin]").unwrap(),
            ts("2026-12-01T01:00:00Z")
        );
        assert_eq!(
            parse_at("2026-12-01T02:00+01:00 Europe/Berlin").unwrap(),
            ts("2026-12-01T01:00:00Z")
        );
        let err = parse_at("2026-12-01T02:00+05:00[Europe/Berlin]").unwrap_err();
        assert!(matches!(err, AtError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("+05"), "{err}");
    }

    #[test]
    fn a_time_in_a_gap_is_refused_with_the_jump() {
        let err = parse_at("2026-03-29T02:30 Europe/Berlin").unwrap_err();
        assert_eq!(
            err.to_string(),
            "2026-03-29T02:30 Europe/Berlin does not exist: clocks jump from 02:00 to 03:00; pick another time"
        );
        let err = parse_at("2026-03-08 02:00 America/New_York").unwrap_err();
        assert_eq!(
            err,
            AtError::Nonexistent {
                value: "2026-03-08 02:00 America/New_York".into(),
                from: "02:00".into(),
                to: "03:00".into(),
            }
        );
        assert!(parse_at("2026-03-29T02:59[Europe/Berlin]").is_err());
        // Either side of the gap is fine.
        assert_eq!(
            parse_at("2026-03-29T01:59 Europe/Berlin").unwrap(),
            ts("2026-03-29T00:59:00Z")
        );
        assert_eq!(
            parse_at("2026-03-29T03:00 Europe/Berlin").unwrap(),
            ts("2026-03-29T01:00:00Z")
        );
    }

    #[test]
    fn a_time_in_a_fold_asks_for_an_offset() {
        let err = parse_at("2026-10-25T02:30 Europe/Berlin").unwrap_err();
        let AtError::Ambiguous { first, second, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((first.as_str(), second.as_str()), ("+02:00", "+01:00"));
        let msg = err.to_string();
        assert!(
            msg.starts_with("2026-10-25T02:30 Europe/Berlin is ambiguous"),
            "{msg}"
        );
        // Both suggestions in the message are accepted and pick one occurrence each.
        let earlier = "2026-10-25T02:30:00+02:00[Europe/Berlin]";
        let later = "2026-10-25T02:30:00+01:00[Europe/Berlin]";
        assert!(msg.contains(earlier) && msg.contains(later), "{msg}");
        assert_eq!(parse_at(earlier).unwrap(), ts("2026-10-25T00:30:00Z"));
        assert_eq!(parse_at(later).unwrap(), ts("2026-10-25T01:30:00Z"));
        assert!(matches!(
            parse_at("2026-11-01 01:30 America/New_York"),
            Err(AtError::Ambiguous { .. })
        ));
    }

    #[test]
    fn a_local_time_needs_a_zone() {
        for value in ["2026-12-01T02:00", "2026-12-01 02:00"] {
            let err = parse_at(value).unwrap_err();
            assert_eq!(
                err,
                AtError::MissingZone {
                    value: value.into()
                }
            );
            assert!(err.to_string().contains("Europe/Berlin"), "shows the forms");
        }
    }

    #[test]
    fn unknown_zones_are_named() {
        let err = parse_at("2026-12-01T02:00 Mars/Olympus").unwrap_err();
        assert!(matches!(&err, AtError::UnknownZone { zone, .. } if zone == "Mars/Olympus"));
        assert!(err.to_string().contains("\"Mars/Olympus\""), "{err}");
        assert!(matches!(
            parse_at("2026-12-01T02:00[Nowhere]"),
            Err(AtError::UnknownZone { .. })
        ));
    }

    #[test]
    fn garbage_is_named_with_the_accepted_forms() {
        for value in [
            "",
            "tomorrow",
            "next tuesday",
            "2026-13-01T02:00:00Z",
            "2026-12-01 Europe/Berlin",
            "2026-12-01T25:00 Europe/Berlin",
            "2026-12-01T02:00[Europe/Berlin",
            "2026-12-01T02:00]",
        ] {
            let err = parse_at(value).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, AtError::Invalid { .. } | AtError::MissingZone { .. }),
                "{value}: {err:?}"
            );
            assert!(msg.contains(&format!("{:?}", value.trim())), "{msg}");
            assert!(msg.contains("2026-12-01T02:00 Europe/Berlin"), "{msg}");
        }
    }
}

mod spec {
    use super::*;

    #[test]
    fn parses_with_defaults() {
        let s = parse_doc(
            r#"
            [schedule]
            [[schedule.windows]]
            start = "02:00"
            end = "05:00"
            "#,
        )
        .unwrap();
        assert_eq!(s.missed, Missed::Run);
        assert_eq!(s.missed_grace, Duration::from_secs(900));
        assert_eq!(s.windows, vec![window(None, "02:00", "05:00", "UTC")]);
        let schedule = s.validate().unwrap();
        assert_eq!(schedule.missed, MissedPolicy::default());
        assert_eq!(parse_doc("[schedule]").unwrap(), ScheduleSpec::default());
    }

    #[test]
    fn parses_every_key() {
        let s = parse_doc(
            r#"
            [schedule]
            missed = "skip"
            missed_grace = "1h"
            [[schedule.windows]]
            days = ["mon-fri"]
            start = "22:00"
            end = "02:00"
            time_zone = "Europe/Berlin"
            [[schedule.windows]]
            days = ["sat", "sun"]
            start = "10:00"
            end = "12:00"
            "#,
        )
        .unwrap();
        assert_eq!(s.missed, Missed::Skip);
        assert_eq!(s.missed_grace, Duration::from_secs(3600));
        assert_eq!(s.windows.len(), 2);
        assert_eq!(s.windows[0].days.as_deref().unwrap(), ["mon-fri"]);
        s.validate().unwrap();
        let back: ScheduleSpec = toml::from_str(&toml::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s, "round-trips");
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        for (text, needle) in [
            ("[schedule]\nmised = \"run\"", "mised"),
            ("[schedule]\nmissed = \"later\"", "later"),
            ("[schedule]\nmissed_grace = \"soon\"", "soon"),
            (
                "[[schedule.windows]]\nstart = \"02:00\"\nend = \"03:00\"\nzone = \"UTC\"",
                "zone",
            ),
            ("[[schedule.windows]]\nstart = \"02:00\"", "end"),
        ] {
            let err = parse_doc(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn validation_errors_name_the_key_and_value() {
        let ok = window(None, "02:00", "03:00", "UTC");
        let cases: Vec<(WindowSpec, &str, &str)> = vec![
            (
                window(None, "02:00", "03:00", "Europe/Berlinn"),
                "schedule.windows[1].time_zone",
                "\"Europe/Berlinn\"",
            ),
            (
                window(Some(&["mon", "fri-sonday"]), "02:00", "03:00", "UTC"),
                "schedule.windows[1].days",
                "\"fri-sonday\"",
            ),
            (
                window(Some(&["weekdays"]), "02:00", "03:00", "UTC"),
                "schedule.windows[1].days",
                "\"weekdays\"",
            ),
            (
                window(Some(&[]), "02:00", "03:00", "UTC"),
                "schedule.windows[1].days",
                "empty",
            ),
            (
                window(None, "25:00", "03:00", "UTC"),
                "schedule.windows[1].start",
                "\"25:00\"",
            ),
            (
                window(None, "02:00", "3pm", "UTC"),
                "schedule.windows[1].end",
                "\"3pm\"",
            ),
            (
                window(None, "02:00", "03:60", "UTC"),
                "schedule.windows[1].end",
                "\"03:60\"",
            ),
            (
                window(None, "02:00", "03:00:00", "UTC"),
                "schedule.windows[1].end",
                "\"03:00:00\"",
            ),
            (
                window(None, "02:00", "2:00", "UTC"),
                "schedule.windows[1]",
                "\"02:00\"",
            ),
        ];
        for (bad, key, value) in cases {
            let err = Windows::validate(&[ok.clone(), bad.clone()]).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{key}`")), "{bad:?}: {msg}");
            assert!(msg.contains(value), "{bad:?}: {msg}");
        }
    }

    #[test]
    fn day_names_and_ranges() {
        let at = |day: &str| {
            // 2026-12-07 is a Monday; the window is 12:00-13:00 UTC.
            let date: jiff::civil::Date = "2026-12-07".parse().unwrap();
            let offset = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .iter()
                .position(|d| *d == day)
                .unwrap();
            let date = date
                .checked_add(jiff::Span::new().days(offset as i64))
                .unwrap();
            date.at(12, 30, 0, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap()
                .timestamp()
        };
        let open_on = |days: &[&str]| -> Vec<&str> {
            let w = windows(&[window(Some(days), "12:00", "13:00", "UTC")]);
            ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                .into_iter()
                .filter(|d| w.is_open(at(d)))
                .collect()
        };
        assert_eq!(open_on(&["mon-fri"]), ["mon", "tue", "wed", "thu", "fri"]);
        assert_eq!(open_on(&["fri-mon"]), ["mon", "fri", "sat", "sun"]);
        assert_eq!(open_on(&["Saturday", " WED "]), ["wed", "sat"]);
        assert_eq!(open_on(&["tue", "tue-tue"]), ["tue"]);
        assert_eq!(open_on(&["sun-sat"]).len(), 7);
    }

    #[test]
    fn the_canonical_form_parses_back_to_the_same_schedule() {
        let spec = ScheduleSpec {
            windows: vec![
                window(
                    Some(&["fri-mon", " WED "]),
                    "9:05",
                    "2:00",
                    " Europe/Berlin ",
                ),
                window(Some(&["sun-sat"]), "02:00", "04:00", "UTC"),
                window(None, "12:00", "13:00", "America/New_York"),
            ],
            missed: Missed::Skip,
            missed_grace: Duration::from_secs(90),
        };
        let schedule = spec.validate().unwrap();
        let canonical = schedule.to_spec();
        assert_eq!(
            canonical.windows,
            [
                window(
                    Some(&["mon", "wed", "fri", "sat", "sun"]),
                    "09:05",
                    "02:00",
                    "Europe/Berlin"
                ),
                window(None, "02:00", "04:00", "UTC"),
                window(None, "12:00", "13:00", "America/New_York"),
            ]
        );
        assert_eq!(
            (canonical.missed, canonical.missed_grace),
            (Missed::Skip, Duration::from_secs(90))
        );
        assert_eq!(canonical.validate().unwrap(), schedule);
        assert_eq!(canonical.validate().unwrap().to_spec(), canonical);
        assert_ne!(
            windows(&[window(None, "12:00", "13:00", "UTC")]),
            windows(&[window(None, "12:00", "13:00", "Europe/London")]),
            "windows in different zones differ"
        );
    }
}

mod windows {
    use super::*;

    #[test]
    fn the_calendar_days_used_below() {
        let wd = |d: &str| d.parse::<jiff::civil::Date>().unwrap().weekday();
        assert_eq!(wd("2026-12-01"), Weekday::Tuesday);
        assert_eq!(wd("2026-12-04"), Weekday::Friday);
        assert_eq!(wd("2026-03-29"), Weekday::Sunday);
        assert_eq!(wd("2026-10-25"), Weekday::Sunday);
        assert_eq!(wd("2026-03-08"), Weekday::Sunday);
        assert_eq!(wd("2026-11-01"), Weekday::Sunday);
    }

    #[test]
    fn windows_read_in_words_with_runs_of_days_as_ranges() {
        let w = windows(&[
            window(
                Some(&["fri", "mon", "tue", "wed", "thursday"]),
                "2:00",
                "05:00",
                "Europe/Berlin",
            ),
            window(Some(&["mon", "tue", "sun"]), "22:00", "23:30", "UTC"),
            window(Some(&["sat", "mon-wed"]), "01:00", "02:00", "UTC"),
            window(None, "03:00", "04:00", "UTC"),
        ]);
        assert_eq!(
            w.describe(),
            [
                "mon-fri 02:00-05:00 Europe/Berlin",
                "mon,tue,sun 22:00-23:30 UTC",
                "mon-wed,sat 01:00-02:00 UTC",
                "every day 03:00-04:00 UTC",
            ]
        );
    }

    #[test]
    fn no_windows_means_always_open() {
        let w = Windows::default();
        let at = ts("2026-12-01T12:00:00Z");
        assert!(w.is_empty());
        assert!(w.is_open(at));
        assert_eq!(w.next_open(at), Some(at));
        assert_eq!(w.closes_at(at), None);
    }

    #[test]
    fn weekday_night_window_in_utc() {
        let w = windows(&[window(Some(&["mon-fri"]), "02:00", "05:00", "UTC")]);
        let tue = |t: &str| ts(&format!("2026-12-01T{t}Z"));
        assert!(!w.is_open(tue("01:59:59")));
        assert!(w.is_open(tue("02:00:00")), "start is inclusive");
        assert!(w.is_open(tue("04:59:59")));
        assert!(!w.is_open(tue("05:00:00")), "end is exclusive");
        assert_eq!(w.next_open(tue("03:00:00")), Some(tue("03:00:00")));
        assert_eq!(w.next_open(tue("01:00:00")), Some(tue("02:00:00")));
        assert_eq!(
            w.next_open(tue("05:00:00")),
            Some(ts("2026-12-02T02:00:00Z"))
        );
        assert_eq!(w.closes_at(tue("03:00:00")), Some(tue("05:00:00")));
        assert_eq!(
            w.closes_at(tue("06:00:00")),
            Some(tue("06:00:00")),
            "closed"
        );
        // Friday after the window: next is Monday.
        assert_eq!(
            w.next_open(ts("2026-12-04T06:00:00Z")),
            Some(ts("2026-12-07T02:00:00Z"))
        );
        assert!(!w.is_open(ts("2026-12-05T03:00:00Z")), "Saturday");
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_its_start_day() {
        let w = windows(&[window(Some(&["fri"]), "22:00", "02:00", "UTC")]);
        assert!(w.is_open(ts("2026-12-04T23:00:00Z")), "Friday night");
        assert!(
            w.is_open(ts("2026-12-05T01:59:00Z")),
            "Saturday early, Friday's window"
        );
        assert!(!w.is_open(ts("2026-12-05T02:00:00Z")));
        assert!(!w.is_open(ts("2026-12-05T23:00:00Z")), "Saturday night");
        assert!(
            !w.is_open(ts("2026-12-04T01:00:00Z")),
            "Friday early is Thursday's"
        );
        assert_eq!(
            w.closes_at(ts("2026-12-05T01:00:00Z")),
            Some(ts("2026-12-05T02:00:00Z"))
        );
        assert_eq!(
            w.next_open(ts("2026-12-05T03:00:00Z")),
            Some(ts("2026-12-11T22:00:00Z"))
        );
    }

    #[test]
    fn days_and_hours_are_those_of_the_windows_zone() {
        let ny = windows(&[window(Some(&["mon"]), "02:00", "05:00", "America/New_York")]);
        // Monday 2026-12-07 02:00 EST is 07:00Z.
        assert!(!ny.is_open(ts("2026-12-07T03:00:00Z")));
        assert!(ny.is_open(ts("2026-12-07T07:00:00Z")));
        assert_eq!(
            ny.next_open(ts("2026-12-07T00:00:00Z")),
            Some(ts("2026-12-07T07:00:00Z"))
        );
        // Tokyo's Monday morning is Sunday evening in UTC.
        let tokyo = windows(&[window(Some(&["mon"]), "08:00", "09:00", "Asia/Tokyo")]);
        assert!(tokyo.is_open(ts("2026-12-06T23:30:00Z")));
        assert!(!tokyo.is_open(ts("2026-12-07T23:30:00Z")));
    }

    #[test]
    fn overlapping_and_touching_windows_close_together() {
        let w = windows(&[
            window(None, "02:00", "05:00", "UTC"),
            window(None, "04:00", "06:00", "UTC"),
            window(None, "06:00", "07:00", "UTC"),
            window(None, "08:00", "09:00", "UTC"),
        ]);
        assert_eq!(
            w.closes_at(ts("2026-12-01T02:30:00Z")),
            Some(ts("2026-12-01T07:00:00Z"))
        );
        assert!(!w.is_open(ts("2026-12-01T07:30:00Z")));
        assert_eq!(
            w.next_open(ts("2026-12-01T07:30:00Z")),
            Some(ts("2026-12-01T08:00:00Z"))
        );
        // The same across zones: 05:00 Berlin in winter is 04:00Z.
        let w = windows(&[
            window(None, "02:00", "05:00", "Europe/Berlin"),
            window(None, "04:00", "04:30", "UTC"),
        ]);
        assert_eq!(
            w.closes_at(ts("2026-12-01T02:00:00Z")),
            Some(ts("2026-12-01T04:30:00Z"))
        );
    }

    #[test]
    fn windows_covering_every_moment_never_close() {
        let w = windows(&[
            window(None, "00:00", "12:00", "Europe/Berlin"),
            window(None, "12:00", "00:00", "Europe/Berlin"),
        ]);
        for at in [
            "2026-03-29T01:30:00Z",
            "2026-10-25T01:30:00Z",
            "2026-12-01T12:00:00Z",
        ] {
            assert!(w.is_open(ts(at)), "{at}");
            assert_eq!(w.closes_at(ts(at)), None, "{at}");
        }
    }

    #[test]
    fn extreme_instants_do_not_panic() {
        let w = windows(&[window(Some(&["mon"]), "02:00", "03:00", "Europe/Berlin")]);
        for at in [Timestamp::MIN, Timestamp::MAX] {
            let _ = (w.is_open(at), w.next_open(at), w.closes_at(at));
        }
    }
}

/// Daylight-saving changes. Europe/Berlin 2026: 02:00 CET jumps to 03:00 CEST on March 29
/// (01:00Z); 03:00 CEST goes back to 02:00 CET on October 25 (01:00Z). America/New_York:
/// 02:00 EST to 03:00 EDT on March 8 (07:00Z); 02:00 EDT back to 01:00 EST on November 1
/// (06:00Z).
mod dst {
    use super::*;

    #[test]
    fn a_window_inside_the_spring_gap_does_not_open_that_day() {
        let w = windows(&[window(None, "02:00", "03:00", "Europe/Berlin")]);
        // The day before: one ordinary hour.
        assert!(w.is_open(ts("2026-03-28T01:30:00Z")));
        // On the day the wall clock never reads 02:xx.
        for at in [
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
        ] {
            assert!(!w.is_open(ts(at)), "{at}");
        }
        assert_eq!(
            w.next_open(ts("2026-03-28T23:00:00Z")),
            Some(zoned("2026-03-30T02:00+02:00[Europe/Berlin]"))
        );
    }

    #[test]
    fn a_window_edge_in_the_spring_gap_moves_to_the_jump() {
        let jump = ts("2026-03-29T01:00:00Z");
        let late_start = windows(&[window(None, "02:30", "04:00", "Europe/Berlin")]);
        assert_eq!(late_start.next_open(ts("2026-03-28T23:00:00Z")), Some(jump));
        assert_eq!(
            late_start.closes_at(jump),
            Some(zoned("2026-03-29T04:00+02:00[Europe/Berlin]"))
        );
        let early_end = windows(&[window(None, "01:00", "02:30", "Europe/Berlin")]);
        assert_eq!(
            early_end.next_open(ts("2026-03-28T23:30:00Z")),
            Some(ts("2026-03-29T00:00:00Z"))
        );
        assert_eq!(early_end.closes_at(ts("2026-03-29T00:00:00Z")), Some(jump));
        assert!(!early_end.is_open(jump));
    }

    #[test]
    fn a_window_in_the_autumn_fold_lasts_both_hours() {
        let w = windows(&[window(None, "02:00", "03:00", "Europe/Berlin")]);
        let open = zoned("2026-10-25T02:00+02:00[Europe/Berlin]");
        assert_eq!(open, ts("2026-10-25T00:00:00Z"));
        assert_eq!(w.next_open(ts("2026-10-24T23:00:00Z")), Some(open));
        assert!(w.is_open(ts("2026-10-25T01:30:00Z")), "second 02:30");
        assert_eq!(
            w.closes_at(open),
            Some(ts("2026-10-25T02:00:00Z")),
            "03:00 CET"
        );
    }

    #[test]
    fn fold_edges_take_the_first_start_and_the_last_end() {
        // 02:30-02:45 on the fall-back day runs from the first 02:30 to the second 02:45,
        // including the wall-clock 02:00-02:30 stretch in between.
        let w = windows(&[window(None, "02:30", "02:45", "Europe/Berlin")]);
        let open = ts("2026-10-25T00:30:00Z");
        assert_eq!(w.next_open(ts("2026-10-24T23:00:00Z")), Some(open));
        assert!(w.is_open(ts("2026-10-25T01:00:00Z")));
        assert_eq!(w.closes_at(open), Some(ts("2026-10-25T01:45:00Z")));
        // A normal day: fifteen minutes.
        assert_eq!(
            w.closes_at(ts("2026-10-26T01:30:00Z")),
            Some(ts("2026-10-26T01:45:00Z"))
        );
    }

    #[test]
    fn new_york_changes() {
        let fold = windows(&[window(None, "01:00", "02:00", "America/New_York")]);
        let open = zoned("2026-11-01T01:00-04:00[America/New_York]");
        assert_eq!(fold.next_open(ts("2026-11-01T00:00:00Z")), Some(open));
        assert_eq!(
            fold.closes_at(open),
            Some(zoned("2026-11-01T02:00-05:00[America/New_York]"))
        );
        assert_eq!(
            fold.closes_at(open)
                .unwrap()
                .duration_since(open)
                .as_hours(),
            2
        );
        let gap = windows(&[window(Some(&["sun"]), "02:00", "03:00", "America/New_York")]);
        assert_eq!(
            gap.next_open(ts("2026-03-07T12:00:00Z")),
            Some(zoned("2026-03-15T02:00-04:00[America/New_York]")),
            "March 8 has no 02:xx, so the next Sunday"
        );
    }

    #[test]
    fn a_night_window_over_the_change_is_shorter_or_longer() {
        let w = windows(&[window(Some(&["sat"]), "22:00", "04:00", "Europe/Berlin")]);
        let hours = |open: &str| {
            let open = ts(open);
            assert!(w.is_open(open));
            w.closes_at(open).unwrap().duration_since(open).as_hours()
        };
        assert_eq!(hours("2026-03-28T21:00:00Z"), 5);
        assert_eq!(hours("2026-10-24T20:00:00Z"), 7);
        assert_eq!(hours("2026-12-05T21:00:00Z"), 6);
    }
}

mod missed {
    use super::*;

    const AT: &str = "2026-12-01T02:00:00Z";

    fn decide(late_secs: i64, policy: &MissedPolicy) -> MissedDecision {
        let now = ts(AT)
            .checked_add(jiff::SignedDuration::from_secs(late_secs))
            .unwrap();
        missed_decision(ts(AT), now, policy)
    }

    #[test]
    fn run_within_the_grace() {
        let run = MissedPolicy {
            missed: Missed::Run,
            grace: Duration::from_secs(900),
        };
        assert_eq!(decide(-1, &run), MissedDecision::NotYet);
        assert_eq!(decide(0, &run), MissedDecision::Run);
        assert_eq!(
            decide(900, &run),
            MissedDecision::Run,
            "the grace is inclusive"
        );
        assert_eq!(
            decide(901, &run),
            MissedDecision::Skip {
                missed_by: Duration::from_secs(901)
            }
        );
    }

    #[test]
    fn skip_allows_only_the_on_time_tolerance() {
        let skip = MissedPolicy {
            missed: Missed::Skip,
            grace: Duration::from_secs(3600),
        };
        assert_eq!(skip.limit(), ON_TIME_TOLERANCE);
        assert_eq!(decide(-60, &skip), MissedDecision::NotYet);
        assert_eq!(decide(60, &skip), MissedDecision::Run);
        assert_eq!(
            decide(61, &skip),
            MissedDecision::Skip {
                missed_by: Duration::from_secs(61)
            }
        );
    }

    #[test]
    fn run_is_never_stricter_than_skip() {
        let run = MissedPolicy {
            missed: Missed::Run,
            grace: Duration::ZERO,
        };
        assert_eq!(run.limit(), ON_TIME_TOLERANCE);
        assert_eq!(decide(30, &run), MissedDecision::Run);
        assert!(matches!(decide(61, &run), MissedDecision::Skip { .. }));
    }

    #[test]
    fn sub_second_lateness_counts() {
        let skip = MissedPolicy {
            missed: Missed::Skip,
            grace: Duration::ZERO,
        };
        let now = ts(AT)
            .checked_add(jiff::SignedDuration::from_millis(60_001))
            .unwrap();
        assert_eq!(
            missed_decision(ts(AT), now, &skip),
            MissedDecision::Skip {
                missed_by: Duration::from_millis(60_001)
            }
        );
    }
}
