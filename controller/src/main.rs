//! `drover`: the controller daemon (`drover serve`) and the operator CLI.

use clap::{CommandFactory, Parser};
use drover_controller::cli::{Cli, EXIT_CONFIG, run};

/// Exit code when stdout was closed early (`drover history | head`): 128 + SIGPIPE, what
/// a shell reports for a program that SIGPIPE stopped.
const EXIT_BROKEN_PIPE: i32 = 141;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    quiet_on_broken_pipe();
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
        Err(e) if broken_pipe(&e) => std::process::ExitCode::from(EXIT_BROKEN_PIPE as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Whether the first subcommand named on the command line is `name`.
fn subcommand_is(name: &str) -> bool {
    let cmd = Cli::command();
    std::env::args()
        .skip(1)
        .find(|a| cmd.get_subcommands().any(|s| s.get_name() == a))
        .is_some_and(|a| a == name)
}

/// `println!` panics when the reader of stdout went away; that is the reader's choice,
/// not a crash: exit quietly as SIGPIPE would, instead of printing a panic and a trace.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("Broken pipe") {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        default(info)
    }));
}
