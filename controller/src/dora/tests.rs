//! Scripted histories with exact expected metrics. Times are written in minutes from an
//! origin; the window is day 2 and day 3 (minutes 1440 to 4320), the rollback window one
//! hour, unless a test says otherwise.

use super::*;
use DeploymentKind::{Deploy, Rollback};
use DeploymentState::{Cancelled, Failed, RolledBack, Succeeded};

const MIN: u64 = 60_000;

fn settings() -> Settings {
    Settings {
        start_ms: 1440 * MIN,
        end_ms: 4320 * MIN,
        rollback_window_ms: 60 * MIN,
    }
}

/// One deployment: `at` is (created, finished) in minutes, `commit` in minutes.
fn rec(
    id: &str,
    place: (&str, &str),
    kind: DeploymentKind,
    state: DeploymentState,
    digest: &str,
    at: (u64, u64),
    commit: Option<u64>,
) -> Record {
    Record {
        id: id.into(),
        service: place.0.into(),
        environment: place.1.into(),
        kind,
        state,
        digest: digest.into(),
        created_ms: at.0 * MIN,
        finished_ms: Some(at.1 * MIN),
        commit_ms: commit.map(|c| c * MIN),
    }
}

const WEB_PROD: (&str, &str) = ("web", "production");
const WEB_STAGING: (&str, &str) = ("web", "staging");
const API_PROD: (&str, &str) = ("api", "production");

/// Three environments interleaved, each with its own story (see the comments).
fn history() -> Vec<Record> {
    vec![
        // web/production: A before the window (history only).
        rec("p0", WEB_PROD, Deploy, Succeeded, "A", (0, 10), Some(0)),
        // web/staging: B before the window.
        rec(
            "s0",
            WEB_STAGING,
            Deploy,
            Succeeded,
            "B",
            (1400, 1405),
            Some(1300),
        ),
        // B succeeds, and an explicit rollback follows within the hour: failed change,
        // restored by the rollback's success (1545 - 1500 = 45 min).
        rec(
            "p1",
            WEB_PROD,
            Deploy,
            Succeeded,
            "B",
            (1500, 1510),
            Some(1400),
        ),
        // staging: C fails before its digest is resolved, then succeeds (30 min).
        rec(
            "s1",
            WEB_STAGING,
            Deploy,
            Failed,
            "",
            (1460, 1470),
            Some(1450),
        ),
        rec(
            "s2",
            WEB_STAGING,
            Deploy,
            Succeeded,
            "C",
            (1480, 1490),
            Some(1450),
        ),
        // staging: D, then a rollback 95 min after its success: outside the hour.
        rec(
            "s3",
            WEB_STAGING,
            Deploy,
            Succeeded,
            "D",
            (1500, 1505),
            Some(1400),
        ),
        rec("p2", WEB_PROD, Rollback, Succeeded, "A", (1540, 1545), None),
        rec(
            "s4",
            WEB_STAGING,
            Rollback,
            Succeeded,
            "C",
            (1600, 1610),
            None,
        ),
        // C, then a push-button redeploy of the older A 20 min later: failed change,
        // restored when A succeeds (2035 - 2000 = 35 min). A has no commit time here.
        rec(
            "p3",
            WEB_PROD,
            Deploy,
            Succeeded,
            "C",
            (2000, 2010),
            Some(1950),
        ),
        rec("p4", WEB_PROD, Deploy, Succeeded, "A", (2030, 2035), None),
        // api/production: no commit times at all.
        rec("a1", API_PROD, Deploy, Succeeded, "X", (2000, 2005), None),
        // D fails, then succeeds: restored after 110 min.
        rec(
            "p5",
            WEB_PROD,
            Deploy,
            Failed,
            "D",
            (2500, 2520),
            Some(2400),
        ),
        rec(
            "p6",
            WEB_PROD,
            Deploy,
            Succeeded,
            "D",
            (2600, 2610),
            Some(2400),
        ),
        // E, then a redeploy of the older D 90 min after E's success: outside the hour,
        // E stays a good change (and D's redeploy measures from D's commit).
        rec(
            "p7",
            WEB_PROD,
            Deploy,
            Succeeded,
            "E",
            (3000, 3010),
            Some(2990),
        ),
        rec(
            "p8",
            WEB_PROD,
            Deploy,
            Succeeded,
            "D",
            (3100, 3110),
            Some(2400),
        ),
        // F is rolled back and nothing succeeds afterwards: unrestored.
        rec(
            "p9",
            WEB_PROD,
            Deploy,
            RolledBack,
            "F",
            (4000, 4010),
            Some(3900),
        ),
        // A cancelled deploy never ran: not a finished deploy.
        rec(
            "p10",
            WEB_PROD,
            Deploy,
            Cancelled,
            "",
            (4100, 4100),
            Some(4050),
        ),
        // api: Y fails in the window and succeeds only after its end: unrestored.
        rec("a2", API_PROD, Deploy, Failed, "Y", (4300, 4310), None),
        rec("a3", API_PROD, Deploy, Succeeded, "Y", (4330, 4340), None),
        // db: nothing in the window, no row.
        rec(
            "d0",
            ("db", "production"),
            Deploy,
            Failed,
            "Z",
            (100, 110),
            None,
        ),
    ]
}

fn spread(median: u64, p90: u64) -> Option<Spread> {
    Some(Spread {
        median_ms: median * MIN,
        p90_ms: p90 * MIN,
    })
}

#[test]
fn the_four_metrics_of_interleaved_environments() {
    let got = compute(&history(), &settings());
    let want = vec![
        Dora {
            service: "api".into(),
            environment: "production".into(),
            deploys: 1,
            deploys_per_day: 0.5,
            lead_time: None,
            lead_time_measured: 0,
            lead_time_unknown: 1,
            finished_deploys: 2,
            failed_changes: 1,
            change_failure_rate: Some(0.5),
            time_to_restore_ms: None,
            restored: 0,
            unrestored: 1,
        },
        Dora {
            service: "web".into(),
            environment: "production".into(),
            // p1, p3, p4, p6, p7, p8.
            deploys: 6,
            deploys_per_day: 3.0,
            // p7 20, p3 60, p1 110, p6 210, p8 710 (p4: no commit time).
            lead_time: spread(110, 710),
            lead_time_measured: 5,
            lead_time_unknown: 1,
            // p1, p3, p4, p5, p6, p7, p8, p9 (p2 is a rollback, p10 cancelled).
            finished_deploys: 8,
            // p1 (rolled back by p2), p3 (A redeployed), p5 (failed), p9 (rolled back).
            failed_changes: 4,
            change_failure_rate: Some(0.5),
            // p3 35, p1 45, p5 110.
            time_to_restore_ms: Some(45 * MIN),
            restored: 3,
            unrestored: 1,
        },
        Dora {
            service: "web".into(),
            environment: "staging".into(),
            deploys: 2,
            deploys_per_day: 1.0,
            // s2 40, s3 105.
            lead_time: spread(40, 105),
            lead_time_measured: 2,
            lead_time_unknown: 0,
            finished_deploys: 3,
            failed_changes: 1,
            change_failure_rate: Some(1.0 / 3.0),
            time_to_restore_ms: Some(30 * MIN),
            restored: 1,
            unrestored: 0,
        },
    ];
    assert_eq!(got, want);
}

#[test]
fn the_order_of_the_records_does_not_matter() {
    let mut shuffled = history();
    shuffled.reverse();
    shuffled.swap(0, 7);
    assert_eq!(
        compute(&shuffled, &settings()),
        compute(&history(), &settings())
    );
}

#[test]
fn a_wider_rollback_window_counts_the_later_reverts() {
    let wide = Settings {
        rollback_window_ms: 120 * MIN,
        ..settings()
    };
    let got = compute(&history(), &wide);
    // web/production: p7 is now reverted by p8 (90 min); restored when p8 succeeds.
    assert_eq!(got[1].failed_changes, 5);
    assert_eq!(got[1].time_to_restore_ms, Some(45 * MIN)); // 35, 45, 110, 110
    assert_eq!(got[1].restored, 4);
    // web/staging: s3 is now reverted by the rollback s4 (95 min).
    assert_eq!(got[2].failed_changes, 2);
    assert_eq!(got[2].change_failure_rate, Some(2.0 / 3.0));
}

#[test]
fn a_revert_belongs_to_the_change_the_environment_ran_last() {
    let place = ("web", "");
    let h = vec![
        rec("o", place, Deploy, Succeeded, "A", (1500, 1510), None),
        // B succeeds; C succeeds 10 min later; the rollback after C is C's.
        rec("b", place, Deploy, Succeeded, "B", (1520, 1530), None),
        rec("c", place, Deploy, Succeeded, "C", (1540, 1550), None),
        rec("r", place, Rollback, Succeeded, "B", (1560, 1570), None),
        // D, then D again (the same digest is not older), then a failed E.
        rec("d1", place, Deploy, Succeeded, "D", (2000, 2010), None),
        rec("d2", place, Deploy, Succeeded, "D", (2020, 2030), None),
        // A failed deploy between a success and a revert does not shield the success:
        // the environment still ran D2 when the older B was deployed.
        rec("e", place, Deploy, Failed, "E", (2040, 2045), None),
        rec("b2", place, Deploy, Succeeded, "B", (2050, 2060), None),
    ];
    let got = compute(&h, &settings());
    assert_eq!(got.len(), 1);
    // Failed changes: c (rolled back by r), d2 (B redeployed), e (failed).
    assert_eq!((got[0].finished_deploys, got[0].failed_changes), (7, 3));
    // c: 1570 - 1540 = 30; d2: 2060 - 2020 = 40; e: 2060 - 2040 = 20.
    assert_eq!(got[0].time_to_restore_ms, Some(30 * MIN));
    assert_eq!(got[0].environment, "");
}

#[test]
fn nothing_finished_in_the_window_gives_no_rows() {
    let h = vec![rec("x", WEB_PROD, Deploy, Succeeded, "A", (0, 10), Some(0))];
    assert!(compute(&h, &settings()).is_empty());
    assert!(compute(&[], &settings()).is_empty());
}

#[test]
fn percentiles_are_nearest_rank() {
    assert_eq!(super::spread(&mut []), None);
    let one = super::spread(&mut [7]).unwrap();
    assert_eq!((one.median_ms, one.p90_ms), (7, 7));
    let mut ten: Vec<u64> = (1..=10).rev().collect();
    let s = super::spread(&mut ten).unwrap();
    assert_eq!((s.median_ms, s.p90_ms), (5, 9));
}
