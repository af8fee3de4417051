//! `drover secret set|list`: service secrets, stored encrypted by the controller and
//! handed to containers at swap time. Values go in through stdin only and never come back
//! out: there is no `get`.

use std::io::{IsTerminal, Read};

use drover_proto::v1::{ListSecretsRequest, SetSecretRequest};
use zeroize::Zeroizing;

use super::{ClientArgs, Refused, rpc_error};

/// The largest secret value the controller accepts.
const MAX_VALUE: usize = 64 * 1024;

/// `drover secret ...`
#[derive(Debug, clap::Subcommand)]
pub enum SecretCommand {
    /// Set (or replace) a secret of a service; the value is read from stdin, e.g.
    /// `drover secret set web DB_PASSWORD --env production < password.txt`. One
    /// trailing newline is dropped. Needs the admin role.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        /// The service, as in the spec's `[service] name`.
        service: String,
        /// The secret's name: letters, digits and `_`, not starting with a digit. It is
        /// the environment variable or file name the container sees.
        name: String,
        /// Only for this environment of the service (`[env.NAME]`): never sent to the
        /// hosts of another. Without it, the value is for every environment that has
        /// no value of its own.
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
    },
    /// List a service's secret names (never their values).
    List {
        #[command(flatten)]
        client: ClientArgs,
        /// The service.
        service: String,
        /// The secrets the service gets in this environment (its own, and those for
        /// every environment it does not override).
        #[arg(long = "env", value_name = "ENV")]
        environment: Option<String>,
        /// One JSON object per secret.
        #[arg(long)]
        json: bool,
    },
}

/// Whether `name` can name a secret (a portable environment variable name).
pub fn valid_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Runs a `drover secret` subcommand.
pub async fn run(cmd: SecretCommand) -> anyhow::Result<i32> {
    match cmd {
        SecretCommand::Set {
            client,
            service,
            name,
            environment,
        } => set(client, service, name, environment.unwrap_or_default()).await,
        SecretCommand::List {
            client,
            service,
            environment,
            json,
        } => list(client, service, environment.unwrap_or_default(), json).await,
    }
}

async fn set(
    client: ClientArgs,
    service: String,
    name: String,
    environment: String,
) -> anyhow::Result<i32> {
    if !valid_secret_name(&name) {
        return Err(Refused(format!(
            "{name:?} is not a valid secret name: use letters, digits and '_', not starting with a digit (it becomes an environment variable or file name)"
        ))
        .into());
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!(
            "reading the value of {name} from stdin; end with Ctrl-D (pipe it in to keep it off the screen)"
        );
    }
    let mut value = Zeroizing::new(Vec::new());
    stdin
        .lock()
        .take(MAX_VALUE as u64 + 2)
        .read_to_end(&mut value)
        .map_err(|e| anyhow::anyhow!("cannot read the secret from stdin: {e}"))?;
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Refused(format!("no value for {name} on stdin; nothing was changed")).into());
    }
    if value.len() > MAX_VALUE {
        return Err(Refused(format!(
            "the value of {name} is larger than {} KiB; nothing was changed",
            MAX_VALUE / 1024
        ))
        .into());
    }
    let mut c = client.client().await?;
    let r = c
        .set_secret(SetSecretRequest {
            service: service.clone(),
            name: name.clone(),
            value: value.to_vec(),
            environment: environment.clone(),
        })
        .await
        .map_err(|s| rpc_error(&format!("setting secret {name} of {service}"), &s))?
        .into_inner();
    let verb = if r.replaced { "replaced" } else { "set" };
    let scope = if environment.is_empty() {
        "every environment".to_string()
    } else {
        format!("environment {environment} only")
    };
    println!(
        "secret {name} of {service} {verb} for {scope}; it reaches containers at their next deploy"
    );
    Ok(0)
}

async fn list(
    client: ClientArgs,
    service: String,
    environment: String,
    json: bool,
) -> anyhow::Result<i32> {
    let mut c = client.client().await?;
    let secrets = c
        .list_secrets(ListSecretsRequest {
            service: service.clone(),
            environment,
        })
        .await
        .map_err(|s| rpc_error(&format!("listing the secrets of {service}"), &s))?
        .into_inner()
        .secrets;
    if json {
        for s in &secrets {
            println!(
                "{}",
                serde_json::json!({
                    "name": s.name, "updated_at_ms": s.updated_at_ms, "updated_by": s.updated_by,
                    "environment": (!s.environment.is_empty()).then_some(&s.environment),
                })
            );
        }
        return Ok(0);
    }
    if secrets.is_empty() {
        eprintln!(
            "{service} has no secrets; add one with `drover secret set {service} NAME < value-file`"
        );
        return Ok(0);
    }
    println!("{:<32} {:<18} {:<22} UPDATED BY", "NAME", "FOR", "UPDATED");
    for s in &secrets {
        let when = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(s.updated_at_ms),
        );
        let scope = if s.environment.is_empty() {
            "every environment"
        } else {
            s.environment.as_str()
        };
        println!(
            "{:<32} {:<18} {:<22} {}",
            s.name,
            scope,
            when.to_string(),
            s.updated_by
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::valid_secret_name;

    #[test]
    fn secret_names_are_portable_variable_names() {
        for ok in ["DB_PASSWORD", "_x", "a1"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "1A", "DB-PASSWORD", "a b", "../x", "é"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }
}
