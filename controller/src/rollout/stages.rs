//! Staged canary rollouts against the actual fleet: the pure functions that turn parsed
//! stages (the spec's [`Stages`]) into a plan.
//!
//! The plan is deterministic, so a resumed deployment finds the same stages:
//! [`pick_order`] orders the hosts once for the whole rollout, [`Stages::resolve`] and
//! [`stage_sizes`] say how many of them each stage has done, and [`plan_stages`] splits
//! each stage's new hosts into batches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::spec::BatchSize;
pub use crate::spec::stages::{
    Promotion, Stage, StageError, StageSize, StageSpec, Stages, StagesSpec,
};

/// A stage against the actual fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedStage {
    /// Index of the spec stage that sets this stage's size (from 0).
    pub index: usize,
    /// Hosts done by its end, cumulative.
    pub hosts: usize,
    /// Watch time after its hosts are done.
    pub bake: Duration,
    /// How it hands over to the next stage.
    pub promotion: Promotion,
}

impl Stages {
    /// The stages against a fleet of `total` hosts (none for no hosts). A stage that adds
    /// no host there (10% of 3 hosts after a canary of 1) is dropped, and its gate merges
    /// into the stage before: the longer bake, and manual promotion if either is manual,
    /// so dropping a stage never removes a pause an operator asked for. The last stage is
    /// `100%`, so the result always ends at every host.
    pub fn resolve(&self, total: usize) -> Vec<ResolvedStage> {
        let stages = self.stages();
        let sizes: Vec<StageSize> = stages.iter().map(|s| s.size).collect();
        let mut out: Vec<ResolvedStage> = Vec::new();
        for (index, hosts) in cumulative(total, &sizes) {
            let s = stages[index];
            match out.last_mut() {
                Some(prev) if prev.hosts == hosts => {
                    prev.bake = prev.bake.max(s.bake);
                    if s.promotion == Promotion::Manual {
                        prev.promotion = Promotion::Manual;
                    }
                }
                _ => out.push(ResolvedStage {
                    index,
                    hosts,
                    bake: s.bake,
                    promotion: s.promotion,
                }),
            }
        }
        out
    }
}

/// Cumulative host counts per stage for a fleet of `total` hosts. Percentages round up,
/// every stage covers at least one host and at most `total`, a stage never covers fewer
/// hosts than the one before (`["5", "10%"]` on 20 hosts is 5, 5), and a stage that adds
/// no host is dropped, so the result strictly increases and ends at `total`. The last stage
/// must cover every host, else [`StageError::Short`]. No hosts gives no stages.
pub fn stage_sizes(total: usize, stages: &[StageSize]) -> Result<Vec<usize>, StageError> {
    let Some(last) = stages.last() else {
        return Err(StageError::Empty {
            key: "rollout.stages",
        });
    };
    let covers = last.hosts(total);
    if total > 0 && covers < total {
        return Err(StageError::Short {
            stage: stages.len(),
            size: *last,
            covers,
            total,
        });
    }
    let mut sizes: Vec<usize> = cumulative(total, stages)
        .into_iter()
        .map(|(_, hosts)| hosts)
        .collect();
    sizes.dedup();
    Ok(sizes)
}

/// `(stage index, cumulative hosts)` per stage, never decreasing (kept stage by stage);
/// nothing for no hosts.
fn cumulative(total: usize, stages: &[StageSize]) -> Vec<(usize, usize)> {
    if total == 0 {
        return Vec::new();
    }
    let mut done = 0;
    stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            done = done.max(s.hosts(total));
            (i, done)
        })
        .collect()
}

/// The order hosts move in, the same for the same inputs whatever their order: hosts
/// sorted by a stable hash of `seed` (the service and version) and their name. With `spread_by`,
/// hosts are grouped by that label's value (hosts without it form one more group) and
/// taken round-robin from the groups, so any prefix, such as a canary stage, is spread as
/// evenly as the groups allow: three hosts over zones a, b, c take one from each. The
/// groups' turn order is also hashed from `seed`, so canaries do not always land in the
/// same zone. Duplicate names count once.
pub fn pick_order(
    hosts: &[(String, BTreeMap<String, String>)],
    spread_by: Option<&str>,
    seed: &str,
) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut groups: BTreeMap<Option<&str>, Vec<(u64, &str)>> = BTreeMap::new();
    for (name, labels) in hosts {
        if !seen.insert(name.as_str()) {
            continue;
        }
        let group = spread_by.and_then(|k| labels.get(k)).map(String::as_str);
        groups
            .entry(group)
            .or_default()
            .push((rank(seed, b"host", name), name));
    }
    let mut groups: Vec<_> = groups
        .into_iter()
        .map(|(value, mut members)| {
            members.sort_unstable();
            let turn = match value {
                Some(v) => rank(seed, b"group", v),
                None => rank(seed, b"unlabelled", ""),
            };
            (turn, value, members.into_iter())
        })
        .collect();
    groups.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut order = Vec::with_capacity(seen.len());
    while order.len() < seen.len() {
        for (_, _, members) in &mut groups {
            if let Some((_, name)) = members.next() {
                order.push(name.to_string());
            }
        }
    }
    order
}

/// A stable 64-bit hash of `seed`, a domain tag and `name` (FNV-1a, then the murmur3
/// finaliser so that similar names scatter). Fixed here so that plans survive upgrades.
fn rank(seed: &str, tag: &[u8], name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [seed.as_bytes(), &[0xff], tag, &[0xff], name.as_bytes()] {
        for &b in part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Per stage, the hosts it adds (the next `sizes[k]` of `order`, cumulative) split into
/// batches of `batch`, sized against the whole fleet (`order.len()`), never across a stage
/// boundary. A size below an earlier one gives an empty stage; hosts past the last size
/// are not planned (see [`stage_sizes`], which always ends at every host).
pub fn plan_stages(order: Vec<String>, sizes: &[usize], batch: BatchSize) -> Vec<Vec<Vec<String>>> {
    let per = batch.hosts_per_batch(order.len());
    let mut done = 0;
    sizes
        .iter()
        .map(|&size| {
            let upto = size.clamp(done, order.len());
            let stage = order[done..upto]
                .chunks(per)
                .map(<[String]>::to_vec)
                .collect();
            done = upto;
            stage
        })
        .collect()
}

#[cfg(test)]
mod tests;
