//! The stage keys of `[rollout]`: a staged canary rollout as written (`rollout.stages`,
//! `[[rollout.stage]]`, `rollout.spread_by`) and as parsed ([`Stages`], which cannot hold
//! a stage list that leaves hosts behind or adds no host).
//!
//! Stages are cumulative: `["1", "10%", "50%", "100%"]` means one host, then up to a
//! tenth of the targets, and so on. What a stage list means against an actual fleet is
//! the rollout engine's business (`rollout::stages`).

use std::time::Duration;

use drover_shared::duration;
use serde::{Deserialize, Serialize};

use super::BatchSize;

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

/// The stage keys of `[rollout]`, as written. Meant to sit in `[rollout]` field by field
/// (serde cannot flatten under `deny_unknown_fields`).
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

/// One parsed stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Hosts done by its end, cumulative.
    pub size: StageSize,
    /// Watch time after its hosts are done.
    pub bake: Duration,
    /// How it hands over to the next stage.
    pub promotion: Promotion,
}

impl Stage {
    /// A stage of `size` with no bake and automatic promotion (the short form's).
    fn plain(size: StageSize) -> Self {
        Self {
            size,
            bake: Duration::ZERO,
            promotion: Promotion::Auto,
        }
    }
}

/// Parsed stages: at least one, each adding hosts over the earlier ones of its kind, the
/// last `100%`, and one label key to spread them over. Only [`StagesSpec::validate`]
/// builds them, so they always hold. The default is one stage of all hosts, no bake,
/// auto promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages {
    /// In order; the last is `100%`.
    stages: Vec<Stage>,
    /// Label to spread hosts over.
    spread_by: Option<String>,
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            stages: vec![Stage::plain(StageSize::Percent(100))],
            spread_by: None,
        }
    }
}

impl Stages {
    /// The stages in order; never empty, the last is `100%`.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The agent label every stage is spread over.
    pub fn spread_by(&self) -> Option<&str> {
        self.spread_by.as_deref()
    }

    /// The canonical stage keys: the short form when no stage bakes or waits for a
    /// promotion, else the long form; `spread_by` once, in `[rollout]`.
    pub fn to_spec(&self) -> StagesSpec {
        let plain = self.stages.iter().all(|s| *s == Stage::plain(s.size));
        let (stages, stage) = if plain {
            (
                Some(self.stages.iter().map(|s| s.size).collect()),
                Vec::new(),
            )
        } else {
            let long = self
                .stages
                .iter()
                .map(|s| StageSpec {
                    hosts: s.size,
                    bake: s.bake,
                    promotion: s.promotion,
                    spread_by: None,
                })
                .collect();
            (None, long)
        };
        StagesSpec {
            stages,
            stage,
            spread_by: self.spread_by.clone(),
        }
    }
}

impl StagesSpec {
    /// Whether a stage form is given at all (`spread_by` alone is not one).
    pub fn is_staged(&self) -> bool {
        self.stages.is_some() || !self.stage.is_empty()
    }

    /// Parses the stage keys; neither form gives [`Stages::default`].
    pub fn validate(&self) -> Result<Stages, StageError> {
        let (key, stages): (&'static str, Vec<Stage>) = match (&self.stages, &self.stage[..]) {
            (Some(_), [_, ..]) => return Err(StageError::BothForms),
            (None, []) => ("rollout.stages", Stages::default().stages),
            (Some(short), []) => (
                "rollout.stages",
                short.iter().copied().map(Stage::plain).collect(),
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

#[cfg(test)]
mod tests;
