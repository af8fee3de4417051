//! Schedules and windows: deployments waiting for their time, a window or an approval
//! (with cancel), and the next open deploy window of each environment.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::super::gate::{Control, may};
use super::super::layout::{self, Page};
use super::super::signin::Signed;
use super::super::{Web, WebError};
use super::overview::{LOOKBACK, env_name, matrix};
use crate::spec::SpecFile;
use crate::state::DeploymentState;

/// `GET /schedules`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
) -> Result<Html<String>, WebError> {
    let all = web.store.list(None, LOOKBACK).await?;
    let waiting: Vec<_> = all
        .iter()
        .filter(|d| {
            matches!(
                d.state,
                DeploymentState::Scheduled
                    | DeploymentState::Held
                    | DeploymentState::AwaitingApproval
            )
        })
        .cloned()
        .collect();
    let now = jiff::Timestamp::now();
    let m = matrix(all);
    let act = may(&session.principal, "Control");
    let body = html! {
        h1 { "Schedules and windows" }
        div #live {
            h2 { "Waiting" }
            @if waiting.is_empty() { p.muted { "Nothing waits for a time, a window or an approval." } } @else {
                table {
                    thead { tr { th { "deployment" } th { "service" } th { "env" } th { "version" } th { "state" } th { "starts" } th { "why" } th { "by" } @if act { th {} } } }
                    tbody {
                        @for d in &waiting {
                            tr data-deployment=(d.id) {
                                td { a.mono href={"/deployments/" (d.id)} { (d.id) } }
                                td { (d.service) } td { (env_name(&d.environment)) } td { b { (d.version) } }
                                td { (layout::badge(d.state)) }
                                td { @if let Some(at) = d.scheduled_ms { (layout::time(at)) } }
                                td { (d.hold.clone().unwrap_or_default()) }
                                td { (d.requested_by) }
                                @if act { td {
                                    @for c in [Control::Approve, Control::Cancel, Control::Abort] {
                                        @if c.available(d.state).is_ok() {
                                            form.inline method="post" action={"/deployments/" (d.id) "/" (c.as_str())} {
                                                (layout::csrf(&session))
                                                button type="submit" data-action=(c.as_str()) { (c.as_str()) }
                                            } " "
                                        }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
            h2 { "Deploy windows" }
            table {
                thead { tr { th { "service" } th { "env" } th { "windows" } th { "now" } th { "next open" } } }
                tbody {
                    @for (service, cells) in &m {
                        @for (env, cell) in cells {
                            @let spec = cell.latest.as_ref().and_then(|d| SpecFile::parse(&d.spec).ok());
                            @let envspec = spec.as_ref().and_then(|f| f.environment(Some(env)).ok());
                            @if let Some(e) = envspec {
                                @let w = &e.spec.schedule.windows;
                                tr {
                                    td { (service) } td { (env_name(env)) }
                                    td { @if w.is_empty() { span.muted { "always open" } } @else { @for d in w.describe() { div { (d) } } } }
                                    td { @if w.is_open(now) { span.badge.ok { "open" } } @else { span.badge.wait { "closed" } } }
                                    td { @if !w.is_open(now) { @if let Some(t) = w.next_open(now) { (layout::time(t.as_millisecond().max(0) as u64)) } } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Schedules",
        name: "schedules",
        cli: "drover schedule list".to_owned(),
        live: Some("/events".to_owned()),
    };
    Ok(layout::page(page, &session, body))
}
