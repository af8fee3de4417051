//! Hosts: every agent with its labels, connected or lost since when, what it runs and
//! its agent version; filtered by a label selector and paged on the server, so a fleet
//! of 10,000 sends one page of rows.

use axum::extract::{Query, State};
use axum::response::Html;
use drover_shared::labels::Selector;
use maud::html;
use serde::Deserialize;

use super::super::layout::{self, Page};
use super::super::signin::Signed;
use super::super::{Web, WebError};
use crate::hub::HostSnapshot;

/// Rows per page.
pub const PAGE_SIZE: usize = 100;

/// The query of `/hosts`.
#[derive(Debug, Default, Deserialize)]
pub struct HostsQuery {
    /// A label selector (`role=web,zone=a`).
    #[serde(default)]
    label: String,
    /// From 1.
    #[serde(default)]
    page: usize,
}

/// One page of `items`: the page number actually shown (from 1), the number of pages,
/// and the rows.
pub fn paged<T>(items: &[T], page: usize, size: usize) -> (usize, usize, &[T]) {
    let pages = items.len().div_ceil(size).max(1);
    let page = page.clamp(1, pages);
    let start = (page - 1) * size;
    (
        page,
        pages,
        &items[start.min(items.len())..(start + size).min(items.len())],
    )
}

/// `GET /hosts`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
    Query(q): Query<HostsQuery>,
) -> Result<Html<String>, WebError> {
    let selector = Selector::parse(&q.label)
        .map_err(|e| WebError::BadRequest(format!("label filter {:?}: {e}", q.label)))?;
    let hosts: Vec<HostSnapshot> = web
        .hub
        .hosts()
        .into_iter()
        .filter(|h| selector.matches(&h.labels))
        .collect();
    let (page, pages, rows) = paged(&hosts, q.page, PAGE_SIZE);
    let link = |p: usize| {
        let mut s = form_urlencoded(&[("label", q.label.as_str())]);
        s.push_str(&format!("&page={p}"));
        format!("/hosts?{s}")
    };
    let cli = if q.label.is_empty() {
        "drover hosts".to_owned()
    } else {
        format!("drover hosts --selector '{}'", q.label)
    };
    let body = html! {
        h1 { "Hosts" }
        form.filters method="get" action="/hosts" {
            label { "label selector" input name="label" value=(q.label) placeholder="role=web,zone=a"; }
            button type="submit" { "Filter" }
        }
        div #live {
            (pager(page, pages, hosts.len(), &link))
            table {
                thead { tr { th { "host" } th { "state" } th { "since" } th { "labels" } th { "runs" } th { "agent" } th { "address" } } }
                tbody {
                    @for h in rows {
                        tr data-host=(h.name) {
                            td { b { (h.name) } }
                            td {
                                @if h.connected { span.badge.ok { "connected" } } @else { span.badge.bad { "lost" } }
                                @if let Some(e) = &h.docker_error { div.warn title=(e) { "Docker unreachable" } }
                            }
                            td { (layout::time(ms(h.since))) }
                            td.labels { @for (k, v) in &h.labels { span { (k) "=" (v) } } }
                            td {
                                @for s in &h.services {
                                    div { (s.service) " " b { (s.version) } }
                                }
                            }
                            td { (h.agent_version) }
                            td.mono { (h.advertise_address) }
                        }
                    }
                }
            }
            (pager(page, pages, hosts.len(), &link))
        }
    };
    let page = Page {
        title: "Hosts",
        name: "hosts",
        cli,
        live: Some("/events".to_owned()),
    };
    Ok(layout::page(page, &session, body))
}

fn pager(page: usize, pages: usize, total: usize, link: &dyn Fn(usize) -> String) -> maud::Markup {
    html! {
        div.pager {
            span.muted { (total) " hosts · page " (page) " of " (pages) }
            @if page > 1 { a href=(link(page - 1)) rel="prev" { "← previous" } }
            @if page < pages { a href=(link(page + 1)) rel="next" { "next →" } }
        }
    }
}

/// Unix ms of a system time.
pub fn ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `pairs` as a query string.
pub fn form_urlencoded(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_clamp_to_what_exists() {
        let items: Vec<u32> = (0..250).collect();
        let (p, n, rows) = paged(&items, 0, 100);
        assert_eq!((p, n, rows.len(), rows[0]), (1, 3, 100, 0));
        let (p, _, rows) = paged(&items, 3, 100);
        assert_eq!((p, rows.len(), rows[0]), (3, 50, 200));
        let (p, _, rows) = paged(&items, 99, 100);
        assert_eq!((p, rows.len()), (3, 50));
        let empty: Vec<u32> = vec![];
        assert_eq!(paged(&empty, 5, 100), (1, 1, &[][..]));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            form_urlencoded(&[("label", "role=web,zone=a b&c")]),
            "label=role%3Dweb%2Czone%3Da%20b%26c"
        );
    }
}
