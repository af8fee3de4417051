//! Who a certificate speaks for. Every certificate the fleet CA issues carries exactly one
//! Drover identity as a URI subject alternative name:
//!
//! | identity | URI |
//! |---|---|
//! | the controller | `urn:drover:controller` |
//! | an agent | `urn:drover:agent:<host name>` |
//! | an operator | `urn:drover:operator:<role>:<name>` |
//!
//! Peers decide what a connection may do from this identity, read from the verified
//! certificate; being signed by the CA alone grants nothing.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;

/// The URI prefix of every Drover identity.
const URN_PREFIX: &str = "urn:drover:";

/// What an operator may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read-only: hosts, status, history, secret names.
    Viewer,
    /// Viewer, plus deploy, roll back, promote, pause, resume, abort, cancel.
    Deployer,
    /// Everything, including join tokens, API tokens, secrets and removing hosts.
    Admin,
}

impl Role {
    /// The role's name as written in certificates, tokens and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    /// Whether this role includes everything `needed` allows.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: expected admin, deployer or viewer"
            )),
        }
    }
}

/// The identity a Drover certificate speaks for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The controller: the only peer agents take commands from.
    Controller,
    /// The agent on one host, bound to the host's name.
    Agent {
        /// The host name the agent enrolled under.
        name: String,
    },
    /// A person or a CI job using the CLI.
    Operator {
        /// Who: shown in history next to everything they did.
        name: String,
        /// What they may do.
        role: Role,
    },
}

impl Identity {
    /// The URI subject alternative name that encodes this identity.
    pub fn to_uri(&self) -> String {
        match self {
            Identity::Controller => format!("{URN_PREFIX}controller"),
            Identity::Agent { name } => format!("{URN_PREFIX}agent:{name}"),
            Identity::Operator { name, role } => format!("{URN_PREFIX}operator:{role}:{name}"),
        }
    }

    /// Parses a URI subject alternative name; `None` when it is not a Drover identity.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URN_PREFIX)?;
        if rest == "controller" {
            return Some(Identity::Controller);
        }
        if let Some(name) = rest.strip_prefix("agent:") {
            return valid_name(name).then(|| Identity::Agent {
                name: name.to_owned(),
            });
        }
        let rest = rest.strip_prefix("operator:")?;
        let (role, name) = rest.split_once(':')?;
        let role = role.parse().ok()?;
        valid_name(name).then(|| Identity::Operator {
            name: name.to_owned(),
            role,
        })
    }

    /// The common name used for this identity's certificate subject.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Controller => "drover controller".to_owned(),
            Identity::Agent { name } => format!("drover agent {name}"),
            Identity::Operator { name, .. } => format!("drover operator {name}"),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Controller => f.write_str("controller"),
            Identity::Agent { name } => write!(f, "agent {name}"),
            Identity::Operator { name, role } => write!(f, "{name} ({role})"),
        }
    }
}

/// Whether `name` may name a host or an operator: 1 to 128 characters of letters, digits,
/// `.`, `-`, `_` and `@`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

/// What a verified peer certificate says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The Drover identity, if the certificate carries exactly one.
    pub identity: Option<Identity>,
    /// The serial number, lowercase hex: what revocation records.
    pub serial: String,
    /// When the certificate stops being valid, in seconds since the Unix epoch.
    pub not_after_unix: i64,
}

impl PeerCertificate {
    /// Reads the identity, serial and expiry from a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<PeerCertificate, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("unreadable certificate: {e}"))?;
        let mut identities = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name
                    && let Some(id) = Identity::from_uri(uri)
                {
                    identities.push(id);
                }
            }
        }
        let identity = match identities.len() {
            1 => identities.pop(),
            _ => None,
        };
        Ok(PeerCertificate {
            identity,
            serial: hex::encode(cert.raw_serial()),
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_through_their_uri() {
        for id in [
            Identity::Controller,
            Identity::Agent {
                name: "web-1.example".into(),
            },
            Identity::Operator {
                name: "ci@build".into(),
                role: Role::Deployer,
            },
        ] {
            assert_eq!(Identity::from_uri(&id.to_uri()), Some(id));
        }
    }

    #[test]
    fn foreign_or_malformed_uris_are_not_identities() {
        for uri in [
            "spiffe://example/controller",
            "urn:drover:agent:",
            "urn:drover:agent:bad name",
            "urn:drover:operator:root:alice",
            "urn:drover:operator:admin",
            "urn:drover:controller:x",
        ] {
            assert_eq!(Identity::from_uri(uri), None, "{uri}");
        }
    }

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::Admin.allows(Role::Deployer));
        assert!(Role::Deployer.allows(Role::Viewer));
        assert!(!Role::Viewer.allows(Role::Deployer));
        assert!(!Role::Deployer.allows(Role::Admin));
        assert_eq!("deployer".parse::<Role>(), Ok(Role::Deployer));
        assert!("root".parse::<Role>().unwrap_err().contains("root"));
    }
}
