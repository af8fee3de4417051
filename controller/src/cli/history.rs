//! `drover history`: who deployed what (version and digest), when, the outcome, how long
//! it took, and per-host timings.

use std::time::{Duration, UNIX_EPOCH};

use drover_proto::v1::{DeploymentInfo, DeploymentState, ListDeploymentsRequest};
use drover_shared::duration::human;

use super::ClientArgs;
use super::json::snapshot_json;
use super::progress::{phase_name, state_name};

/// Flags of `drover history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this service.
    #[arg(long, short = 's')]
    pub service: Option<String>,
    /// Only this environment.
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// How many deployments, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: u32,
    /// Show each host's timings under each deployment.
    #[arg(long)]
    pub hosts: bool,
    /// One JSON object per deployment (hosts and timings included).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: HistoryArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let list = client
        .list_deployments(ListDeploymentsRequest {
            service: args.service.clone().unwrap_or_default(),
            limit: args.limit,
            scheduled_only: false,
            environment: args.environment.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| super::rpc_error("listing deployments", &s))?
        .into_inner()
        .deployments;
    if args.json {
        for d in &list {
            println!("{}", snapshot_json(d));
        }
        return Ok(0);
    }
    print!("{}", table(&list, args.hosts));
    if list.is_empty() {
        eprintln!("no deployments yet");
    }
    Ok(0)
}

/// The text table: one row per deployment; under a deployment that did not succeed,
/// why (the canary signal that breached, the host that failed, who aborted); with
/// `hosts`, each host's batch, phase and time.
fn table(list: &[DeploymentInfo], hosts: bool) -> String {
    use std::fmt::Write;
    let took = |from: u64, to: u64| {
        if from > 0 && to >= from {
            human(Duration::from_millis(to - from)).to_string()
        } else {
            "-".into()
        }
    };
    let mut out = format!(
        "{:<16} {:<12} {:<11} {:<8} {:<10} {:<12} {:<20} {:<20} {:<10} DIGEST\n",
        "ID", "SERVICE", "ENV", "KIND", "VERSION", "OUTCOME", "BY", "STARTED", "TOOK"
    );
    for d in list {
        let started =
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(d.created_ms));
        let digest = d.pinned.rsplit_once('@').map_or("-", |(_, dg)| dg);
        let _ = writeln!(
            out,
            "{:<16} {:<12} {:<11} {:<8} {:<10} {:<12} {:<20} {:<20} {:<10} {}",
            d.id,
            d.service,
            if d.environment.is_empty() {
                "-"
            } else {
                &d.environment
            },
            d.kind,
            d.version,
            state_name(d.state),
            d.requested_by,
            started.to_string(),
            took(d.created_ms, d.finished_ms),
            digest
        );
        if !d.error.is_empty() && d.state != DeploymentState::Succeeded as i32 {
            let _ = writeln!(out, "    why: {}", d.error);
        }
        if !d.gate_note.is_empty() {
            let _ = writeln!(out, "    gates: {}", d.gate_note);
        }
        out.push_str(&super::hooks::text(&d.hooks, "    "));
        if hosts {
            for h in &d.hosts {
                let _ = writeln!(
                    out,
                    "    {:<20} batch {:<3} {:<14} {:<10} {}",
                    h.host,
                    h.batch + 1,
                    phase_name(h.phase),
                    took(h.started_ms, h.finished_ms),
                    h.error
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rolled_back_deployment_says_which_signal_failed_its_canary() {
        let why = "canary breach in stage 1: web-1 error rate 0.41 above 0.01 (baseline 0.00)";
        let d = DeploymentInfo {
            id: "d-1".into(),
            service: "web".into(),
            state: DeploymentState::RolledBack as i32,
            error: why.into(),
            created_ms: 1_000,
            finished_ms: 4_921,
            ..Default::default()
        };
        let text = table(std::slice::from_ref(&d), false);
        assert!(text.contains(&format!("why: {why}")), "{text}");
        assert!(text.contains("3.9 s"), "rounded: {text}");
        let ok = DeploymentInfo {
            state: DeploymentState::Succeeded as i32,
            error: String::new(),
            ..d
        };
        assert!(!table(&[ok], false).contains("why:"));
    }
}
