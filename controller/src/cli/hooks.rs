//! How `drover status` and `drover history` show a deployment's hook runs: one line per
//! run (phase, name, host, outcome, duration) and the tail of its output; `--json`
//! carries every field and the whole stored output.

use std::fmt::Write;
use std::time::Duration;

use drover_proto::v1::{HookOutcome, HookRunInfo};
use drover_shared::duration::human;

/// Output lines shown under a hook run on screen (the record keeps 64 KiB).
const SHOWN_LINES: usize = 10;

/// The outcome in words.
pub fn outcome_name(outcome: i32) -> &'static str {
    match HookOutcome::try_from(outcome).unwrap_or_default() {
        HookOutcome::Succeeded => "succeeded",
        HookOutcome::Failed => "failed",
        HookOutcome::TimedOut => "timed_out",
        HookOutcome::Error => "error",
        HookOutcome::Skipped => "skipped",
        HookOutcome::Unspecified => "unknown",
    }
}

/// The hook runs as text, each line indented by `indent`; empty when there are none.
pub fn text(hooks: &[HookRunInfo], indent: &str) -> String {
    let mut out = String::new();
    for h in hooks {
        let took = human(Duration::from_millis(
            h.finished_ms.saturating_sub(h.started_ms),
        ));
        let outcome = match HookOutcome::try_from(h.outcome).unwrap_or_default() {
            HookOutcome::Failed if !h.host.is_empty() => format!("failed (exit {})", h.exit_code),
            _ => outcome_name(h.outcome).to_string(),
        };
        let _ = writeln!(
            out,
            "{indent}hook {:<14} {:<16} {:<20} {:<20} {took}",
            h.phase,
            h.name,
            if h.host.is_empty() { "-" } else { &h.host },
            outcome,
        );
        let lines: Vec<&str> = h.output.lines().collect();
        let skip = lines.len().saturating_sub(SHOWN_LINES);
        if skip > 0 {
            let _ = writeln!(out, "{indent}    ... {skip} earlier lines (see --json)");
        }
        for l in &lines[skip..] {
            let _ = writeln!(out, "{indent}    | {l}");
        }
    }
    out
}

/// The hook runs as JSON values.
pub fn json(hooks: &[HookRunInfo]) -> Vec<serde_json::Value> {
    hooks
        .iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name, "phase": h.phase,
                "host": (!h.host.is_empty()).then_some(&h.host),
                "outcome": outcome_name(h.outcome), "exit_code": h.exit_code,
                "started_ms": h.started_ms, "finished_ms": h.finished_ms,
                "duration_ms": h.finished_ms.saturating_sub(h.started_ms),
                "output": h.output,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_show_outcome_duration_and_the_output_tail() {
        let h = HookRunInfo {
            name: "migrate".into(),
            phase: "before_rollout".into(),
            host: "h1".into(),
            outcome: HookOutcome::Failed as i32,
            exit_code: 3,
            started_ms: 1_000,
            finished_ms: 3_500,
            output: (1..=12).map(|i| format!("line {i}\n")).collect(),
        };
        let t = text(std::slice::from_ref(&h), "  ");
        assert!(t.contains("migrate"), "{t}");
        assert!(t.contains("failed (exit 3)"), "{t}");
        assert!(t.contains("2.5 s"), "{t}");
        assert!(t.contains("2 earlier lines"), "{t}");
        assert!(t.contains("| line 12") && !t.contains("| line 2\n"), "{t}");
        let j = &json(&[h])[0];
        assert_eq!(j["outcome"], "failed");
        assert_eq!(j["duration_ms"], 2500);
    }
}
