//! What a deploy or a rollback would record, checked against the live fleet. This is
//! the one code path behind [`Deployer::deploy`], [`Deployer::rollback`] and
//! [`Deployer::plan`]: a plan is exactly the deployment a deploy would have recorded.

use super::plan::plan_hosts;
use super::release::Chosen;
use super::{DeployError, DeployRequest, Deployer, RollbackRequest, new_id};
use crate::hub::AgentHub;
use crate::spec::ServiceSpec;
use crate::state::{Control, DeploymentKind, DeploymentState};
use crate::store::{Deployment, DeploymentHost, now_ms};

/// A deployment ready to be recorded, with its host rows.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The deployment row as it would be recorded.
    pub deployment: Deployment,
    /// Every target host's row: stage, batch, the version it runs now.
    pub hosts: Vec<DeploymentHost>,
    /// The release a deploy rolls out (to record with it when new); `None` for a
    /// rollback.
    pub(super) release: Option<Chosen>,
}

impl Deployer {
    /// Checks `req` (release, gates, secrets, targets, load balancers) and plans its
    /// hosts.
    pub(super) async fn prepare_deploy(
        &self,
        req: &DeployRequest,
    ) -> Result<Prepared, DeployError> {
        let spec = &req.spec;
        let chosen = self.choose_release(req).await?;
        let admission = self.check_gates(req, &chosen).await?;
        let version = chosen.release.tag.clone();
        self.check_secrets(spec, &req.environment).await?;
        let targets = self.targets(spec).await?;
        let id = new_id();
        let seed = canary_seed(&spec.service.name, &version);
        let hosts = plan_hosts(spec, &targets, &version, &self.shared.hub, &seed, true)?;
        let now = self.shared.clock.now();
        let scheduled_ms = req.at_ms.filter(|at| *at as i64 > now.as_millisecond());
        let windows_closed = !spec.schedule.windows.is_open(now);
        let state = if admission.awaiting_approval {
            DeploymentState::AwaitingApproval
        } else if scheduled_ms.is_some() || (windows_closed && req.override_reason.is_none()) {
            DeploymentState::Scheduled
        } else {
            DeploymentState::Pending
        };
        let deployment = Deployment {
            id,
            service: spec.service.name.clone(),
            environment: req.environment.clone(),
            release_id: chosen.release.id.clone(),
            gate_note: admission.note,
            kind: DeploymentKind::Deploy,
            version,
            image: chosen.image(),
            pinned: chosen.release.pinned().unwrap_or_default(),
            spec: spec.to_toml(),
            state,
            epoch: 1,
            requested_by: req.requested_by.clone(),
            created_ms: now_ms(),
            finished_ms: None,
            error: None,
            stage: 0,
            scheduled_ms,
            hold: None,
            control: Control::None,
            promoted: -1,
        };
        Ok(Prepared {
            deployment,
            hosts,
            release: Some(chosen),
        })
    }

    /// Finds the version to return to (the previous successful one, or the one asked
    /// for, which every target host must still keep) and plans its hosts.
    pub(super) async fn prepare_rollback(
        &self,
        req: &RollbackRequest,
    ) -> Result<Prepared, DeployError> {
        let service = req.service.as_str();
        let environment = req.environment.as_str();
        let history = self
            .shared
            .store
            .list_in(
                Some(service.to_string()),
                Some(environment.to_string()),
                200,
            )
            .await?;
        let mut succeeded = history
            .iter()
            .filter(|d| d.state == DeploymentState::Succeeded && !d.pinned.is_empty());
        let Some(current) = succeeded.next() else {
            return Err(DeployError::NothingToRollBack(format!(
                "service {service:?}{} has no successful deployment to roll back from; see `drover history --service {service}`",
                crate::store::in_environment(environment)
            )));
        };
        let spec = ServiceSpec::from_toml(&current.spec)?;
        let targets = self.targets(&spec).await?;
        let (version, image, pinned, release_id) = match &req.to_version {
            Some(to) => {
                let image = kept_everywhere(&self.shared.hub, &targets, service, to)?;
                // The digest is known when that version was deployed from this controller.
                let known = history
                    .iter()
                    .find(|d| d.version == *to && !d.pinned.is_empty());
                let pinned = known.map(|d| d.pinned.clone()).unwrap_or_default();
                let release_id = known.map(|d| d.release_id.clone()).unwrap_or_default();
                (
                    to.clone(),
                    known.map_or(image, |d| d.image.clone()),
                    pinned,
                    release_id,
                )
            }
            None => {
                let Some(previous) = succeeded.find(|d| d.pinned != current.pinned) else {
                    return Err(DeployError::NothingToRollBack(format!(
                        "service {service:?} has no earlier successful deployment with another version to return to; see `drover history --service {service}`"
                    )));
                };
                (
                    previous.version.clone(),
                    previous.image.clone(),
                    previous.pinned.clone(),
                    previous.release_id.clone(),
                )
            }
        };
        let id = new_id();
        let hosts = plan_hosts(&spec, &targets, &version, &self.shared.hub, &id, false)?;
        let deployment = Deployment {
            id,
            service: service.to_string(),
            environment: environment.to_string(),
            release_id,
            gate_note: None,
            kind: DeploymentKind::Rollback,
            version,
            image,
            pinned,
            spec: spec.to_toml(),
            state: DeploymentState::Pending,
            epoch: 1,
            requested_by: req.requested_by.clone(),
            created_ms: now_ms(),
            finished_ms: None,
            error: None,
            stage: 0,
            scheduled_ms: None,
            hold: None,
            control: Control::None,
            promoted: -1,
        };
        Ok(Prepared {
            deployment,
            hosts,
            release: None,
        })
    }
}

/// The order canaries are picked in depends on the service and version only, so a plan
/// names the canary hosts its deploy will use.
fn canary_seed(service: &str, version: &str) -> String {
    format!("{service}@{version}")
}

/// The image of the kept container of `service` at `version`, when every target host
/// keeps one (stopped, for rollback); otherwise a refusal naming what each host keeps.
fn kept_everywhere(
    hub: &AgentHub,
    targets: &[String],
    service: &str,
    version: &str,
) -> Result<String, DeployError> {
    let mut image = String::new();
    let mut running_it = Vec::new();
    let mut lacking = Vec::new();
    let mut common: Option<Vec<String>> = None;
    for host in targets {
        let state = hub
            .host(host)
            .and_then(|h| h.services.into_iter().find(|s| s.service == service));
        let running = state
            .as_ref()
            .map(|s| s.version.clone())
            .unwrap_or_default();
        let kept: Vec<(String, String)> = state
            .map(|s| {
                s.previous
                    .into_iter()
                    .map(|k| (k.version, k.image))
                    .collect()
            })
            .unwrap_or_default();
        let mut versions: Vec<String> = Vec::new();
        for (v, _) in &kept {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
        common = Some(match common {
            None => versions.clone(),
            Some(c) => c.into_iter().filter(|v| versions.contains(v)).collect(),
        });
        if running == version {
            running_it.push(host.clone());
        } else if let Some((_, i)) = kept.iter().find(|(v, _)| v == version) {
            image = i.clone();
        } else {
            let keeps = if versions.is_empty() {
                "nothing".to_string()
            } else {
                versions.join(", ")
            };
            lacking.push(format!("{host} keeps {keeps}"));
        }
    }
    let common = common.unwrap_or_default();
    let available = if common.is_empty() {
        "no version is kept on every target host".to_string()
    } else {
        format!("versions kept on every target host: {}", common.join(", "))
    };
    if !lacking.is_empty() {
        return Err(DeployError::NothingToRollBack(format!(
            "version {version} of {service} is not kept on every target host ({}); {available}; pick one of those with --to, or deploy {version} with `drover deploy --version {version}`",
            lacking.join("; ")
        )));
    }
    if !running_it.is_empty() {
        return Err(DeployError::NothingToRollBack(format!(
            "{} already run{} {service} {version}; a rollback restarts kept containers only: deploy {version} with `drover deploy --version {version}` to move the rest",
            running_it.join(", "),
            if running_it.len() == 1 { "s" } else { "" },
        )));
    }
    Ok(image)
}
