//! `GetDora`: the delivery metrics of the deploy history, in wire form.

use drover_proto::v1 as proto;
use tonic::{Response, Status};

use super::{OperatorService, store_status};
use crate::dora::{DEFAULT_ROLLBACK_WINDOW_MS, DEFAULT_WINDOW_MS, Dora, Settings};
use crate::store::now_ms;

impl OperatorService {
    pub(super) async fn dora(
        &self,
        r: proto::GetDoraRequest,
    ) -> Result<Response<proto::GetDoraResponse>, Status> {
        let end_ms = now_ms();
        let start_ms = match r.since_ms {
            0 => end_ms.saturating_sub(DEFAULT_WINDOW_MS),
            s if s >= end_ms => {
                return Err(Status::invalid_argument(
                    "the window starts in the future: give a start (since_ms) before now",
                ));
            }
            s => s,
        };
        let settings = Settings {
            start_ms,
            end_ms,
            rollback_window_ms: match r.rollback_window_ms {
                0 => DEFAULT_ROLLBACK_WINDOW_MS,
                w => w,
            },
        };
        let service = Some(r.service).filter(|s| !s.is_empty());
        let rows = self
            .deployer
            .store()
            .dora(settings, service, r.environment)
            .await
            .map_err(store_status)?;
        Ok(Response::new(proto::GetDoraResponse {
            start_ms,
            end_ms,
            rollback_window_ms: settings.rollback_window_ms,
            rows: rows.into_iter().map(dora_row).collect(),
        }))
    }
}

fn dora_row(d: Dora) -> proto::DoraRow {
    proto::DoraRow {
        service: d.service,
        environment: d.environment,
        deploys: d.deploys,
        deploys_per_day: d.deploys_per_day,
        lead_time_median_ms: d.lead_time.map(|l| l.median_ms),
        lead_time_p90_ms: d.lead_time.map(|l| l.p90_ms),
        lead_time_measured: d.lead_time_measured,
        lead_time_unknown: d.lead_time_unknown,
        finished_deploys: d.finished_deploys,
        failed_changes: d.failed_changes,
        change_failure_rate: d.change_failure_rate,
        time_to_restore_median_ms: d.time_to_restore_ms,
        restored: d.restored,
        unrestored: d.unrestored,
    }
}
