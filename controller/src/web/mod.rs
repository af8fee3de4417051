//! The web interface of `drover serve`: server-rendered pages over HTTPS on their own
//! listener (`--web-listen`), a client of the same operator model as the CLI. Every
//! action goes through the operator service's handlers with the signed-in token's
//! [`Principal`](crate::auth::Principal), after the same role check
//! ([`crate::auth::requirement`]), so roles, gates and history are exactly the CLI's.
//!
//! # DOM contract (stable: the browser tests rely on it)
//!
//! URLs:
//! - `GET /sign-in`, `POST /sign-in` (form field `token`), `POST /sign-out`
//! - `GET /` overview, `GET /hosts?label=k%3Dv&page=N`, `GET /deployments/{id}`,
//!   `GET /deployments/{id}/events` (server-sent events), `GET /releases?service=S`,
//!   `GET /history?service=&environment=&outcome=`, `GET /history/diff?a=ID&b=ID`,
//!   `GET /schedules`, `GET /delivery`
//! - `POST /deployments/{id}/{promote|pause|resume|abort|cancel|approve|redeploy}`,
//!   `POST /releases/{id}/deploy`, `POST /services/{service}/rollback`; each answers
//!   `303 See Other` to `/deployments/{id}` of the deployment it acted on or started.
//!   A signed-out request is sent to `/sign-in` (`303`); a POST without a valid CSRF
//!   token is refused with `403`; a POST by a role too low for it is refused with `403`.
//!
//! Elements:
//! - sign-in form `form#sign-in` with `input[name=token]`; sign-out `button#sign-out`
//!   (in the header of every page once signed in)
//! - each page's root `main[data-page=overview|hosts|deployment|releases|history|schedules|delivery]`
//! - the connection banner `#conn[data-state=live|lost|ended]` (on every page;
//!   "connection lost, reconnecting" while lost; `ended` on the page of a deployment
//!   that has ended, whose live part `#live[data-ended]` will not change again)
//! - the equivalent CLI command of each page in `code.cli`
//! - deployment page: `#deployment[data-state=...]` (states as the CLI prints them:
//!   pending, preparing, rolling, rolling_back, paused, succeeded, failed, rolled_back,
//!   scheduled, baking, awaiting_promotion, cancelled, skipped, held, awaiting_approval),
//!   one cell per host `[data-host=NAME][data-phase=...]` (phases as the CLI prints
//!   them: pending, prepared, draining, swapping, enabling, done, failed, rolling_back,
//!   rolled_back, left_drained), updated in place by live updates without a reload
//! - action buttons `button[data-action=promote|pause|resume|abort|rollback|deploy|approve|redeploy|cancel]`,
//!   shown only to a role that may use them; an action that the state does not allow
//!   is shown disabled with its reason in an element `[data-reason]` next to it (once,
//!   after the buttons, when one reason disables them all, e.g. an ended deployment)
//! - the deploy form on the releases page `form[data-deploy]` (one per release) with
//!   `select[name=environment]` and the confirmation `input[name=confirm]` (required,
//!   the environment's name typed, for an environment with an approval gate or a
//!   `production` label; ignored otherwise)
//! - the CSRF token in `input[name=csrf]` of every form and in `meta[name=csrf]`
//! - after a deploy is started the browser lands on `/deployments/{id}`
//! - an action that fails answers with a page (status 4xx or 5xx) whose `#error` says
//!   why (the operator API's message, e.g. a gate that refuses the deploy)
//! - the releases page: a roll-back button per environment (`data-action=rollback`,
//!   `drover rollback SERVICE --env ENV`), an approve button on a deployment that waits
//!   for approval; the history page: a redeploy button on each succeeded deployment

mod actions;
mod assets;
mod error;
mod gate;
mod layout;
mod listen;
mod live;
mod pages;
pub mod session;
mod signin;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use drover_proto::v1::operator_server::Operator;
use tokio::net::TcpListener;

use crate::auth::{Authenticator, Principal, authorize, requirement};
use crate::hub::AgentHub;
use crate::operator::OperatorService;
use crate::store::Store;

pub use error::WebError;
pub use listen::{TlsSource, WebTlsError, serve_router, web_tls_config};
pub use session::{SessionKey, Sessions};

/// What the pages read and act through. Cheap to clone: handles only.
#[derive(Clone)]
pub struct Web {
    /// The operator model: every action and most reads go through its handlers, as the
    /// CLI's requests do.
    ops: Arc<OperatorService>,
    /// The live inventory, for the hosts and overview pages.
    hub: AgentHub,
    /// The history, for the overview, history and schedules pages.
    store: Store,
    /// Checks sign-in tokens, and a session's token again.
    auth: Authenticator,
    /// Signed-in browsers.
    sessions: Sessions,
    /// Ticks on every change of any deployment (the same signal `Watch` follows).
    changed: tokio::sync::watch::Receiver<u64>,
}

impl Web {
    /// The web interface over the operator model.
    pub fn new(
        ops: Arc<OperatorService>,
        hub: AgentHub,
        store: Store,
        auth: Authenticator,
        sessions: Sessions,
        changed: tokio::sync::watch::Receiver<u64>,
    ) -> Self {
        Self {
            ops,
            hub,
            store,
            auth,
            sessions,
            changed,
        }
    }

    /// The operator service, for a call `method` by `who` after the same role check the
    /// gRPC gate makes.
    fn ops_as(&self, who: &Principal, method: &str) -> Result<&OperatorService, WebError> {
        authorize(who, requirement(method)).map_err(|r| WebError::Forbidden(r.message))?;
        Ok(&self.ops)
    }

    /// The pages and actions.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(pages::overview::page))
            .route("/hosts", get(pages::hosts::page))
            .route("/deployments/{id}", get(pages::deployment::page))
            .route("/deployments/{id}/events", get(live::deployment))
            .route("/deployments/{id}/{action}", post(actions::control))
            .route("/releases", get(pages::releases::page))
            .route("/releases/{id}/deploy", post(actions::deploy))
            .route("/services/{service}/rollback", post(actions::rollback))
            .route("/history", get(pages::history::page))
            .route("/history/diff", get(pages::history::diff))
            .route("/schedules", get(pages::schedules::page))
            .route("/delivery", get(pages::delivery::page))
            .route("/events", get(live::changes))
            .route("/sign-in", get(signin::form).post(signin::sign_in))
            .route("/sign-out", post(signin::sign_out))
            .route("/assets/{name}", get(assets::asset))
            .fallback(error::not_found)
            .layer(axum::middleware::from_fn(layout::security_headers))
            .with_state(self)
    }
}

/// Serves the web interface on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    web: Web,
    gate: crate::leader::gate::GateLayer,
    shutdown: impl Future<Output = ()>,
) {
    serve_router(listener, tls, web.router().layer(gate), shutdown).await
}

/// A request to the operator service carrying `who`, as the gRPC gate leaves it.
fn request<T>(who: &Principal, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.extensions_mut().insert(who.clone());
    r
}

/// The deployment `id` as the operator API gives it.
async fn deployment_info(
    web: &Web,
    who: &Principal,
    id: &str,
) -> Result<drover_proto::v1::DeploymentInfo, WebError> {
    let req = drover_proto::v1::GetDeploymentRequest { id: id.to_owned() };
    Ok(web
        .ops_as(who, "GetDeployment")?
        .get_deployment(request(who, req))
        .await?
        .into_inner())
}
