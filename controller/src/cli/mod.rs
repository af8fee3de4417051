//! The `drover` command line: one module per subcommand; `main` only dispatches here.

mod control;
mod deploy;
mod history;
mod hosts;
mod progress;
mod rollback;
mod schedule;
mod serve;
mod status;

use clap::{Parser, Subcommand};
use drover_proto::v1::ControlAction;
use drover_shared::telemetry::LogFormat;

/// Default address of the controller for CLI commands.
pub const DEFAULT_CONTROLLER: &str = "http://127.0.0.1:7070";

/// Drover rolls a new container version across a fleet of hosts with zero downtime.
#[derive(Debug, Parser)]
#[command(name = "drover", version, about, long_about = None)]
pub struct Cli {
    /// Log line format on stderr: text or json.
    #[arg(long, global = true, default_value = "text", env = "DROVER_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller daemon: agents connect to it, the CLI talks to it.
    Serve(serve::ServeArgs),
    /// Roll a new version across the service's hosts in batches, with zero downtime.
    Deploy(deploy::DeployArgs),
    /// Follow a deployment (the newest by default) or show where it stands.
    Status(status::StatusArgs),
    /// List the hosts (agents) the controller knows, connected or lost.
    Hosts(hosts::HostsArgs),
    /// Past deployments: who, what version and digest, when, outcome, durations.
    History(history::HistoryArgs),
    /// Return a service to its previous successful version, without pulling.
    Rollback(rollback::RollbackArgs),
    /// Continue a staged deployment past its manual gate.
    Promote(control::ControlArgs),
    /// Stop a deployment at its next safe point (between batches); nothing is left drained.
    Pause(control::ControlArgs),
    /// Continue a paused deployment.
    Resume(control::ControlArgs),
    /// Stop a deployment and return every host it changed to its previous version.
    Abort(control::ControlArgs),
    /// List or cancel scheduled deployments.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
}

/// Options every client subcommand shares.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Controller address.
    #[arg(long, env = "DROVER_CONTROLLER", default_value = DEFAULT_CONTROLLER)]
    pub controller: String,
}

impl ClientArgs {
    /// Opens a channel to the controller, with an error that says where it tried.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        use anyhow::Context;
        let endpoint = tonic::transport::Endpoint::from_shared(self.controller.clone())
            .with_context(|| format!("invalid controller address {:?}", self.controller))?
            .connect_timeout(std::time::Duration::from_secs(5));
        endpoint.connect().await.with_context(|| {
            format!(
                "cannot reach the controller at {}; is `drover serve` running there? (set --controller or DROVER_CONTROLLER)",
                self.controller
            )
        })
    }
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Hosts(args) => hosts::run(args).await,
        Command::History(args) => history::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Promote(args) => control::run(args, ControlAction::Promote).await,
        Command::Pause(args) => control::run(args, ControlAction::Pause).await,
        Command::Resume(args) => control::run(args, ControlAction::Resume).await,
        Command::Abort(args) => control::run(args, ControlAction::Abort).await,
        Command::Schedule(cmd) => schedule::run(cmd).await,
    }
}
