//! `drover hosts`: the inventory of agents.

use drover_proto::v1::{ContainerState, Health, ListHostsRequest, RemoveHostRequest};

use super::ClientArgs;
use crate::hub::service_words;

/// Flags of `drover hosts`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HostsArgs {
    #[command(subcommand)]
    pub action: Option<HostsAction>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only hosts whose labels match, e.g. `role=web,zone!=b`.
    #[arg(long, short = 'l', default_value = "")]
    pub selector: String,
    /// One JSON object per host instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `drover hosts ...`
#[derive(Debug, clap::Subcommand)]
pub enum HostsAction {
    /// Remove a host from the fleet: revoke its agent's certificates, close its stream
    /// and forget it. Its agent is refused from then on; to bring the host back, give it
    /// a new join token (`drover token create`). Needs the admin role.
    Remove {
        #[command(flatten)]
        client: ClientArgs,
        /// The host's name, as `drover hosts` shows it.
        name: String,
    },
}

pub async fn run(args: HostsArgs) -> anyhow::Result<i32> {
    if let Some(HostsAction::Remove { client, name }) = args.action {
        return remove(client, name).await;
    }
    let mut client = args.client.client().await?;
    let hosts = client
        .list_hosts(ListHostsRequest {
            selector: args.selector.clone(),
        })
        .await
        .map_err(|s| super::rpc_error("listing hosts", &s))?
        .into_inner()
        .hosts;
    if args.json {
        for h in &hosts {
            let services: Vec<_> = h
                .services
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "service": s.service, "version": s.version, "digest": s.digest,
                        "container_id": s.container_id,
                        "kept": s.previous.iter().map(|k| &k.version).collect::<Vec<_>>(),
                        "state": ContainerState::try_from(s.state).unwrap_or_default().as_str_name(),
                        "health": Health::try_from(s.health).unwrap_or_default().as_str_name(),
                    })
                })
                .collect();
            let line = serde_json::json!({
                "name": h.name, "address": h.advertise_address, "connected": h.connected,
                "since_ms": h.since_ms, "labels": h.labels, "agent_version": h.agent_version,
                "docker_error": h.docker_error, "services": services,
            });
            println!("{line}");
        }
        return Ok(0);
    }
    println!(
        "{:<20} {:<16} {:<10} {:<30} SERVICES",
        "HOST", "ADDRESS", "STATE", "LABELS"
    );
    for h in &hosts {
        let mut labels: Vec<_> = h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let services: Vec<_> = h.services.iter().map(with_kept).collect();
        let state = if h.connected { "connected" } else { "lost" };
        println!(
            "{:<20} {:<16} {:<10} {:<30} {}",
            h.name,
            h.advertise_address,
            state,
            labels.join(","),
            services.join(", ")
        );
    }
    if hosts.is_empty() {
        eprintln!("no hosts match; agents appear here once they connect");
    }
    Ok(0)
}

/// `web v3 running (kept: v2, v1)`: what runs, and what `drover rollback --to` can
/// return to on this host.
fn with_kept(s: &drover_proto::v1::ServiceState) -> String {
    let words = service_words(s);
    if s.previous.is_empty() {
        return words;
    }
    let kept: Vec<&str> = s.previous.iter().map(|k| k.version.as_str()).collect();
    format!("{words} (kept: {})", kept.join(", "))
}

async fn remove(client: ClientArgs, name: String) -> anyhow::Result<i32> {
    let mut c = client.client().await?;
    let r = c
        .remove_host(RemoveHostRequest { name: name.clone() })
        .await
        .map_err(|s| super::rpc_error(&format!("removing host {name}"), &s))?
        .into_inner();
    let stream = if r.was_connected {
        "its stream was closed"
    } else {
        "it was not connected"
    };
    println!(
        "removed {name}: {} certificate(s) revoked, {stream}; its agent is refused from now on",
        r.revoked_certificates
    );
    eprintln!(
        "to bring {name} back: `drover token create`, then start its agent with --token (after deleting its old certificate in the agent's state directory)"
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::v1::ServiceState;

    fn service(version: &str, state: ContainerState, health: Health) -> ServiceState {
        ServiceState {
            service: "web".into(),
            version: version.into(),
            state: state as i32,
            health: health as i32,
            ..Default::default()
        }
    }

    #[test]
    fn services_are_shown_with_the_state_of_their_container() {
        let words = |v, s, h| service_words(&service(v, s, h));
        assert_eq!(
            words("v2", ContainerState::Running, Health::None),
            "web v2 running"
        );
        assert_eq!(
            words("v2", ContainerState::Running, Health::Unhealthy),
            "web v2 running (unhealthy)"
        );
        assert_eq!(
            words("v1", ContainerState::Exited, Health::None),
            "web v1 exited"
        );
        assert_eq!(
            words("", ContainerState::Absent, Health::Unspecified),
            "web: none running"
        );
    }
}
