//! The `drover` command line: one module per subcommand; `main` only dispatches here.

mod access;
mod ca;
mod control;
mod deploy;
mod history;
mod hosts;
mod plan;
mod progress;
mod rollback;
mod schedule;
mod secret;
mod serve;
mod status;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use drover_proto::v1::ControlAction;
use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::telemetry::LogFormat;
use drover_shared::tls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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

/// How long the CLI waits for the controller's TCP and TLS handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A request that was refused (bad input, not allowed, not authenticated): the command
/// exits with [`EXIT_REFUSED`] and the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

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
        _ => anyhow::anyhow!("{what} failed: {}", status.message()),
    }
}

/// The operator API client every subcommand uses: a TLS channel plus the API token, if
/// any, on every request.
pub type Client = OperatorClient<InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Bearer <token>` to each request when an API token is in use.
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.bearer.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("Credentials")
            .field("token", &token)
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        Ok(request)
    }
}

/// Options every client subcommand shares: where the controller is and how to prove who
/// you are. An API token comes from the `DROVER_TOKEN` environment variable or
/// `--token-file` (never a flag, so it stays out of shell history and `ps`).
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// Controller address: https://HOST:PORT (http:// only with --insecure-dev).
    #[arg(long, env = "DROVER_CONTROLLER", default_value = DEFAULT_CONTROLLER)]
    pub controller: String,
    /// The fleet CA certificate that the controller's certificate must chain to
    /// [default: /etc/drover/pki/ca.crt].
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Operator client certificate (PEM), e.g. admin.crt from `drover ca init` or one from
    /// `drover ca issue-operator`. Without --cert and without a token, the CLI uses
    /// /etc/drover/pki/admin.crt when it can read it.
    #[arg(long, env = "DROVER_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, env = "DROVER_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding an API token (from `drover api-token create`); or set DROVER_TOKEN.
    #[arg(long, env = "DROVER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Talk plaintext to a controller started with --insecure-dev. Development only:
    /// nothing is authenticated or encrypted.
    #[arg(long, env = "DROVER_INSECURE_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_dev: bool,
}

impl ClientArgs {
    /// Connects to the controller (mTLS unless --insecure-dev), with errors that say
    /// where it tried and what to fix.
    pub async fn client(&self) -> anyhow::Result<Client> {
        use anyhow::Context;
        let url = self.controller.trim();
        let plaintext = url.starts_with("http://");
        if plaintext && !self.insecure_dev {
            return Err(Refused(format!(
                "refusing to talk to {url} in plaintext: use an https:// address, or pass --insecure-dev for a development controller started with --insecure-dev"
            ))
            .into());
        }
        if self.insecure_dev && !plaintext {
            return Err(Refused(format!(
                "--insecure-dev needs an http:// controller address, not {url}"
            ))
            .into());
        }
        let unreachable = || {
            format!(
                "cannot reach the controller at {url}; is `drover serve` running there? (set --controller or DROVER_CONTROLLER)"
            )
        };
        let (channel, token) = if plaintext {
            let channel = tls::insecure_channel(url, CONNECT_TIMEOUT)
                .await
                .with_context(unreachable)?;
            (channel, None)
        } else {
            let ca_path = self
                .ca_cert
                .clone()
                .unwrap_or_else(|| Path::new(DEFAULT_PKI_DIR).join(tls::CA_CERT_FILE));
            let ca_pem = tls::read_pem_file(&ca_path).map_err(|e| {
                Refused(format!(
                    "{e}: the CLI needs the fleet CA certificate (ca.crt from `drover ca init`); pass --ca-cert or set DROVER_CA_CERT"
                ))
            })?;
            let token = self.token()?;
            let cert = self.certificate(token.is_some())?;
            let config = tls::client_config(&ca_pem, cert)
                .map_err(|e| Refused(format!("{}: {e}", ca_path.display())))?;
            let channel = tls::channel(url, config, CONNECT_TIMEOUT)
                .await
                .with_context(unreachable)?;
            (channel, token)
        };
        let bearer = match token {
            None => None,
            Some(t) => {
                let mut value: MetadataValue<Ascii> = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Refused("the API token has characters a token never has; copy it again from `drover api-token create`".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(OperatorClient::with_interceptor(
            channel,
            Credentials { bearer },
        ))
    }

    /// The API token from DROVER_TOKEN or --token-file, if any.
    fn token(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Refused(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let t = text.trim().to_owned();
            if t.is_empty() {
                return Err(Refused(format!("the token file {} is empty", path.display())).into());
            }
            return Ok(Some(t));
        }
        Ok(std::env::var("DROVER_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }

    /// The client certificate to present: --cert/--key, or the local admin certificate
    /// when no token is in use and it is readable.
    fn certificate(&self, have_token: bool) -> anyhow::Result<Option<tls::SwappableCert>> {
        let (cert, key, explicit) = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), true),
            _ => {
                let dir = Path::new(DEFAULT_PKI_DIR);
                (dir.join("admin.crt"), dir.join("admin.key"), false)
            }
        };
        if explicit && have_token {
            return Err(Refused(
                "both a client certificate (--cert / DROVER_CERT) and an API token (DROVER_TOKEN / --token-file) were given: use one".into(),
            )
            .into());
        }
        if !explicit && (have_token || !cert.exists()) {
            return Ok(None);
        }
        let read = |p: &Path| {
            tls::read_pem_file(p).map_err(|e| {
                Refused(format!(
                    "{e}: pass a readable operator certificate and key with --cert/--key (DROVER_CERT/DROVER_KEY)"
                ))
            })
        };
        let (cert_pem, key_pem) = match (read(&cert), read(&key)) {
            (Ok(c), Ok(k)) => (c, k),
            // The default admin certificate is only a convenience: unreadable means unused.
            (Err(_), _) | (_, Err(_)) if !explicit => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        let cert = tls::SwappableCert::from_pem(&cert_pem, &key_pem)
            .map_err(|e| Refused(format!("{}: {e}", cert.display())))?;
        Ok(Some(cert))
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
        Command::Rollback(args) => rollback::run(args).await,
        Command::Promote(args) => control::run(args, ControlAction::Promote).await,
        Command::Pause(args) => control::run(args, ControlAction::Pause).await,
        Command::Resume(args) => control::run(args, ControlAction::Resume).await,
        Command::Abort(args) => control::run(args, ControlAction::Abort).await,
        Command::Schedule(cmd) => schedule::run(cmd).await,
        Command::Ca(cmd) => ca::run(cmd),
        Command::Token(cmd) => access::run_token(cmd).await,
        Command::ApiToken(cmd) => access::run_api_token(cmd).await,
        Command::Secret(cmd) => secret::run(cmd).await,
        Command::Whoami(args) => access::run_whoami(args).await,
    }
}
