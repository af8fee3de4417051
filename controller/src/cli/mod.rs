//! The `drover` command line: one module per subcommand; `main` only dispatches here.

mod access;
pub(crate) mod bake;
mod ca;
mod connect;
mod control;
mod deploy;
mod docs;
mod dora;
mod history;
mod hooks;
mod hosts;
mod json;
mod login;
mod logs;
mod plan;
mod profile;
pub(crate) mod progress;
mod release;
mod rollback;
mod schedule;
mod secret;
mod serve;
mod slo;
mod status;
mod summary;

use clap::{Parser, Subcommand};
use drover_proto::v1::ControlAction;
use drover_shared::telemetry::LogFormat;

pub use connect::{Client, ClientArgs, Credentials};
pub use serve::EXIT_CONFIG;

/// Default address of the controller for CLI commands.
pub const DEFAULT_CONTROLLER: &str = "https://127.0.0.1:7070";

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
    /// List the hosts (agents) the controller knows, connected or lost; `hosts remove`.
    Hosts(hosts::HostsArgs),
    /// Past deployments: who, what version and digest, when, outcome, durations.
    History(history::HistoryArgs),
    /// Delivery metrics (DORA): deploy frequency, lead time, change failure rate, time to restore.
    Dora(dora::DoraArgs),
    /// A service's container logs from every matching host, each line with its host.
    Logs(logs::LogsArgs),
    /// A service's error budgets (SLO) per environment, measured from HAProxy's counters.
    Slo(slo::SloArgs),
    /// Return a service to its previous successful version (or `--to` a kept one), without pulling.
    Rollback(rollback::RollbackArgs),
    /// Continue a staged deployment past its manual gate.
    Promote(control::ControlArgs),
    /// Stop a deployment at its next safe point (between batches); nothing is left drained.
    Pause(control::ControlArgs),
    /// Continue a paused deployment.
    Resume(control::ControlArgs),
    /// Stop a deployment and return every host it changed to its previous version.
    Abort(control::ControlArgs),
    /// Approve a deployment that waits for a second person (an environment with
    /// `approval = "required"`); not by the person who asked for it.
    Approve(control::ControlArgs),
    /// Record a release: a version's tag resolved to its digest once, with its commit.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// A service's releases: where each runs now and where it was deployed.
    Releases(release::ReleasesArgs),
    /// List or cancel scheduled deployments.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// The fleet's certificate authority: create it, issue operator certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// One-time join tokens for enrolling agents.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// API tokens for operators and CI, each with a role (admin, deployer, viewer).
    #[command(subcommand, name = "api-token")]
    ApiToken(access::ApiTokenCommand),
    /// Service secrets, encrypted at rest, given to containers at swap time.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Show who the controller takes you for, and your role.
    Whoami(access::WhoAmIArgs),
    /// Check a controller address and credentials, and save them as a client profile.
    Login(login::LoginArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the drover(1) man page, or write every command's page into a directory.
    Man(docs::ManArgs),
}

/// Where `drover ca init` writes the fleet CA and `drover serve` reads it, by default.
pub const DEFAULT_PKI_DIR: &str = "/etc/drover/pki";

/// Exit code when the controller (or the CLI itself) refused a request: nothing changed.
pub const EXIT_REFUSED: i32 = 2;

/// Exit code when the controller was lost after a request was sent and did not come
/// back in time: the outcome is unknown to this CLI (the message says how to learn it).
pub const EXIT_LOST: i32 = 3;

/// The controller went away after a request was sent: what happened is not known here.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Lost(pub String);

/// Whether a status means the controller refused the request before recording anything.
pub fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument
            | FailedPrecondition
            | PermissionDenied
            | AlreadyExists
            | Aborted
            | Unauthenticated
            | NotFound
    )
}

/// A request that was refused (bad input, not allowed, not authenticated): the command
/// exits with [`EXIT_REFUSED`] and the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The metadata with which a standby replica names the leader.
const LEADER_METADATA: &str = crate::leader::gate::LEADER_METADATA;

/// Turns a failed RPC into an error: refusals (authentication, permission, bad input,
/// precondition) become [`Refused`]; anything else is a failure.
pub(crate) fn rpc_error(what: &str, status: &tonic::Status) -> anyhow::Error {
    use tonic::Code;
    match status.code() {
        Code::Unauthenticated
        | Code::PermissionDenied
        | Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists => Refused(format!("{what} refused: {}", status.message())).into(),
        // A standby replica answered: its message names the leader and what to do.
        Code::Unavailable if status.metadata().contains_key(LEADER_METADATA) => {
            anyhow::anyhow!("{what} failed: {}", status.message())
        }
        Code::Unavailable => anyhow::anyhow!(
            "{}; is `drover serve` running? Try again, or pass --controller",
            connect::said_once(&format!(
                "{what} failed: the controller is unreachable: {}",
                status.message()
            ))
        ),
        _ => anyhow::anyhow!(
            "{}",
            connect::said_once(&format!("{what} failed: {}", status.message()))
        ),
    }
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match dispatch(cli).await {
        Err(e) if e.downcast_ref::<Refused>().is_some() => {
            eprintln!("error: {e:#}");
            Ok(EXIT_REFUSED)
        }
        Err(e) if e.downcast_ref::<Lost>().is_some() => {
            eprintln!("error: {e:#}");
            Ok(EXIT_LOST)
        }
        other => other,
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Deploy(args) => deploy::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Hosts(args) => hosts::run(args).await,
        Command::History(args) => history::run(args).await,
        Command::Dora(args) => dora::run(args).await,
        Command::Logs(args) => logs::run(args).await,
        Command::Slo(args) => slo::run(args).await,
        Command::Rollback(args) => rollback::run(args).await,
        Command::Promote(args) => control::run(args, ControlAction::Promote).await,
        Command::Pause(args) => control::run(args, ControlAction::Pause).await,
        Command::Resume(args) => control::run(args, ControlAction::Resume).await,
        Command::Abort(args) => control::run(args, ControlAction::Abort).await,
        Command::Approve(args) => control::run(args, ControlAction::Approve).await,
        Command::Release(cmd) => release::run(cmd).await,
        Command::Releases(args) => release::list(args).await,
        Command::Schedule(cmd) => schedule::run(cmd).await,
        Command::Ca(cmd) => ca::run(cmd),
        Command::Token(cmd) => access::run_token(cmd).await,
        Command::ApiToken(cmd) => access::run_api_token(cmd).await,
        Command::Secret(cmd) => secret::run(cmd).await,
        Command::Whoami(args) => access::run_whoami(args).await,
        Command::Login(args) => login::run(args).await,
        Command::Completions(args) => docs::completions(args),
        Command::Man(args) => docs::man(args),
    }
}
