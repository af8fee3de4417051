//! `drover dora`: the delivery metrics (DORA) of the deploy history, per service and
//! environment, as a table for people or one JSON object.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drover_proto::v1::{DoraRow, GetDoraRequest, GetDoraResponse};
use drover_shared::duration::{human, parse};

use super::ClientArgs;

/// Flags of `drover dora`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Definitions (per service and environment, over the window):
  deploys          deploys that succeeded, and per day
  lead time        release commit to its deploy's success: median / p90 (deploys whose
                   release has no commit time are left out, and counted in a note)
  change failure   failed changes / finished deploys (cancelled and skipped left out); a
                   failed change failed, was rolled back, or was followed within the
                   rollback window by a rollback or a deploy of an older digest
  time to restore  a failed change's start to the next success there: median
  '-': nothing to measure. The README's \"Delivery metrics (DORA)\" says more.

Examples:
  drover dora                           # every service, the last 30 days
  drover dora web --env production --since 90d
  drover dora --rollback-window 30m --json   # one JSON object, for dashboards and CI"
)]
pub struct DoraArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this service.
    pub service: Option<String>,
    /// Only this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// The window: this long before now, e.g. 7d, 30d, 12w.
    #[arg(long, default_value = "30d", value_parser = parse, value_name = "DURATION")]
    pub since: Duration,
    /// How soon after a success a rollback or a redeploy of an older digest makes it a
    /// failed change.
    #[arg(long, default_value = "1h", value_parser = parse, value_name = "DURATION")]
    pub rollback_window: Duration,
    /// One JSON object (the window and a row per service and environment).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DoraArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = now.saturating_sub(args.since);
    let response = client
        .get_dora(GetDoraRequest {
            service: args.service.clone().unwrap_or_default(),
            environment: args.env.clone(),
            since_ms: since.as_millis() as u64,
            rollback_window_ms: args.rollback_window.as_millis().max(1) as u64,
        })
        .await
        .map_err(|s| super::rpc_error("reading delivery metrics", &s))?
        .into_inner();
    if args.json {
        println!("{}", json(&response));
        return Ok(0);
    }
    print!("{}", table(&response));
    if response.rows.is_empty() {
        eprintln!("no deployment finished in the window");
    }
    Ok(0)
}

fn environment(r: &DoraRow) -> &str {
    if r.environment.is_empty() {
        "(none)"
    } else {
        &r.environment
    }
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| human(Duration::from_millis(v)).to_string())
}

/// The table, a line on the window, and notes on what the figures leave out.
fn table(d: &GetDoraResponse) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "{:<14} {:<12} {:>7} {:>8}  {:<24} {:<18} {}\n",
        "SERVICE",
        "ENVIRONMENT",
        "DEPLOYS",
        "PER DAY",
        "LEAD TIME (MEDIAN / P90)",
        "CHANGE FAILURE",
        "TIME TO RESTORE"
    );
    let mut notes = String::new();
    for r in &d.rows {
        let lead = match (r.lead_time_median_ms, r.lead_time_p90_ms) {
            (Some(m), Some(p)) => format!("{} / {}", ms(Some(m)), ms(Some(p))),
            _ => "-".into(),
        };
        let failure = r.change_failure_rate.map_or("-".into(), |rate| {
            format!(
                "{:.1}% ({}/{})",
                rate * 100.0,
                r.failed_changes,
                r.finished_deploys
            )
        });
        let _ = writeln!(
            out,
            "{:<14} {:<12} {:>7} {:>8.2}  {:<24} {:<18} {}",
            r.service,
            environment(r),
            r.deploys,
            r.deploys_per_day,
            lead,
            failure,
            ms(r.time_to_restore_median_ms)
        );
        let place = format!("{}/{}", r.service, environment(r));
        if r.lead_time_unknown > 0 {
            let _ = writeln!(
                notes,
                "note: {place}: {} of {} deploys have no commit time, left out of the lead time",
                r.lead_time_unknown, r.deploys
            );
        }
        if r.unrestored > 0 {
            let _ = writeln!(
                notes,
                "note: {place}: {} failed change(s) not restored by the window's end, left out of the time to restore",
                r.unrestored
            );
        }
    }
    let at = |ms: u64| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms));
    let _ = writeln!(
        out,
        "\nwindow: {} to {} ({}); rollback window {}",
        at(d.start_ms),
        at(d.end_ms),
        human(Duration::from_millis(d.end_ms.saturating_sub(d.start_ms))),
        human(Duration::from_millis(d.rollback_window_ms))
    );
    out + &notes
}

/// `{"start_ms", "end_ms", "rollback_window_ms", "rows": [...]}`; a metric with nothing
/// to measure is `null`; the change failure rate is a ratio (0 to 1).
fn json(d: &GetDoraResponse) -> serde_json::Value {
    let rows: Vec<_> = d
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "service": r.service, "environment": r.environment,
                "deploys": r.deploys, "deploys_per_day": r.deploys_per_day,
                "lead_time_median_ms": r.lead_time_median_ms,
                "lead_time_p90_ms": r.lead_time_p90_ms,
                "lead_time_measured": r.lead_time_measured,
                "lead_time_without_commit": r.lead_time_unknown,
                "finished_deploys": r.finished_deploys, "failed_changes": r.failed_changes,
                "change_failure_rate": r.change_failure_rate,
                "time_to_restore_median_ms": r.time_to_restore_median_ms,
                "restored": r.restored, "unrestored": r.unrestored,
            })
        })
        .collect();
    serde_json::json!({
        "start_ms": d.start_ms, "end_ms": d.end_ms,
        "rollback_window_ms": d.rollback_window_ms, "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response() -> GetDoraResponse {
        GetDoraResponse {
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_000_000 + 30 * 86_400_000,
            rollback_window_ms: 3_600_000,
            rows: vec![
                DoraRow {
                    service: "web".into(),
                    environment: "production".into(),
                    deploys: 42,
                    deploys_per_day: 1.4,
                    lead_time_median_ms: Some(7_500_000),
                    lead_time_p90_ms: Some(90_000_000),
                    lead_time_measured: 39,
                    lead_time_unknown: 3,
                    finished_deploys: 45,
                    failed_changes: 4,
                    change_failure_rate: Some(4.0 / 45.0),
                    time_to_restore_median_ms: Some(2_700_000),
                    restored: 3,
                    unrestored: 1,
                },
                DoraRow {
                    service: "api".into(),
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_table_rounds_for_people_and_says_what_is_left_out() {
        let text = table(&response());
        let web = text.lines().find(|l| l.starts_with("web")).unwrap();
        for part in [
            "production",
            "42",
            "1.40",
            "2 h 5 min / 25 h",
            "8.9% (4/45)",
            "45 min",
        ] {
            assert!(web.contains(part), "{part} missing from {web:?}");
        }
        let api = text.lines().find(|l| l.starts_with("api")).unwrap();
        assert!(api.contains("(none)") && api.ends_with(" -"), "{api:?}");
        assert!(
            text.contains(
                "window: 2023-11-14T22:13:20Z to 2023-12-14T22:13:20Z (720 h); rollback window 1 h"
            ),
            "{text}"
        );
        assert!(
            text.contains("note: web/production: 3 of 42 deploys have no commit time"),
            "{text}"
        );
        assert!(
            text.contains("note: web/production: 1 failed change(s) not restored"),
            "{text}"
        );
    }

    #[test]
    fn json_is_one_object_with_nulls_for_nothing_measured() {
        let v = json(&response());
        assert_eq!(v["rows"][0]["lead_time_p90_ms"], 90_000_000);
        assert_eq!(v["rows"][0]["lead_time_without_commit"], 3);
        assert!(v["rows"][1]["change_failure_rate"].is_null());
        assert!(v["rows"][1]["time_to_restore_median_ms"].is_null());
        assert_eq!(v["rollback_window_ms"], 3_600_000);
    }
}
