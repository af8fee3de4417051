//! `drover logs SERVICE`: the service's container logs from every matching host, each
//! line prefixed by its host (`h1 | line`). The containers' stdout goes to stdout and
//! their stderr to stderr; what Drover says about a host (not connected, no container)
//! goes to stderr as `h1: ...`.

use std::io::Write;
use std::time::Duration;

use drover_proto::v1::{LogSource, LogsEvent, LogsQuery, logs_event};

use super::ClientArgs;

/// Flags of `drover logs`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover logs web                          # the last 100 lines of web on every host, `host | line`
  drover logs web -f --tail 10             # the last 10, then new lines until Ctrl-C
  drover logs web --host web-3 --since 10m # one host, the last ten minutes
  drover logs web --selector zone=a        # the hosts whose labels match
  drover logs web --deployment d-3f2a9c    # what a deployment's containers wrote, failed ones included

The containers' stdout goes to stdout and their stderr to stderr; secrets given to a
container are replaced by [redacted] before a line leaves its host. Exit code 2: an
unknown service or host (the message names those that exist).")]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service whose containers' logs to read.
    pub service: String,
    /// Only this host.
    #[arg(long, conflicts_with = "selector")]
    pub host: Option<String>,
    /// Only hosts matching this label selector, e.g. `zone=a`.
    #[arg(long)]
    pub selector: Option<String>,
    /// The containers this deployment created, stopped or failed ones included, and the
    /// kept last lines of a container whose swap failed.
    #[arg(long)]
    pub deployment: Option<String>,
    /// Keep printing new lines until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only lines from this long ago on, e.g. `10m`, `2h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Lines per container from the end of its log.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub tail: u32,
}

pub async fn run(args: LogsArgs) -> anyhow::Result<i32> {
    if args.tail == 0 {
        return Err(super::Refused(
            "--tail 0 shows nothing: give a number of lines per container, e.g. --tail 100".into(),
        )
        .into());
    }
    let mut client = args.client.client().await?;
    let query = LogsQuery {
        service: args.service.clone(),
        host: args.host.clone().unwrap_or_default(),
        selector: args.selector.clone().unwrap_or_default(),
        deployment_id: args.deployment.clone().unwrap_or_default(),
        tail: args.tail,
        since_s: args.since.map_or(0, |d| d.as_secs().max(1)),
        follow: args.follow,
    };
    let what = format!("reading the logs of {}", args.service);
    let mut stream = client
        .logs(query)
        .await
        .map_err(|s| super::rpc_error(&what, &s))?
        .into_inner();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let event = tokio::select! {
            e = stream.message() => e,
            _ = &mut ctrl_c => return Ok(0),
        };
        match event {
            Ok(Some(e)) => print(&e)?,
            Ok(None) => return Ok(0),
            Err(s) => return Err(super::rpc_error(&what, &s)),
        }
    }
}

/// One event as its line: `host | text` on stdout or stderr, `host: notice` on stderr.
fn print(e: &LogsEvent) -> std::io::Result<()> {
    match &e.body {
        Some(logs_event::Body::Line(l)) => {
            if l.source == LogSource::Stderr as i32 {
                writeln!(std::io::stderr(), "{}", prefixed(&e.host, &l.text))
            } else {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", prefixed(&e.host, &l.text))?;
                out.flush()
            }
        }
        Some(logs_event::Body::Notice(n)) => writeln!(std::io::stderr(), "{}: {n}", e.host),
        None => Ok(()),
    }
}

/// A line with its host in front.
pub fn prefixed(host: &str, text: &str) -> String {
    format!("{host} | {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_of_every_everyday_command_ends_with_examples() {
        use clap::CommandFactory;
        let mut cli = super::super::Cli::command();
        for path in [
            &["deploy"][..],
            &["rollback"],
            &["logs"],
            &["token", "create"],
        ] {
            let mut cmd = &mut cli;
            for name in path {
                cmd = cmd.find_subcommand_mut(name).expect("a subcommand");
            }
            let help = cmd.render_long_help().to_string();
            assert!(
                help.contains("Examples:\n  drover "),
                "drover {} --help has no examples:\n{help}",
                path.join(" ")
            );
        }
    }

    #[test]
    fn each_line_names_its_host() {
        assert_eq!(prefixed("h1", "GET /ready 200"), "h1 | GET /ready 200");
        assert_eq!(prefixed("web-2", ""), "web-2 | ");
    }
}
