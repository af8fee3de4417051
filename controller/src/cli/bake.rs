//! How `drover status` and the web interface show a stage's bake: the canary against
//! the baseline, signal by signal, with the `[canary]` limit each is judged by, the
//! verdict, and the time left while it runs. `--json` carries every field.

use std::fmt::Write;
use std::time::Duration;

use drover_proto::v1::{BakeInfo, BakeSignals, BakeVerdict};
use drover_shared::duration::human;

/// The verdict in words.
pub fn verdict_name(verdict: i32) -> &'static str {
    match BakeVerdict::try_from(verdict).unwrap_or_default() {
        BakeVerdict::Watching => "watching",
        BakeVerdict::Passed => "passed",
        BakeVerdict::Breached => "breached",
        BakeVerdict::Aborted => "aborted",
        BakeVerdict::Unspecified => "unknown",
    }
}

/// `0.5% (2 of 400)`: errors over requests.
pub fn error_rate(s: &BakeSignals) -> String {
    let r = if s.requests == 0 {
        0.0
    } else {
        s.errors as f64 / s.requests as f64
    };
    format!("{:.1}% ({} of {})", r * 100.0, s.errors, s.requests)
}

/// What fails the stage, one phrase per signal: error rate, response time, restarts.
pub fn limit_words(b: &BakeInfo) -> [String; 3] {
    let l = b.limits.unwrap_or_default();
    [
        format!(
            "above {:.1}% and {}x the baseline (judged from {} requests)",
            l.max_error_rate * 100.0,
            l.max_error_ratio,
            l.min_requests
        ),
        format!(
            "above {}x the baseline and {} ms",
            l.max_response_time_ratio, l.min_response_time_ms
        ),
        format!("above {}", l.max_restarts),
    ]
}

/// How long a running bake has left at `now_ms` (none once it ended).
pub fn time_left(b: &BakeInfo, now_ms: u64) -> Option<Duration> {
    (b.verdict == BakeVerdict::Watching as i32)
        .then(|| Duration::from_millis(b.ends_ms.saturating_sub(now_ms)))
}

/// The bakes as text, each line indented by `indent`; empty when there are none.
pub fn text(bakes: &[BakeInfo], indent: &str, now_ms: u64) -> String {
    let mut out = String::new();
    for b in bakes {
        let (c, base) = (b.canary.unwrap_or_default(), b.baseline.unwrap_or_default());
        let left = time_left(b, now_ms)
            .map(|d| format!(", {} left", human(Duration::from_secs(d.as_secs()))))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{indent}bake of stage {}: {}{left}; canary {} against {} baseline hosts",
            b.stage + 1,
            verdict_name(b.verdict),
            b.canary_hosts.join(", "),
            b.baseline_hosts
        );
        let [rate, time, restarts] = limit_words(b);
        let rows = [
            ("error rate", error_rate(&c), error_rate(&base), rate),
            (
                "response time",
                format!("{} ms", c.response_time_ms),
                format!("{} ms", base.response_time_ms),
                time,
            ),
            ("restarts", c.restarts.to_string(), "-".into(), restarts),
        ];
        for (signal, canary, baseline, limit) in rows {
            let _ = writeln!(
                out,
                "{indent}  {signal:<14} canary {canary:<20} baseline {baseline:<20} fails {limit}"
            );
        }
        if !b.reason.is_empty() {
            let _ = writeln!(out, "{indent}  {}", b.reason);
        }
    }
    out
}

/// The bakes for `--json`.
pub fn json(bakes: &[BakeInfo]) -> serde_json::Value {
    let signals = |s: Option<BakeSignals>| {
        let s = s.unwrap_or_default();
        serde_json::json!({
            "requests": s.requests, "errors": s.errors,
            "response_time_ms": s.response_time_ms, "restarts": s.restarts,
        })
    };
    bakes
        .iter()
        .map(|b| {
            let l = b.limits.unwrap_or_default();
            serde_json::json!({
                "stage": b.stage, "started_ms": b.started_ms, "ends_ms": b.ends_ms,
                "measured_ms": b.measured_ms, "canary_hosts": b.canary_hosts,
                "baseline_hosts": b.baseline_hosts,
                "canary": signals(b.canary), "baseline": signals(b.baseline),
                "limits": {
                    "max_error_rate": l.max_error_rate, "max_error_ratio": l.max_error_ratio,
                    "max_response_time_ratio": l.max_response_time_ratio,
                    "min_response_time_ms": l.min_response_time_ms,
                    "min_requests": l.min_requests, "max_restarts": l.max_restarts,
                },
                "verdict": verdict_name(b.verdict), "reason": b.reason,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use drover_proto::v1::BakeLimits;

    use super::*;

    #[test]
    fn a_running_bake_reads_as_canary_against_baseline_with_limits() {
        let b = BakeInfo {
            stage: 0,
            ends_ms: 100_000,
            canary_hosts: vec!["h1".into()],
            baseline_hosts: 3,
            canary: Some(BakeSignals {
                requests: 400,
                errors: 2,
                response_time_ms: 12,
                restarts: 1,
            }),
            baseline: Some(BakeSignals {
                requests: 1200,
                errors: 6,
                response_time_ms: 9,
                restarts: 0,
            }),
            limits: Some(BakeLimits {
                max_error_rate: 0.01,
                max_error_ratio: 2.0,
                max_response_time_ratio: 3.0,
                min_response_time_ms: 50,
                min_requests: 20,
                max_restarts: 0,
            }),
            verdict: BakeVerdict::Watching as i32,
            ..Default::default()
        };
        let t = text(std::slice::from_ref(&b), "  ", 40_000);
        assert!(
            t.contains("bake of stage 1: watching, 1 min left; canary h1 against 3 baseline hosts"),
            "{t}"
        );
        assert!(t.contains("canary 0.5% (2 of 400)"), "{t}");
        assert!(t.contains("baseline 0.5% (6 of 1200)"), "{t}");
        assert!(t.contains("fails above 1.0% and 2x the baseline"), "{t}");
        assert!(t.contains("restarts       canary 1 "), "{t}");
        let done = BakeInfo {
            verdict: BakeVerdict::Passed as i32,
            ..b
        };
        assert_eq!(time_left(&done, 40_000), None);
        assert_eq!(json(&[done])[0]["verdict"], "passed");
    }
}
