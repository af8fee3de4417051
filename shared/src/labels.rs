//! Docker label keys Drover writes on the containers it manages, and label selectors
//! (`role=web,zone!=b`) that pick hosts by their agent labels.

use std::collections::BTreeMap;
use std::fmt;

/// The service a container belongs to.
pub const SERVICE: &str = "drover.service";
/// The human version (tag) the container was deployed as.
pub const VERSION: &str = "drover.version";
/// The deployment that created the container.
pub const DEPLOYMENT: &str = "drover.deployment";
/// The deployment epoch of the command that created the container.
pub const EPOCH: &str = "drover.epoch";
/// The agent (host name) that manages the container; several agents may share an engine.
pub const AGENT: &str = "drover.agent";
/// The command id that created the container (idempotency across agent restarts).
pub const COMMAND: &str = "drover.command";
/// The image digest the container was created from.
pub const DIGEST: &str = "drover.digest";
/// The image reference as the operator wrote it.
pub const IMAGE: &str = "drover.image";
/// The readiness probe the container was swapped in with, so a restarted agent can
/// check a container it finds running (absent: running is enough).
pub const READINESS: &str = "drover.readiness";
/// The deploy hook a one-off container runs (such a container is no service's).
pub const HOOK: &str = "drover.hook";
/// The service a hook container runs for.
pub const HOOK_SERVICE: &str = "drover.hook-service";
/// The stop grace (ms) the container was swapped in with.
pub const STOP_GRACE: &str = "drover.stop-grace-ms";

/// Is `key` reserved for Drover's own labels?
pub fn is_reserved(key: &str) -> bool {
    key.starts_with("drover.")
}

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
}

/// A conjunction of label terms: `k=v`, `k!=v`, or a bare `k` (label present).
/// The empty selector matches every host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    terms: Vec<Term>,
}

/// A selector that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid label selector term {term:?}: {reason} (expected key=value, key!=value or key, separated by commas)"
)]
pub struct SelectorError {
    /// The offending term, as written.
    pub term: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl Selector {
    /// Parses `role=web,zone!=b,canary`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = vec![];
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = |reason| SelectorError {
                term: raw.to_string(),
                reason,
            };
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::NotEquals(valid_key(k.trim()).map_err(bad)?, v.trim().to_string())
            } else if let Some((k, v)) = raw.split_once('=') {
                Term::Equals(valid_key(k.trim()).map_err(bad)?, v.trim().to_string())
            } else {
                Term::Exists(valid_key(raw).map_err(bad)?)
            };
            terms.push(term);
        }
        Ok(Self { terms })
    }

    /// Does a host with these labels match?
    pub fn matches<'a, I>(&self, labels: I) -> bool
    where
        I: IntoIterator<Item = (&'a String, &'a String)> + Clone,
    {
        let get = |key: &str| {
            labels
                .clone()
                .into_iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v.as_str())
        };
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => get(k) == Some(v.as_str()),
            Term::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Term::Exists(k) => get(k).is_some(),
        })
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| match t {
                Term::Equals(k, v) => format!("{k}={v}"),
                Term::NotEquals(k, v) => format!("{k}!={v}"),
                Term::Exists(k) => k.clone(),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

fn valid_key(k: &str) -> Result<String, &'static str> {
    if k.is_empty() {
        return Err("empty label key");
    }
    if !k
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
    {
        return Err("label keys may use letters, digits, '.', '-', '_' and '/'");
    }
    Ok(k.to_string())
}

/// Parses one `key=value` label as given on a command line or in a config file.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid label {s:?}: expected key=value"))?;
    let k = valid_key(k.trim()).map_err(|r| format!("invalid label {s:?}: {r}"))?;
    Ok((k, v.trim().to_string()))
}

/// Labels as an ordered map, the form used in configs and protos.
pub type Labels = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_terms() {
        let s = Selector::parse("role=web, zone!=b,canary").unwrap();
        assert!(s.matches(&labels(&[("role", "web"), ("zone", "a"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("role", "web"), ("zone", "b"), ("canary", "")])));
        assert!(!s.matches(&labels(&[("role", "web"), ("zone", "a")])));
        assert!(!s.matches(&labels(&[("role", "db"), ("canary", "1")])));
        assert_eq!(s.to_string(), "role=web,zone!=b,canary");
    }

    #[test]
    fn empty_selector_matches_all() {
        assert!(Selector::parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn bad_selector_names_the_term() {
        let e = Selector::parse("role=web,=x").unwrap_err();
        assert_eq!(e.term, "=x");
        assert!(Selector::parse("ro le=web").is_err());
    }

    #[test]
    fn parse_label_needs_equals() {
        assert_eq!(parse_label("zone=a").unwrap(), ("zone".into(), "a".into()));
        assert!(parse_label("zone").unwrap_err().contains("zone"));
    }
}
