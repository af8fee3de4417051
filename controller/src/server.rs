//! `drover serve`: one listener serving both the agent channel and the operator API, the
//! state database, and the rollout engine (which resumes unfinished deployments first).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info};

use crate::metrics::Metrics;
use crate::schedule::SharedClock;

use crate::hub::{AgentHub, HubSettings};
use crate::operator::OperatorService;
use crate::rollout::{Deployer, DeployerSettings};
use crate::store::Store;

/// What the controller daemon needs to start.
pub struct ServeSettings {
    /// Agent stream tunables.
    pub hub: HubSettings,
    /// Rollout engine tunables.
    pub deployer: DeployerSettings,
    /// The SQLite database file.
    pub database: PathBuf,
    /// How long in-flight rollouts get to reach a step boundary on shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<TcpListener>,
    /// Wall-clock time for schedules and deploy windows (injectable for tests).
    pub clock: SharedClock,
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Resuming unfinished deployments failed.
    #[error(transparent)]
    Resume(#[from] crate::rollout::DeployError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Runs the controller on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Some(dir) = settings
        .database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let store = Store::open(&settings.database).await?;
    let hub = AgentHub::new(settings.hub);
    let metrics = Arc::new(Metrics::default());
    let deployer = Deployer::new(
        store,
        hub.clone(),
        settings.deployer,
        metrics.clone(),
        settings.clock,
    );
    let stop_metrics = CancellationToken::new();
    let metrics_task = settings.metrics.map(|l| {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "serving Prometheus metrics at /metrics");
        }
        let stop = stop_metrics.clone();
        tokio::spawn(
            crate::metrics::serve(
                l,
                metrics,
                hub.clone(),
                async move { stop.cancelled().await },
            )
            .instrument(tracing::info_span!("metrics")),
        )
    });
    let resumed = deployer.resume().await?;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, database = %settings.database.display(), resumed, "controller listening for agents and operators");
    }
    tonic::transport::Server::builder()
        .add_service(hub.grpc_service())
        .add_service(OperatorService::server(hub.clone(), deployer.clone()))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            shutdown.await;
            // Rollouts stop at a step boundary first (their state stays recorded for the
            // next start), then open streams close so the server can finish.
            deployer.shutdown(settings.shutdown_grace).await;
            hub.shutdown();
        })
        .await?;
    stop_metrics.cancel();
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    Ok(())
}
