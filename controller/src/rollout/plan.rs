//! Batch planning: which hosts move together. Deterministic: the same targets, batch
//! size and seed always give the same batches, so a resumed deployment finds its plan.

use drover_proto::v1 as proto;

use super::stages::{Promotion, ResolvedStage};
use super::{DeployError, stages};
use crate::hub::AgentHub;
use crate::spec::{BatchSize, ServiceSpec};
use crate::state::{DeploymentKind, HostPhase};
use crate::store::DeploymentHost;

/// Splits `hosts` (sorted by name first) into batches of `size`.
pub fn batches(mut hosts: Vec<String>, size: BatchSize) -> Vec<Vec<String>> {
    hosts.sort();
    hosts.dedup();
    let per = size.hosts_per_batch(hosts.len());
    hosts.chunks(per).map(<[String]>::to_vec).collect()
}

/// The gates of each stage of a deployment of `kind` over `total` hosts: the spec's
/// stages for a deploy; for a rollback one stage of every host, with no bake and no
/// manual promotion.
pub(super) fn stage_gates(
    spec: &ServiceSpec,
    kind: DeploymentKind,
    total: usize,
) -> Vec<ResolvedStage> {
    match kind {
        DeploymentKind::Deploy => spec.rollout.stages().resolve(total),
        DeploymentKind::Rollback => vec![ResolvedStage {
            index: 0,
            hosts: total,
            bake: std::time::Duration::ZERO,
            promotion: Promotion::Auto,
        }],
    }
}

/// Every target host's row: its stage and batch, and the version it runs now.
/// A staged spec orders hosts once (spread over `spread_by`, seeded by `seed`); a
/// rollback moves in plain batches, with no canary stage on the way back.
pub(super) fn plan_hosts(
    spec: &ServiceSpec,
    targets: &[String],
    to_version: &str,
    hub: &AgentHub,
    seed: &str,
    staged: bool,
) -> Result<Vec<DeploymentHost>, DeployError> {
    let batch_size = spec.rollout.batch_size;
    let staging = spec.rollout.staging.as_ref().filter(|_| staged);
    let plan: Vec<Vec<Vec<String>>> = if let Some(stages) = staging {
        let labelled: Vec<(String, std::collections::BTreeMap<String, String>)> = targets
            .iter()
            .map(|h| (h.clone(), hub.host(h).map(|s| s.labels).unwrap_or_default()))
            .collect();
        let order = stages::pick_order(&labelled, stages.spread_by(), seed);
        let sizes: Vec<usize> = stages
            .resolve(targets.len())
            .iter()
            .map(|s| s.hosts)
            .collect();
        stages::plan_stages(order, &sizes, batch_size)
    } else {
        vec![batches(targets.to_vec(), batch_size)]
    };
    let mut rows = Vec::with_capacity(targets.len());
    let mut batch = 0u32;
    for (stage, stage_batches) in plan.into_iter().enumerate() {
        for hosts in stage_batches {
            for host in hosts {
                let from_version = hub
                    .host(&host)
                    .and_then(|h| {
                        h.services.into_iter().find(|s| {
                            s.service == spec.service.name
                                && s.state == proto::ContainerState::Running as i32
                        })
                    })
                    .map(|s| s.version)
                    .unwrap_or_default();
                rows.push(DeploymentHost {
                    host,
                    batch,
                    stage: stage as u32,
                    phase: HostPhase::Pending,
                    from_version,
                    to_version: to_version.to_string(),
                    error: None,
                    started_ms: None,
                    finished_ms: None,
                });
            }
            batch += 1;
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).rev().map(|i| format!("h{i:02}")).collect()
    }

    #[test]
    fn quarter_of_ten_is_four_batches_of_three_or_less() {
        let b = batches(names(10), BatchSize::Percent(25));
        let sizes: Vec<_> = b.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        assert_eq!(b[0], vec!["h00", "h01", "h02"]);
    }

    #[test]
    fn count_and_edge_cases() {
        assert_eq!(batches(names(4), BatchSize::Count(1)).len(), 4);
        assert_eq!(batches(names(3), BatchSize::Count(10)).len(), 1);
        assert!(batches(vec![], BatchSize::Count(1)).is_empty());
        let dup = vec!["a".to_string(), "a".to_string(), "b".to_string()];
        assert_eq!(batches(dup, BatchSize::Count(1)).len(), 2);
    }
}
