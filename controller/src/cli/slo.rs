//! `drover slo SERVICE [--env E] [--json]`: a service's error budgets, as the controller
//! measured them from HAProxy's counters.

use std::time::Duration;

use drover_proto::v1::{GetSloRequest, SloBudget};
use drover_shared::duration::human;

use super::ClientArgs;
use crate::slo::thousands;

/// Flags of `drover slo`.
#[derive(Debug, clap::Args)]
pub struct SloArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service.
    pub service: String,
    /// Only this environment [default: every environment with an SLO].
    #[arg(long = "env", short = 'e', value_name = "ENV")]
    pub environment: Option<String>,
    /// One JSON object per environment instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SloArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let budgets = client
        .get_slo(GetSloRequest {
            service: args.service.clone(),
            environment: args.environment.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| {
            super::rpc_error(&format!("reading the error budget of {}", args.service), &s)
        })?
        .into_inner()
        .budgets;
    if args.json {
        for b in &budgets {
            println!("{}", budget_json(b));
        }
    } else {
        print!("{}", table(&budgets, crate::store::now_ms()));
    }
    Ok(0)
}

/// One environment's budget as JSON; `achieved` is `null` without requests.
fn budget_json(b: &SloBudget) -> serde_json::Value {
    serde_json::json!({
        "service": b.service, "environment": b.environment,
        "availability": b.availability, "window": b.window, "target": b.target,
        "requests": b.requests, "errors": b.errors,
        "achieved": (b.requests > 0).then_some(b.achieved),
        "allowed_errors": b.allowed_errors, "remaining_errors": b.remaining_errors,
        "remaining_ratio": b.remaining_ratio, "spent": b.spent,
        "measured_since_ms": (b.measured_since_ms > 0).then_some(b.measured_since_ms),
        "window_ms": b.window_ms, "backend": b.backend, "runtime": b.runtime, "description": b.description,
    })
}

/// The text: one row per environment, then each budget in words, and how much of the
/// window the samples cover yet when it is less than the whole.
fn table(budgets: &[SloBudget], now_ms: u64) -> String {
    let mut out = format!(
        "{:<14} {:<16} {:>10} {:>7} {:>8} {:>9} {:>6}\n",
        "ENVIRONMENT", "SLO", "REQUESTS", "ERRORS", "ALLOWED", "ACHIEVED", "LEFT"
    );
    for b in budgets {
        let achieved = if b.requests == 0 {
            "-".to_string()
        } else {
            format!("{:.3}%", b.achieved * 100.0)
        };
        let left = if b.spent {
            "SPENT".to_string()
        } else {
            format!("{:.0}%", (b.remaining_ratio * 100.0).floor())
        };
        out += &format!(
            "{:<14} {:<16} {:>10} {:>7} {:>8} {:>9} {:>6}\n",
            b.environment,
            format!("{} over {}", b.availability, b.window),
            thousands(b.requests),
            thousands(b.errors),
            format!("{:.1}", b.allowed_errors),
            achieved,
            left
        );
    }
    for b in budgets {
        out += &format!("{}\n", b.description);
        let covered = now_ms.saturating_sub(b.measured_since_ms);
        if b.measured_since_ms > 0 && covered < b.window_ms {
            out += &format!(
                "  measured over the last {} so far, not yet the whole {} window\n",
                human(Duration::from_millis(covered)),
                b.window
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(environment: &str, requests: u64, errors: u64, spent: bool) -> SloBudget {
        SloBudget {
            service: "web".into(),
            environment: environment.into(),
            availability: "99.5%".into(),
            window: "30d".into(),
            target: 0.995,
            requests,
            errors,
            achieved: 1.0 - errors as f64 / requests.max(1) as f64,
            allowed_errors: requests as f64 * 0.005,
            remaining_errors: requests as f64 * 0.005 - errors as f64,
            remaining_ratio: if spent { -0.64 } else { 0.52 },
            spent,
            measured_since_ms: 1_000,
            window_ms: 30 * 86_400_000,
            description: format!("budget of {environment}"),
            backend: "web".into(),
            runtime: vec!["/run/haproxy/admin.sock".into()],
        }
    }

    #[test]
    fn the_table_shows_each_environment_and_its_budget_in_words() {
        let text = table(
            &[
                budget("production", 5_000, 41, true),
                budget("staging", 5_000, 12, false),
            ],
            1_000 + 7_200_000,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "production     99.5% over 30d        5,000      41     25.0   99.180%  SPENT"
        );
        assert_eq!(
            lines[2],
            "staging        99.5% over 30d        5,000      12     25.0   99.760%    52%"
        );
        assert_eq!(lines[3], "budget of production");
        assert_eq!(
            lines[4],
            "  measured over the last 2 h so far, not yet the whole 30d window"
        );
    }

    #[test]
    fn json_has_typed_fields_and_null_without_requests() {
        let mut b = budget("production", 0, 0, false);
        b.measured_since_ms = 0;
        let j = budget_json(&b);
        assert_eq!(j["achieved"], serde_json::Value::Null);
        assert_eq!(j["measured_since_ms"], serde_json::Value::Null);
        assert_eq!(j["spent"], false);
        let j = budget_json(&budget("production", 5_000, 41, true));
        assert_eq!(j["requests"], 5_000);
        assert_eq!(j["spent"], true);
        assert_eq!(j["runtime"][0], "/run/haproxy/admin.sock");
    }
}
