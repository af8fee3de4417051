//! Live updates by server-sent events.
//!
//! - `/deployments/{id}/events` follows the operator API's `Watch` of the deployment
//!   (the stream the CLI's `--watch` reads) and sends the re-rendered live part of the
//!   page (`render`), throttled on the leading edge (an event after a quiet spell is
//!   rendered at once, a burst at most every [`THROTTLE_RENDER`]), then `end` when the
//!   deployment ends. The rollout engine's change signal also renders it: a bake's
//!   round changes the page without an event.
//! - `/events` sends `changed` when any deployment changes (the rollout engine's own
//!   change signal) or at least every [`IDLE_PING`], and the page fetches itself again.
//!
//! The browser reconnects on its own; the page shows the lost connection meanwhile.
//! Both streams send a `ping` after [`PING`] of silence, so the page can tell a mute
//! stream from a quiet deployment and open a new one.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use drover_proto::v1::WatchRequest;
use drover_proto::v1::operator_server::Operator;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info_span};

use super::pages::deployment;
use super::signin::Signed;
use super::{Web, WebError, request};

/// Shortest time between two renders of a deployment: a large deployment's page is not
/// re-rendered for every host's event, and an event after a quiet spell waits for none.
const THROTTLE_RENDER: Duration = Duration::from_millis(100);
/// Longest `/events` stays silent: hosts connect and leave without a deployment event.
const IDLE_PING: Duration = Duration::from_secs(10);
/// Shortest time between two `changed` events on `/events`.
const THROTTLE: Duration = Duration::from_millis(300);
/// How soon a browser retries a dropped stream (Chromium drops every stream when a
/// network interface comes or goes).
const RETRY: Duration = Duration::from_millis(500);
/// A stream silent for this long sends a `ping`: the page takes a stream that stays
/// silent much longer for a dead one (a network change can leave it open but mute) and
/// opens another.
const PING: Duration = Duration::from_secs(4);

/// The keep-alive of every live stream: a `ping` event the page sees (a comment would
/// not reach its script).
fn keep_alive() -> KeepAlive {
    KeepAlive::new()
        .interval(PING)
        .event(Event::default().event("ping").data(""))
}

/// `GET /deployments/{id}/events`.
pub async fn deployment(
    State(web): State<Web>,
    Signed(session): Signed,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let ops = web.ops_as(&session.principal, "Watch")?;
    // The page renders the log from the store: the stream need not replay it.
    let req = WatchRequest {
        id: id.clone(),
        after_seq: web.store.last_seq(&id).await?,
    };
    let mut watch = ops
        .watch(request(&session.principal, req))
        .await?
        .into_inner();
    let mut changed = web.changed.clone();
    changed.borrow_and_update();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(4);
    let span = info_span!("web_watch", deployment = %id);
    // Owned by the response: ends when the deployment ends or the browser leaves.
    tokio::spawn(
        async move {
            let _ = tx
                .send(Ok(Event::default().retry(RETRY).comment("live")))
                .await;
            let mut last_render: Option<Instant> = None;
            loop {
                // An event of the deployment, or a change without one (a bake's round).
                let mut open = tokio::select! {
                    item = watch.next() => matches!(item, Some(Ok(_))),
                    Ok(()) = changed.changed() => true,
                    () = tx.closed() => return,
                };
                // Too soon after the last render: take in the rest of the burst until
                // the throttle allows the next one.
                if let Some(at) = last_render.map(|t| t + THROTTLE_RENDER) {
                    while open {
                        tokio::select! {
                            item = watch.next() => open = matches!(item, Some(Ok(_))),
                            Ok(()) = changed.changed() => {}
                            () = tokio::time::sleep_until(at) => break,
                        }
                    }
                }
                last_render = Some(Instant::now());
                let html = match deployment::fragment(&web, &session, &id).await {
                    Ok(m) => m.into_string(),
                    Err(e) => return debug!(error = %e, "live deployment render failed"),
                };
                if tx
                    .send(Ok(Event::default().event("render").data(html)))
                    .await
                    .is_err()
                {
                    return;
                }
                if !open {
                    let _ = tx.send(Ok(Event::default().event("end").data(""))).await;
                    return;
                }
            }
        }
        .instrument(span),
    );
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(keep_alive()))
}

/// `GET /events`.
pub async fn changes(
    State(web): State<Web>,
    Signed(_): Signed,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut changed = web.changed.clone();
    changed.borrow_and_update();
    let first = futures::stream::once(async { Ok(Event::default().retry(RETRY).comment("live")) });
    let rest = futures::stream::unfold(changed, |mut changed| async move {
        tokio::select! {
            r = changed.changed() => r.ok()?,
            () = tokio::time::sleep(IDLE_PING) => {}
        }
        tokio::time::sleep(THROTTLE).await;
        changed.borrow_and_update();
        Some((Ok(Event::default().event("changed").data("")), changed))
    });
    Sse::new(first.chain(rest)).keep_alive(keep_alive())
}
