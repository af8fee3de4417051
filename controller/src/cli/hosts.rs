//! `drover hosts`: the inventory of agents.

use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{ContainerState, ListHostsRequest};

use super::ClientArgs;

/// Flags of `drover hosts`.
#[derive(Debug, clap::Args)]
pub struct HostsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only hosts whose labels match, e.g. `role=web,zone!=b`.
    #[arg(long, short = 'l', default_value = "")]
    pub selector: String,
    /// One JSON object per host instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: HostsArgs) -> anyhow::Result<i32> {
    let mut client = OperatorClient::new(args.client.channel().await?);
    let hosts = client
        .list_hosts(ListHostsRequest {
            selector: args.selector.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("listing hosts failed: {}", s.message()))?
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
                        "state": ContainerState::try_from(s.state).unwrap_or_default().as_str_name(),
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
        let services: Vec<_> = h
            .services
            .iter()
            .map(|s| format!("{}@{}", s.service, s.version))
            .collect();
        let state = if h.connected { "connected" } else { "lost" };
        println!(
            "{:<20} {:<16} {:<10} {:<30} {}",
            h.name,
            h.advertise_address,
            state,
            labels.join(","),
            services.join(" ")
        );
    }
    if hosts.is_empty() {
        eprintln!("no hosts match; agents appear here once they connect");
    }
    Ok(0)
}
