//! Releases on the wire: `drover release create` and `drover releases`, with where each
//! release runs now and where it was deployed.

use std::collections::BTreeMap;

use drover_proto::v1 as proto;
use tonic::{Response, Status};

use super::{OperatorService, deploy_status, state_proto, store_status};
use crate::auth::Principal;
use crate::rollout::{DeployRequest, ReleaseChoice};
use crate::spec::{Gates, IMPLICIT, SpecFile};
use crate::store::{Deployment, Release, ReleaseDeployment};

impl OperatorService {
    pub(super) async fn create_release_as(
        &self,
        who: &Principal,
        r: proto::CreateReleaseRequest,
    ) -> Result<Response<proto::ReleaseInfo>, Status> {
        let file = SpecFile::parse(&r.spec_toml)
            .map_err(|e| Status::invalid_argument(format!("invalid spec: {e}")))?;
        if r.version.is_empty() {
            return Err(Status::invalid_argument(
                "no version given: pass --version TAG",
            ));
        }
        let req = DeployRequest {
            spec: file.base().clone(),
            environment: IMPLICIT.to_string(),
            gates: Gates::default(),
            release: ReleaseChoice::Version {
                version: r.version,
                image: None,
            },
            commit: (!r.commit_sha.is_empty() || r.commit_ms > 0)
                .then(|| (r.commit_sha, Some(r.commit_ms).filter(|ms| *ms > 0))),
            override_reason: None,
            requested_by: who.history_name(&r.requested_by),
            auth: r
                .registry_auth
                .filter(|a| !a.username.is_empty() || !a.password.is_empty()),
            at_ms: None,
            rerun_hooks: false,
        };
        let (release, created) = self
            .deployer
            .create_release(&req)
            .await
            .map_err(deploy_status)?;
        tracing::info!(release = %release.id, service = %release.service, tag = %release.tag, created, "release");
        let mut info = release_info(release, &[], &[]);
        info.created = created;
        Ok(Response::new(info))
    }

    pub(super) async fn list_releases_of(
        &self,
        r: proto::ListReleasesRequest,
    ) -> Result<Response<proto::ListReleasesResponse>, Status> {
        let store = self.deployer.store();
        let limit = if r.limit == 0 { 20 } else { r.limit.min(1000) };
        let releases = store
            .releases(&r.service, limit)
            .await
            .map_err(store_status)?;
        let ids: Vec<String> = releases.iter().map(|r| r.id.clone()).collect();
        let deployments = store
            .release_deployments(&ids)
            .await
            .map_err(store_status)?;
        let (running, active) = store
            .environment_states(&r.service)
            .await
            .map_err(store_status)?;
        let environments = environment_states(&running, &active);
        let releases = releases
            .into_iter()
            .map(|rel| release_info(rel, &deployments, &running))
            .collect();
        Ok(Response::new(proto::ListReleasesResponse {
            releases,
            environments,
        }))
    }
}

/// A release in wire form, with its deployments among `deployments` and the
/// environments whose newest success (`running`) is it.
fn release_info(
    r: Release,
    deployments: &[ReleaseDeployment],
    running: &[Deployment],
) -> proto::ReleaseInfo {
    proto::ReleaseInfo {
        runs_in: running
            .iter()
            .filter(|d| d.release_id == r.id)
            .map(|d| d.environment.clone())
            .collect(),
        deployments: deployments
            .iter()
            .filter(|d| d.release_id == r.id)
            .map(|d| proto::ReleaseDeploymentInfo {
                id: d.id.clone(),
                environment: d.environment.clone(),
                kind: d.kind.clone(),
                state: state_proto(d.state) as i32,
                created_ms: d.created_ms,
            })
            .collect(),
        id: r.id,
        service: r.service,
        tag: r.tag,
        image: r.image,
        digest: r.digest,
        commit_sha: r.commit_sha,
        commit_ms: r.commit_ms.unwrap_or(0),
        created_by: r.created_by,
        created_ms: r.created_ms,
        created: false,
    }
}

/// What each environment runs, and what moves it now.
fn environment_states(
    running: &[Deployment],
    active: &[Deployment],
) -> Vec<proto::EnvironmentState> {
    let mut by_env: BTreeMap<&str, proto::EnvironmentState> = BTreeMap::new();
    for d in running {
        by_env.insert(
            &d.environment,
            proto::EnvironmentState {
                environment: d.environment.clone(),
                release_id: d.release_id.clone(),
                version: d.version.clone(),
                pinned: d.pinned.clone(),
                deployment_id: d.id.clone(),
                since_ms: d.finished_ms.unwrap_or(d.created_ms),
                ..Default::default()
            },
        );
    }
    for d in active.iter().filter(|d| !d.state.is_terminal()) {
        let e = by_env
            .entry(&d.environment)
            .or_insert_with(|| proto::EnvironmentState {
                environment: d.environment.clone(),
                ..Default::default()
            });
        e.active_deployment_id = d.id.clone();
        e.active_state = state_proto(d.state) as i32;
    }
    by_env.into_values().collect()
}
