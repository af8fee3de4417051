//! The wire side of deploys, rollbacks and plans: requests into the engine's types, a
//! [`Plan`] into its `PlanResponse`.

use drover_proto::v1 as proto;
use tonic::Status;

use super::host_row;
use crate::auth::Principal;
use crate::rollout::{self, DigestLookup, Plan, PlanRequest};
use crate::spec::ServiceSpec;

/// A deploy request as the engine takes it; the spec parsed once, here.
pub(super) fn deploy_request(
    who: &Principal,
    r: proto::DeployRequest,
) -> Result<rollout::DeployRequest, Status> {
    let spec = ServiceSpec::from_toml(&r.spec_toml)
        .map_err(|e| Status::invalid_argument(format!("invalid spec: {e}")))?;
    Ok(rollout::DeployRequest {
        spec,
        version: r.version,
        image: Some(r.image).filter(|i| !i.is_empty()),
        requested_by: who.history_name(&r.requested_by),
        auth: r
            .registry_auth
            .filter(|a| !a.username.is_empty() || !a.password.is_empty()),
        at_ms: Some(r.at_ms).filter(|at| *at > 0),
    })
}

/// A rollback request as the engine takes it.
pub(super) fn rollback_request(
    who: &Principal,
    r: proto::RollbackRequest,
) -> rollout::RollbackRequest {
    rollout::RollbackRequest {
        service: r.service,
        to_version: Some(r.to_version).filter(|v| !v.is_empty()),
        requested_by: who.history_name(&r.requested_by),
    }
}

/// What to plan.
pub(super) fn plan_request(who: &Principal, r: proto::PlanRequest) -> Result<PlanRequest, Status> {
    use proto::plan_request::Request;
    match r.request {
        Some(Request::Deploy(d)) => Ok(PlanRequest::Deploy(Box::new(deploy_request(who, d)?))),
        Some(Request::Rollback(b)) => Ok(PlanRequest::Rollback(rollback_request(who, b))),
        None => Err(Status::invalid_argument(
            "nothing to plan: send a deploy or a rollback request",
        )),
    }
}

/// A plan in wire form.
pub(super) fn plan_response(p: Plan) -> proto::PlanResponse {
    let max_out = p.max_out_of_rotation() as u32;
    let mut done = 0;
    let stages = p
        .stages
        .iter()
        .map(|s| {
            let hosts = s.hosts.saturating_sub(done) as u32;
            done = s.hosts;
            proto::PlanStage {
                hosts,
                bake_ms: s.bake.as_millis() as u64,
                manual: s.promotion == rollout::stages::Promotion::Manual,
            }
        })
        .collect();
    let digest_note = match &p.digest {
        DigestLookup::InReference => "named by the image reference".to_string(),
        DigestLookup::FromHistory => {
            "recorded when this version was rolled out; the hosts keep its containers".into()
        }
        DigestLookup::NotRecorded => {
            "not recorded: this controller never rolled this version out; the hosts keep its containers".into()
        }
        DigestLookup::FromRegistry => "the registry's answer for the tag, just now".into(),
        DigestLookup::AtPullTime(why) => format!("resolved at pull time: {why}"),
    };
    let d = p.deployment;
    proto::PlanResponse {
        service: d.service,
        kind: d.kind.as_str().to_string(),
        pulls: d.kind == crate::state::DeploymentKind::Deploy,
        version: d.version,
        image: d.image,
        pinned: d.pinned,
        digest_note,
        hosts: p.hosts.into_iter().map(host_row).collect(),
        stages,
        max_out_of_rotation: max_out,
        starts_ms: p.starts.map_or(0, |t| t.as_millisecond().max(0) as u64),
        held_by: p.held_by.unwrap_or_default(),
        windows: p.windows,
    }
}
