//! `drover-agent`: parses flags, sets up logging, runs [`drover_agent::run`] until SIGTERM
//! or SIGINT. A bad configuration exits with code 64.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use drover_agent::{AgentConfig, Cli, EXIT_CONFIG};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let config = match AgentConfig::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drover-agent: {e}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    if cli.check {
        println!(
            "configuration valid: name={} controller={} advertise={} labels={:?} docker-host={} keep-previous={} heartbeat={:?}",
            config.name,
            config.controller,
            config.advertise,
            config.labels,
            config.docker_host,
            config.keep_previous,
            config.heartbeat_interval
        );
        return ExitCode::SUCCESS;
    }
    drover_shared::telemetry::init(config.log_format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("drover-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: AgentConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal()?;
        drover_agent::run(config, shutdown).await;
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
