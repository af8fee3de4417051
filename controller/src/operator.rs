//! The `Operator` gRPC service: the API behind the `drover` CLI. Domain errors are mapped
//! to `tonic::Status` here and only here, with messages an operator can act on; domain
//! records are converted to their wire form here too.
//!
//! Every request has been authenticated and its role checked before it gets here (see
//! [`crate::auth::guard`]); handlers read the caller from [`Principal::of`] and record
//! that name in history. The security RPCs (hosts, tokens, secrets) are in
//! [`admin`], container logs in [`logs`], error budgets in [`slo`], delivery metrics in
//! [`dora`].

mod admin;
mod dora;
mod logs;
mod plan;
mod releases;
mod slo;

use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_proto::v1::operator_server::{Operator, OperatorServer};
use drover_proto::v1::{
    ControlRequest, DeployRequest, DeployResponse, DeploymentInfo, GetDeploymentRequest, HostInfo,
    ListDeploymentsRequest, ListDeploymentsResponse, ListHostsRequest, ListHostsResponse,
    RollbackRequest, WatchEvent, WatchRequest, watch_event,
};
use drover_shared::labels::Selector;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::guard::Guarded;
use crate::auth::{Authenticator, Principal};
use crate::hub::{AgentHub, HostSnapshot};
use crate::leader::Leadership;
use crate::rollout::{Action, DeployError, Deployer};
use crate::secrets::Vault;
use crate::slo::SloMonitor;
use crate::state::{DeploymentState, HostPhase};
use crate::store::{Deployment, DeploymentHost, Event, HostStep, StepKind, StoreError};

/// The operator API over the controller's state.
pub struct OperatorService {
    hub: AgentHub,
    deployer: Deployer,
    /// Service secrets (set and listed here; opened only by the rollout engine).
    vault: Vault,
    /// Error budgets, read by `GetSlo`.
    slo: SloMonitor,
    /// This controller's role among replicas, shown by `WhoAmI`.
    leadership: Leadership,
}

impl OperatorService {
    /// The operator model over the controller's state, shared by the gRPC API and the
    /// web interface.
    pub fn new(hub: AgentHub, deployer: Deployer, vault: Vault, slo: SloMonitor) -> Self {
        Self {
            hub,
            deployer,
            vault,
            slo,
            leadership: Leadership::single(),
        }
    }

    /// The same, on a replica whose role is `leadership`.
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// The tonic service, behind `auth`: no request reaches a handler unauthenticated.
    pub fn server(this: Arc<Self>, auth: Authenticator) -> Guarded<OperatorServer<Self>> {
        Guarded::new(OperatorServer::from_arc(this), auth)
    }

    async fn info(&self, id: &str) -> Result<DeploymentInfo, Status> {
        let store = self.deployer.store();
        let (d, hosts) = store.get(id).await.map_err(store_status)?;
        let last_seq = store.last_seq(id).await.map_err(store_status)?;
        let steps = store.host_steps(id).await.map_err(store_status)?;
        let hooks = store.hook_runs(id).await.map_err(store_status)?;
        let bakes = store.bakes(id).await.map_err(store_status)?;
        let mut info = deployment_info(d, hosts, last_seq);
        info.hooks = hooks.into_iter().map(hook_run_info).collect();
        info.bakes = bakes.into_iter().map(bake_info).collect();
        attach_steps(&mut info, steps);
        Ok(info)
    }
}

#[tonic::async_trait]
impl Operator for OperatorService {
    async fn remove_host(
        &self,
        request: Request<proto::RemoveHostRequest>,
    ) -> Result<Response<proto::RemoveHostResponse>, Status> {
        let who = Principal::of(&request)?;
        self.remove_host_as(&who, request.into_inner()).await
    }

    async fn create_join_token(
        &self,
        request: Request<proto::CreateJoinTokenRequest>,
    ) -> Result<Response<proto::CreateJoinTokenResponse>, Status> {
        let who = Principal::of(&request)?;
        self.create_join_token_as(&who, request.into_inner()).await
    }

    async fn create_api_token(
        &self,
        request: Request<proto::CreateApiTokenRequest>,
    ) -> Result<Response<proto::CreateApiTokenResponse>, Status> {
        let who = Principal::of(&request)?;
        self.create_api_token_as(&who, request.into_inner()).await
    }

    async fn list_api_tokens(
        &self,
        _request: Request<proto::ListApiTokensRequest>,
    ) -> Result<Response<proto::ListApiTokensResponse>, Status> {
        self.list_api_tokens_inner().await
    }

    async fn revoke_api_token(
        &self,
        request: Request<proto::RevokeApiTokenRequest>,
    ) -> Result<Response<proto::RevokeApiTokenResponse>, Status> {
        let who = Principal::of(&request)?;
        self.revoke_api_token_as(&who, request.into_inner()).await
    }

    async fn set_secret(
        &self,
        request: Request<proto::SetSecretRequest>,
    ) -> Result<Response<proto::SetSecretResponse>, Status> {
        let who = Principal::of(&request)?;
        self.set_secret_as(&who, request.into_inner()).await
    }

    async fn list_secrets(
        &self,
        request: Request<proto::ListSecretsRequest>,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        self.list_secrets_of(request.into_inner()).await
    }

    async fn who_am_i(
        &self,
        request: Request<proto::WhoAmIRequest>,
    ) -> Result<Response<proto::WhoAmIResponse>, Status> {
        let who = Principal::of(&request)?;
        let controller = self.leadership.role();
        Ok(Response::new(proto::WhoAmIResponse {
            name: who.name,
            role: who.role.as_str().to_owned(),
            method: who.method.as_str().to_owned(),
            controller_role: controller.as_str().to_owned(),
            leader: self.leadership.leader().unwrap_or_default(),
            epoch: self.leadership.epoch(),
        }))
    }

    async fn get_slo(
        &self,
        request: Request<proto::GetSloRequest>,
    ) -> Result<Response<proto::GetSloResponse>, Status> {
        self.get_slo_of(request.into_inner()).await
    }

    async fn list_hosts(
        &self,
        request: Request<ListHostsRequest>,
    ) -> Result<Response<ListHostsResponse>, Status> {
        let selector = Selector::parse(&request.get_ref().selector)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let hosts = self
            .hub
            .hosts()
            .into_iter()
            .filter(|h| selector.matches(&h.labels))
            .map(host_info)
            .collect();
        Ok(Response::new(ListHostsResponse { hosts }))
    }

    async fn deploy(
        &self,
        request: Request<DeployRequest>,
    ) -> Result<Response<DeployResponse>, Status> {
        let who = Principal::of(&request)?;
        let req = plan::deploy_request(&who, request.into_inner())?;
        let d = self.deployer.deploy(req).await.map_err(deploy_status)?;
        Ok(Response::new(DeployResponse {
            deployment: Some(self.info(&d.id).await?),
        }))
    }

    async fn rollback(
        &self,
        request: Request<RollbackRequest>,
    ) -> Result<Response<DeployResponse>, Status> {
        let who = Principal::of(&request)?;
        let req = plan::rollback_request(&who, request.into_inner());
        let d = self.deployer.rollback(req).await.map_err(deploy_status)?;
        Ok(Response::new(DeployResponse {
            deployment: Some(self.info(&d.id).await?),
        }))
    }

    async fn plan(
        &self,
        request: Request<proto::PlanRequest>,
    ) -> Result<Response<proto::PlanResponse>, Status> {
        let who = Principal::of(&request)?;
        let req = plan::plan_request(&who, request.into_inner())?;
        let p = self.deployer.plan(req).await.map_err(deploy_status)?;
        Ok(Response::new(plan::plan_response(p)))
    }

    async fn get_deployment(
        &self,
        request: Request<GetDeploymentRequest>,
    ) -> Result<Response<DeploymentInfo>, Status> {
        let mut id = request.into_inner().id;
        if id.is_empty() {
            let newest = self
                .deployer
                .store()
                .list(None, 1)
                .await
                .map_err(store_status)?;
            id = newest
                .first()
                .map(|d| d.id.clone())
                .ok_or_else(|| Status::not_found("no deployment has been made yet"))?;
        }
        Ok(Response::new(self.info(&id).await?))
    }

    async fn list_deployments(
        &self,
        request: Request<ListDeploymentsRequest>,
    ) -> Result<Response<ListDeploymentsResponse>, Status> {
        let r = request.into_inner();
        let limit = if r.limit == 0 { 20 } else { r.limit.min(1000) };
        let service = Some(r.service).filter(|s| !s.is_empty());
        let environment = Some(r.environment).filter(|e| !e.is_empty());
        let fetch = if r.scheduled_only { 1000 } else { limit };
        let mut list = self
            .deployer
            .store()
            .list_in(service, environment, fetch)
            .await
            .map_err(store_status)?;
        if r.scheduled_only {
            // Both wait for a time or a window: not started yet, or held between stages.
            list.retain(|d| matches!(d.state, DeploymentState::Scheduled | DeploymentState::Held));
            list.truncate(limit as usize);
        }
        let ids: Vec<String> = list.iter().map(|d| d.id.clone()).collect();
        let store = self.deployer.store();
        let rows = store
            .hosts_and_seqs(ids.clone())
            .await
            .map_err(store_status)?;
        let hooks = store.hook_runs_of(ids).await.map_err(store_status)?;
        let deployments = list
            .into_iter()
            .zip(rows)
            .zip(hooks)
            .map(|((d, (hosts, seq)), hooks)| {
                let mut info = deployment_info(d, hosts, seq);
                info.hooks = hooks.into_iter().map(hook_run_info).collect();
                info
            })
            .collect();
        Ok(Response::new(ListDeploymentsResponse { deployments }))
    }

    async fn control(
        &self,
        request: Request<ControlRequest>,
    ) -> Result<Response<DeploymentInfo>, Status> {
        let who = Principal::of(&request)?;
        let r = request.into_inner();
        let action = match proto::ControlAction::try_from(r.action).unwrap_or_default() {
            proto::ControlAction::Promote => Action::Promote,
            proto::ControlAction::Pause => Action::Pause,
            proto::ControlAction::Resume => Action::Resume,
            proto::ControlAction::Abort => Action::Abort,
            proto::ControlAction::Cancel => Action::Cancel,
            proto::ControlAction::Approve => Action::Approve,
            proto::ControlAction::Unspecified => {
                return Err(Status::invalid_argument(
                    "no action given: promote, pause, resume, abort, cancel or approve",
                ));
            }
        };
        self.deployer
            .control(&r.id, action, &who.history_name(&r.requested_by))
            .await
            .map_err(deploy_status)?;
        Ok(Response::new(self.info(&r.id).await?))
    }

    async fn create_release(
        &self,
        request: Request<proto::CreateReleaseRequest>,
    ) -> Result<Response<proto::ReleaseInfo>, Status> {
        let who = Principal::of(&request)?;
        self.create_release_as(&who, request.into_inner()).await
    }

    async fn list_releases(
        &self,
        request: Request<proto::ListReleasesRequest>,
    ) -> Result<Response<proto::ListReleasesResponse>, Status> {
        self.list_releases_of(request.into_inner()).await
    }

    async fn get_dora(
        &self,
        request: Request<proto::GetDoraRequest>,
    ) -> Result<Response<proto::GetDoraResponse>, Status> {
        self.dora(request.into_inner()).await
    }

    type LogsStream = ReceiverStream<Result<proto::LogsEvent, Status>>;

    async fn logs(
        &self,
        request: Request<proto::LogsQuery>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        Ok(Response::new(self.logs_stream(request.into_inner()).await?))
    }

    type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let r = request.into_inner();
        let snapshot = self.info(&r.id).await?;
        let (tx, rx) = mpsc::channel(64);
        let store = self.deployer.store().clone();
        let mut changed = self.deployer.subscribe();
        let deployer = self.deployer.clone();
        let id = r.id.clone();
        let mut seq = r.after_seq;
        let span = tracing::info_span!("watch", deployment = %id);
        // Owned by the response stream: ends when the deployment ends or the client leaves.
        tokio::spawn(
            async move {
                let _ = tx
                    .send(Ok(WatchEvent {
                        body: Some(watch_event::Body::Snapshot(snapshot)),
                    }))
                    .await;
                loop {
                    let events = match store.events(&id, seq).await {
                        Ok(e) => e,
                        Err(e) => {
                            let _ = tx.send(Err(store_status(e))).await;
                            return;
                        }
                    };
                    for e in events {
                        seq = e.seq;
                        let ev = WatchEvent {
                            body: Some(watch_event::Body::Event(event(e))),
                        };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                    match store.deployment(&id).await {
                        Ok(d) if d.state.is_terminal() => {
                            // Events written with the final state are already sent.
                            if store
                                .events(&id, seq)
                                .await
                                .map(|e| e.is_empty())
                                .unwrap_or(true)
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.send(Err(store_status(e))).await;
                            return;
                        }
                    }
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = tx.closed() => return,
                        () = deployer.shutting_down() => return,
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub(crate) fn deploy_status(e: DeployError) -> Status {
    match e {
        DeployError::Spec(_) | DeployError::Image(_) => Status::invalid_argument(e.to_string()),
        DeployError::Release(_)
        | DeployError::Gate(_)
        | DeployError::Targets(_)
        | DeployError::LoadBalancer(_)
        | DeployError::NothingToRollBack(_)
        | DeployError::MissingSecrets(_)
        | DeployError::Control(_) => Status::failed_precondition(e.to_string()),
        DeployError::Secrets(s) => admin::secrets_status(s),
        DeployError::Store(s) => store_status(s),
        DeployError::ShuttingDown => Status::unavailable(e.to_string()),
    }
}

pub(crate) fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Locked { .. } => Status::aborted(e.to_string()),
        StoreError::NotFound(_) | StoreError::NoRelease(_) => Status::not_found(e.to_string()),
        StoreError::Stale { .. } => Status::failed_precondition(e.to_string()),
        StoreError::NotLeader { .. } => Status::unavailable(e.to_string()),
        other => {
            tracing::error!(error = %other, "store failure");
            Status::internal("the controller's state database failed; see the controller's log")
        }
    }
}

fn state_proto(s: DeploymentState) -> proto::DeploymentState {
    use proto::DeploymentState as P;
    match s {
        DeploymentState::Pending => P::Pending,
        DeploymentState::Preparing => P::Preparing,
        DeploymentState::Rolling => P::Rolling,
        DeploymentState::RollingBack => P::RollingBack,
        DeploymentState::Paused => P::Paused,
        DeploymentState::Succeeded => P::Succeeded,
        DeploymentState::Failed => P::Failed,
        DeploymentState::RolledBack => P::RolledBack,
        DeploymentState::Scheduled => P::Scheduled,
        DeploymentState::Baking => P::Baking,
        DeploymentState::AwaitingPromotion => P::AwaitingPromotion,
        DeploymentState::Cancelled => P::Cancelled,
        DeploymentState::Skipped => P::Skipped,
        DeploymentState::Held => P::Held,
        DeploymentState::AwaitingApproval => P::AwaitingApproval,
    }
}

fn phase_proto(p: HostPhase) -> proto::HostPhase {
    use proto::HostPhase as P;
    match p {
        HostPhase::Pending => P::Pending,
        HostPhase::Prepared => P::Prepared,
        HostPhase::Draining => P::Draining,
        HostPhase::Swapping => P::Swapping,
        HostPhase::Enabling => P::Enabling,
        HostPhase::Done => P::Done,
        HostPhase::Failed => P::Failed,
        HostPhase::RollingBack => P::RollingBack,
        HostPhase::RolledBack => P::RolledBack,
        HostPhase::LeftDrained => P::LeftDrained,
    }
}

/// A stage's bake in wire form.
fn bake_info(b: crate::store::Bake) -> proto::BakeInfo {
    let signals = |s: crate::store::BakeSignals| proto::BakeSignals {
        requests: s.requests,
        errors: s.errors,
        response_time_ms: s.response_time_ms,
        restarts: s.restarts,
    };
    proto::BakeInfo {
        stage: b.stage,
        started_ms: b.started_ms,
        ends_ms: b.ends_ms,
        measured_ms: b.measured_ms,
        canary_hosts: b.canary_hosts,
        baseline_hosts: b.baseline_hosts,
        canary: Some(signals(b.canary)),
        baseline: Some(signals(b.baseline)),
        limits: Some(proto::BakeLimits {
            max_error_rate: b.limits.max_error_rate,
            max_error_ratio: b.limits.max_error_ratio,
            max_response_time_ratio: b.limits.max_response_time_ratio,
            min_response_time_ms: b.limits.min_response_time_ms,
            min_requests: b.limits.min_requests,
            max_restarts: b.limits.max_restarts,
        }),
        verdict: b.verdict.to_proto() as i32,
        reason: b.reason,
    }
}

/// A hook run in wire form.
fn hook_run_info(r: crate::store::HookRun) -> proto::HookRunInfo {
    proto::HookRunInfo {
        name: r.name,
        phase: r.phase,
        host: r.host,
        outcome: r.outcome.to_proto() as i32,
        exit_code: r.exit_code,
        started_ms: r.started_ms,
        finished_ms: r.finished_ms,
        output: r.output,
    }
}

/// A deployment in wire form (without its hook runs, bakes and steps).
pub fn deployment_info(d: Deployment, hosts: Vec<DeploymentHost>, last_seq: u64) -> DeploymentInfo {
    DeploymentInfo {
        batches: hosts.iter().map(|h| h.batch + 1).max().unwrap_or(0),
        stages: hosts.iter().map(|h| h.stage + 1).max().unwrap_or(0),
        stage: d.stage,
        scheduled_ms: d.scheduled_ms.unwrap_or(0),
        hold: d.hold.unwrap_or_default(),
        hosts: hosts.into_iter().map(host_row).collect(),
        id: d.id,
        service: d.service,
        kind: d.kind.as_str().to_string(),
        version: d.version,
        image: d.image,
        pinned: d.pinned,
        state: state_proto(d.state) as i32,
        requested_by: d.requested_by,
        created_ms: d.created_ms,
        finished_ms: d.finished_ms.unwrap_or(0),
        error: d.error.unwrap_or_default(),
        epoch: d.epoch,
        last_seq,
        environment: d.environment,
        release_id: d.release_id,
        gate_note: d.gate_note.unwrap_or_default(),
        hooks: vec![],
        bakes: vec![],
    }
}

/// A deployment's host row in wire form.
pub(crate) fn host_row(h: DeploymentHost) -> proto::DeploymentHostInfo {
    proto::DeploymentHostInfo {
        host: h.host,
        batch: h.batch,
        phase: phase_proto(h.phase) as i32,
        from_version: h.from_version,
        to_version: h.to_version,
        error: h.error.unwrap_or_default(),
        started_ms: h.started_ms.unwrap_or(0),
        finished_ms: h.finished_ms.unwrap_or(0),
        stage: h.stage,
        steps: vec![],
    }
}

/// Each host's recorded steps, into its row.
fn attach_steps(info: &mut DeploymentInfo, steps: Vec<HostStep>) {
    // By name: a deployment may have ten thousand hosts and several steps each.
    let rows: std::collections::HashMap<String, usize> = info
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.host.clone(), i))
        .collect();
    for s in steps {
        if let Some(row) = rows.get(&s.host).map(|&i| &mut info.hosts[i]) {
            row.steps.push(proto::HostStep {
                kind: step_proto(s.kind) as i32,
                ms: s.ms,
                note: s.note,
            });
        }
    }
}

fn step_proto(k: StepKind) -> proto::HostStepKind {
    use proto::HostStepKind as P;
    match k {
        StepKind::Drain => P::Drain,
        StepKind::Create => P::Create,
        StepKind::Stop => P::Stop,
        StepKind::Start => P::Start,
        StepKind::Ready => P::Ready,
        StepKind::Up => P::Up,
    }
}

fn event(e: Event) -> proto::DeploymentEvent {
    proto::DeploymentEvent {
        seq: e.seq,
        at_ms: e.at_ms,
        host: e.host,
        message: e.message,
        phase: e.phase.map_or(0, |p| phase_proto(p) as i32),
        state: e.state.map_or(0, |s| state_proto(s) as i32),
    }
}

fn host_info(h: HostSnapshot) -> HostInfo {
    HostInfo {
        name: h.name,
        labels: h.labels.into_iter().collect(),
        advertise_address: h.advertise_address,
        agent_version: h.agent_version,
        connected: h.connected,
        since_ms: h
            .since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        services: h.services,
        docker_error: h.docker_error.unwrap_or_default(),
    }
}
