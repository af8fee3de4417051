//! The demo app's hook subcommands, run by Drover's deploy hooks in tests and the demo:
//!
//! - `migrate FILE [--fail] [--hang] [--print-env NAME]`: appends one line
//!   (`migrated VERSION UNIX_MS`) to FILE (on a bind mount), the way a schema migration
//!   changes the database once. `--fail` prints and exits 3 without appending; `--hang`
//!   never ends; `--print-env` prints a variable (a secret, to test redaction).
//! - `check [--fail-on-host HOST]`: an after_batch check; fails (exit 4) on the host
//!   named (Drover sets `DROVER_HOST` in a hook's container).

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs the hook subcommand `args[0]`, or `None` when `args` names none.
pub fn run(args: &[String]) -> Option<ExitCode> {
    let (cmd, rest) = args.split_first()?;
    match cmd.as_str() {
        "migrate" => Some(migrate(rest)),
        "check" => Some(check(rest)),
        _ => None,
    }
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn migrate(args: &[String]) -> ExitCode {
    let version = std::env::var("DEMO_VERSION").unwrap_or_default();
    println!("migrate: version {version} starting");
    if let Some(name) = flag_value(args, "--print-env") {
        println!(
            "migrate: using {name}={}",
            std::env::var(name).unwrap_or_default()
        );
    }
    if args.iter().any(|a| a == "--hang") {
        eprintln!("migrate: waiting for a lock that never comes");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if args.iter().any(|a| a == "--fail") {
        eprintln!("migrate: ERROR column \"email\" already exists");
        return ExitCode::from(3);
    }
    let Some(file) = args.first().filter(|a| !a.starts_with("--")) else {
        eprintln!("migrate: usage: migrate FILE [--fail] [--hang] [--print-env NAME]");
        return ExitCode::from(64);
    };
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| writeln!(f, "migrated {version} {ms}"));
    match appended {
        Ok(()) => {
            println!("migrate: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate: cannot append to {file}: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(args: &[String]) -> ExitCode {
    let host = std::env::var("DROVER_HOST").unwrap_or_default();
    if flag_value(args, "--fail-on-host") == Some(host.as_str()) {
        eprintln!("check: FAILED on {host}");
        return ExitCode::from(4);
    }
    println!("check: ok on {host}");
    ExitCode::SUCCESS
}
