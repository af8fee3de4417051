//! The wire side of deploys, rollbacks and plans: requests into the engine's types, a
//! [`Plan`] into its `PlanResponse`.

use drover_proto::v1 as proto;
use tonic::Status;

use super::host_row;
use crate::auth::Principal;
use crate::rollout::{self, DigestLookup, Plan, PlanRequest, ReleaseChoice};
use crate::spec::SpecFile;
use drover_shared::tls::Role;

/// A deploy request as the engine takes it; the spec parsed once, here, and resolved
/// for the environment asked for. An override of the gates needs an admin and a reason.
pub(super) fn deploy_request(
    who: &Principal,
    r: proto::DeployRequest,
) -> Result<rollout::DeployRequest, Status> {
    let file = SpecFile::parse(&r.spec_toml)
        .map_err(|e| Status::invalid_argument(format!("invalid spec: {e}")))?;
    let env = file
        .environment(Some(r.environment.as_str()))
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let given = [
        !r.version.is_empty() || !r.image.is_empty(),
        !r.release_id.is_empty(),
        !r.from_environment.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(Status::invalid_argument(
            "say what to deploy once: --version (or --image), --release or --from",
        ));
    }
    let release = if !r.release_id.is_empty() {
        ReleaseChoice::Id(r.release_id)
    } else if !r.from_environment.is_empty() {
        if r.from_environment == env.name || !file.names().any(|n| n == r.from_environment) {
            return Err(Status::invalid_argument(format!(
                "--from {:?}: {}; name another environment of the spec ({})",
                r.from_environment,
                if r.from_environment == env.name {
                    "that is the environment being deployed to"
                } else {
                    "not an environment of this spec"
                },
                file.names().collect::<Vec<_>>().join(", ")
            )));
        }
        ReleaseChoice::From(r.from_environment)
    } else {
        ReleaseChoice::Version {
            version: r.version,
            image: Some(r.image).filter(|i| !i.is_empty()),
        }
    };
    let override_reason = if r.override_gates {
        if who.role < Role::Admin {
            return Err(Status::permission_denied(format!(
                "{who} may not override gates: only an admin can, with --override --reason"
            )));
        }
        let reason = r.override_reason.trim().to_string();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "--override needs --reason \"...\": history keeps why the gates were opened",
            ));
        }
        Some(reason)
    } else {
        None
    };
    let commit = (!r.commit_sha.is_empty() || r.commit_ms > 0)
        .then(|| (r.commit_sha, Some(r.commit_ms).filter(|ms| *ms > 0)));
    Ok(rollout::DeployRequest {
        spec: env.spec,
        environment: env.name,
        gates: env.gates,
        release,
        commit,
        override_reason,
        requested_by: who.history_name(&r.requested_by),
        auth: r
            .registry_auth
            .filter(|a| !a.username.is_empty() || !a.password.is_empty()),
        at_ms: Some(r.at_ms).filter(|at| *at > 0),
        rerun_hooks: r.rerun_hooks,
    })
}

/// A rollback request as the engine takes it.
pub(super) fn rollback_request(
    who: &Principal,
    r: proto::RollbackRequest,
) -> rollout::RollbackRequest {
    rollout::RollbackRequest {
        service: r.service,
        environment: r.environment,
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
    let (start_first, max_batch) = (p.start_first, p.max_batch() as u32);
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
        DigestLookup::FromRelease => "recorded with the release when it was made".into(),
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
        start_first,
        max_batch,
        no_load_balancer: p.no_load_balancer,
        starts_ms: p.starts.map_or(0, |t| t.as_millisecond().max(0) as u64),
        held_by: p.held_by.unwrap_or_default(),
        windows: p.windows,
        environment: d.environment,
        release_id: if p.new_release {
            format!("new: {} (made by the deploy)", d.release_id)
        } else {
            d.release_id
        },
        gate_note: d.gate_note.unwrap_or_default(),
    }
}
