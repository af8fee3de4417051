//! Registry credentials the controller itself holds (`drover serve --registry-auth-file`),
//! for pulls of deployments that carry none of their own: a scheduled deploy that a
//! restarted controller resumes (credentials given to the CLI are never stored), or
//! deploys started by a scheduler rather than a person. The passwords never reach a log:
//! `Debug` hides them.

use std::fmt;
use std::path::Path;

use drover_proto::v1::RegistryAuth;
use serde::Deserialize;

/// Credentials per registry host.
#[derive(Clone, Default)]
pub struct RegistryCredentials {
    entries: Vec<RegistryAuth>,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<_> = self
            .entries
            .iter()
            .map(|e| (&e.server, &e.username))
            .collect();
        f.debug_struct("RegistryCredentials")
            .field("servers", &servers)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    registry: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    server: String,
    username: String,
    password: String,
}

/// Why the credentials file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Unreadable.
    #[error("cannot read registry credentials {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not the expected TOML (the message never quotes values).
    #[error(
        "registry credentials {path} are invalid: {reason}; expected [[registry]] tables with server, username and password"
    )]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Readable by others than its owner.
    #[error(
        "registry credentials {path} are readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
}

impl RegistryCredentials {
    /// Loads `path`; refuses a file others may read.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Permissions { path: shown, mode });
        }
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: shown.clone(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| CredentialsError::Parse {
            path: shown.clone(),
            // toml's message may quote the offending line, which could hold a password.
            reason: e.message().to_string(),
        })?;
        Ok(Self {
            entries: file
                .registry
                .into_iter()
                .map(|e| RegistryAuth {
                    server: e.server,
                    username: e.username,
                    password: e.password,
                })
                .collect(),
        })
    }

    /// The credentials for the registry of `image`, if held.
    pub fn for_image(&self, image: &str) -> Option<RegistryAuth> {
        let host = drover_shared::image::ImageRef::parse(image)
            .ok()?
            .registry_host()
            .to_string();
        self.entries.iter().find(|e| e.server == host).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loads_matches_and_hides_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        std::fs::write(&path, "[[registry]]\nserver = \"127.0.0.1:5000\"\nusername = \"ci\"\npassword = \"hunter2\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = RegistryCredentials::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = RegistryCredentials::load(&path).unwrap();
        assert_eq!(
            c.for_image("127.0.0.1:5000/demo:v2").unwrap().username,
            "ci"
        );
        assert!(c.for_image("other:5000/demo:v2").is_none());
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn parse_errors_do_not_quote_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.toml");
        std::fs::write(
            &path,
            "[[registry]]\nserver = \"r\"\npassword = \"hunter2\"\nuser = 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = RegistryCredentials::load(&path).unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
