//! Who may talk to the controller: `drover token create` (agent join tokens),
//! `drover api-token create` (operator and CI tokens with a role) and `drover whoami`.
//! Tokens are printed once, on stdout alone, so they can be captured by a script; the
//! controller keeps only their hashes.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use drover_proto::v1::{
    CreateApiTokenRequest, CreateJoinTokenRequest, ListApiTokensRequest, RevokeApiTokenRequest,
    WhoAmIRequest,
};
use drover_shared::tls::Role;

use super::{ClientArgs, Refused, rpc_error};

/// `drover token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a one-time join token for enrolling one agent. The agent uses it once
    /// (`drover-agent --token ...`) to get its certificate; after that, or after --ttl,
    /// the token is worthless.
    #[command(after_help = "Examples:
  drover token create > join-token                         # valid 1 hour, for one host
  drover token create --ttl 15m --label role=web --label zone=b > join-token
then on the new host, with the fleet CA copied as ca.crt:
  sudo drover-agent --controller https://CONTROLLER:7070 --name \"$(hostname)\" --ca-cert ca.crt --token-file join-token")]
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// How long the token can be used.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
        ttl: Duration,
        /// A label for the host that enrolls with it, e.g. `--label zone=b` (repeatable).
        /// These override the labels the agent reports about itself.
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
}

/// `drover api-token ...`
#[derive(Debug, clap::Subcommand)]
pub enum ApiTokenCommand {
    /// Print a new API token for an operator or a CI job. Use it by setting
    /// DROVER_TOKEN (or --token-file) for any drover command.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// Who uses it: history names this for everything done with the token.
        name: String,
        /// viewer (read only), deployer (also deploy, roll back, promote, pause, abort)
        /// or admin (also tokens, secrets, removing hosts).
        #[arg(long)]
        role: Role,
        /// How long the token is valid (default: until revoked).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List API tokens: id, name, role, who created them, expiry, revocation. Never the
    /// secrets (the controller does not have them).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// One JSON object per token.
        #[arg(long)]
        json: bool,
    },
    /// Revoke API tokens at once: by id (the part after `dra1.`), or by name (every
    /// token with that name).
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        /// A token id or a token name.
        id_or_name: String,
    },
}

/// Flags of `drover whoami`.
#[derive(Debug, clap::Args)]
pub struct WhoAmIArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn expiry(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Runs `drover token create`.
pub async fn run_token(cmd: TokenCommand) -> anyhow::Result<i32> {
    let TokenCommand::Create {
        client,
        ttl,
        labels,
    } = cmd;
    let settings = client.settings()?;
    let mut c = settings.client().await?;
    let r = c
        .create_join_token(CreateJoinTokenRequest {
            ttl_ms: ttl.as_millis() as u64,
            labels: labels.into_iter().collect::<HashMap<_, _>>(),
        })
        .await
        .map_err(|s| rpc_error("creating a join token", &s))?
        .into_inner();
    println!("{}", r.token);
    let url = agent_facing(&settings.controllers[0]);
    eprintln!(
        "one-time join token for one host, valid until {}. On that host, with the token saved as join-token (mode 0600) and the fleet CA ({}) copied as ca.crt, run:\n  sudo drover-agent --controller {url} --name \"$(hostname)\" --ca-cert ca.crt --token-file join-token",
        expiry(r.expires_at_ms),
        settings.ca_cert.display(),
    );
    Ok(0)
}

/// The controller address as a new host would dial it: a loopback address, which only
/// works on the controller's own machine, becomes this machine's host name.
fn agent_facing(url: &str) -> String {
    let h = super::ca::this_host();
    url.replace("://127.0.0.1:", &format!("://{h}:"))
        .replace("://localhost:", &format!("://{h}:"))
        .replace("://[::1]:", &format!("://{h}:"))
}

/// Runs `drover api-token ...`.
pub async fn run_api_token(cmd: ApiTokenCommand) -> anyhow::Result<i32> {
    match cmd {
        ApiTokenCommand::Create {
            client,
            name,
            role,
            ttl,
        } => create_api_token(client, name, role, ttl).await,
        ApiTokenCommand::List { client, json } => list_api_tokens(client, json).await,
        ApiTokenCommand::Revoke { client, id_or_name } => {
            let mut c = client.client().await?;
            let r = c
                .revoke_api_token(RevokeApiTokenRequest {
                    id_or_name: id_or_name.clone(),
                })
                .await
                .map_err(|s| rpc_error(&format!("revoking {id_or_name}"), &s))?
                .into_inner();
            println!(
                "revoked {} API token(s) matching {id_or_name}; they are refused from now on",
                r.revoked
            );
            Ok(0)
        }
    }
}

async fn list_api_tokens(client: ClientArgs, json: bool) -> anyhow::Result<i32> {
    let mut c = client.client().await?;
    let tokens = c
        .list_api_tokens(ListApiTokensRequest {})
        .await
        .map_err(|s| rpc_error("listing API tokens", &s))?
        .into_inner()
        .tokens;
    let when = |ms: u64, none: &str| {
        if ms == 0 { none.to_owned() } else { expiry(ms) }
    };
    if json {
        for t in &tokens {
            println!(
                "{}",
                serde_json::json!({
                    "id": t.id, "name": t.name, "role": t.role, "created_by": t.created_by,
                    "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
                    "revoked_at_ms": t.revoked_at_ms,
                })
            );
        }
        return Ok(0);
    }
    println!(
        "{:<18} {:<20} {:<9} {:<16} {:<22} REVOKED",
        "ID", "NAME", "ROLE", "CREATED BY", "EXPIRES"
    );
    for t in &tokens {
        println!(
            "{:<18} {:<20} {:<9} {:<16} {:<22} {}",
            t.id,
            t.name,
            t.role,
            t.created_by,
            when(t.expires_at_ms, "never"),
            when(t.revoked_at_ms, "-")
        );
    }
    Ok(0)
}

async fn create_api_token(
    client: ClientArgs,
    name: String,
    role: Role,
    ttl: Option<Duration>,
) -> anyhow::Result<i32> {
    if !drover_shared::tls::valid_name(&name) {
        return Err(Refused(format!(
            "{name:?} is not a valid token name: use letters, digits, '.', '-', '_' and '@', starting with a letter or digit"
        ))
        .into());
    }
    let settings = client.settings()?;
    let mut c = settings.client().await?;
    let r = c
        .create_api_token(CreateApiTokenRequest {
            name: name.clone(),
            role: role.as_str().to_owned(),
            ttl_ms: ttl.map(|t| t.as_millis() as u64).unwrap_or(0),
        })
        .await
        .map_err(|s| rpc_error("creating an API token", &s))?
        .into_inner();
    println!("{}", r.token);
    let until = if r.expires_at_ms == 0 {
        "does not expire".to_owned()
    } else {
        format!("valid until {}", expiry(r.expires_at_ms))
    };
    eprintln!(
        "API token for {name} ({role}), {until}; shown only now. Save it as a file {name}.token (mode 0600), then use it with:\n  drover login --profile {name} --controller {} --ca-cert {} --token-stdin < {name}.token\nor: DROVER_TOKEN_FILE={name}.token drover whoami",
        settings.controllers.join(","),
        settings.ca_cert.display()
    );
    Ok(0)
}

/// Runs `drover whoami`.
pub async fn run_whoami(args: WhoAmIArgs) -> anyhow::Result<i32> {
    let mut c = args.client.client().await?;
    let r = c
        .who_am_i(WhoAmIRequest {})
        .await
        .map_err(|s| rpc_error("whoami", &s))?
        .into_inner();
    println!("{} ({}, by {})", r.name, r.role, r.method);
    println!("controller: {}", controller_role(&r));
    Ok(0)
}

/// The answering controller's role in words.
fn controller_role(r: &drover_proto::v1::WhoAmIResponse) -> String {
    match (r.controller_role.as_str(), r.leader.as_str()) {
        ("leader", _) => format!("leader (epoch {})", r.epoch),
        ("standby", "") => "standby (no replica leads at the moment)".to_owned(),
        ("standby", leader) => format!("standby (the leader is {leader})"),
        ("", _) => "single".to_owned(),
        (role, _) => role.to_owned(),
    }
}
