//! The `Operator` gRPC service: the API behind the `drover` CLI. Errors are mapped to
//! `tonic::Status` here and only here, with messages an operator can act on.

use drover_proto::v1::operator_server::{Operator, OperatorServer};
use drover_proto::v1::{HostInfo, ListHostsRequest, ListHostsResponse};
use drover_shared::labels::Selector;
use tonic::{Request, Response, Status};

use crate::hub::{AgentHub, HostSnapshot};

/// The operator API over the controller's state.
pub struct OperatorService {
    hub: AgentHub,
}

impl OperatorService {
    /// The tonic service for `hub`.
    pub fn server(hub: AgentHub) -> OperatorServer<Self> {
        OperatorServer::new(Self { hub })
    }
}

#[tonic::async_trait]
impl Operator for OperatorService {
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
