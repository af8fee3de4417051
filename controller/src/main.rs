//! `drover`: the controller daemon (`drover serve`) and the operator CLI.

use clap::{CommandFactory, Parser};
use drover_controller::cli::{Cli, EXIT_CONFIG, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        // A daemon's bad flag is a bad configuration, like every other one (EX_USAGE).
        Err(e) if subcommand_is("serve") => {
            let _ = e.print();
            return std::process::ExitCode::from(EXIT_CONFIG as u8);
        }
        Err(e) => e.exit(),
    };
    drover_shared::telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Whether the first subcommand named on the command line is `name`.
fn subcommand_is(name: &str) -> bool {
    let cmd = Cli::command();
    std::env::args()
        .skip(1)
        .find(|a| cmd.get_subcommands().any(|s| s.get_name() == a))
        .is_some_and(|a| a == name)
}
