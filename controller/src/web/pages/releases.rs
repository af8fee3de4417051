//! Releases of one service: where each runs and has run, a deploy form per release
//! (asking to type the environment's name where the gate or label says production),
//! what each environment runs now and what holds it, and what the gates say about the
//! newest release in each environment (the operator API's own plan, in words).

use axum::extract::{Query, State};
use axum::response::Html;
use drover_proto::v1 as proto;
use drover_proto::v1::operator_server::Operator;
use maud::{Markup, html};
use serde::Deserialize;

use super::super::gate::{Control, may, needs_confirmation};
use super::super::layout::{self, Page};
use super::super::session::Session;
use super::super::signin::Signed;
use super::super::{Web, WebError, request};
use super::overview::env_name;
use super::state_of;
use crate::spec::SpecFile;

/// The query of `/releases`.
#[derive(Debug, Default, Deserialize)]
pub struct ReleasesQuery {
    #[serde(default)]
    service: String,
}

/// `GET /releases`.
pub async fn page(
    State(web): State<Web>,
    Signed(session): Signed,
    Query(q): Query<ReleasesQuery>,
) -> Result<Html<String>, WebError> {
    let who = &session.principal;
    let services: Vec<String> = {
        let mut s: Vec<String> = web
            .store
            .list(None, super::overview::LOOKBACK)
            .await?
            .into_iter()
            .map(|d| d.service)
            .collect();
        s.sort();
        s.dedup();
        s
    };
    let service = if q.service.is_empty() {
        services.first().cloned().unwrap_or_default()
    } else {
        q.service.clone()
    };
    let mut body = html! {
        h1 { "Releases" }
        form.filters method="get" action="/releases" {
            label { "service" select name="service" {
                @for s in &services { option value=(s) selected[*s == service] { (s) } }
            } }
            button type="submit" { "Show" }
        }
    };
    if service.is_empty() {
        body = html! { (body) p { "No service has been deployed yet." } };
    } else {
        let ops = web.ops_as(who, "ListReleases")?;
        let list = ops
            .list_releases(request(
                who,
                proto::ListReleasesRequest {
                    service: service.clone(),
                    limit: 20,
                },
            ))
            .await?
            .into_inner();
        let spec = super::super::actions::newest_spec(&web, &service)
            .await
            .ok();
        let file = spec.as_deref().and_then(|s| SpecFile::parse(s).ok());
        let envs: Vec<crate::spec::Environment> = match &file {
            Some(f) if f.has_environments() => f
                .names()
                .filter_map(|n| f.environment(Some(n)).ok())
                .collect(),
            Some(f) => f.environment(None).into_iter().collect(),
            None => vec![],
        };
        let gates = match (list.releases.first(), &spec) {
            (Some(newest), Some(spec)) => gate_words(&web, &session, spec, newest, &envs).await,
            _ => vec![],
        };
        body = html! {
            (body)
            div #live {
                h2 { "Environments" }
                table {
                    thead { tr { th { "environment" } th { "runs" } th { "since" } th { "in progress" } th { "gates" } th { "newest release there" } } }
                    tbody {
                        @for env in &envs {
                            @let state = list.environments.iter().find(|s| s.environment == env.name);
                            tr data-environment=(env.name) {
                                th { (env_name(&env.name)) }
                                td {
                                    @if let Some(s) = state {
                                        b { (s.version) } " " (layout::digest(&s.pinned))
                                        @if may(who, "Rollback") && s.active_deployment_id.is_empty() {
                                            form.inline method="post" action={"/services/" (service) "/rollback"} {
                                                (layout::csrf(&session))
                                                input type="hidden" name="environment" value=(env.name);
                                                " " button type="submit" data-action="rollback" title="return to the previous successful version, without pulling" { "roll back" }
                                            }
                                        }
                                    }
                                }
                                td { @if let Some(s) = state { (layout::time(s.since_ms)) } }
                                td { @if let Some(s) = state { @if !s.active_deployment_id.is_empty() { (active(s, &session)) } } }
                                td { (gates_of(env)) }
                                td { @if let Some((_, words)) = gates.iter().find(|(n, _)| *n == env.name) { (words) } }
                            }
                        }
                    }
                }
                h2 { "Releases" }
                table {
                    thead { tr { th { "release" } th { "tag" } th { "digest" } th { "commit" } th { "made" } th { "runs in" } th { "deployments" } @if may(who, "Deploy") { th { "deploy" } } } }
                    tbody {
                        @for r in &list.releases {
                            tr data-release=(r.id) {
                                td.mono { (r.id) }
                                td { b { (r.tag) } }
                                td { (layout::digest(&r.digest)) }
                                td.mono { (r.commit_sha.get(..12).unwrap_or(&r.commit_sha)) }
                                td { (layout::time(r.created_ms)) " by " (r.created_by) }
                                td { @for e in &r.runs_in { span.badge.ok { (env_name(e)) } " " } }
                                td { @for d in r.deployments.iter().rev().take(6) {
                                    a href={"/deployments/" (d.id)} title=(d.id) { (env_name(&d.environment)) " " (layout::badge(state_of(d.state))) } " "
                                } }
                                @if may(who, "Deploy") { td { (deploy_form(r, &envs, &session)) (promote_forms(r, &envs, &session)) } }
                            }
                        }
                    }
                }
            }
        };
    }
    let page = Page {
        title: "Releases",
        name: "releases",
        cli: format!("drover releases {service}"),
        live: Some("/events".to_owned()),
    };
    Ok(layout::page(page, &session, body))
}

fn active(s: &proto::EnvironmentState, session: &Session) -> Markup {
    let state = state_of(s.active_state);
    html! {
        a href={"/deployments/" (s.active_deployment_id)} { (layout::badge(state)) " " (s.active_deployment_id) }
        @if may(&session.principal, "Control") && Control::Approve.available(state).is_ok() {
            form.inline method="post" action={"/deployments/" (s.active_deployment_id) "/approve"} {
                (layout::csrf(session))
                " " button type="submit" data-action="approve" { "approve" }
            }
        }
    }
}

fn deploy_form(
    r: &proto::ReleaseInfo,
    envs: &[crate::spec::Environment],
    session: &Session,
) -> Markup {
    html! {
        form.inline data-deploy method="post" action={"/releases/" (r.id) "/deploy"} {
            (layout::csrf(session))
            select name="environment" {
                @for e in envs {
                    option value=(e.name) data-confirm=(needs_confirmation(e)) { (env_name(&e.name)) }
                }
            }
            " " input name="confirm" autocomplete="off" placeholder="type the environment to confirm";
            " " button type="submit" data-action="deploy" { "deploy" }
        }
    }
}

/// The environments `r` is ready to be promoted to: those that `require` an environment
/// where it ran successfully, and where it does not run yet. The deploy there still
/// meets every gate (soak, approval, window, error budget).
pub fn promotions<'a>(
    r: &proto::ReleaseInfo,
    envs: &'a [crate::spec::Environment],
) -> Vec<&'a crate::spec::Environment> {
    let proved = |env: &str| {
        r.runs_in.iter().any(|e| e == env)
            || r.deployments.iter().any(|d| {
                d.environment == env
                    && state_of(d.state) == crate::state::DeploymentState::Succeeded
            })
    };
    envs.iter()
        .filter(|e| !r.runs_in.contains(&e.name))
        .filter(|e| e.gates.requires.as_deref().is_some_and(proved))
        .collect()
}

/// A "promote to ENV" button for each of [`promotions`]: the deploy form's own request
/// with the environment set, and the CLI command that does the same.
fn promote_forms(
    r: &proto::ReleaseInfo,
    envs: &[crate::spec::Environment],
    session: &Session,
) -> Markup {
    html! {
        @for e in promotions(r, envs) {
            @let cli = format!("drover deploy --env {} --release {}", e.name, r.id);
            div.promote {
                form.inline data-promote=(e.name) method="post" action={"/releases/" (r.id) "/deploy"} {
                    (layout::csrf(session))
                    input type="hidden" name="environment" value=(e.name);
                    @if needs_confirmation(e) {
                        input name="confirm" autocomplete="off" required placeholder={"type " (e.name) " to confirm"};
                        " "
                    }
                    button type="submit" data-action="deploy" title=(cli) { "promote to " (e.name) }
                }
                " " code.hint { (cli) }
            }
        }
    }
}

/// The gates of `env` as the spec sets them, in words.
fn gates_of(env: &crate::spec::Environment) -> Markup {
    let g = &env.gates;
    let windows = env.spec.schedule.windows.describe();
    html! {
        @if let Some(r) = &g.requires {
            div { "requires a success in " b { (r) } @if !g.soak.is_zero() { " at least " (humantime::format_duration(g.soak)) " ago" } }
        }
        @if g.approval { div { "approval by a second deployer" } }
        @if let Some(slo) = &g.slo { div { "error budget " (format!("{slo:?}")) } }
        @for w in &windows { div { "window: " (w) } }
        @if g.requires.is_none() && !g.approval && g.slo.is_none() && windows.is_empty() { span.muted { "none" } }
    }
}

/// For each environment, what a deploy of `newest` there would meet now: the operator
/// API's plan (a gate that refuses it, a window that holds it, or "starts at once").
async fn gate_words(
    web: &Web,
    session: &Session,
    spec: &str,
    newest: &proto::ReleaseInfo,
    envs: &[crate::spec::Environment],
) -> Vec<(String, Markup)> {
    let who = &session.principal;
    let Ok(ops) = web.ops_as(who, "Plan") else {
        return vec![];
    };
    let mut out = Vec::new();
    for env in envs {
        let req = proto::PlanRequest {
            request: Some(proto::plan_request::Request::Deploy(proto::DeployRequest {
                spec_toml: spec.to_owned(),
                release_id: newest.id.clone(),
                environment: env.name.clone(),
                requested_by: who.name.clone(),
                ..Default::default()
            })),
        };
        let words = match ops.plan(request(who, req)).await {
            Ok(p) => {
                let p = p.into_inner();
                html! {
                    (newest.tag) ": "
                    @if p.held_by.is_empty() { span.badge.ok { "would start at once" } } @else { span.warn { (p.held_by) } }
                    @if !p.gate_note.is_empty() { div.muted { (p.gate_note) } }
                }
            }
            Err(status) => html! { (newest.tag) ": " span.warn { (status.message()) } },
        };
        out.push((env.name.clone(), words));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
[service]
name = "web"
image = "127.0.0.1:5000/demo"
port = 8080

[targets]
selector = "role=web"

[env.staging]
targets = { selector = "env=staging" }

[env.production]
targets = { selector = "env=production" }
requires = "staging"
approval = "required"
"#;

    fn envs() -> Vec<crate::spec::Environment> {
        let f = SpecFile::parse(SPEC).unwrap();
        f.names().map(|n| f.environment(Some(n)).unwrap()).collect()
    }

    fn release(runs_in: &[&str], ran: &[(&str, proto::DeploymentState)]) -> proto::ReleaseInfo {
        proto::ReleaseInfo {
            id: "r-1".into(),
            runs_in: runs_in.iter().map(|e| e.to_string()).collect(),
            deployments: ran
                .iter()
                .map(|(e, s)| proto::ReleaseDeploymentInfo {
                    environment: e.to_string(),
                    state: *s as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn names(r: &proto::ReleaseInfo, envs: &[crate::spec::Environment]) -> Vec<String> {
        promotions(r, envs).iter().map(|e| e.name.clone()).collect()
    }

    #[test]
    fn a_release_proved_where_another_environment_requires_it_is_offered_there() {
        use proto::DeploymentState as S;
        let envs = envs();
        assert!(names(&release(&[], &[]), &envs).is_empty());
        assert!(names(&release(&[], &[("staging", S::Failed)]), &envs).is_empty());
        assert_eq!(names(&release(&["staging"], &[]), &envs), ["production"]);
        assert_eq!(
            names(&release(&[], &[("staging", S::Succeeded)]), &envs),
            ["production"],
            "a release that ran in staging, since replaced there"
        );
        assert!(
            names(&release(&["staging", "production"], &[]), &envs).is_empty(),
            "already runs there"
        );
    }

    #[test]
    fn the_promote_button_posts_the_deploy_form_and_shows_the_cli() {
        let principal = crate::auth::Principal {
            name: "dee".into(),
            role: drover_shared::tls::Role::Deployer,
            method: crate::auth::AuthMethod::Token,
        };
        let sessions =
            super::super::super::Sessions::new(super::super::super::SessionKey::generate());
        let (session, _) = sessions.start(principal, "t-1", crate::store::now_ms());
        let html = promote_forms(&release(&["staging"], &[]), &envs(), &session).into_string();
        assert!(
            html.contains(
                "data-promote=\"production\" method=\"post\" action=\"/releases/r-1/deploy\""
            ),
            "{html}"
        );
        assert!(
            html.contains("name=\"environment\" value=\"production\""),
            "{html}"
        );
        assert!(html.contains(">promote to production</button>"), "{html}");
        assert!(
            html.contains("drover deploy --env production --release r-1"),
            "{html}"
        );
        // Production has an approval gate: the name is typed to confirm.
        assert!(html.contains("name=\"confirm\""), "{html}");
        assert!(html.contains("name=\"csrf\""), "{html}");
    }
}
