//! `GetSlo`: a service's error budgets as the sampler measured them, on the wire.

use drover_proto::v1 as proto;
use tonic::{Response, Status};

use super::{OperatorService, store_status};
use crate::slo::{Budget, SloTarget};
use crate::spec::valid_service_name;

impl OperatorService {
    pub(super) async fn get_slo_of(
        &self,
        r: proto::GetSloRequest,
    ) -> Result<Response<proto::GetSloResponse>, Status> {
        if !valid_service_name(&r.service) {
            return Err(Status::invalid_argument(format!(
                "invalid service name {:?}",
                r.service
            )));
        }
        let mut targets = self.slo.watched(&r.service).await.map_err(store_status)?;
        targets.retain(|t| r.environment.is_empty() || t.environment == r.environment);
        if targets.is_empty() {
            let scope = match r.environment.as_str() {
                "" => r.service.clone(),
                env => format!("{} in {env}", r.service),
            };
            return Err(Status::not_found(format!(
                "no error budget is watched for {scope}: an environment gets one from `slo = {{ availability = \"99.5%\", window = \"30d\" }}` in the spec, from its first deploy on"
            )));
        }
        let mut budgets = Vec::with_capacity(targets.len());
        for t in &targets {
            let b = self.slo.budget_of(t).await.map_err(store_status)?;
            budgets.push(budget_proto(b, t));
        }
        Ok(Response::new(proto::GetSloResponse { budgets }))
    }
}

fn budget_proto(b: Budget, target: &SloTarget) -> proto::SloBudget {
    proto::SloBudget {
        description: b.describe(),
        availability: b.spec.availability_text(),
        window: b.spec.window_text(),
        window_ms: b.spec.window.as_millis() as u64,
        target: b.spec.target(),
        requests: b.counted.requests,
        errors: b.counted.errors,
        achieved: b.availability.unwrap_or(0.0),
        allowed_errors: b.allowed_errors,
        remaining_errors: b.remaining_errors,
        remaining_ratio: b.remaining_ratio,
        spent: b.spent,
        measured_since_ms: b.measured_since_ms.unwrap_or(0),
        backend: target.backend.clone(),
        runtime: target.runtime.iter().map(ToString::to_string).collect(),
        service: b.service,
        environment: b.environment,
    }
}
