//! `[secrets]` and `[registry]`: which secrets a service's containers get and how, and
//! the registry credentials the CLI passes on. Names only: values never sit in a spec.

use std::collections::BTreeSet;

use drover_proto::v1 as proto;
use serde::{Deserialize, Serialize};

use super::{ServiceSection, SpecError, invalid};

/// `[secrets]`: which of the service's secrets its containers get, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSection {
    /// Secret names (`[A-Za-z_][A-Za-z0-9_]*`); every one must be set for the service
    /// before a deploy (`drover secret set SERVICE NAME`).
    #[serde(default)]
    pub names: Vec<String>,
    /// `files` (default: one read-only file per secret under `mount`, on tmpfs) or `env`.
    #[serde(default)]
    pub delivery: SecretDelivery,
    /// Where the files appear in the container (files only).
    #[serde(default = "default_secrets_mount")]
    pub mount: String,
}

impl Default for SecretsSection {
    fn default() -> Self {
        Self {
            names: Vec::new(),
            delivery: SecretDelivery::default(),
            mount: default_secrets_mount(),
        }
    }
}

fn default_secrets_mount() -> String {
    "/run/secrets".into()
}

/// How a container receives its secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretDelivery {
    /// Read-only files on a tmpfs mount, one per secret, named after it.
    #[default]
    Files,
    /// Environment variables named after the secrets.
    Env,
}

impl SecretsSection {
    /// No secrets, default delivery: nothing to write back in TOML.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The delivery of swaps in wire form, with the files' directory (empty for env).
    pub(super) fn delivery(&self) -> (proto::SecretDelivery, String) {
        match self.delivery {
            SecretDelivery::Env => (proto::SecretDelivery::Env, String::new()),
            SecretDelivery::Files => (proto::SecretDelivery::Files, self.mount.clone()),
        }
    }

    /// Refuses bad names, and a delivery that collides with the service's own
    /// environment or mounts.
    pub(super) fn check(&self, service: &ServiceSection) -> Result<(), SpecError> {
        let mut seen = BTreeSet::new();
        for name in &self.names {
            if !crate::secrets::valid_secret_name(name) {
                return Err(invalid(
                    "secrets.names",
                    format!(
                        "{name:?}: use letters, digits and '_', not starting with a digit (like DB_PASSWORD)"
                    ),
                ));
            }
            if !seen.insert(name) {
                return Err(invalid(
                    "secrets.names",
                    format!("{name:?} is listed twice"),
                ));
            }
        }
        match self.delivery {
            SecretDelivery::Env => {
                if let Some(name) = self.names.iter().find(|n| service.env.contains_key(*n)) {
                    return Err(invalid(
                        "secrets.names",
                        format!(
                            "{name:?} is also set in service.env; a secret delivered as environment must not be"
                        ),
                    ));
                }
            }
            SecretDelivery::Files => {
                let m = &self.mount;
                if !m.starts_with('/')
                    || m == "/"
                    || m.contains(':')
                    || m.split('/').any(|p| p == "..")
                {
                    return Err(invalid(
                        "secrets.mount",
                        format!(
                            "{m:?}: give an absolute directory in the container, like /run/secrets"
                        ),
                    ));
                }
                if service
                    .mounts
                    .iter()
                    .any(|x| x.target.trim_end_matches('/') == m.trim_end_matches('/'))
                {
                    return Err(invalid(
                        "secrets.mount",
                        format!("{m:?} is also the target of an entry in service.mounts"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `[registry]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Registry user.
    pub username: String,
    /// Environment variable (read by the CLI) that holds the password; never the password.
    pub password_env: String,
}

impl RegistrySection {
    /// Refuses a section that names no password variable.
    pub(super) fn check(&self) -> Result<(), SpecError> {
        if self.password_env.is_empty() {
            return Err(invalid(
                "registry.password_env",
                "name the environment variable holding the password",
            ));
        }
        Ok(())
    }
}
