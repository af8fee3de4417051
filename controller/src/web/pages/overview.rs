//! Overview: every service in every environment: what runs there (release, digest,
//! since when), how the last deployment ended, a deployment running or held and the gate
//! or hold that keeps it, and who holds the environment's lock. Read from the newest
//! deployments in one query and the live inventory.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::Html;
use maud::{Markup, html};

use super::super::layout::{self, Page};
use super::super::signin::Signed;
use super::super::{Web, WebError};
use crate::hub::HostSnapshot;
use crate::store::Deployment;

/// How many of the newest deployments the matrix is built from.
pub const LOOKBACK: u32 = 1000;

/// One cell of the matrix: a service in an environment.
#[derive(Default)]
pub struct Cell {
    /// The newest deployment that succeeded: what runs there.
    pub running: Option<Deployment>,
    /// The newest deployment, whatever its state.
    pub latest: Option<Deployment>,
    /// A deployment that has not ended (it holds the lock).
    pub active: Option<Deployment>,
}

/// Every (service, environment) of `newest_first`, with its cell.
pub fn matrix(newest_first: Vec<Deployment>) -> BTreeMap<String, BTreeMap<String, Cell>> {
    let mut m: BTreeMap<String, BTreeMap<String, Cell>> = BTreeMap::new();
    for d in newest_first {
        let cell = m
            .entry(d.service.clone())
            .or_default()
            .entry(d.environment.clone())
            .or_default();
        if cell.active.is_none() && !d.state.is_terminal() {
            cell.active = Some(d.clone());
        }
        if cell.running.is_none() && d.state == crate::state::DeploymentState::Succeeded {
            cell.running = Some(d.clone());
        }
        if cell.latest.is_none() {
            cell.latest = Some(d);
        }
    }
    m
}

/// Hosts running `service`, and how many of them are connected.
fn health(hosts: &[HostSnapshot], service: &str) -> (usize, usize) {
    let running: Vec<_> = hosts
        .iter()
        .filter(|h| h.services.iter().any(|s| s.service == service))
        .collect();
    (
        running.len(),
        running.iter().filter(|h| h.connected).count(),
    )
}

/// `GET /`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
) -> Result<Html<String>, WebError> {
    let deployments = web.store.list(None, LOOKBACK).await?;
    let hosts = web.hub.hosts();
    let m = matrix(deployments);
    let envs: std::collections::BTreeSet<&String> = m.values().flat_map(|e| e.keys()).collect();
    let connected = hosts.iter().filter(|h| h.connected).count();
    let body = html! {
        h1 { "Overview" }
        div #live {
            p.muted {
                (hosts.len()) " hosts, " (connected) " connected"
                @if hosts.len() > connected { ", " span.warn { (hosts.len() - connected) " lost" } }
                " · " (m.len()) " services"
            }
            @if m.is_empty() {
                p { "Nothing has been deployed yet. Deploy with " code { "drover deploy SPEC --version V" } "." }
            } @else {
                table {
                    thead { tr { th { "service" } @for e in &envs { th { (env_name(e)) } } th { "hosts" } } }
                    tbody {
                        @for (service, cells) in &m {
                            @let (n, up) = health(&hosts, service);
                            tr {
                                th { a href={"/releases?service=" (service)} { (service) } }
                                @for e in &envs {
                                    td.matrix { @if let Some(c) = cells.get(*e) { (cell(c)) } @else { span.muted { "—" } } }
                                }
                                td.num {
                                    (up) "/" (n) " up"
                                    @if up < n { br; span.warn { (n - up) " lost" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let page = Page {
        title: "Overview",
        name: "overview",
        cli: "drover status --env ENVIRONMENT".to_owned(),
        live: Some("/events".to_owned()),
    };
    Ok(layout::page(page, &session, body))
}

pub use crate::store::environment_name as env_name;

fn cell(c: &Cell) -> Markup {
    html! {
        @if let Some(r) = &c.running {
            div { b { (r.version) } " " (layout::digest(&r.pinned)) }
            div.muted { "since " (layout::time(r.finished_ms.unwrap_or(r.created_ms))) }
        } @else {
            div.muted { "nothing succeeded yet" }
        }
        @if let Some(l) = &c.latest {
            @if c.active.is_none() {
                div { "last: " a href={"/deployments/" (l.id)} { (layout::badge(l.state)) } }
            }
        }
        @if let Some(a) = &c.active {
            div {
                a href={"/deployments/" (a.id)} { (layout::badge(a.state)) " " (a.version) }
                @if let Some(h) = &a.hold { div.warn { (h) } }
                div.muted { "lock: " (a.id) " by " (a.requested_by) }
            }
        }
    }
}
