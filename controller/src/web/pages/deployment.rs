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
use crate::cli::bake as cli_bake;
use crate::cli::progress::phase_name;
use crate::logtail;
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
    let events = web.store.recent_events(id, EVENTS_SHOWN).await?;
    Ok(render(&info, &events, session))
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
        div #live data-ended[state.is_terminal()] {
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
            @for b in info.bakes.iter().rev() { (bake(b)) }
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

/// The controls: those the state allows as buttons, the others disabled with their
/// reason next to them, or once after them all when one reason holds every control
/// (an ended deployment takes none).
fn actions(info: &proto::DeploymentInfo, session: &Session) -> Markup {
    if !may(&session.principal, "Control") {
        return html! {};
    }
    let state = state_of(info.state);
    // What may be done first, then what may not and why.
    let mut verdicts: Vec<(Control, Result<(), String>)> = Control::ALL
        .iter()
        .map(|&c| (c, c.available(state)))
        .collect();
    verdicts.sort_by_key(|(_, v)| v.is_err());
    let first = verdicts.first().and_then(|(_, v)| v.as_ref().err());
    let one_reason = first.filter(|r| verdicts.iter().all(|(_, v)| v.as_ref().err() == Some(*r)));
    if let Some(reason) = one_reason {
        return html! {
            div.actions.none {
                @for (c, _) in &verdicts {
                    button type="button" data-action=(c.as_str()) disabled aria-describedby="actions-reason" title=(reason) { (c.as_str()) }
                }
                span #actions-reason data-reason { (reason) }
            }
        };
    }
    html! {
        div.actions {
            @for (c, verdict) in &verdicts {
                @match verdict {
                    Ok(()) => form.inline method="post" action={"/deployments/" (info.id) "/" (c.as_str())} {
                        (layout::csrf(session))
                        button type="submit" data-action=(c.as_str()) { (c.as_str()) }
                    },
                    Err(reason) => span {
                        button type="button" data-action=(c.as_str()) disabled title=(reason) { (c.as_str()) }
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
                div.batches {
                    @for (batch, hosts) in batches {
                        @let label = format!("batch {}", batch + 1);
                        section.batch aria-label=(label) {
                            span.muted { (label) @if hosts.len() > 1 { " · " (hosts.len()) " hosts" } }
                            div.grid { @for h in hosts { (cell(h)) } }
                        }
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
            @if !h.error.is_empty() {
                div.err { (logtail::first_line(&h.error)) }
                @let tail = logtail::log_tail_of(&h.error);
                @if !tail.is_empty() {
                    details.logtail {
                        summary { "last " (tail.len()) " log lines" }
                        pre.log { @for l in &tail { (l) "\n" } }
                    }
                }
            }
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

/// A stage's bake: the canary against the baseline, signal by signal, with the limit
/// each is judged by, the verdict, and the time left while it runs (the words of
/// `drover status`).
fn bake(b: &proto::BakeInfo) -> Markup {
    let word = cli_bake::verdict_name(b.verdict);
    let tone = match proto::BakeVerdict::try_from(b.verdict).unwrap_or_default() {
        proto::BakeVerdict::Passed => "ok",
        proto::BakeVerdict::Breached | proto::BakeVerdict::Aborted => "bad",
        _ => "run",
    };
    let (c, base) = (b.canary.unwrap_or_default(), b.baseline.unwrap_or_default());
    let min_requests = b.limits.unwrap_or_default().min_requests;
    let [rate_limit, time_limit, restart_limit] = cli_bake::limit_words(b);
    let left = cli_bake::time_left(b, now_ms());
    html! {
        section.bake #{"bake-" (b.stage + 1)} data-bake=(b.stage + 1) data-verdict=(word) {
            h2 {
                "Bake of stage " (b.stage + 1) " "
                span class={"badge " (tone)} { (word) }
                @if let Some(left) = left {
                    " " span.muted data-left { (layout::short(u64::try_from(left.as_millis()).unwrap_or(u64::MAX))) " left" }
                }
            }
            p.muted {
                "canary " (b.canary_hosts.join(", ")) " against " (b.baseline_hosts) " baseline host"
                @if b.baseline_hosts != 1 { "s" }
                ", started " (layout::time(b.started_ms))
                @if b.measured_ms > b.started_ms { ", measured " (layout::time(b.measured_ms)) }
            }
            table.bake {
                thead { tr { th { "signal" } th { "canary" } th { "baseline" } th { "fails the stage when the canary is" } } }
                tbody {
                    tr data-signal="error_rate" {
                        th { "error rate" } td.num { (cli_bake::error_rate(&c)) } td.num { (cli_bake::error_rate(&base)) } td { (rate_limit) }
                    }
                    tr data-signal="response_time" {
                        th { "response time" } td.num { (c.response_time_ms) " ms" } td.num { (base.response_time_ms) " ms" } td { (time_limit) }
                    }
                    tr data-signal="restarts" {
                        th { "restarts" } td.num { (c.restarts) } td.num.muted { "—" } td { (restart_limit) }
                    }
                }
            }
            @if left.is_some() && c.requests < min_requests {
                p.muted { "Too few canary requests so far to judge its error rate (" (c.requests) " of " (min_requests) ")." }
            }
            @if !b.reason.is_empty() { p.err { (b.reason) } }
        }
    }
}
