//! `[env.NAME]`: environments as overlays of one service spec.
//!
//! A spec may define environments (`[env.staging]`, `[env.production]`), each able to
//! override where the service runs and how it moves there (targets, load balancer,
//! container env, rollout plan, canary thresholds, deploy windows, which secrets, hooks) and
//! to set the gates a deploy into it must pass (`requires` with `soak`, `approval`, an
//! error budget `slo`).
//! What the service *is* (its image repository, port, readiness, registry) stays one
//! definition for every environment.
//!
//! An overlay is merged into the spec as written, table by table (a key the overlay
//! sets replaces the spec's, a table it sets is merged key by key, except a
//! `load_balancer` of another `kind`, which replaces the spec's: `load_balancer = { kind
//! = "none" }` takes the load balancer away in that environment), and the result is
//! parsed as any spec is, so every environment is checked once, here, when the file is
//! read. A spec without `[env.*]` has one implicit environment, named `""`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::{Table, Value};

use super::traffic::default_lb_kind;
use super::{ServiceSpec, SpecError, invalid, valid_service_name};
use crate::slo::{RawSlo, SloSpec};

/// The name of the one implicit environment of a spec that defines none.
pub const IMPLICIT: &str = "";

/// Keys an overlay may set that override the spec's own sections.
const OVERRIDABLE: [&str; 8] = [
    "targets",
    "load_balancer",
    "env",
    "rollout",
    "canary",
    "schedule",
    "secrets",
    "hooks",
];

/// Keys that are gates of the environment, not part of the service spec.
const GATE_KEYS: [&str; 4] = ["requires", "soak", "approval", "slo"];

/// Sections every environment shares.
const SHARED: [&str; 3] = ["service", "readiness", "registry"];

/// A spec file with its environments, each resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecFile {
    /// The spec without overlays: the implicit environment of a spec that defines none.
    base: ServiceSpec,
    /// The environments by name; empty when the spec defines none.
    environments: BTreeMap<String, Environment>,
}

/// One environment of a service: the spec as it applies there, and its gates.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    /// Its name (`""` for the implicit one).
    pub name: String,
    /// The spec with the environment's overlay applied.
    pub spec: ServiceSpec,
    /// What a deploy into it must pass first.
    pub gates: Gates,
}

/// The gates of an environment, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gates {
    /// `requires = "staging"`: the release's digest must have succeeded there.
    pub requires: Option<String>,
    /// `soak = "1h"`: at least this long ago (with `requires`).
    pub soak: Duration,
    /// `approval = "required"`: a second person with the deployer role approves.
    pub approval: bool,
    /// `slo = { availability = "99.5%", window = "30d" }`: the environment's error
    /// budget, sampled from its load balancer; a spent budget holds deploys.
    pub slo: Option<SloSpec>,
}

impl Gates {
    /// Whether any gate is set.
    pub fn is_empty(&self) -> bool {
        self.requires.is_none() && !self.approval
    }
}

/// The gate keys of an overlay as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGates {
    #[serde(default)]
    requires: Option<String>,
    #[serde(default)]
    soak: Option<String>,
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    slo: Option<RawSlo>,
}

impl SpecFile {
    /// Parses a spec and every environment it defines; any bad value, in the spec or in
    /// an overlay, is refused naming the environment and the key.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let mut table: Table = toml::from_str(text).map_err(|e| SpecError::Parse(e.to_string()))?;
        let overlays = match table.remove("env") {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                return Err(invalid(
                    "env",
                    "must be tables of environments, like [env.staging] and [env.production]",
                ));
            }
        };
        let base = ServiceSpec::from_table(table.clone())?;
        let mut environments = BTreeMap::new();
        for (name, overlay) in overlays {
            let env = resolve(&table, &name, overlay).map_err(|e| SpecError::Environment {
                name: name.clone(),
                source: Box::new(e),
            })?;
            environments.insert(name, env);
        }
        for env in environments.values() {
            if let Some(required) = &env.gates.requires {
                let known = environments.contains_key(required);
                if !known || *required == env.name {
                    return Err(SpecError::Environment {
                        name: env.name.clone(),
                        source: Box::new(invalid(
                            "requires",
                            format!(
                                "{required:?} {}; name another environment of this spec ({})",
                                if known {
                                    "is this environment itself"
                                } else {
                                    "is not an environment of this spec"
                                },
                                names(environments.keys())
                            ),
                        )),
                    });
                }
            }
        }
        Ok(Self { base, environments })
    }

    /// The spec without any environment's overlay: what every environment shares
    /// (the service, its image repository, readiness, registry).
    pub fn base(&self) -> &ServiceSpec {
        &self.base
    }

    /// The service's name (the same in every environment).
    pub fn service(&self) -> &str {
        &self.base.service.name
    }

    /// The environment names, sorted; empty when the spec defines none.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.environments.keys().map(String::as_str)
    }

    /// Whether the spec defines environments.
    pub fn has_environments(&self) -> bool {
        !self.environments.is_empty()
    }

    /// The environment a deploy names (`None`: the implicit one of a spec without
    /// environments). Refuses an unknown name, and no name when the spec has several.
    pub fn environment(&self, name: Option<&str>) -> Result<Environment, UnknownEnvironment> {
        match (name.filter(|n| !n.is_empty()), self.has_environments()) {
            (None, false) => Ok(Environment {
                name: IMPLICIT.to_string(),
                spec: self.base.clone(),
                gates: Gates::default(),
            }),
            (Some(n), true) => {
                self.environments
                    .get(n)
                    .cloned()
                    .ok_or_else(|| UnknownEnvironment {
                        service: self.service().to_string(),
                        asked: Some(n.to_string()),
                        defined: self.environments.keys().cloned().collect(),
                    })
            }
            (asked, _) => Err(UnknownEnvironment {
                service: self.service().to_string(),
                asked: asked.map(str::to_string),
                defined: self.environments.keys().cloned().collect(),
            }),
        }
    }
}

/// An environment a spec does not define, or none named where one must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct UnknownEnvironment {
    /// The service.
    pub service: String,
    /// The name asked for; `None` when none was given.
    pub asked: Option<String>,
    /// What the spec defines.
    pub defined: Vec<String>,
}

impl fmt::Display for UnknownEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = &self.service;
        match (&self.asked, self.defined.is_empty()) {
            (Some(e), true) => write!(
                f,
                "unknown environment {e:?}: the spec of {service} defines no environments; drop --env, or add an [env.{e}] section"
            ),
            (Some(e), false) => write!(
                f,
                "unknown environment {e:?}: the spec of {service} defines {}; pass one of them with --env",
                names(self.defined.iter())
            ),
            (None, _) => write!(
                f,
                "the spec of {service} defines environments ({}): say which with --env",
                names(self.defined.iter())
            ),
        }
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    it.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Applies the overlay of environment `name` to the spec `base` (as written).
fn resolve(base: &Table, name: &str, overlay: Value) -> Result<Environment, SpecError> {
    if !valid_service_name(name) {
        return Err(invalid(
            "env",
            format!(
                "{name:?} is not a valid environment name: use lowercase letters, digits, '.', '_' and '-'"
            ),
        ));
    }
    let Value::Table(overlay) = overlay else {
        return Err(invalid("env", format!("[env.{name}] must be a table")));
    };
    let mut merged = base.clone();
    let mut gates = Table::new();
    for (key, value) in overlay {
        if GATE_KEYS.contains(&key.as_str()) {
            gates.insert(key, value);
        } else if key == "env" {
            let Value::Table(vars) = value else {
                return Err(invalid(
                    "env",
                    "must be a table of container environment variables",
                ));
            };
            let service = merged
                .entry("service")
                .or_insert_with(|| Value::Table(Table::new()));
            if let Value::Table(service) = service {
                let env = service
                    .entry("env")
                    .or_insert_with(|| Value::Table(Table::new()));
                merge(env, Value::Table(vars));
            }
        } else if OVERRIDABLE.contains(&key.as_str()) {
            let replace = merged
                .get(&key)
                .is_some_and(|existing| replaces(&key, existing, &value));
            match merged.get_mut(&key) {
                Some(existing) if !replace => merge(existing, value),
                _ => {
                    merged.insert(key, value);
                }
            }
        } else if SHARED.contains(&key.as_str()) {
            return Err(invalid(
                key.clone(),
                format!(
                    "[{key}] is one definition for every environment: set it at the top of the spec, not in [env.{name}]"
                ),
            ));
        } else {
            return Err(invalid(
                key.clone(),
                format!(
                    "unknown key in [env.{name}]; an environment may set {}, and the gates {}",
                    OVERRIDABLE.join(", "),
                    GATE_KEYS.join(", ")
                ),
            ));
        }
    }
    let spec = ServiceSpec::from_table(merged)?;
    let gates = parse_gates(gates)?;
    if gates.slo.is_some() && spec.load_balancer.is_none() {
        return Err(invalid(
            "slo",
            "an error budget is measured on the load balancer's counters, and this environment has no load balancer (no [load_balancer], or kind = \"none\"): give it an HAProxy [load_balancer], or remove slo",
        ));
    }
    Ok(Environment {
        name: name.to_string(),
        spec,
        gates,
    })
}

/// Whether the overlay of section `key` replaces the spec's `base` section instead of
/// merging into it: a `load_balancer` of another `kind` is another load balancer (or,
/// with `kind = "none"`, none at all), and none of the spec's keys carry over to it.
fn replaces(key: &str, base: &Value, overlay: &Value) -> bool {
    if key != "load_balancer" {
        return false;
    }
    let kind = |v: &Value| v.get("kind").and_then(Value::as_str).map(str::to_string);
    kind(overlay).is_some_and(|k| k != kind(base).unwrap_or_else(default_lb_kind))
}

/// Merges `overlay` into `base`: tables key by key, anything else replaced.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn parse_gates(table: Table) -> Result<Gates, SpecError> {
    let raw: RawGates = table
        .try_into()
        .map_err(|e: toml::de::Error| SpecError::Parse(e.to_string()))?;
    let soak = match &raw.soak {
        None => Duration::ZERO,
        Some(s) => drover_shared::duration::parse(s).map_err(|e| {
            invalid(
                "soak",
                format!("{s:?}: {e}; write a duration like \"30m\" or \"2h\""),
            )
        })?,
    };
    if raw.soak.is_some() && raw.requires.is_none() {
        return Err(invalid(
            "soak",
            "only means something with `requires`: how long ago the required environment must have succeeded",
        ));
    }
    let approval = match raw.approval.as_deref() {
        None | Some("none") => false,
        Some("required") => true,
        Some(other) => {
            return Err(invalid(
                "approval",
                format!(
                    "{other:?}: write \"required\" (a second person approves with `drover approve`) or \"none\""
                ),
            ));
        }
    };
    if let Some(r) = &raw.requires
        && r.is_empty()
    {
        return Err(invalid(
            "requires",
            "name the environment that must have run the release first",
        ));
    }
    let slo = raw.slo.as_ref().map(SloSpec::from_raw).transpose()?;
    Ok(Gates {
        requires: raw.requires,
        soak,
        approval,
        slo,
    })
}

#[cfg(test)]
#[path = "environments_tests.rs"]
mod tests;
