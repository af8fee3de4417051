//! Inspect: what this agent manages, per service, straight from Docker labels. Also the
//! source of the service list in every hello.

use drover_shared::proto::{InspectResult, ServiceState};

use super::{CommandContext, spec, state};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime, RuntimeError};

/// Runs an inspect of `service` (empty = every service).
pub async fn inspect<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    service: &str,
) -> Result<InspectResult, CommandFailure> {
    if !service.is_empty() {
        spec::check_service(service)?;
    }
    let (services, _) = collect(ctx, service).await?;
    Ok(InspectResult { services })
}

/// The state of `service` (empty = all), and the containers it was derived from.
pub async fn collect<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    service: &str,
) -> Result<(Vec<ServiceState>, Vec<ContainerInfo>), RuntimeError> {
    let all = ctx.runtime.list_managed(&ctx.agent).await?;
    let services = if service.is_empty() {
        state::group(all.clone())
            .values()
            .map(state::ServiceContainers::to_proto)
            .collect()
    } else {
        vec![state::of_service(all.clone(), service).to_proto()]
    };
    Ok((services, all))
}
