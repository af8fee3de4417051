//! drover-agent: the daemon on every host. It dials out to the Drover controller, keeps
//! one gRPC stream open, and runs the commands it receives (prepare, swap, rollback,
//! inspect) against the local container engine. Its state is the engine's: containers
//! carry `drover.*` labels, so a restarted agent adopts what runs.
//!
//! Layout: [`config`] (flags and file), [`connection`] (the stream, heartbeats,
//! reconnects, shutdown), [`executor`] (idempotency, fencing, per-service
//! serialization), [`commands`] (what each command does), [`runtime`] (the narrow engine
//! trait) and [`docker`] (that trait on Docker via bollard).

pub mod commands;
pub mod config;
pub mod connection;
pub mod docker;
pub mod error;
pub mod executor;
pub mod runtime;

#[cfg(test)]
mod testing;

use std::future::Future;

pub use config::{AgentConfig, Cli, ConfigError, EXIT_CONFIG};
pub use error::CommandFailure;
pub use runtime::{ContainerRuntime, RuntimeError};

use commands::CommandContext;
use connection::Link;
use docker::DockerRuntime;
use executor::Executor;
use tracing::{info, warn};

/// Runs the agent against the Docker engine named in `config` until `shutdown`
/// completes; then in-flight commands get `config.shutdown_grace` to finish.
/// Application containers are never stopped by the agent stopping.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) {
    let runtime = DockerRuntime::new(config.docker_host.clone());
    run_with_runtime(config, runtime, shutdown).await;
}

/// [`run`] with any container runtime (e.g. a simulated one for scale benchmarks).
pub async fn run_with_runtime<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: R,
    shutdown: impl Future<Output = ()>,
) {
    info!(
        name = %config.name,
        controller = %config.controller,
        docker = %config.docker_host,
        version = drover_shared::VERSION,
        "drover-agent starting"
    );
    let executor = Executor::new(CommandContext {
        runtime: std::sync::Arc::new(runtime),
        agent: config.name.clone(),
        keep_previous: config.keep_previous,
    });
    // Seed epochs from container labels; the hello on every connect does it again.
    let ctx = executor.context();
    match ctx.runtime.list_managed(&ctx.agent).await {
        Ok(containers) => {
            info!(containers = containers.len(), "adopted managed containers");
            executor.observe(&containers);
        }
        Err(e) => {
            warn!(error = %e, "Docker is unavailable at start; will report it to the controller")
        }
    }
    Link::new(config, executor).run(shutdown).await;
}
