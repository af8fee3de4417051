//! Deployment (live): its facts, the action buttons its state allows (or why not), one
//! cell per host by stage and batch with phase, timer, failure reason and step notes,
//! the hook runs with their output, and the event log. [`live`](super::super::live)
//! re-renders [`fragment`] on every event the CLI's `Watch` follows.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::response::Html;
use drover_proto::v1 as proto;
use maud::{Markup, html};

use super::super::gate::{Control, may};
use super::super::layout::{self, Page};
use super::super::session::Session;
use super::super::signin::Signed;
use super::super::{Web, WebError, deployment_info};
use super::state_of;
use crate::cli::progress::phase_name;
use crate::store::now_ms;

/// Events shown in the log (the newest).
const EVENTS_SHOWN: usize = 300;

/// `GET /deployments/{id}`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
    Path(id): Path<String>,
) -> Result<Html<String>, WebError> {
    let body = fragment(&web, &session, &id).await?;
    let page = Page {
        title: &format!("Deployment {id}"),
        name: "deployment",
        cli: format!("drover status {id}"),
        live: Some(format!("/deployments/{id}/events")),
    };
    Ok(layout::page(page, &session, body))
}

/// The live part of the page (`#live`), read now.
pub async fn fragment(web: &Web, session: &Session, id: &str) -> Result<Markup, WebError> {
    let info = deployment_info(web, &session.principal, id).await?;
    let events = web.store.events(id, 0).await?;
    let skip = events.len().saturating_sub(EVENTS_SHOWN);
    Ok(render(&info, &events[skip..], session))
}

/// The live part of the page for `info` and its newest `events`.
pub fn render(
    info: &proto::DeploymentInfo,
    events: &[crate::store::Event],
    session: &Session,
) -> Markup {
    let state = state_of(info.state);
    let done = info
        .hosts
        .iter()
        .filter(|h| phase_name(h.phase) == "done")
        .count();
    let failed = info
        .hosts
        .iter()
        .filter(|h| phase_name(h.phase) == "failed")
        .count();
    html! {
        div #live {
            h1 {
                "Deployment " (info.id) " "
                span #deployment data-state=(state.as_str()) { (layout::badge(state)) }
            }
            dl.facts {
                dt { "service" } dd { a href={"/releases?service=" (info.service)} { (info.service) } }
                dt { "environment" } dd { (super::overview::env_name(&info.environment)) }
                dt { (info.kind) } dd { b { (info.version) } " " (layout::digest(if info.pinned.is_empty() { &info.image } else { &info.pinned })) }
                @if !info.release_id.is_empty() { dt { "release" } dd { (info.release_id) } }
                dt { "asked by" } dd { (info.requested_by) ", " (layout::time(info.created_ms)) }
                @if info.finished_ms > 0 { dt { "ended" } dd { (layout::time(info.finished_ms)) " after " (layout::short(info.finished_ms.saturating_sub(info.created_ms))) } }
                @if info.scheduled_ms > 0 { dt { "starts" } dd { (layout::time(info.scheduled_ms)) } }
                @if info.stages > 1 { dt { "stage" } dd { (info.stage + 1) " of " (info.stages) } }
                dt { "hosts" } dd { (done) "/" (info.hosts.len()) " done" @if failed > 0 { ", " span.warn { (failed) " failed" } } }
                @if !info.hold.is_empty() { dt { "waiting" } dd.warn { (info.hold) } }
                @if !info.gate_note.is_empty() { dt { "gates" } dd { (info.gate_note) } }
                @if !info.error.is_empty() { dt { "error" } dd { span #error { (info.error) } } }
            }
            (actions(info, session))
            (hosts(info))
            @if !info.hooks.is_empty() { (hooks(&info.hooks)) }
            h2 { "Events" }
            pre.log #events {
                @for e in events {
                    (layout::when(e.at_ms)) "  "
                    @if !e.host.is_empty() { (e.host) ": " }
                    (e.message) "\n"
                }
            }
        }
    }
}

fn actions(info: &proto::DeploymentInfo, session: &Session) -> Markup {
    if !may(&session.principal, "Control") {
        return html! {};
    }
    let state = state_of(info.state);
    html! {
        div.actions {
            @for c in Control::ALL {
                @match c.available(state) {
                    Ok(()) => form.inline method="post" action={"/deployments/" (info.id) "/" (c.as_str())} {
                        (layout::csrf(session))
                        button type="submit" data-action=(c.as_str()) { (c.as_str()) }
                    },
                    Err(reason) => span {
                        button type="button" data-action=(c.as_str()) disabled { (c.as_str()) }
                        span data-reason { (reason) }
                    },
                }
            }
        }
    }
}

fn hosts(info: &proto::DeploymentInfo) -> Markup {
    let mut plan: BTreeMap<u32, BTreeMap<u32, Vec<&proto::DeploymentHostInfo>>> = BTreeMap::new();
    for h in &info.hosts {
        plan.entry(h.stage)
            .or_default()
            .entry(h.batch)
            .or_default()
            .push(h);
    }
    let current = (!state_of(info.state).is_terminal()).then_some(info.stage);
    html! {
        @for (stage, batches) in &plan {
            div.stage {
                @if info.stages > 1 { h3 { "Stage " (stage + 1) @if current == Some(*stage) { " (current)" } } }
                @for (batch, hosts) in batches {
                    div.batch {
                        span.muted { "batch " (batch + 1) }
                        div.grid { @for h in hosts { (cell(h)) } }
                    }
                }
            }
        }
    }
}

fn cell(h: &proto::DeploymentHostInfo) -> Markup {
    let phase = phase_name(h.phase);
    let timer = match (h.started_ms, h.finished_ms) {
        (0, _) => String::new(),
        (s, 0) => layout::short(now_ms().saturating_sub(s)),
        (s, f) => layout::short(f.saturating_sub(s)),
    };
    html! {
        div.cell data-host=(h.host) data-phase=(phase) {
            b title=(h.host) { (h.host) }
            span.phase { (phase) } " " span.muted.timer { (timer) }
            div.muted { (h.from_version) " → " (h.to_version) }
            @if !h.error.is_empty() { div.err { (h.error) } }
            @for s in h.steps.iter().filter(|s| !s.note.is_empty()) { div.muted { (s.note) } }
        }
    }
}

fn hooks(runs: &[proto::HookRunInfo]) -> Markup {
    html! {
        h2 { "Hooks" }
        table {
            thead { tr { th { "hook" } th { "phase" } th { "host" } th { "outcome" } th { "exit" } th { "took" } th { "output" } } }
            tbody {
                @for r in runs {
                    @let outcome = proto::HookOutcome::try_from(r.outcome).unwrap_or_default().as_str_name().trim_start_matches("HOOK_OUTCOME_").to_ascii_lowercase();
                    tr data-hook=(r.name) data-outcome=(outcome) {
                        td { (r.name) } td { (r.phase) } td { (r.host) }
                        td { span class={"badge " (if outcome == "succeeded" || outcome == "skipped" { "ok" } else { "bad" })} { (outcome) } }
                        td.num { (r.exit_code) }
                        td.num { (layout::short(r.finished_ms.saturating_sub(r.started_ms))) }
                        td { @if !r.output.is_empty() { details { summary { "output" } pre.log { (r.output) } } } }
                    }
                }
            }
        }
    }
}
