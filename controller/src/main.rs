//! `drover`: the controller daemon (`drover serve`) and the operator CLI.

use clap::Parser;
use drover_controller::cli::{Cli, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    drover_shared::telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
