//! Following a deployment in the terminal: a progress bar per host when stdout is a
//! terminal, plain timestamped lines otherwise, or one JSON object per event (`--json`).
//! Used by `deploy`, `rollback` and `status`, so all three look the same.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use drover_shared::backoff::Backoff;

use drover_proto::v1::{
    DeploymentEvent, DeploymentInfo, DeploymentState, HostPhase, WatchRequest, watch_event,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::json::{EventContext, event_json, snapshot_json};
pub use super::summary::summarize;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Progress bars (stdout is a terminal).
    Bars,
    /// One line per event.
    Lines,
    /// One JSON object per event.
    Json,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, JSON when asked.
    pub fn pick(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stdout().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// Follows deployment `id` until it ends; returns its final snapshot.
pub async fn follow(
    client: &mut super::Client,
    id: &str,
    mode: Mode,
) -> anyhow::Result<DeploymentInfo> {
    let mut view = View::new(mode);
    let mut after_seq = 0;
    // Set while the controller is unreachable: when it went, and why.
    let mut lost: Option<(tokio::time::Instant, String)> = None;
    let fresh_backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut backoff = fresh_backoff();
    loop {
        let watched = client
            .watch(WatchRequest {
                id: id.to_string(),
                after_seq,
            })
            .await;
        let mut stream = match watched {
            Ok(s) => s.into_inner(),
            Err(s) if lost.is_none() && super::is_refusal(s.code()) => {
                return Err(super::rpc_error(&format!("following deployment {id}"), &s));
            }
            Err(s) => {
                let since = lost.get_or_insert_with(|| {
                    view.note(&format!(
                        "lost the controller ({}); reconnecting for up to {}",
                        s.message(),
                        humantime::format_duration(RECONNECT_FOR)
                    ));
                    (tokio::time::Instant::now(), s.message().to_string())
                });
                // With several replicas, the leader may have changed: ask again.
                if let Some(Ok(c)) = super::connect::reconnect().await {
                    *client = c;
                }
                if since.0.elapsed() > RECONNECT_FOR {
                    return Err(super::Lost(format!(
                        "lost the controller while following {id} ({}) and it did not come back within {}; the deployment goes on without this terminal: follow it with `drover status {id}`",
                        since.1,
                        humantime::format_duration(RECONNECT_FOR)
                    ))
                    .into());
                }
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if lost.take().is_some() {
            view.note("reconnected to the controller; following again");
            backoff = fresh_backoff();
        }
        // Whether the controller closed the stream (rather than the connection failing).
        let closed = loop {
            match stream.message().await {
                Ok(Some(msg)) => match msg.body {
                    Some(watch_event::Body::Snapshot(s)) if after_seq == 0 => view.snapshot(&s),
                    Some(watch_event::Body::Snapshot(_)) => {}
                    Some(watch_event::Body::Event(e)) => {
                        after_seq = after_seq.max(e.seq);
                        view.event(&e);
                    }
                    None => {}
                },
                // The controller closes the stream when the deployment has ended...
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        if closed {
            // ...or when it shuts down: only a final state means the end.
            let info = client
                .get_deployment(drover_proto::v1::GetDeploymentRequest { id: id.to_string() })
                .await;
            match info {
                Ok(info) if is_final(info.get_ref().state) => break,
                // Closed while still running (the controller stopping): watch again.
                Ok(_) => tokio::time::sleep(backoff.next_delay()).await,
                Err(s) if super::is_refusal(s.code()) => {
                    return Err(super::rpc_error(&format!("reading deployment {id}"), &s));
                }
                Err(_) => {}
            }
        }
    }
    view.finish();
    let info = client
        .get_deployment(drover_proto::v1::GetDeploymentRequest { id: id.to_string() })
        .await
        .map_err(|s| super::rpc_error(&format!("reading deployment {id}"), &s))?
        .into_inner();
    Ok(info)
}

/// Exit code when Ctrl-C stopped the CLI following a deployment (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Follows `id` to its end and prints the summary; returns the exit code. Ctrl-C stops
/// this terminal following, never the deployment: it says so, and how to follow or stop
/// it from here on, and exits with [`EXIT_INTERRUPTED`].
pub async fn follow_to_end(
    client: &mut super::Client,
    id: &str,
    mode: Mode,
) -> anyhow::Result<i32> {
    tokio::select! {
        info = follow(client, id, mode) => Ok(summarize(&info?, mode)),
        Ok(()) = tokio::signal::ctrl_c() => {
            let message = format!(
                "interrupted: deployment {id} continues on the controller; follow it with `drover status {id}`, or stop it and roll back its hosts with `drover abort {id}`"
            );
            if mode == Mode::Json {
                println!("{}", serde_json::json!({ "type": "interrupted", "id": id, "message": message }));
            }
            eprintln!("\n{message}");
            Ok(EXIT_INTERRUPTED)
        }
    }
}

/// How long `follow` keeps trying to reach a controller that went away (a restart, a
/// failover) before it gives up and says how to follow the deployment later.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

/// A state after which nothing more happens to a deployment.
pub fn is_final(state: i32) -> bool {
    matches!(
        DeploymentState::try_from(state).unwrap_or_default(),
        DeploymentState::Succeeded
            | DeploymentState::Failed
            | DeploymentState::RolledBack
            | DeploymentState::Cancelled
            | DeploymentState::Skipped
    )
}

struct View {
    mode: Mode,
    multi: MultiProgress,
    bars: BTreeMap<String, ProgressBar>,
    header: Option<ProgressBar>,
    /// What `--json` events need from the snapshot (start time, batches).
    ctx: EventContext,
}

impl View {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            multi: MultiProgress::new(),
            bars: BTreeMap::new(),
            header: None,
            ctx: EventContext::default(),
        }
    }

    fn snapshot(&mut self, s: &DeploymentInfo) {
        self.ctx = EventContext::of(s);
        match self.mode {
            Mode::Json => println!("{}", snapshot_json(s)),
            Mode::Lines => println!(
                "deployment {} of {} {} ({} hosts in {} batches), by {}",
                s.id,
                s.service,
                s.version,
                s.hosts.len(),
                s.batches,
                s.requested_by
            ),
            Mode::Bars => {
                let header = self.multi.add(ProgressBar::new_spinner());
                header.set_style(
                    ProgressStyle::with_template("{spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                header.enable_steady_tick(std::time::Duration::from_millis(120));
                header.set_message(format!(
                    "{} {} → {}: {}",
                    s.id,
                    s.service,
                    s.version,
                    state_name(s.state)
                ));
                self.header = Some(header);
                let style = ProgressStyle::with_template("  {prefix:<16} [{bar:12}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                for h in &s.hosts {
                    let bar = self.multi.add(ProgressBar::new(4));
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{} (b{})", h.host, h.batch + 1));
                    bar.set_position(phase_step(h.phase));
                    bar.set_message(phase_name(h.phase));
                    self.bars.insert(h.host.clone(), bar);
                }
            }
        }
    }

    fn event(&mut self, e: &DeploymentEvent) {
        match self.mode {
            Mode::Json => println!("{}", event_json(e, &self.ctx)),
            Mode::Lines => {
                let when = humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at_ms),
                );
                let who = if e.host.is_empty() {
                    "-".to_string()
                } else {
                    e.host.clone()
                };
                println!("{when} {who:<16} {}", e.message);
            }
            Mode::Bars => {
                if let Some(bar) = self.bars.get(&e.host) {
                    if e.phase != 0 {
                        bar.set_position(phase_step(e.phase));
                    }
                    bar.set_message(crate::logtail::first_line(&e.message).to_string());
                } else if let Some(h) = &self.header {
                    h.set_message(super::summary::headline(
                        e.state,
                        crate::logtail::first_line(&e.message),
                    ));
                }
            }
        }
    }

    /// Something the CLI itself has to say (the controller went away, came back).
    fn note(&self, message: &str) {
        match self.mode {
            Mode::Json => println!(
                "{}",
                serde_json::json!({ "type": "notice", "message": message })
            ),
            Mode::Lines => eprintln!("drover: {message}"),
            Mode::Bars => {
                let _ = self.multi.println(format!("drover: {message}"));
            }
        }
    }

    fn finish(&mut self) {
        if let Some(h) = self.header.take() {
            h.finish();
        }
        for bar in self.bars.values() {
            bar.finish();
        }
    }
}

fn phase_step(phase: i32) -> u64 {
    match HostPhase::try_from(phase).unwrap_or_default() {
        HostPhase::Draining => 1,
        HostPhase::Swapping | HostPhase::RollingBack => 2,
        HostPhase::Enabling => 3,
        HostPhase::Done | HostPhase::RolledBack | HostPhase::Failed | HostPhase::LeftDrained => 4,
        _ => 0,
    }
}

/// The short name of a host phase (`done`, `left_drained`, ...).
pub fn phase_name(phase: i32) -> String {
    HostPhase::try_from(phase)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("HOST_PHASE_")
        .to_ascii_lowercase()
}

/// The short name of a deployment state (`succeeded`, `rolled_back`, ...).
pub fn state_name(state: i32) -> String {
    DeploymentState::try_from(state)
        .unwrap_or_default()
        .as_str_name()
        .trim_start_matches("DEPLOYMENT_STATE_")
        .to_ascii_lowercase()
}

/// Prints a deployment's whole event log (who did what, when), one line per event.
pub async fn print_events(client: &mut super::Client, id: &str) -> anyhow::Result<()> {
    let mut stream = client
        .watch(WatchRequest {
            id: id.to_string(),
            after_seq: 0,
        })
        .await
        .map_err(|s| super::rpc_error(&format!("reading the events of {id}"), &s))?
        .into_inner();
    let mut view = View::new(Mode::Lines);
    // A live deployment's stream stays open: print what is recorded now and stop.
    let mut last = u64::MAX;
    while let Ok(Some(msg)) = stream.message().await {
        match msg.body {
            Some(watch_event::Body::Snapshot(s)) => {
                last = s.last_seq;
                view.snapshot(&s);
            }
            Some(watch_event::Body::Event(e)) => {
                let seq = e.seq;
                view.event(&e);
                if seq >= last {
                    break;
                }
            }
            None => {}
        }
        if last == 0 {
            break;
        }
    }
    Ok(())
}
