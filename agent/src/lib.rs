//! drover-agent: the daemon on every host. It dials out to the Drover controller, keeps
//! one mutually authenticated gRPC stream open, and runs the commands it receives
//! (prepare, swap, rollback, inspect) against the local container engine. Its state is the
//! engine's: containers carry `drover.*` labels, so a restarted agent adopts what runs.
//!
//! Layout: [`config`] (flags and file), [`identity`] (certificate, key, enrollment),
//! [`renewal`] (certificate renewal in the background), [`connection`] (the stream,
//! heartbeats, reconnects, shutdown), [`executor`] (idempotency, fencing, per-service
//! serialization), [`commands`] (what each command does), [`secrets`] (secrets given to
//! containers), [`runtime`] (the narrow engine trait) and [`docker`] (that trait on Docker
//! via bollard).

pub mod commands;
pub mod config;
pub mod connection;
pub mod docker;
pub mod error;
pub mod executor;
pub mod identity;
pub mod logs;
pub mod renewal;
pub mod runtime;
pub mod secrets;
#[cfg(feature = "sim")]
pub mod sim;
pub mod targets;

#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

pub use config::{AgentConfig, Cli, ConfigError, EXIT_CONFIG, EXIT_ENROLL_REFUSED};
pub use error::CommandFailure;
pub use identity::IdentityError;
pub use runtime::{ContainerRuntime, RuntimeError};

use commands::CommandContext;
use connection::{Link, Transport};
use docker::DockerRuntime;
use drover_shared::tls::{self, SwappableCert};
use executor::Executor;
use futures::FutureExt;
use renewal::Renewer;
use secrets::SecretsDir;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Runs the agent against the Docker engine named in `config` until `shutdown`
/// completes; then in-flight commands get `config.shutdown_grace` to finish.
/// Application containers are never stopped by the agent stopping.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IdentityError> {
    let runtime = DockerRuntime::new(config.docker_host.clone());
    run_with_runtime(config, runtime, shutdown).await
}

/// [`run`] with any container runtime (e.g. a simulated one for scale benchmarks). Fails
/// only at start, when the agent has no identity and cannot get one (see
/// [`IdentityError::exit_code`]).
pub async fn run_with_runtime<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: R,
    shutdown: impl Future<Output = ()>,
) -> Result<(), IdentityError> {
    info!(
        name = %config.name,
        controller = %config.controller,
        docker = %config.docker_host,
        version = drover_shared::VERSION,
        "drover-agent starting"
    );
    let shutdown = shutdown.fuse();
    tokio::pin!(shutdown);

    let (transport, renewal) = if config.insecure_dev {
        warn!(
            controller = %config.controller,
            "--insecure-dev: the link to the controller is plaintext and unauthenticated; anyone on the \
             network can read it and command this host's Docker. Never use it outside development"
        );
        (Transport::Insecure, None)
    } else {
        let Some(established) = identity::establish(&config, &mut shutdown).await? else {
            info!("stopped before enrollment finished");
            return Ok(());
        };
        let key = established
            .creds
            .certified_key()
            .map_err(IdentityError::Internal)?;
        let cert = SwappableCert::new(key);
        let client = tls::client_config(&established.ca_pem, Some(cert.clone())).map_err(|e| {
            IdentityError::CaCert {
                path: config.ca_cert.clone(),
                reason: e.to_string(),
            }
        })?;
        let (renewed_tx, renewed_rx) = watch::channel(0u64);
        let renewer = Renewer::new(
            &config,
            client.clone(),
            cert.clone(),
            &established.creds,
            renewed_tx,
        );
        (
            Transport::Mtls { client, cert },
            Some((renewer, renewed_rx)),
        )
    };

    let secrets = SecretsDir::new(&config.secrets_dir);
    if let Err(why) = secrets.check_tmpfs() {
        warn!(reason = %why, "swaps with secrets delivered as files will be refused");
    }
    let executor = Executor::new(CommandContext {
        runtime: Arc::new(runtime),
        agent: config.name.clone(),
        keep_previous: config.keep_previous,
        secrets,
        ready: commands::record::ReadyRecords::new(&config.state_dir),
    });
    // Seed epochs from container labels (the hello on every connect does it again), and
    // finish or undo what a swap interrupted by the agent's death left half done, before
    // the first hello reports the host's state.
    let ctx = executor.context();
    match ctx.runtime.list_managed(&ctx.agent).await {
        Ok(containers) => {
            info!(containers = containers.len(), "adopted managed containers");
            executor.observe(&containers);
            reconcile(ctx).await;
        }
        Err(e) => {
            warn!(error = %e, "Docker is unavailable at start; will report it to the controller")
        }
    }

    let stop_renewal = CancellationToken::new();
    let mut link = Link::new(config, executor, transport);
    let mut renewal_task = None;
    if let Some((renewer, renewed)) = renewal {
        link = link.with_renewals(renewed);
        let task = renewer.run(stop_renewal.clone());
        renewal_task = Some(tokio::spawn(task.instrument(info_span!("renewal"))));
    }
    link.run(&mut shutdown).await;
    stop_renewal.cancel();
    if let Some(task) = renewal_task {
        let _ = task.await;
    }
    Ok(())
}

/// Reconciles every service, then removes the secrets and ready records of containers
/// that no longer exist.
async fn reconcile<R: ContainerRuntime>(ctx: &CommandContext<R>) {
    commands::hook::remove_leftovers(ctx).await;
    match commands::reconcile::all(ctx).await {
        Ok(services) => {
            for (service, outcome) in services {
                match outcome.serving() {
                    Some(container) => info!(service, container, ?outcome, "reconciled"),
                    None => warn!(service, "reconciled: nothing runs"),
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot reconcile the services at start"),
    }
    match ctx.runtime.list_managed(&ctx.agent).await {
        Ok(containers) => {
            let live: HashSet<String> = containers.into_iter().map(|c| c.name).collect();
            commands::remove_orphan_secrets(ctx, &live).await;
            ctx.ready.forget_missing(&live).await;
        }
        Err(e) => warn!(error = %e, "cannot list the containers to clean up after"),
    }
}

#[cfg(test)]
#[path = "enroll_tests.rs"]
mod enroll_tests;
