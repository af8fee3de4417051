//! `drover promote|pause|resume|abort|approve ID`: steer a running deployment from any terminal.
//! Each is safe to run twice and is recorded in the history with who asked.

use drover_proto::v1::{ControlAction, ControlRequest};

use super::ClientArgs;
use super::deploy::whoami;
use super::progress::state_name;

/// Flags shared by the control subcommands.
#[derive(Debug, clap::Args)]
pub struct ControlArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The deployment id (see `drover history` or `drover status`).
    pub id: String,
}

/// Sends `action` for the deployment and prints where it stands.
pub async fn run(args: ControlArgs, action: ControlAction) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    match client
        .control(ControlRequest {
            id: args.id.clone(),
            action: action as i32,
            requested_by: whoami(),
        })
        .await
    {
        Ok(r) => {
            let d = r.into_inner();
            let hold = if d.hold.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.hold)
            };
            let verb = match action {
                ControlAction::Promote => "promotion recorded",
                ControlAction::Pause => "pause recorded (takes effect at the next safe point)",
                ControlAction::Resume => "resume recorded",
                ControlAction::Abort => "abort recorded (every changed host goes back)",
                ControlAction::Cancel => "cancelled",
                ControlAction::Approve => "approved",
                ControlAction::Unspecified => "recorded",
            };
            println!(
                "deployment {}: {verb}; now {}{hold}",
                d.id,
                state_name(d.state)
            );
            Ok(0)
        }
        Err(status) => {
            eprintln!("error: {}", status.message());
            Ok(super::deploy::EXIT_REFUSED)
        }
    }
}
