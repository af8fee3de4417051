use super::*;

const G1: Generation = Generation(1);
const G2: Generation = Generation(2);

fn s(at_s: u64, requests: u64, errors: u64, generation: Generation) -> Sample {
    Sample {
        at_ms: at_s * 1_000,
        requests,
        errors,
        generation,
    }
}

fn inc(requests: u64, errors: u64) -> Increase {
    Increase { requests, errors }
}

fn slo(availability: &str) -> SloSpec {
    SloSpec::parse(availability, "30d").unwrap()
}

#[test]
fn a_steady_counter_counts_its_growth_inside_the_window() {
    let series = [s(0, 0, 0, G1), s(10, 1_000, 5, G1), s(20, 5_000, 41, G1)];
    assert_eq!(increase(&series, 0), inc(5_000, 41));
    // The window starts after the first sample: the second is the baseline.
    assert_eq!(increase(&series, 5_000), inc(4_000, 36));
    assert_eq!(increase(&series, 20_000), inc(0, 0), "one sample: no step");
}

#[test]
fn a_counter_that_goes_down_restarted_from_zero() {
    // HAProxy restarted between 20 s and 30 s and has answered 50 requests since.
    let series = [
        s(10, 100, 1, G1),
        s(20, 300, 2, G1),
        s(30, 50, 1, G1),
        s(40, 250, 4, G1),
    ];
    assert_eq!(increase(&series, 0), inc(200 + 50 + 200, 1 + 1 + 3));
}

#[test]
fn only_the_error_counter_going_down_is_a_reset_too() {
    let series = [s(0, 100, 10, G1), s(10, 150, 2, G1)];
    assert_eq!(increase(&series, 0), inc(150, 2));
}

#[test]
fn a_new_generation_is_a_reset_even_when_its_counters_are_larger() {
    // Reloaded between 20 s and 30 s; the new process counted 500 requests before the
    // first sample of it, more than the old one's 200.
    let series = [
        s(10, 100, 1, G1),
        s(20, 200, 2, G1),
        s(30, 500, 10, G2),
        s(40, 600, 12, G2),
    ];
    assert_eq!(increase(&series, 0), inc(100 + 500 + 100, 1 + 10 + 2));
    assert_ne!(
        increase(&series, 0),
        inc(500, 11),
        "read as plain growth it would lose the new process's first 200 requests"
    );
}

#[test]
fn several_haproxies_add_up() {
    let a = [s(0, 0, 0, G1), s(10, 3_000, 20, G1)];
    let b = [s(1, 700, 3, G2), s(11, 2_700, 24, G2), s(21, 10, 1, G2)];
    let total = increase(&a, 0) + increase(&b, 0);
    assert_eq!(total, inc(3_000 + 2_000 + 10, 20 + 21 + 1));
}

#[test]
fn an_empty_window_spends_nothing() {
    let series = [s(0, 100, 100, G1), s(10, 200, 200, G1)];
    let counted = increase(&series, 60_000);
    assert_eq!(counted, inc(0, 0));
    let b = Budget::compute("web", "production", slo("99.5%"), counted, None);
    assert!(!b.spent);
    assert_eq!(b.availability, None);
    assert_eq!(b.remaining_ratio, 1.0);
    assert_eq!(b.allowed_errors, 0.0);
    assert_eq!(
        b.describe(),
        "error budget of web in production: no requests counted in the last 30d yet, nothing spent (99.5% over 30d)"
    );
}

#[test]
fn an_overspent_budget_says_so_and_what_still_goes() {
    let b = Budget::compute("web", "production", slo("99.5%"), inc(5_000, 41), Some(1));
    assert_eq!(b.allowed_errors, 25.0);
    assert_eq!(b.remaining_errors, -16.0);
    assert_eq!(b.remaining_ratio, -0.64);
    assert_eq!(b.availability, Some(1.0 - 41.0 / 5_000.0));
    assert!(b.spent);
    assert_eq!(
        b.describe(),
        "error budget of web in production is spent: 41 errors of 25 allowed (99.5% over 30d, 5,000 requests); deploys are held until it recovers; a rollback still goes through; an admin may override with --override --reason"
    );
}

#[test]
fn a_budget_with_room_left_says_how_much() {
    let b = Budget::compute("web", "staging", slo("99.5"), inc(5_000, 12), None);
    assert_eq!((b.allowed_errors, b.remaining_errors), (25.0, 13.0));
    assert_eq!(b.remaining_ratio, 0.52);
    assert!(!b.spent);
    assert_eq!(
        b.describe(),
        "error budget of web in staging: 52% left, 12 errors of 25 allowed (99.5% over 30d, 5,000 requests)"
    );
}

#[test]
fn exactly_the_allowed_errors_is_spent_and_fractions_of_an_error_are_kept() {
    let b = Budget::compute("web", "production", slo("99.5%"), inc(5_000, 25), None);
    assert_eq!(b.remaining_errors, 0.0);
    assert!(b.spent);
    let b = Budget::compute("api", "production", slo("99.9%"), inc(300, 0), None);
    assert!((b.allowed_errors - 0.3).abs() < 1e-12);
    assert!(!b.spent, "no error: not spent, however small the budget");
    assert!(
        b.describe().contains("0 errors of 0.3 allowed"),
        "{}",
        b.describe()
    );
    let b = Budget::compute("api", "production", slo("99.9%"), inc(300, 1), None);
    assert!(b.spent, "one error over 300 requests at 99.9% spends it");
}

#[test]
fn errors_never_outnumber_requests() {
    let b = Budget::compute("web", "production", slo("99%"), inc(10, 12), None);
    assert_eq!(b.counted, inc(10, 10));
    assert_eq!(b.availability, Some(0.0));
}

#[test]
fn generations_tell_pid_and_start_apart() {
    assert_ne!(
        Generation::new(100, 1_700_000_000),
        Generation::new(101, 1_700_000_000)
    );
    assert_ne!(
        Generation::new(100, 1_700_000_000),
        Generation::new(100, 1_700_000_001)
    );
    assert_eq!(
        Generation::new(4_194_303, 1_800_000_000).0 >> 22,
        1_800_000_000
    );
    assert!(Generation::new(4_194_303, 1_800_000_000).0 < i64::MAX as u64);
}

#[test]
fn thousands_separators() {
    assert_eq!(thousands(0), "0");
    assert_eq!(thousands(999), "999");
    assert_eq!(thousands(5_000), "5,000");
    assert_eq!(thousands(1_234_567), "1,234,567");
}
