//! History: deployments filtered by service, environment and outcome, newest first;
//! a redeploy of any that succeeded; and a diff of two (digest, spec, who, why).

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::gate::may;
use super::super::layout::{self, Page};
use super::super::signin::Signed;
use super::super::{Web, WebError};
use super::overview::env_name;
use crate::state::DeploymentState;
use crate::store::Deployment;

/// Rows shown.
const LIMIT: u32 = 200;

/// The query of `/history`.
#[derive(Debug, Default, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    service: String,
    #[serde(default)]
    environment: String,
    /// A deployment state (`succeeded`, `rolled_back`, ...).
    #[serde(default)]
    outcome: String,
}

/// `GET /history`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
    Query(q): Query<HistoryQuery>,
) -> Result<Html<String>, WebError> {
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    let mut rows = web
        .store
        .list_in(some(&q.service), some(&q.environment), LIMIT)
        .await?;
    if !q.outcome.is_empty() {
        rows.retain(|d| d.state.as_str() == q.outcome);
    }
    let redeploy = may(&session.principal, "Deploy");
    let mut cli = "drover history".to_owned();
    if !q.service.is_empty() {
        cli.push_str(&format!(" --service {}", q.service));
    }
    if !q.environment.is_empty() {
        cli.push_str(&format!(" --env {}", q.environment));
    }
    let body = html! {
        h1 { "History" }
        form.filters method="get" action="/history" {
            label { "service" input name="service" value=(q.service); }
            label { "environment" input name="environment" value=(q.environment); }
            label { "outcome" select name="outcome" {
                option value="" { "any" }
                @for s in ["succeeded", "failed", "rolled_back", "cancelled", "rolling", "paused", "scheduled", "awaiting_approval"] {
                    option value=(s) selected[q.outcome == s] { (s) }
                }
            } }
            button type="submit" { "Filter" }
        }
        form #diff method="get" action="/history/diff" {
            p.muted { "Pick two rows (a and b) to compare them: " button type="submit" { "Diff" } }
            div #live {
                table {
                    thead { tr { th { "a" } th { "b" } th { "deployment" } th { "service" } th { "env" } th { "kind" } th { "version" } th { "digest" } th { "outcome" } th { "by" } th { "when" } th { "took" } @if redeploy { th {} } } }
                    tbody {
                        @for d in &rows {
                            tr data-deployment=(d.id) {
                                td { input type="radio" name="a" value=(d.id); }
                                td { input type="radio" name="b" value=(d.id); }
                                td { a.mono href={"/deployments/" (d.id)} { (d.id) } }
                                td { (d.service) } td { (env_name(&d.environment)) } td { (d.kind.as_str()) }
                                td { b { (d.version) } } td { (layout::digest(&d.pinned)) }
                                td { (layout::badge(d.state)) @if let Some(e) = &d.error { div.muted title=(e) { (e.chars().take(80).collect::<String>()) } } }
                                td { (d.requested_by) } td { (layout::time(d.created_ms)) }
                                td.num { @if let Some(f) = d.finished_ms { (layout::short(f.saturating_sub(d.created_ms))) } }
                                @if redeploy { td { @if d.state == DeploymentState::Succeeded {
                                    button type="submit" form={"redeploy-" (d.id)} data-action="redeploy" title="deploy this release again, same environment and spec" { "redeploy" }
                                } } }
                            }
                        }
                    }
                }
            }
        }
        @if redeploy {
            @for d in rows.iter().filter(|d| d.state == DeploymentState::Succeeded) {
                form id={"redeploy-" (d.id)} method="post" action={"/deployments/" (d.id) "/redeploy"} { (layout::csrf(&session)) }
            }
        }
    };
    let page = Page {
        title: "History",
        name: "history",
        cli,
        live: Some("/events".to_owned()),
    };
    Ok(layout::page(page, &session, body))
}

/// The query of `/history/diff`.
#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    a: String,
    b: String,
}

/// `GET /history/diff?a=ID&b=ID`.
pub async fn diff(
    State(web): State<Web>,
    Signed(session): Signed,
    Query(q): Query<DiffQuery>,
) -> Result<Html<String>, WebError> {
    let a = web.store.deployment(&q.a).await?;
    let b = web.store.deployment(&q.b).await?;
    let fact = |name: &str, f: &dyn Fn(&Deployment) -> String| {
        let (x, y) = (f(&a), f(&b));
        html! { tr.changed[x != y] { th { (name) } td { (x) } td { (y) } } }
    };
    let body = html! {
        h1 { "Diff" }
        table.diff {
            thead { tr { th {} th { a href={"/deployments/" (a.id)} { (a.id) } } th { a href={"/deployments/" (b.id)} { (b.id) } } } }
            tbody {
                (fact("service", &|d| d.service.clone()))
                (fact("environment", &|d| env_name(&d.environment).to_owned()))
                (fact("version", &|d| d.version.clone()))
                (fact("digest", &|d| d.pinned.clone()))
                (fact("release", &|d| d.release_id.clone()))
                (fact("outcome", &|d| d.state.as_str().to_owned()))
                (fact("asked by", &|d| d.requested_by.clone()))
                (fact("when", &|d| layout::when(d.created_ms)))
                (fact("gates", &|d| d.gate_note.clone().unwrap_or_default()))
                (fact("error", &|d| d.error.clone().unwrap_or_default()))
            }
        }
        h2 { "Spec" }
        (spec_diff(&a.spec, &b.spec))
    };
    let page = Page {
        title: "Diff",
        name: "history",
        cli: format!("drover status {}; drover status {}", q.a, q.b),
        live: None,
    };
    Ok(layout::page(page, &session, body))
}

/// A line diff of two specs: `-` only in a, `+` only in b (longest common subsequence).
pub fn line_diff<'a>(a: &'a str, b: &'a str) -> Vec<(char, &'a str)> {
    let (x, y): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0u32; y.len() + 1]; x.len() + 1];
    for i in (0..x.len()).rev() {
        for j in (0..y.len()).rev() {
            lcs[i][j] = if x[i] == y[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() || j < y.len() {
        if i < x.len() && j < y.len() && x[i] == y[j] {
            out.push((' ', x[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < x.len() && (j == y.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(('-', x[i]));
            i += 1;
        } else {
            out.push(('+', y[j]));
            j += 1;
        }
    }
    out
}

fn spec_diff(a: &str, b: &str) -> Markup {
    let lines = line_diff(a, b);
    html! {
        @if lines.iter().all(|(c, _)| *c == ' ') { p.muted { "The specs are the same." } }
        pre.log.diff { @for (c, l) in &lines { span class={"d" (if *c == '+' { "add" } else if *c == '-' { "del" } else { "same" })} { (c) " " (l) "\n" } } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_diff_marks_changed_lines_only() {
        let d = line_diff("a\nb\nc\n", "a\nB\nc\nd\n");
        assert_eq!(
            d,
            vec![(' ', "a"), ('-', "b"), ('+', "B"), (' ', "c"), ('+', "d")]
        );
        assert!(line_diff("x", "x").iter().all(|(c, _)| *c == ' '));
    }
}
