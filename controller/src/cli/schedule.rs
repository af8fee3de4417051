//! `drover schedule list|cancel`: deployments waiting for their time or a deploy window,
//! not started yet or held between stages.

use drover_proto::v1::{ControlAction, DeploymentState, ListDeploymentsRequest};

use super::ClientArgs;
use super::control::{ControlArgs, run as control};
use super::json::snapshot_json;

/// `drover schedule ...`
#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Deployments waiting for their start time or a deploy window: not started yet, or
    /// held between stages (a held one is rolled back by `drover abort ID`).
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
            environment: String::new(),
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
        let held = d.state == DeploymentState::Held as i32;
        let at = if held {
            format!("held at stage {}/{}", d.stage + 1, d.stages.max(1))
        } else if d.scheduled_ms > 0 {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(d.scheduled_ms),
            )
            .to_string()
        } else {
            "next window".into()
        };
        let waiting = if held {
            format!("{}; `drover abort {}` rolls it back", d.hold, d.id)
        } else {
            d.hold.clone()
        };
        println!(
            "{:<16} {:<12} {:<10} {:<22} {:<20} {waiting}",
            d.id, d.service, d.version, at, d.requested_by
        );
    }
    if list.is_empty() {
        eprintln!("no scheduled deployments");
    }
    Ok(0)
}
