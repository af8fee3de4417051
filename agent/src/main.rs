//! `drover-agent`: parses flags, sets up logging, runs [`drover_agent::run`] until SIGTERM
//! or SIGINT. A bad configuration exits with code 64, a refused enrollment with 77.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use drover_agent::secrets::SecretsDir;
use drover_agent::{AgentConfig, Cli, EXIT_CONFIG, identity};

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
        return check(&config);
    }
    drover_shared::telemetry::init(config.log_format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// `--check`: the configuration, then what the agent would do about its identity and its
/// secrets directory. Touches neither the controller nor Docker. Exits 0 only when it
/// found nothing to fix: with the code the agent itself would exit with when it could not
/// start (64), else 1 when the agent would start but refuse work (secrets not on tmpfs).
fn check(config: &AgentConfig) -> ExitCode {
    println!("configuration valid: {}", config.summary());
    let mut problems = 0;
    let mut code = 1;
    if config.insecure_dev {
        println!("identity: none (--insecure-dev: plaintext and unauthenticated)");
    } else {
        match identity::check(config) {
            Ok(status) => println!("identity: {status}"),
            // Often installed after the configuration: the rest is still checked.
            Err(e) if e.not_provisioned() => {
                println!("identity: problem: the agent will not start until this is fixed: {e}");
                problems += 1;
                code = e.exit_code();
            }
            Err(e) => {
                eprintln!("drover-agent: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        }
    }
    match SecretsDir::new(&config.secrets_dir).check_tmpfs() {
        Ok(()) => println!("secrets-dir: on tmpfs"),
        Err(why) => {
            println!("secrets-dir: problem: swaps that carry secrets will be refused: {why}");
            problems += 1;
        }
    }
    if problems == 0 {
        return ExitCode::SUCCESS;
    }
    eprintln!("drover-agent --check: {problems} problem(s) above; fix them and check again");
    ExitCode::from(code as u8)
}

fn serve(config: AgentConfig) -> Result<(), ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(failure)?;
    runtime.block_on(async {
        let shutdown = shutdown_signal().map_err(failure)?;
        drover_agent::run(config, shutdown).await.map_err(|e| {
            let code = e.exit_code();
            tracing::error!(exit_code = code, "{e}");
            ExitCode::from(code as u8)
        })
    })
}

fn failure(e: anyhow::Error) -> ExitCode {
    eprintln!("drover-agent: {e:#}");
    ExitCode::FAILURE
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
