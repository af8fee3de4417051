//! Fleet rollouts: validating a deploy against the live fleet, recording it, and driving
//! it batch by batch (see [`run`]); or, for a plan, saying what it would do and stopping
//! before the recording. [`Deployer`] is the handle the operator API uses; it
//! owns every rollout task and resumes unfinished deployments when the controller starts.

mod actions;
mod admit;
mod bake;
mod batch;
mod canary;
mod control;
mod drive;
mod flight;
mod gates;
mod handover;
mod hooks;
pub mod machine;
mod plan;
mod prepare;
mod preview;
mod release;
mod schedule_wait;
mod smoke;
pub mod stages;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as proto;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::hub::AgentHub;
use crate::lb::{LbError, LoadBalancer, RuntimeAddr};
use crate::metrics::Metrics;
use crate::registry_auth::RegistryCredentials;
use crate::schedule::SharedClock;
use crate::secrets::{SecretsError, Vault};
use crate::slo::SloMonitor;
use crate::spec::{Gates, ServiceSpec, SpecError};
use crate::store::{Deployment, DeploymentHost, Fence, Store, StoreError};

pub use plan::batches;
pub use preview::{DigestLookup, Plan, PlanRequest};

/// Tunables of the rollout engine.
#[derive(Debug, Clone)]
pub struct DeployerSettings {
    /// How long a host whose agent vanished mid-step may take to come back before the
    /// step counts as failed. A swap or undo adds the spec's readiness deadline and stop
    /// timeout: an agent restarted mid-swap reconciles it before it reports.
    pub reconnect_grace: Duration,
    /// Bound on each HAProxy runtime API command.
    pub lb_command_timeout: Duration,
    /// Credentials the controller holds, for deployments that carry none.
    pub registry_credentials: RegistryCredentials,
    /// A replica's claim to lead (on PostgreSQL): load balancer changes are refused
    /// while it does not hold. `None` for a single controller.
    pub fence: Option<Arc<Fence>>,
}

impl Default for DeployerSettings {
    fn default() -> Self {
        Self {
            reconnect_grace: Duration::from_secs(10),
            lb_command_timeout: Duration::from_secs(5),
            registry_credentials: RegistryCredentials::default(),
            fence: None,
        }
    }
}

/// A deploy as asked for by an operator.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    /// The validated spec, as it applies in `environment`.
    pub spec: ServiceSpec,
    /// The environment deployed to (`""`: the implicit one of a spec without any).
    pub environment: String,
    /// The environment's gates.
    pub gates: Gates,
    /// What to deploy.
    pub release: ReleaseChoice,
    /// Commit SHA and time (Unix ms) of a release made by this deploy.
    pub commit: Option<(String, Option<u64>)>,
    /// An admin's reason for opening the environment's gates (checked by the caller).
    pub override_reason: Option<String>,
    /// Who asks.
    pub requested_by: String,
    /// Registry credentials for this deployment's pulls; never stored.
    pub auth: Option<proto::RegistryAuth>,
    /// Start time (Unix ms) for a scheduled deploy; `None` = now.
    pub at_ms: Option<u64>,
    /// Run the `before_rollout` hooks even where they already ran for the digest.
    pub rerun_hooks: bool,
}

/// What a deploy rolls out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseChoice {
    /// A version (tag) of the spec's repository, or a full image reference: its
    /// release is found, or made with the deployment.
    Version {
        /// The tag (empty with a full reference).
        version: String,
        /// A full image reference overriding `spec.service.image:version`.
        image: Option<String>,
    },
    /// A recorded release, by id.
    Id(String),
    /// The release that last succeeded in this environment.
    From(String),
}

/// A rollback as asked for by an operator.
#[derive(Debug, Clone)]
pub struct RollbackRequest {
    /// The service to roll back.
    pub service: String,
    /// Its environment (`""`: the implicit one).
    pub environment: String,
    /// A version every target host keeps; `None` = the previous successful version.
    pub to_version: Option<String>,
    /// Who asks.
    pub requested_by: String,
}

/// Why a deploy was refused or could not be started. Nothing was touched.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The image reference or version is unusable, or the registry has no such tag.
    #[error("{0}")]
    Image(String),
    /// The release named does not exist, is of another service, or there is no
    /// success to promote from.
    #[error("{0}")]
    Release(String),
    /// A gate of the environment holds the deploy; what would open it.
    #[error("{0}")]
    Gate(String),
    /// The selector matches no connected host, or a matching host is not connected.
    #[error("{0}")]
    Targets(String),
    /// A load balancer refused the backend or a server name.
    #[error(transparent)]
    LoadBalancer(#[from] LbError),
    /// The store refused (including: another deployment holds the service's lock).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No earlier successful deployment to roll back to.
    #[error("{0}")]
    NothingToRollBack(String),
    /// The controller is shutting down.
    #[error("the controller is shutting down; retry once it is back")]
    ShuttingDown,
    /// An operator action that does not apply to the deployment's state.
    #[error("{0}")]
    Control(String),
    /// Secrets the spec names are not set for the service.
    #[error("{0}")]
    MissingSecrets(String),
    /// The secrets could not be checked.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// What an operator can ask of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Continue past the current manual gate.
    Promote,
    /// Stop at the next safe point.
    Pause,
    /// Continue a paused deployment.
    Resume,
    /// Stop and return every changed host to its previous version.
    Abort,
    /// Cancel a deployment that has not started.
    Cancel,
    /// Approve a deployment waiting for a second person.
    Approve,
}

pub(crate) struct Shared {
    pub store: Store,
    pub hub: AgentHub,
    pub settings: DeployerSettings,
    /// Bumped on every recorded change, so watchers re-read.
    pub changed: watch::Sender<u64>,
    pub shutdown: CancellationToken,
    pub tasks: TaskTracker,
    pub metrics: Arc<Metrics>,
    /// Wall-clock time for schedules and windows; injectable for tests.
    pub clock: SharedClock,
    /// Service secrets, opened at swap time.
    pub vault: Vault,
    /// Error budgets: sampled for environments with an `slo`, read by the deploy gate.
    pub slo: SloMonitor,
}

impl Shared {
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Handle to the rollout engine; cheap to clone.
#[derive(Clone)]
pub struct Deployer {
    shared: Arc<Shared>,
}

impl Deployer {
    /// An engine over `store` and `hub`.
    pub fn new(
        store: Store,
        hub: AgentHub,
        settings: DeployerSettings,
        metrics: Arc<Metrics>,
        clock: SharedClock,
        vault: Vault,
        slo: SloMonitor,
    ) -> Self {
        let (changed, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                store,
                hub,
                settings,
                changed,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                metrics,
                clock,
                vault,
                slo,
            }),
        }
    }

    /// The store behind the engine (for read-only queries).
    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// A host left the fleet: it leaves the metrics too.
    pub fn forget_host(&self, host: &str) {
        self.shared.metrics.forget_host(host);
    }

    /// Completes once the controller starts shutting down.
    pub async fn shutting_down(&self) {
        self.shared.shutdown.cancelled().await;
    }

    /// Changes to any deployment, as a counter that moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }

    /// Validates `req` against the live fleet, records the deployment and starts it.
    pub async fn deploy(&self, req: DeployRequest) -> Result<Deployment, DeployError> {
        let p = self.prepare_deploy(&req).await?;
        if req.rerun_hooks {
            // Written first: a deployment is never resumed without its request.
            self.shared.store.set_rerun_hooks(&p.deployment.id).await?;
        }
        let release = p.release.filter(|c| c.is_new).map(|c| c.release);
        let slo = req.gates.slo.map(|s| (&req.spec, s));
        self.start_with(p.deployment, p.hosts, release, req.auth, slo)
            .await
    }

    /// Rolls a service back to the version of its previous successful deployment, or to
    /// the version asked for, which every target host keeps: no pull.
    pub async fn rollback(&self, req: RollbackRequest) -> Result<Deployment, DeployError> {
        let p = self.prepare_rollback(&req).await?;
        self.start(p.deployment, p.hosts, None, None).await
    }

    async fn start(
        &self,
        d: Deployment,
        hosts: Vec<DeploymentHost>,
        release: Option<crate::store::Release>,
        auth: Option<proto::RegistryAuth>,
    ) -> Result<Deployment, DeployError> {
        self.start_with(d, hosts, release, auth, None).await
    }

    /// [`Deployer::start`], then starts sampling the error budget `slo` of the
    /// deployment's environment when it has one.
    async fn start_with(
        &self,
        d: Deployment,
        hosts: Vec<DeploymentHost>,
        release: Option<crate::store::Release>,
        auth: Option<proto::RegistryAuth>,
        slo: Option<(&ServiceSpec, crate::slo::SloSpec)>,
    ) -> Result<Deployment, DeployError> {
        if self.shared.shutdown.is_cancelled() {
            return Err(DeployError::ShuttingDown);
        }
        self.shared
            .store
            .create_with_release(d.clone(), hosts, release)
            .await?;
        let store = &self.shared.store;
        let release = if d.release_id.is_empty() {
            String::new()
        } else {
            format!(" (release {})", d.release_id)
        };
        store
            .event(
                &d.id,
                "",
                &format!(
                    "{} of {} {}{release}{} requested by {}",
                    d.kind,
                    d.service,
                    d.version,
                    crate::store::in_environment(&d.environment),
                    d.requested_by
                ),
            )
            .await?;
        if let Some(note) = &d.gate_note {
            store.event(&d.id, "", note).await?;
        }
        if d.state == crate::state::DeploymentState::AwaitingApproval {
            store
                .event(
                    &d.id,
                    "",
                    &format!(
                        "waiting for approval: environment {} requires a second person with the deployer role to run `drover approve {}`",
                        d.environment, d.id
                    ),
                )
                .await?;
        }
        info!(deployment = %d.id, service = %d.service, version = %d.version, "deployment recorded");
        if let Some((spec, objective)) = slo
            && let Some(lb) = &spec.load_balancer
        {
            match crate::slo::SloTarget::new(&d.service, &d.environment, lb, objective) {
                Ok(target) => self.shared.slo.watch(target).await?,
                Err(e) => tracing::warn!(error = %e, "the error budget cannot be sampled"),
            }
        }
        self.spawn(d.clone(), auth);
        Ok(d)
    }

    fn spawn(&self, d: Deployment, auth: Option<proto::RegistryAuth>) {
        let shared = self.shared.clone();
        let span = info_span!("deployment", deployment = %d.id, service = %d.service);
        self.shared.tasks.spawn(
            async move {
                let id = d.id.clone();
                match drive::run(shared.clone(), d, auth).await {
                    Ok(()) => {}
                    Err(e @ StoreError::NotLeader { .. }) => {
                        warn!(deployment = %id, error = %e, "rollout stopped: this controller is no longer the leader, so its write was refused");
                    }
                    Err(e) => {
                        error!(deployment = %id, error = %e, "deployment bookkeeping failed; it will resume on the next start");
                    }
                }
                shared.notify();
            }
            .instrument(span),
        );
    }

    /// Resumes every deployment a previous controller left unfinished, under a new epoch.
    pub async fn resume(&self) -> Result<usize, DeployError> {
        let unfinished = self.shared.store.unfinished().await?;
        let n = unfinished.len();
        for mut d in unfinished {
            d.epoch = self.shared.store.bump_epoch(&d.id).await?;
            self.shared
                .store
                .event(
                    &d.id,
                    "",
                    &format!("controller restarted: resuming under epoch {}", d.epoch),
                )
                .await?;
            info!(deployment = %d.id, epoch = d.epoch, state = %d.state, "resuming deployment");
            self.spawn(d, None);
        }
        Ok(n)
    }

    /// After this replica lost the lease: the fence already refuses every write,
    /// command and load balancer change, so rollouts are left to run into it for
    /// `grace` (each ends at its first refused step, which the log shows), then the
    /// rest are stopped as by [`Deployer::shutdown`].
    pub async fn fenced_out(&self, grace: Duration) {
        self.shared.tasks.close();
        let _ = tokio::time::timeout(grace, self.shared.tasks.wait()).await;
        self.shutdown(grace).await;
    }

    /// Stops every rollout at its next step boundary (state stays recorded for resume)
    /// and waits for them, up to `deadline`.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(deadline, self.shared.tasks.wait())
            .await
            .is_err()
        {
            error!(
                "rollouts did not stop within {}; they will resume on the next start",
                drover_shared::duration::human(deadline)
            );
        }
    }
}

/// The spec's load balancer, if it has one.
pub(crate) fn load_balancer(
    spec: &ServiceSpec,
    settings: &DeployerSettings,
) -> Result<Option<LoadBalancer>, LbError> {
    let Some(lb) = &spec.load_balancer else {
        return Ok(None);
    };
    let addrs = lb
        .runtime
        .iter()
        .map(|a| a.parse::<RuntimeAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        LoadBalancer::new(addrs, lb.backend.clone(), settings.lb_command_timeout)
            .fenced(settings.fence.clone()),
    ))
}

fn new_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("d-{}", &u[..12])
}
