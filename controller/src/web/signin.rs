//! Signing in and out, and the [`Signed`] extractor every page and action takes: the
//! session of the request's cookie, its token checked again every
//! [`RECHECK_MS`] (and before every action), or a redirect to `/sign-in`.

use axum::Form;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use tracing::{info, warn};

use super::layout;
use super::session::{COOKIE, Lookup, SESSION_TTL, Session, csrf_matches};
use super::{Web, WebError};
use crate::store::now_ms;
use crate::tokens::{self, TokenKind};

/// How stale a session's view of its token may be on a page view (an action always
/// checks it first).
const RECHECK_MS: u64 = 30_000;

/// A signed-in request.
#[derive(Debug, Clone)]
pub struct Signed(pub Session);

impl FromRequestParts<Web> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Web) -> Result<Self, WebError> {
        let cookie = session_cookie(&parts.headers);
        let now = now_ms();
        let session = match web.sessions.lookup(cookie.as_deref(), now) {
            Lookup::None => return Err(WebError::SignedOut),
            Lookup::Live(s) if now.saturating_sub(s.checked_ms) < RECHECK_MS => {
                return Ok(Signed(s));
            }
            Lookup::Live(s) => {
                recheck(web, &s.token_id, &s.id, s.expires_ms).await?;
                web.sessions.checked(&s.id, now);
                s
            }
            Lookup::Unknown(sealed) => {
                let (id, expires) = (sealed.id.clone(), sealed.expires_ms);
                let principal = recheck(web, &sealed.token_id, &id, expires).await?;
                web.sessions.readmit(principal, sealed, now)
            }
        };
        Ok(Signed(session))
    }
}

impl Signed {
    /// Refuses a POST whose form does not carry this session's CSRF token, then checks
    /// the token the session was made from once more.
    pub async fn check_post(&self, web: &Web, csrf: &str) -> Result<(), WebError> {
        if !csrf_matches(&self.0, csrf) {
            warn!(who = %self.0.principal.name, "refused a web POST: missing or wrong CSRF token");
            return Err(WebError::Csrf);
        }
        recheck(web, &self.0.token_id, &self.0.id, self.0.expires_ms).await?;
        Ok(())
    }
}

/// The principal token `token_id` names now; a session whose token no longer holds is
/// ended.
async fn recheck(
    web: &Web,
    token_id: &str,
    session_id: &str,
    expires_ms: u64,
) -> Result<crate::auth::Principal, WebError> {
    match web.auth.recheck(token_id).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(refusal)) => {
            info!(reason = %refusal.message, "ending a web session: its token no longer holds");
            web.sessions.end(session_id, expires_ms);
            Err(WebError::SignedOut)
        }
        Err(e) => Err(WebError::Api(tonic::Status::unavailable(e.to_string()))),
    }
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(value: &str, max_age_s: u64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age_s}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("drover_session=; Max-Age=0"))
}

/// `GET /sign-in`.
pub async fn form(State(web): State<Web>) -> Response {
    sign_in_page(&web, None, axum::http::StatusCode::OK)
}

fn sign_in_page(web: &Web, error: Option<&str>, status: axum::http::StatusCode) -> Response {
    let dev = web.auth.is_insecure_dev();
    let body = html! {
        main.narrow data-page="sign-in" {
            h1 { "Sign in to Drover" }
            @if let Some(e) = error { p #error role="alert" { (e) } }
            form #sign-in method="post" action="/sign-in" {
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="off" required[!dev]
                    placeholder="dra1.…" autofocus;
                button type="submit" { "Sign in" }
            }
            @if dev {
                p.warn { "This controller runs with --insecure-dev: any token signs in as admin." }
            } @else {
                p.hint {
                    "An admin makes one with "
                    code { "drover api-token create --name NAME --role viewer|deployer|admin" }
                    ". The token is exchanged for a session of at most "
                    (humantime::format_duration(SESSION_TTL))
                    "; it is not kept by the browser."
                }
            }
        }
    };
    (status, layout::bare("Sign in", body)).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

/// `POST /sign-in`: the token for a session cookie.
pub async fn sign_in(State(web): State<Web>, Form(f): Form<SignInForm>) -> Response {
    let text = f.token.trim();
    let (principal, token_id) = if web.auth.is_insecure_dev() {
        (
            crate::auth::Principal::insecure_dev(),
            "insecure-dev".to_owned(),
        )
    } else {
        let id = match tokens::parse(TokenKind::Api, text) {
            Ok(p) => p.id,
            Err(e) => {
                return sign_in_page(
                    &web,
                    Some(&e.to_string()),
                    axum::http::StatusCode::UNAUTHORIZED,
                );
            }
        };
        let creds = crate::auth::Credentials {
            tls: None,
            authorization: Some(format!("Bearer {text}")),
        };
        match web.auth.authenticate(&creds).await {
            Ok(Ok(p)) => (p, id),
            Ok(Err(refusal)) => {
                warn!(reason = %refusal.message, "refused a web sign-in");
                return sign_in_page(
                    &web,
                    Some(&refusal.message),
                    axum::http::StatusCode::UNAUTHORIZED,
                );
            }
            Err(e) => {
                return sign_in_page(
                    &web,
                    Some(&e.to_string()),
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        }
    };
    info!(who = %principal.name, role = %principal.role, "web sign-in");
    let (_, cookie) = web.sessions.start(principal, &token_id, now_ms());
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&cookie, SESSION_TTL.as_secs()),
    );
    response
}

/// The sign-out form.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /sign-out`.
pub async fn sign_out(
    State(web): State<Web>,
    signed: Signed,
    Form(f): Form<CsrfForm>,
) -> Result<Response, WebError> {
    if !csrf_matches(&signed.0, &f.csrf) {
        return Err(WebError::Csrf);
    }
    web.sessions.end(&signed.0.id, signed.0.expires_ms);
    info!(who = %signed.0.principal.name, "web sign-out");
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie("", 0));
    Ok(response)
}
