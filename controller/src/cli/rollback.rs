//! `drover rollback SERVICE [--to VERSION]`: back to the previous successful version, or
//! to a version every host still keeps, through the same safe batches, without pulling.

use drover_proto::v1::{PlanRequest, RollbackRequest, plan_request};

use super::ClientArgs;
use super::deploy::{EXIT_REFUSED, follow_or_detach, whoami};

/// Flags of `drover rollback`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover rollback web               # back to web's previous successful version, batch by batch
  drover rollback web --env production   # the same, in one environment
  drover rollback web --json        # one JSON event per line, for CI
  drover history --service web      # which version that is, and who deployed it

Exit codes as for `drover deploy`: 0 done, 1 failed, 2 refused (nothing to roll back to,
locked, not allowed), 3 controller lost, 130 Ctrl-C (the rollback goes on).")]
pub struct RollbackArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service to roll back.
    pub service: String,
    /// The environment to roll back (`[env.NAME]` of the spec); required for a service
    /// deployed to environments.
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// Return to this version (one every target host keeps, see `drover hosts`) instead
    /// of the previous successful one.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Start the rollback and return its id without following it.
    #[arg(long)]
    pub detach: bool,
    /// One JSON object per event on stdout (with --plan: the plan as one object).
    #[arg(long)]
    pub json: bool,
    /// Print what the rollback would do and change nothing; exit 2 with the reason if
    /// it would be refused.
    #[arg(long, conflicts_with = "detach")]
    pub plan: bool,
}

pub async fn run(args: RollbackArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let request = RollbackRequest {
        service: args.service.clone(),
        requested_by: whoami(),
        to_version: args.to.clone().unwrap_or_default(),
        environment: args.environment.clone().unwrap_or_default(),
    };
    if args.plan {
        let mut rerun = format!("drover rollback {}", args.service);
        if let Some(env) = &args.environment {
            rerun.push_str(&format!(" --env {env}"));
        }
        if let Some(to) = &args.to {
            rerun.push_str(&format!(" --to {to}"));
        }
        let request = PlanRequest {
            request: Some(plan_request::Request::Rollback(request)),
        };
        return super::plan::run(&mut client, request, args.json, &rerun).await;
    }
    let info = match client.rollback(request).await {
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
