//! Staged canary rollouts: the `[rollout]` keys that split a deploy into stages (a canary
//! first, then growing shares of the fleet, each watched for a while and promoted
//! automatically or by hand), and the pure functions that turn them into a plan.
//!
//! Stages are cumulative: `["1", "10%", "50%", "100%"]` means one host, then up to a
//! tenth of the targets, and so on. The plan is deterministic, so a resumed deployment
//! finds the same stages: [`pick_order`] orders the hosts once for the whole rollout,
//! [`stage_sizes`] says how many of them each stage has done, and [`plan_stages`] splits
//! each stage's new hosts into batches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_shared::duration;
use serde::{Deserialize, Serialize};

use crate::spec::BatchSize;

/// How many of the targets a stage has done when it ends, counting earlier stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "toml::Value", into = "String")]
pub enum StageSize {
    /// A number of hosts (at most all of them).
    Count(u32),
    /// A share of the targets, rounded up, at least one host.
    Percent(u32),
}

impl StageSize {
    /// Parses `3` or `"25%"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "invalid stage size {s:?}: write a cumulative host count (\"1\") or a share of the targets (\"10%\")"
            )
        };
        let (digits, percent) = match s.strip_suffix('%') {
            Some(p) => (p.trim(), true),
            None => (s, false),
        };
        let n: u32 = digits.parse().map_err(|_| bad())?;
        match (n, percent) {
            (0, _) => Err(bad()),
            (1..=100, true) => Ok(Self::Percent(n)),
            (_, true) => Err(bad()),
            (_, false) => Ok(Self::Count(n)),
        }
    }

    /// Hosts done by the end of this stage in a fleet of `total`: at least one, at most
    /// `total` (the rounding of [`BatchSize::hosts_per_batch`]).
    pub fn hosts(self, total: usize) -> usize {
        match self {
            Self::Count(n) => BatchSize::Count(n),
            Self::Percent(p) => BatchSize::Percent(p),
        }
        .hosts_per_batch(total)
    }
}

impl TryFrom<toml::Value> for StageSize {
    type Error = String;
    fn try_from(v: toml::Value) -> Result<Self, String> {
        match v {
            toml::Value::Integer(n) => Self::parse(&n.to_string()),
            toml::Value::String(s) => Self::parse(&s),
            other => Self::parse(&other.to_string()),
        }
    }
}

impl From<StageSize> for String {
    fn from(s: StageSize) -> String {
        s.to_string()
    }
}

impl std::fmt::Display for StageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Count(n) => write!(f, "{n}"),
            Self::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// How a stage hands over to the next once its bake time is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Promotion {
    /// The next stage starts by itself.
    #[default]
    Auto,
    /// The deploy waits for `drover promote`.
    Manual,
}

/// `[[rollout.stage]]`: one stage in the long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Hosts done by the end of this stage, cumulative: `"1"` or `"10%"`.
    pub hosts: StageSize,
    /// How long to watch the stage's hosts once they are done (default 0s).
    #[serde(default, with = "duration")]
    pub bake: Duration,
    /// `auto` (default) or `manual`.
    #[serde(default)]
    pub promotion: Promotion,
    /// Agent label to spread hosts over; must agree with `rollout.spread_by` and the other
    /// stages, since hosts are ordered once for the whole rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

/// The stage keys of `[rollout]`, as they parse. Meant to sit in `[rollout]` field by
/// field (serde cannot flatten under `deny_unknown_fields`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagesSpec {
    /// Short form: cumulative stage sizes, e.g. `["1", "10%", "50%", "100%"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageSize>>,
    /// Long form: `[[rollout.stage]]` tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage: Vec<StageSpec>,
    /// Agent label (e.g. `zone`) whose values every stage is spread over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_by: Option<String>,
}

/// Why stages were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    /// The short and the long form are both given.
    #[error("`rollout.stages` and `[[rollout.stage]]` are both set; keep one of the two forms")]
    BothForms,
    /// No stage at all.
    #[error("invalid value for `{key}`: no stages; list at least one, ending with \"100%\"")]
    Empty {
        /// `rollout.stages` or `rollout.stage`.
        key: &'static str,
    },
    /// A stage that is not above an earlier one of the same kind, so it adds no host.
    #[error(
        "invalid value for `{key}`: {size} is not above an earlier stage's {previous}; stages are cumulative, each larger than the one before"
    )]
    NotCumulative {
        /// The key, e.g. `rollout.stages[2]`.
        key: String,
        /// The stage's size.
        size: StageSize,
        /// The earlier, larger or equal size.
        previous: StageSize,
    },
    /// The last stage is not `100%`, so some hosts would keep the old version.
    #[error(
        "invalid value for `{key}`: the last stage is {size}, which may leave hosts on the old version; end with \"100%\""
    )]
    NotAll {
        /// The key of the last stage.
        key: String,
        /// Its size.
        size: StageSize,
    },
    /// Against the actual fleet, the last stage covers fewer hosts than there are.
    #[error(
        "stage {stage} ({size}) is the last one but covers {covers} of {total} hosts; end with \"100%\""
    )]
    Short {
        /// The stage's number, from 1.
        stage: usize,
        /// Its size.
        size: StageSize,
        /// Hosts it covers.
        covers: usize,
        /// Target hosts.
        total: usize,
    },
    /// `spread_by` names an empty label key.
    #[error(
        "invalid value for `{key}`: empty label key; name an agent label such as \"zone\" or leave it out"
    )]
    EmptySpreadBy {
        /// The key.
        key: String,
    },
    /// Two different `spread_by` keys.
    #[error(
        "invalid value for `{key}`: {value:?} differs from {other:?} given earlier; hosts are ordered once for the whole rollout, so use one label key"
    )]
    SpreadByConflict {
        /// The key of the second one.
        key: String,
        /// Its value.
        value: String,
        /// The one given first.
        other: String,
    },
}

/// One validated stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Hosts done by its end, cumulative.
    pub size: StageSize,
    /// Watch time after its hosts are done.
    pub bake: Duration,
    /// How it hands over to the next stage.
    pub promotion: Promotion,
}

/// Validated stages: the default is one stage of all hosts, no bake, auto promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// In order; the last is `100%`.
    pub stages: Vec<Stage>,
    /// Label to spread hosts over.
    pub spread_by: Option<String>,
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            stages: vec![Stage {
                size: StageSize::Percent(100),
                bake: Duration::ZERO,
                promotion: Promotion::Auto,
            }],
            spread_by: None,
        }
    }
}

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

impl StagesSpec {
    /// Checks the stage keys; neither form gives [`Stages::default`].
    pub fn validate(&self) -> Result<Stages, StageError> {
        let (key, stages): (&'static str, Vec<Stage>) = match (&self.stages, &self.stage[..]) {
            (Some(_), [_, ..]) => return Err(StageError::BothForms),
            (None, []) => ("rollout.stages", Stages::default().stages),
            (Some(short), []) => (
                "rollout.stages",
                short
                    .iter()
                    .map(|&size| Stage {
                        size,
                        bake: Duration::ZERO,
                        promotion: Promotion::Auto,
                    })
                    .collect(),
            ),
            (None, long) => (
                "rollout.stage",
                long.iter()
                    .map(|s| Stage {
                        size: s.hosts,
                        bake: s.bake,
                        promotion: s.promotion,
                    })
                    .collect(),
            ),
        };
        let size_key = |i: usize| match key {
            "rollout.stage" => format!("rollout.stage[{i}].hosts"),
            _ => format!("{key}[{i}]"),
        };
        let Some(last) = stages.last() else {
            return Err(StageError::Empty { key });
        };
        let mut max_count = None;
        let mut max_percent = None;
        for (i, s) in stages.iter().enumerate() {
            let max = match s.size {
                StageSize::Count(_) => &mut max_count,
                StageSize::Percent(_) => &mut max_percent,
            };
            if let Some(previous) = *max
                && !above(s.size, previous)
            {
                return Err(StageError::NotCumulative {
                    key: size_key(i),
                    size: s.size,
                    previous,
                });
            }
            *max = Some(s.size);
        }
        if last.size != StageSize::Percent(100) {
            return Err(StageError::NotAll {
                key: size_key(stages.len() - 1),
                size: last.size,
            });
        }
        Ok(Stages {
            stages,
            spread_by: self.spread_by()?,
        })
    }

    /// The one label key given by `rollout.spread_by` and the stages.
    fn spread_by(&self) -> Result<Option<String>, StageError> {
        let given = std::iter::once(("rollout.spread_by".to_string(), &self.spread_by)).chain(
            self.stage
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("rollout.stage[{i}].spread_by"), &s.spread_by)),
        );
        let mut chosen: Option<String> = None;
        for (key, value) in given {
            let Some(value) = value else { continue };
            if value.trim().is_empty() {
                return Err(StageError::EmptySpreadBy { key });
            }
            match &chosen {
                Some(other) if other != value => {
                    return Err(StageError::SpreadByConflict {
                        key,
                        value: value.clone(),
                        other: other.clone(),
                    });
                }
                _ => chosen = Some(value.clone()),
            }
        }
        Ok(chosen)
    }
}

/// Whether `a` asks for more hosts than `b` of the same kind.
fn above(a: StageSize, b: StageSize) -> bool {
    match (a, b) {
        (StageSize::Count(a), StageSize::Count(b))
        | (StageSize::Percent(a), StageSize::Percent(b)) => a > b,
        _ => true,
    }
}

impl Stages {
    /// The stages against a fleet of `total` hosts. A stage that adds no host there (10%
    /// of 3 hosts after a canary of 1) is dropped, and its gate merges into the stage
    /// before: the longer bake, and manual promotion if either is manual, so dropping a
    /// stage never removes a pause an operator asked for.
    pub fn resolve(&self, total: usize) -> Result<Vec<ResolvedStage>, StageError> {
        let sizes: Vec<StageSize> = self.stages.iter().map(|s| s.size).collect();
        let mut out: Vec<ResolvedStage> = Vec::new();
        for (index, hosts) in cumulative(total, &sizes)? {
            let s = self.stages[index];
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
        Ok(out)
    }
}

/// Cumulative host counts per stage for a fleet of `total` hosts. Percentages round up,
/// every stage covers at least one host and at most `total`, a stage never covers fewer
/// hosts than the one before (`["5", "10%"]` on 20 hosts is 5, 5), and a stage that adds
/// no host is dropped, so the result strictly increases and ends at `total`. The last stage
/// must cover every host, else [`StageError::Short`]. No hosts gives no stages.
pub fn stage_sizes(total: usize, stages: &[StageSize]) -> Result<Vec<usize>, StageError> {
    let mut sizes: Vec<usize> = cumulative(total, stages)?
        .into_iter()
        .map(|(_, hosts)| hosts)
        .collect();
    sizes.dedup();
    Ok(sizes)
}

/// `(stage index, cumulative hosts)` per stage, never decreasing (kept stage by stage).
fn cumulative(total: usize, stages: &[StageSize]) -> Result<Vec<(usize, usize)>, StageError> {
    let Some(last) = stages.last() else {
        return Err(StageError::Empty {
            key: "rollout.stages",
        });
    };
    if total == 0 {
        return Ok(Vec::new());
    }
    let covers = last.hosts(total);
    if covers < total {
        return Err(StageError::Short {
            stage: stages.len(),
            size: *last,
            covers,
            total,
        });
    }
    let mut done = 0;
    Ok(stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            done = done.max(s.hosts(total));
            (i, done)
        })
        .collect())
}

/// The order hosts move in, the same for the same inputs whatever their order: hosts
/// sorted by a stable hash of `seed` (the deployment id) and their name. With `spread_by`,
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
