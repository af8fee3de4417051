//! `drover status [ID]`: follow a deployment from any terminal (the newest by default).

use drover_proto::v1::GetDeploymentRequest;

use super::ClientArgs;
use super::progress::{self, Mode};

/// Flags of `drover status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Deployment id (default: the newest).
    pub id: Option<String>,
    /// Print the current state and return instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let info = client
        .get_deployment(GetDeploymentRequest {
            id: args.id.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| super::rpc_error("status", &s))?
        .into_inner();
    let mode = Mode::pick(args.json);
    if args.no_follow || progress::is_final(info.state) {
        if !args.json {
            progress::print_events(&mut client, &info.id).await?;
        }
        return Ok(progress::summarize(
            &info,
            if args.json { Mode::Json } else { Mode::Lines },
        ));
    }
    progress::follow_to_end(&mut client, &info.id, mode).await
}
