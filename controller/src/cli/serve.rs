//! `drover serve`: the controller daemon.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::hub::HubSettings;
use crate::server::{ServeSettings, run as run_server};

/// Flags of `drover serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for agents and operators.
    #[arg(long, env = "DROVER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Heartbeat period asked of agents; an agent silent for three periods is lost.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let settings = ServeSettings {
        hub: HubSettings {
            heartbeat_interval: args.heartbeat_interval,
            lost_after: args.heartbeat_interval * 3,
            ..HubSettings::default()
        },
    };
    run_server(listener, settings, shutdown_signal()).await?;
    info!("controller stopped");
    Ok(0)
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
    }
}
