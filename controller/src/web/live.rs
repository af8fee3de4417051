//! Live updates by server-sent events.
//!
//! - `/deployments/{id}/events` follows the operator API's `Watch` of the deployment
//!   (the stream the CLI's `--watch` reads) and sends the re-rendered live part of the
//!   page (`render`) after each burst of events, then `end` when the deployment ends.
//! - `/events` sends `changed` when any deployment changes (the rollout engine's own
//!   change signal) or at least every [`IDLE_PING`], and the page fetches itself again.
//!
//! The browser reconnects on its own; the page shows the lost connection meanwhile.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use drover_proto::v1::WatchRequest;
use drover_proto::v1::operator_server::Operator;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug, info_span};

use super::pages::deployment;
use super::signin::Signed;
use super::{Web, WebError, request};

/// Events within this long after the first of a burst are rendered once: a large
/// deployment's page is not re-rendered for every host's event.
const COALESCE: Duration = Duration::from_millis(100);
/// Longest `/events` stays silent: hosts connect and leave without a deployment event.
const IDLE_PING: Duration = Duration::from_secs(10);
/// Shortest time between two `changed` events on `/events`.
const THROTTLE: Duration = Duration::from_millis(300);
/// How soon a browser retries a dropped stream.
const RETRY: Duration = Duration::from_secs(1);

/// `GET /deployments/{id}/events`.
pub async fn deployment(
    State(web): State<Web>,
    Signed(session): Signed,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let ops = web.ops_as(&session.principal, "Watch")?;
    let req = WatchRequest {
        id: id.clone(),
        after_seq: 0,
    };
    let mut watch = ops
        .watch(request(&session.principal, req))
        .await?
        .into_inner();
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(4);
    let span = info_span!("web_watch", deployment = %id);
    // Owned by the response: ends when the deployment ends or the browser leaves.
    tokio::spawn(
        async move {
            let _ = tx
                .send(Ok(Event::default().retry(RETRY).comment("live")))
                .await;
            let mut first = true;
            loop {
                let item = tokio::select! {
                    item = watch.next() => item,
                    () = tx.closed() => return,
                };
                let open = matches!(item, Some(Ok(_)));
                // A burst of host events becomes one render (the snapshot, first, is
                // rendered at once).
                if !first {
                    let until = tokio::time::Instant::now() + COALESCE;
                    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(until, watch.next()).await {
                    }
                }
                first = false;
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
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::default()))
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
    Sse::new(first.chain(rest)).keep_alive(KeepAlive::default())
}
