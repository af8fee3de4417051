//! The frame of every page (header, navigation, connection banner, the equivalent CLI
//! command), the security headers of every answer, and small formatting helpers.
//! Every untrusted value (labels, hook output, errors) goes through maud's escaping.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::Session;
use crate::state::DeploymentState;
use crate::store::now_ms;

/// Nothing but this origin: no inline script or style, no frames, forms post here only.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Adds the security headers to every answer.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// What a page puts in the frame.
pub struct Page<'a> {
    /// The window title.
    pub title: &'a str,
    /// `data-page` of the root `main`.
    pub name: &'static str,
    /// The `drover ...` command that shows the same.
    pub cli: String,
    /// Where live updates come from (server-sent events), if the page has any.
    pub live: Option<String>,
}

const NAV: [(&str, &str, &str); 6] = [
    ("overview", "/", "Overview"),
    ("hosts", "/hosts", "Hosts"),
    ("releases", "/releases", "Releases"),
    ("history", "/history", "History"),
    ("schedules", "/schedules", "Schedules"),
    ("delivery", "/delivery", "Delivery"),
];

fn head(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Drover" }
        link rel="stylesheet" href="/assets/app.css";
        script src="/assets/app.js" defer {}
    }
}

/// A signed-in page.
pub fn page(p: Page<'_>, session: &Session, body: Markup) -> Html<String> {
    let who = &session.principal;
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    (head(p.title))
                    meta name="csrf" content=(session.csrf);
                }
                body {
                    header.top {
                        a.brand href="/" { "drover" }
                        nav {
                            @for (name, href, label) in NAV {
                                a href=(href) aria-current=[(name == p.name).then_some("page")] { (label) }
                            }
                        }
                        span #conn data-state="live" title="live updates" { "live" }
                        span.who { (who.name) " · " (who.role.as_str()) }
                        form method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button #sign-out type="submit" { "Sign out" }
                        }
                    }
                    main data-page=(p.name) data-live=[p.live.as_deref()] {
                        p.cli { "CLI: " code.cli { (p.cli) } }
                        (body)
                    }
                }
            }
        }
        .into_string(),
    )
}

/// A page without a session (sign-in).
pub fn bare(title: &str, body: Markup) -> impl IntoResponse {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head { (head(title)) }
                body { (body) }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field of a form.
pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// `ms` as a UTC time, to the second.
pub fn when(ms: u64) -> String {
    if ms == 0 {
        return "—".to_owned();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
}

/// How long ago `ms` was, short ("3m ago"), or in how long ("in 5m").
pub fn ago(ms: u64) -> String {
    if ms == 0 {
        return "—".to_owned();
    }
    let now = now_ms();
    let (d, future) = if ms > now {
        (ms - now, true)
    } else {
        (now - ms, false)
    };
    let text = short(d);
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A duration in ms, short: "850ms", "42s", "3m", "2h5m", "3d".
pub fn short(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A time cell: relative, with the absolute time on hover.
pub fn time(ms: u64) -> Markup {
    html! { time title=(when(ms)) { (ago(ms)) } }
}

/// A digest shortened for a table (`sha256:0123456789ab`), whole on hover.
pub fn digest(pinned: &str) -> Markup {
    let d = pinned.rsplit_once('@').map_or(pinned, |(_, d)| d);
    html! { code title=(pinned) { (drover_shared::image::short_digest(d)) } }
}

/// The colour class of a deployment state.
pub fn tone(state: DeploymentState) -> &'static str {
    use DeploymentState::*;
    match state {
        Succeeded => "ok",
        Failed | RolledBack => "bad",
        RollingBack => "bad",
        Paused | Held | AwaitingApproval | AwaitingPromotion | Scheduled => "wait",
        Cancelled | Skipped => "muted",
        Pending | Preparing | Rolling | Baking => "run",
    }
}

/// A state badge.
pub fn badge(state: DeploymentState) -> Markup {
    html! { span class={"badge " (tone(state))} { (state.as_str()) } }
}
