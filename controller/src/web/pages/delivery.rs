//! Delivery: the four DORA metrics per service and environment over 30 days, and the
//! error budget of every environment that has an SLO (the operator API's own numbers).

use axum::extract::State;
use axum::response::Html;
use drover_proto::v1 as proto;
use drover_proto::v1::operator_server::Operator;
use maud::html;

use super::super::layout::{self, Page};
use super::super::signin::Signed;
use super::super::{Web, WebError, request};
use super::overview::env_name;

/// `GET /delivery`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
) -> Result<Html<String>, WebError> {
    let who = &session.principal;
    let dora = web
        .ops_as(who, "GetDora")?
        .get_dora(request(who, proto::GetDoraRequest::default()))
        .await?
        .into_inner();
    let mut services: Vec<String> = dora.rows.iter().map(|r| r.service.clone()).collect();
    services.sort();
    services.dedup();
    let mut budgets = Vec::new();
    let slo = web.ops_as(who, "GetSlo")?;
    for s in &services {
        if let Ok(r) = slo
            .get_slo(request(
                who,
                proto::GetSloRequest {
                    service: s.clone(),
                    environment: String::new(),
                },
            ))
            .await
        {
            budgets.extend(r.into_inner().budgets);
        }
    }
    let pct = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{:.1}%", v * 100.0));
    let dur = |v: Option<u64>| v.map_or("—".to_owned(), layout::short);
    let body = html! {
        h1 { "Delivery" }
        div #live {
            p.muted { "Window: " (layout::when(dora.start_ms)) " to " (layout::when(dora.end_ms)) }
            @if dora.rows.is_empty() { p { "No deployment finished in the window." } }
            @for r in &dora.rows {
                h2 { (r.service) " · " (env_name(&r.environment)) }
                div.tiles data-service=(r.service) data-environment=(r.environment) {
                    div.tile { div.muted { "deploys" } div.v { (r.deploys) } div.muted { (format!("{:.2}", r.deploys_per_day)) " per day" } }
                    div.tile { div.muted { "lead time (median)" } div.v { (dur(r.lead_time_median_ms)) } div.muted { "p90 " (dur(r.lead_time_p90_ms)) } }
                    div.tile { div.muted { "change failure rate" } div.v { (pct(r.change_failure_rate)) } div.muted { (r.failed_changes) " of " (r.finished_deploys) } }
                    div.tile { div.muted { "time to restore (median)" } div.v { (dur(r.time_to_restore_median_ms)) } div.muted { (r.unrestored) " not restored" } }
                }
            }
            h2 { "Error budgets" }
            @if budgets.is_empty() { p.muted { "No environment has an SLO (" code { "slo = { availability = \"99.5%\", window = \"30d\" }" } ")." } } @else {
                table {
                    thead { tr { th { "service" } th { "env" } th { "SLO" } th { "achieved" } th { "budget left" } th { "requests" } th { "errors" } th {} } }
                    tbody {
                        @for b in &budgets {
                            tr {
                                td { (b.service) } td { (env_name(&b.environment)) } td { (b.availability) " / " (b.window) }
                                td.num { (format!("{:.3}%", b.achieved * 100.0)) }
                                td.num { @if b.spent { span.badge.bad { "spent" } } @else { (format!("{:.0}%", b.remaining_ratio * 100.0)) } }
                                td.num { (b.requests) } td.num { (b.errors) }
                                td.muted { (b.description) }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Delivery",
        name: "delivery",
        cli: "drover dora".to_owned(),
        live: None,
    };
    Ok(layout::page(page, &session, body))
}
