//! `drover history`: who deployed what (version and digest), when, the outcome, how long
//! it took, and per-host timings.

use drover_proto::v1::ListDeploymentsRequest;

use super::ClientArgs;
use super::progress::{phase_name, snapshot_json, state_name};

/// Flags of `drover history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only this service.
    #[arg(long, short = 's')]
    pub service: Option<String>,
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
    println!(
        "{:<16} {:<12} {:<8} {:<10} {:<12} {:<20} {:<20} {:<8} DIGEST",
        "ID", "SERVICE", "KIND", "VERSION", "OUTCOME", "BY", "STARTED", "TOOK"
    );
    for d in &list {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.created_ms),
        );
        let took = if d.finished_ms >= d.created_ms && d.finished_ms > 0 {
            format!("{:.1}s", (d.finished_ms - d.created_ms) as f64 / 1000.0)
        } else {
            "-".into()
        };
        let digest = d.pinned.rsplit_once('@').map_or("-", |(_, dg)| dg);
        println!(
            "{:<16} {:<12} {:<8} {:<10} {:<12} {:<20} {:<20} {:<8} {}",
            d.id,
            d.service,
            d.kind,
            d.version,
            state_name(d.state),
            d.requested_by,
            started.to_string(),
            took,
            digest
        );
        if args.hosts {
            for h in &d.hosts {
                let took = if h.started_ms > 0 && h.finished_ms >= h.started_ms {
                    format!("{:.1}s", (h.finished_ms - h.started_ms) as f64 / 1000.0)
                } else {
                    "-".into()
                };
                println!(
                    "    {:<20} batch {:<3} {:<14} {:<8} {}",
                    h.host,
                    h.batch + 1,
                    phase_name(h.phase),
                    took,
                    h.error
                );
            }
        }
    }
    if list.is_empty() {
        eprintln!("no deployments yet");
    }
    Ok(0)
}
