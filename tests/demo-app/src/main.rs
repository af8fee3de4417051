//! `demo-app`: the workload Drover deploys in its tests and demo. A tiny HTTP/1.1 server
//! whose answers name its version and whose failures can be ordered by `DEMO_MODE`.
//! Configuration is read from the environment (see [`config::Config`]). For the tests of
//! secret delivery, `/env/NAME` and `/file/PATH` report hashes of what it was given.
//! Subcommands `migrate` and `check` serve the deploy hooks' tests (see [`hooks`]).

mod config;
mod given;
mod hooks;
mod http;
mod logging;
mod server;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = hooks::run(&args) {
        return code;
    }
    let config = match config::Config::from_env(|k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-app: {e}");
            return ExitCode::from(64);
        }
    };
    if config.mode == config::Mode::Crash {
        eprintln!(
            "demo-app version={}: crashing at start as DEMO_MODE=crash asks",
            config.version
        );
        return ExitCode::FAILURE;
    }
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-app: cannot serve: {e}");
            ExitCode::FAILURE
        }
    }
}
