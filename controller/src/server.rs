//! `drover serve`: one listener serving both the agent channel and the operator API.

use std::future::Future;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::hub::{AgentHub, HubSettings};
use crate::operator::OperatorService;

/// What the controller daemon needs to start.
#[derive(Debug, Clone, Default)]
pub struct ServeSettings {
    /// Agent stream tunables.
    pub hub: HubSettings,
}

/// Runs the controller on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let hub = AgentHub::new(settings.hub);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "controller listening for agents and operators");
    }
    tonic::transport::Server::builder()
        .add_service(hub.grpc_service())
        .add_service(OperatorService::server(hub.clone()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
