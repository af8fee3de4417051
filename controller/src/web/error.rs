//! What a page or an action answers when it cannot do what was asked: one enum, mapped
//! to an HTTP status and a page that says why in `#error`, in one place.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use tonic::Code;

/// Why a web request was not served.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No live session: the browser is sent to sign in.
    #[error("sign in first")]
    SignedOut,
    /// The session's role may not do this (the operator API's own refusal text).
    #[error("{0}")]
    Forbidden(String),
    /// A POST without the session's CSRF token (a forged or stale form).
    #[error(
        "this form is stale or was not sent by this page (missing or wrong CSRF token); reload the page and try again"
    )]
    Csrf,
    /// Nothing at this address.
    #[error("{0}")]
    NotFound(String),
    /// A form or query the page cannot use.
    #[error("{0}")]
    BadRequest(String),
    /// The operator API refused or failed; its message is meant for operators.
    #[error("{}", .0.message())]
    Api(#[from] tonic::Status),
    /// The database failed.
    #[error("the controller's database failed ({0}); see its log")]
    Store(#[from] crate::store::StoreError),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::SignedOut => StatusCode::SEE_OTHER,
            WebError::Forbidden(_) | WebError::Csrf => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Api(s) => match s.code() {
                Code::NotFound => StatusCode::NOT_FOUND,
                Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
                Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                    StatusCode::CONFLICT
                }
                Code::PermissionDenied => StatusCode::FORBIDDEN,
                Code::Unauthenticated => StatusCode::UNAUTHORIZED,
                Code::Unavailable | Code::DeadlineExceeded => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::SignedOut = self {
            return Redirect::to("/sign-in").into_response();
        }
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "web request failed");
        }
        let body = html! {
            (maud::DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { "Drover: " (status.as_u16()) }
                    link rel="stylesheet" href="/assets/app.css";
                }
                body {
                    main.narrow data-page="error" {
                        h1 { (status.canonical_reason().unwrap_or("Error")) }
                        p #error role="alert" { (self.to_string()) }
                        p { a href="/" { "Overview" } }
                    }
                }
            }
        };
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body.into_string(),
        )
            .into_response()
    }
}

/// Any address the router does not know.
pub async fn not_found() -> WebError {
    WebError::NotFound("no page at this address".to_owned())
}
