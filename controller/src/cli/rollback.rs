//! `drover rollback SERVICE`: back to the previous successful version, through the same
//! safe batches, without pulling.

use drover_proto::v1::RollbackRequest;

use super::ClientArgs;
use super::deploy::{EXIT_REFUSED, follow_or_detach, whoami};

/// Flags of `drover rollback`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover rollback web               # back to web's previous successful version, batch by batch
  drover rollback web --json        # one JSON event per line, for CI
  drover history --service web      # which version that is, and who deployed it

Exit codes as for `drover deploy`: 0 done, 1 failed, 2 refused (nothing to roll back to,
locked, not allowed), 3 controller lost, 130 Ctrl-C (the rollback goes on).")]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service to roll back.
    pub service: String,
    /// Start the rollback and return its id without following it.
    #[arg(long)]
    pub detach: bool,
    /// One JSON object per event on stdout.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let response = client
        .rollback(RollbackRequest {
            service: args.service.clone(),
            requested_by: whoami(),
        })
        .await;
    let info = match response {
        Ok(r) => r.into_inner().deployment.unwrap_or_default(),
        Err(status) => {
            eprintln!(
                "error: rollback refused, nothing was changed: {}",
                status.message()
            );
            return Ok(EXIT_REFUSED);
        }
    };
    follow_or_detach(&mut client, &info.id, args.detach, args.json).await
}
