//! The actions: each checks the session's CSRF token and its token once more, then calls
//! the operator service's handler with the session's principal after the same role check
//! as the gRPC gate, so a web action is recorded in history under the token's name and
//! meets the same gates as the CLI's. Each answers `303` to the deployment it concerns.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Redirect;
use drover_proto::v1 as proto;
use drover_proto::v1::operator_server::Operator;
use serde::Deserialize;
use tracing::info;

use super::gate::{Control, confirmed};
use super::signin::Signed;
use super::{Web, WebError, request};
use crate::auth::Principal;
use crate::spec::SpecFile;

/// The fields an action form may send.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: String,
    /// The environment to deploy to or roll back.
    #[serde(default)]
    environment: String,
    /// The environment's name, typed to confirm a deploy into a guarded one.
    #[serde(default)]
    confirm: String,
}

fn to_deployment(id: &str) -> Redirect {
    Redirect::to(&format!("/deployments/{id}"))
}

/// `POST /deployments/{id}/{action}`: promote, pause, resume, abort, cancel, approve
/// (`drover promote ID`, ...), or redeploy what it deployed.
pub async fn control(
    State(web): State<Web>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, WebError> {
    signed.check_post(&web, &f.csrf).await?;
    let who = &signed.0.principal;
    if action == "redeploy" {
        return redeploy(&web, who, &id).await;
    }
    let control = Control::parse(&action)
        .ok_or_else(|| WebError::NotFound(format!("no action {action:?} on a deployment")))?;
    let req = proto::ControlRequest {
        id: id.clone(),
        action: control.proto() as i32,
        requested_by: who.name.clone(),
    };
    web.ops_as(who, "Control")?
        .control(request(who, req))
        .await?;
    info!(who = %who.name, deployment = %id, action = control.as_str(), "web action");
    Ok(to_deployment(&id))
}

/// `POST /releases/{id}/deploy`: the release to the form's environment
/// (`drover deploy SPEC --release ID --env ENV`), with the spec of the service's newest
/// deployment.
pub async fn deploy(
    State(web): State<Web>,
    signed: Signed,
    Path(release_id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, WebError> {
    signed.check_post(&web, &f.csrf).await?;
    let who = &signed.0.principal;
    let ops = web.ops_as(who, "Deploy")?;
    let release = web.store.release(&release_id).await?;
    let spec = newest_spec(&web, &release.service).await?;
    check_confirmation(&spec, &f.environment, &f.confirm)?;
    let req = proto::DeployRequest {
        spec_toml: spec,
        release_id: release_id.clone(),
        environment: f.environment.clone(),
        requested_by: who.name.clone(),
        ..Default::default()
    };
    started(who, ops.deploy(request(who, req)).await?.into_inner())
}

/// Redeploys what deployment `id` deployed, into the same environment with the same spec.
async fn redeploy(web: &Web, who: &Principal, id: &str) -> Result<Redirect, WebError> {
    let ops = web.ops_as(who, "Deploy")?;
    let d = web.store.deployment(id).await?;
    let mut req = proto::DeployRequest {
        spec_toml: d.spec,
        environment: d.environment,
        requested_by: who.name.clone(),
        ..Default::default()
    };
    if d.release_id.is_empty() {
        req.version = d.version;
    } else {
        req.release_id = d.release_id;
    }
    started(who, ops.deploy(request(who, req)).await?.into_inner())
}

/// `POST /services/{service}/rollback`: `drover rollback SERVICE --env ENV`.
pub async fn rollback(
    State(web): State<Web>,
    signed: Signed,
    Path(service): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Redirect, WebError> {
    signed.check_post(&web, &f.csrf).await?;
    let who = &signed.0.principal;
    let req = proto::RollbackRequest {
        service,
        requested_by: who.name.clone(),
        to_version: String::new(),
        environment: f.environment,
    };
    let r = web
        .ops_as(who, "Rollback")?
        .rollback(request(who, req))
        .await?;
    started(who, r.into_inner())
}

fn started(who: &Principal, r: proto::DeployResponse) -> Result<Redirect, WebError> {
    let d = r.deployment.ok_or_else(|| {
        WebError::Api(tonic::Status::internal(
            "the deploy answered without a deployment",
        ))
    })?;
    info!(who = %who.name, deployment = %d.id, service = %d.service, environment = %d.environment, "web deploy");
    Ok(to_deployment(&d.id))
}

/// The spec of `service`'s newest deployment: the web deploys what the CLI last sent.
pub async fn newest_spec(web: &Web, service: &str) -> Result<String, WebError> {
    web.store
        .list(Some(service.to_owned()), 1)
        .await?
        .into_iter()
        .next()
        .map(|d| d.spec)
        .ok_or_else(|| {
            WebError::BadRequest(format!(
                "{service} has never been deployed, so the controller has no spec for it: deploy it once with `drover deploy SPEC`"
            ))
        })
}

/// Refuses a deploy into a guarded environment whose name was not typed.
fn check_confirmation(spec: &str, environment: &str, typed: &str) -> Result<(), WebError> {
    let file = SpecFile::parse(spec)
        .map_err(|e| WebError::BadRequest(format!("the stored spec does not parse: {e}")))?;
    let env = file
        .environment(Some(environment))
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    if confirmed(&env, typed) {
        Ok(())
    } else {
        Err(WebError::BadRequest(format!(
            "a deploy to {environment} must be confirmed: type the environment's name ({environment}) in the confirmation field"
        )))
    }
}
