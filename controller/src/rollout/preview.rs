//! A plan: what a deploy or a rollback would do, from the same checks and the same host
//! planning as the real thing ([`super::prepare`]), with nothing recorded, no lock taken
//! and no command sent to any agent. It refuses what the deploy would refuse, and says
//! in addition what would hold it (a time asked for, closed deploy windows, manual
//! promotion gates) and which digest it would pin.

use drover_proto::v1 as proto;
use drover_shared::image::ImageRef;
use jiff::Timestamp;

use super::plan::stage_gates;
use super::prepare::Prepared;
use super::stages::ResolvedStage;
use super::{DeployError, DeployRequest, Deployer, RollbackRequest};
use crate::registry_api::{self, Lookup};
use crate::spec::ServiceSpec;
use crate::state::DeploymentKind;
use crate::store::{Deployment, DeploymentHost};

/// What to plan.
#[derive(Debug, Clone)]
pub enum PlanRequest {
    /// A deploy, as `drover deploy` would ask for it (boxed: it carries the spec).
    Deploy(Box<DeployRequest>),
    /// A rollback, as `drover rollback` would ask for it.
    Rollback(RollbackRequest),
}

/// How the digest a deployment would pin is known, or why it is not yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestLookup {
    /// The image reference names its digest.
    InReference,
    /// Recorded by the deployment that first rolled this version out (a rollback).
    FromHistory,
    /// The controller asked the registry, which pointed the tag at it just now.
    FromRegistry,
    /// Recorded with the release when it was made.
    FromRelease,
    /// A rollback to a version this controller never rolled out: no digest recorded.
    NotRecorded,
    /// Not known before the agents pull; why.
    AtPullTime(String),
}

/// A deployment as it would be recorded, and what it would wait for. Nothing of it exists.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The deployment row a deploy would record (its id is never used).
    pub deployment: Deployment,
    /// Every target host's row: stage, batch, the version it runs now.
    pub hosts: Vec<DeploymentHost>,
    /// Each stage's gates (cumulative host counts, bake, promotion).
    pub stages: Vec<ResolvedStage>,
    /// How `deployment.pinned` was found, or why it is empty.
    pub digest: DigestLookup,
    /// When it would start: `None` = at once.
    pub starts: Option<Timestamp>,
    /// Why it would not start at once (or at `starts`), in words.
    pub held_by: Option<String>,
    /// The spec's deploy windows, in words; empty = always open.
    pub windows: Vec<String>,
    /// The deploy would make its release (`deployment.release_id`), not find it.
    pub new_release: bool,
    /// Hosts hand over start-first (`rollout.order`): none leaves rotation.
    pub start_first: bool,
    /// The spec has no load balancer (`load_balancer.kind = "none"`): nothing is drained,
    /// and a batch's hosts stop serving while they swap.
    pub no_load_balancer: bool,
}

impl Plan {
    /// Most hosts in one batch: the most out of rotation at once (none, start-first).
    pub fn max_out_of_rotation(&self) -> usize {
        if self.start_first {
            return 0;
        }
        self.max_batch()
    }

    /// Most hosts in one batch.
    pub fn max_batch(&self) -> usize {
        let mut per_batch = std::collections::BTreeMap::<u32, usize>::new();
        for h in &self.hosts {
            *per_batch.entry(h.batch).or_default() += 1;
        }
        per_batch.into_values().max().unwrap_or(0)
    }
}

impl Deployer {
    /// What `req` would do, refused exactly as the deploy or rollback would be.
    pub async fn plan(&self, req: PlanRequest) -> Result<Plan, DeployError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(DeployError::ShuttingDown);
        }
        let (prepared, auth) = match &req {
            PlanRequest::Deploy(r) => (self.prepare_deploy(r).await?, r.auth.clone()),
            PlanRequest::Rollback(r) => (self.prepare_rollback(r).await?, None),
        };
        let Prepared {
            mut deployment,
            hosts,
            release,
        } = prepared;
        // The one refusal the deploy makes when recording: another holds the lock.
        self.shared
            .store
            .check_unlocked(&deployment.service, &deployment.environment)
            .await?;
        let spec = ServiceSpec::from_toml(&deployment.spec)?;
        let new_release = release.as_ref().is_some_and(|c| c.is_new);
        let digest = match release {
            Some(chosen) => chosen.digest,
            None => self.lookup_digest(&mut deployment, auth).await,
        };
        let now = self.shared.clock.now();
        let windows = &spec.schedule.windows;
        let asked = deployment
            .scheduled_ms
            .and_then(|ms| Timestamp::from_millisecond(ms as i64).ok());
        let from = asked.unwrap_or(now);
        let opens = windows.next_open(from);
        let approval = (deployment.state == crate::state::DeploymentState::AwaitingApproval)
            .then(|| {
                format!(
                    "a second person's approval: environment {} has approval = \"required\" (`drover approve ID`)",
                    deployment.environment
                )
            });
        let held_by = match (asked, opens) {
            (_, None) => Some("no deploy window opens within a year".to_string()),
            (Some(at), Some(open)) if open > at => {
                Some("asked for with --at, and a deploy window opens only then".to_string())
            }
            (Some(_), _) => Some("asked for with --at".to_string()),
            (None, Some(open)) if open > now => {
                Some("when a deploy window opens; they are closed now".to_string())
            }
            (None, _) => None,
        };
        let held_by = match (approval, held_by) {
            (Some(a), Some(w)) => Some(format!("{a}; then {w}")),
            (a, w) => a.or(w),
        };
        Ok(Plan {
            stages: stage_gates(&spec, deployment.kind, hosts.len()),
            starts: opens.filter(|at| *at > now),
            held_by,
            windows: windows.describe(),
            digest,
            deployment,
            hosts,
            new_release,
            start_first: spec.rollout.order == crate::spec::Order::StartFirst,
            no_load_balancer: spec.load_balancer.is_none(),
        })
    }

    /// Fills `d.pinned` from the registry when the controller can ask it.
    async fn lookup_digest(
        &self,
        d: &mut Deployment,
        auth: Option<proto::RegistryAuth>,
    ) -> DigestLookup {
        if !d.pinned.is_empty() {
            return match d.kind {
                DeploymentKind::Deploy => DigestLookup::InReference,
                DeploymentKind::Rollback => DigestLookup::FromHistory,
            };
        }
        if d.kind == DeploymentKind::Rollback {
            return DigestLookup::NotRecorded;
        }
        let Ok(image) = ImageRef::parse(&d.image) else {
            return DigestLookup::AtPullTime(format!("{} is not an image reference", d.image));
        };
        let auth = auth.or_else(|| {
            self.shared
                .settings
                .registry_credentials
                .for_image(&d.image)
        });
        match registry_api::resolve(&image, auth.as_ref()).await {
            Lookup::Digest(digest) => {
                d.pinned = image.pinned(&digest);
                DigestLookup::FromRegistry
            }
            Lookup::Unknown(why) | Lookup::Missing(why) | Lookup::Refused(why) => {
                DigestLookup::AtPullTime(why)
            }
        }
    }
}
