//! `drover schedule list|cancel`: deployments waiting for their time or a deploy window.

use drover_proto::v1::{ControlAction, ListDeploymentsRequest};

use super::ClientArgs;
use super::control::{ControlArgs, run as control};
use super::progress::snapshot_json;

/// `drover schedule ...`
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Deployments waiting for their start time or a deploy window.
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// Only this service.
        #[arg(long, short = 's')]
        service: Option<String>,
        /// One JSON object per deployment.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a deployment that has not started yet.
    Cancel(ControlArgs),
}

pub async fn run(cmd: ScheduleCommand) -> anyhow::Result<i32> {
    let (client, service, json) = match cmd {
        ScheduleCommand::Cancel(args) => return control(args, ControlAction::Cancel).await,
        ScheduleCommand::List {
            client,
            service,
            json,
        } => (client, service, json),
    };
    let mut client = client.client().await?;
    let list = client
        .list_deployments(ListDeploymentsRequest {
            service: service.unwrap_or_default(),
            limit: 1000,
            scheduled_only: true,
        })
        .await
        .map_err(|s| super::rpc_error("listing scheduled deployments", &s))?
        .into_inner()
        .deployments;
    if json {
        for d in &list {
            println!("{}", snapshot_json(d));
        }
        return Ok(0);
    }
    println!(
        "{:<16} {:<12} {:<10} {:<22} {:<20} WAITING FOR",
        "ID", "SERVICE", "VERSION", "AT", "BY"
    );
    for d in &list {
        let at = if d.scheduled_ms > 0 {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.scheduled_ms),
            )
            .to_string()
        } else {
            "next window".into()
        };
        println!(
            "{:<16} {:<12} {:<10} {:<22} {:<20} {}",
            d.id, d.service, d.version, at, d.requested_by, d.hold
        );
    }
    if list.is_empty() {
        eprintln!("no scheduled deployments");
    }
    Ok(0)
}
