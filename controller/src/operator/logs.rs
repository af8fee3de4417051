//! `Logs`: a service's container logs from every matching host, merged into one stream of
//! lines that each name their host.
//!
//! One pump task per host reads that host's [`LogSubscription`] and forwards its lines
//! into the bounded response channel; a full channel (a slow client) stops the pump, which
//! stops acknowledging, which stops the agent. All pumps belong to one task per call that
//! aborts them when the client goes away, so every agent is told to stop reading. A host
//! that is not connected is reported once, as a notice, while the others stream.

use std::collections::BTreeSet;

use drover_proto::v1::{LogLine, LogSource, LogsEvent, LogsQuery, LogsRequest, logs_event};
use drover_shared::labels::Selector;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, info_span};

use super::{OperatorService, store_status};
use crate::hub::HostSnapshot;

/// Lines per container when the query does not say.
pub const DEFAULT_TAIL: u32 = 100;
/// Most lines per container a query may ask for.
pub const MAX_TAIL: u32 = 10_000;
/// Events buffered towards the client.
const EVENTS_BUFFER: usize = 256;

type Events = mpsc::Sender<Result<LogsEvent, Status>>;

/// One host to read, and what the deployment kept of its failed container.
struct Target {
    host: HostSnapshot,
    kept: Vec<String>,
}

impl OperatorService {
    /// Resolves the hosts of `q` and starts streaming their logs.
    pub(super) async fn logs_stream(
        &self,
        q: LogsQuery,
    ) -> Result<ReceiverStream<Result<LogsEvent, Status>>, Status> {
        if q.service.trim().is_empty() {
            return Err(Status::invalid_argument(
                "no service given: name the service whose logs to read, e.g. `drover logs web`",
            ));
        }
        if q.tail > MAX_TAIL {
            return Err(Status::invalid_argument(format!(
                "--tail {} is more than {MAX_TAIL} lines per container: ask for fewer, or use --since",
                q.tail
            )));
        }
        let targets = self.targets(&q).await?;
        let request = LogsRequest {
            service: q.service.clone(),
            deployment_id: q.deployment_id.clone(),
            tail: if q.tail == 0 { DEFAULT_TAIL } else { q.tail },
            since_unix_s: match q.since_s {
                0 => 0,
                s => (crate::store::now_ms() / 1000).saturating_sub(s),
            },
            follow: q.follow,
            ..Default::default()
        };
        let (tx, rx) = mpsc::channel(EVENTS_BUFFER);
        let hub = self.hub.clone();
        let span =
            info_span!("logs", service = %q.service, follow = q.follow, hosts = targets.len());
        // Owned by the response stream: ends when every host is done or the client leaves.
        tokio::spawn(
            async move {
                let mut pumps = JoinSet::new();
                for t in targets {
                    pumps.spawn(pump(hub.clone(), t, request.clone(), tx.clone()));
                }
                loop {
                    tokio::select! {
                        joined = pumps.join_next() => if joined.is_none() { return },
                        () = tx.closed() => return,
                    }
                }
            }
            .instrument(span),
        );
        Ok(ReceiverStream::new(rx))
    }

    /// The hosts `q` names: a deployment's hosts, one host, or every host (of a selector)
    /// that runs the service. Unknown names are refused naming what exists.
    async fn targets(&self, q: &LogsQuery) -> Result<Vec<Target>, Status> {
        let all = self.hub.hosts();
        let known: Vec<&str> = all.iter().map(|h| h.name.as_str()).collect();
        if !q.deployment_id.is_empty() {
            let (d, rows) = self
                .deployer
                .store()
                .get(&q.deployment_id)
                .await
                .map_err(store_status)?;
            if d.service != q.service {
                return Err(Status::invalid_argument(format!(
                    "deployment {} is of service {}, not {}: run `drover logs {} --deployment {}`",
                    d.id, d.service, q.service, d.service, d.id
                )));
            }
            let by_name: std::collections::HashMap<&str, &HostSnapshot> =
                all.iter().map(|h| (h.name.as_str(), h)).collect();
            let mut targets = Vec::new();
            for row in rows {
                if !q.host.is_empty() && row.host != q.host {
                    continue;
                }
                let kept = crate::logtail::log_tail_of(row.error.as_deref().unwrap_or(""));
                let host = by_name
                    .get(row.host.as_str())
                    .map(|h| (*h).clone())
                    .unwrap_or_else(|| removed_host(&row.host));
                targets.push(Target { host, kept });
            }
            if targets.is_empty() {
                return Err(Status::not_found(format!(
                    "host {} took no part in deployment {}",
                    q.host, q.deployment_id
                )));
            }
            return Ok(targets);
        }
        if !q.host.is_empty() {
            let Some(h) = all.iter().find(|h| h.name == q.host) else {
                return Err(Status::not_found(format!(
                    "unknown host {}: the fleet has {}",
                    q.host,
                    list(known.iter().copied())
                )));
            };
            if h.connected && !h.services.iter().any(|s| s.service == q.service) {
                return Err(Status::not_found(format!(
                    "host {} runs no container of service {}; it has: {}",
                    h.name,
                    q.service,
                    list(h.services.iter().map(|s| s.service.as_str()))
                )));
            }
            return Ok(vec![Target {
                host: h.clone(),
                kept: vec![],
            }]);
        }
        let selector = Selector::parse(&q.selector).map_err(|e| {
            Status::invalid_argument(format!("invalid --selector {:?}: {e}", q.selector))
        })?;
        let selected: Vec<&HostSnapshot> =
            all.iter().filter(|h| selector.matches(&h.labels)).collect();
        let targets: Vec<Target> = selected
            .iter()
            .filter(|h| h.services.iter().any(|s| s.service == q.service))
            .map(|h| Target {
                host: (*h).clone(),
                kept: vec![],
            })
            .collect();
        if targets.is_empty() {
            let services = all
                .iter()
                .flat_map(|h| h.services.iter().map(|s| s.service.as_str()));
            return Err(Status::not_found(format!(
                "no host{} runs service {}; services in the fleet: {}",
                if q.selector.is_empty() {
                    String::new()
                } else {
                    format!(" matching {:?}", q.selector)
                },
                q.service,
                list(services)
            )));
        }
        Ok(targets)
    }
}

/// A deployment host that has since left the inventory.
fn removed_host(name: &str) -> HostSnapshot {
    HostSnapshot {
        name: name.to_string(),
        labels: Default::default(),
        advertise_address: String::new(),
        agent_version: String::new(),
        connected: false,
        since: std::time::UNIX_EPOCH,
        services: vec![],
        docker_error: None,
        session: 0,
        cert_not_after_unix: None,
    }
}

/// `a, b, c`, sorted and without repeats, or `none`.
fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: BTreeSet<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}

fn notice(host: &str, text: String) -> Result<LogsEvent, Status> {
    Ok(LogsEvent {
        host: host.to_string(),
        body: Some(logs_event::Body::Notice(text)),
    })
}

fn line(host: &str, line: LogLine) -> Result<LogsEvent, Status> {
    Ok(LogsEvent {
        host: host.to_string(),
        body: Some(logs_event::Body::Line(line)),
    })
}

/// Streams one host's lines (the kept lines of its failed container first) into `tx`.
async fn pump(hub: crate::hub::AgentHub, t: Target, request: LogsRequest, tx: Events) {
    let name = t.host.name.clone();
    let had_kept = !t.kept.is_empty();
    if had_kept {
        let header = format!(
            "last lines of the container that failed its swap in deployment {}:",
            request.deployment_id
        );
        if tx.send(notice(&name, header)).await.is_err() {
            return;
        }
        for text in t.kept {
            let l = LogLine {
                source: LogSource::Unspecified as i32,
                text,
                ..Default::default()
            };
            if tx.send(line(&name, l)).await.is_err() {
                return;
            }
        }
    }
    if !t.host.connected {
        let since = if t.host.session == 0 {
            "it was removed from the fleet".to_string()
        } else {
            format!(
                "not connected since {}",
                humantime::format_rfc3339_seconds(t.host.since)
            )
        };
        let _ = tx.send(notice(&name, since)).await;
        return;
    }
    let mut sub = match hub.open_logs(&name, request).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(notice(&name, e.to_string())).await;
            return;
        }
    };
    loop {
        let Some(chunk) = sub.next().await else {
            let _ = tx
                .send(notice(
                    sub.host(),
                    "the agent disconnected while its logs were read".into(),
                ))
                .await;
            return;
        };
        for l in chunk.lines {
            if tx.send(line(&name, l)).await.is_err() {
                return;
            }
        }
        if chunk.end {
            // The agent finds no container when the failed one was removed: the kept
            // lines above already are what is left of it.
            if !chunk.error.is_empty() && !had_kept {
                let _ = tx.send(notice(&name, chunk.error)).await;
            }
            return;
        }
    }
}
