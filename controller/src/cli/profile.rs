//! Client profiles: `$XDG_CONFIG_HOME/drover/config.toml` (else `~/.config/drover/`)
//! holds named sets of controller addresses and credentials, written by `drover login`.
//! A command uses the profile named by `--profile` / `DROVER_PROFILE`, else the file's
//! `default`, else the profile called `default`; its flags and environment variables
//! override what the profile says.
//!
//! ```toml
//! default = "prod"
//! [profile.prod]
//! controllers = ["https://ctl-1.internal:7070", "https://ctl-2.internal:7070"]
//! ca_cert = "/home/alice/.config/drover/prod/ca.crt"
//! token_file = "/home/alice/.config/drover/prod/token"   # or cert = ..., key = ...
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Refused;

/// The name a profile gets when none is given.
pub const DEFAULT_PROFILE: &str = "default";

/// The whole client configuration file.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when none is named on the command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Profiles by name.
    #[serde(default)]
    pub profile: BTreeMap<String, Profile>,
}

/// Where one fleet's controller is and how to prove who you are to it.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Controller addresses, tried in order until one answers (replicas of one fleet).
    #[serde(default)]
    pub controllers: Vec<String>,
    /// The fleet CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Operator certificate (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Private key of `cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// File holding an API token (mode 0600); the token itself is never in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Plaintext to a `--insecure-dev` controller.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_dev: bool,
}

/// `$XDG_CONFIG_HOME/drover`, else `$HOME/.config/drover`; `None` without either.
pub fn config_dir() -> Option<PathBuf> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    non_empty("XDG_CONFIG_HOME")
        .or_else(|| non_empty("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("drover"))
}

/// The configuration file's path, when a config directory is known.
pub fn config_path() -> Option<PathBuf> {
    config_dir().map(|d| d.join("config.toml"))
}

impl ConfigFile {
    /// Reads `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Self, Refused> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Refused(format!("cannot read {}: {e}", path.display()))),
        };
        toml::from_str(&text).map_err(|e| {
            Refused(format!(
                "{} is not a valid drover client configuration: {}; fix it, or write it again with `drover login`",
                path.display(),
                e.message()
            ))
        })
    }

    /// The profile to use: `name` when given (it must exist), else the file's `default`,
    /// else the one called `default` if there is one.
    pub fn select(&self, name: Option<&str>, path: &Path) -> Result<Option<Profile>, Refused> {
        let wanted = name.map(str::to_owned).or_else(|| self.default.clone());
        match wanted {
            None => Ok(self.profile.get(DEFAULT_PROFILE).cloned()),
            Some(n) => self.profile.get(&n).cloned().map(Some).ok_or_else(|| {
                let known: Vec<&str> = self.profile.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "it has none".to_owned()
                } else {
                    format!("it has {}", known.join(", "))
                };
                Refused(format!(
                    "no profile {n:?} in {} ({known}); create it with `drover login --profile {n} --controller https://HOST:7070 ...`",
                    path.display()
                ))
            }),
        }
    }

    /// Writes the file atomically (mode 0600, its directory 0700).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        use std::os::unix::fs::DirBuilderExt;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string(self).context("cannot serialize the client configuration")?;
        drover_shared::tls::write_private(path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Loads the configuration file and picks the profile for `name`; no file, no profile.
pub fn active(name: Option<&str>) -> Result<Option<Profile>, Refused> {
    let Some(path) = config_path() else {
        return match name {
            Some(n) => Err(Refused(format!(
                "--profile {n}: neither XDG_CONFIG_HOME nor HOME is set, so there is no client configuration to read"
            ))),
            None => Ok(None),
        };
    };
    ConfigFile::load(&path)?.select(name, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> ConfigFile {
        toml::from_str(
            r#"
            default = "prod"
            [profile.prod]
            controllers = ["https://a:7070", "https://b:7070"]
            token_file = "/t"
            [profile.default]
            controllers = ["https://d:7070"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn the_named_profile_wins_then_the_files_default_then_the_one_called_default() {
        let p = Path::new("/c.toml");
        let f = file();
        assert_eq!(
            f.select(Some("default"), p).unwrap().unwrap().controllers,
            ["https://d:7070"]
        );
        assert_eq!(f.select(None, p).unwrap().unwrap().controllers.len(), 2);
        let mut no_default = f.clone();
        no_default.default = None;
        assert_eq!(
            no_default.select(None, p).unwrap().unwrap().controllers,
            ["https://d:7070"]
        );
        assert_eq!(ConfigFile::default().select(None, p).unwrap(), None);
    }

    #[test]
    fn an_unknown_profile_is_refused_naming_it_the_file_and_the_known_ones() {
        let e = file()
            .select(Some("stage"), Path::new("/c.toml"))
            .unwrap_err();
        assert!(
            e.0.contains("\"stage\"")
                && e.0.contains("/c.toml")
                && e.0.contains("default, prod")
                && e.0.contains("drover login --profile stage"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[profile.x]\ncontroller = \"https://a:7070\"\n").unwrap();
        let e = ConfigFile::load(&path).unwrap_err();
        assert!(
            e.0.contains("config.toml") && e.0.contains("controller"),
            "{e}"
        );
    }

    #[test]
    fn a_saved_file_reads_back_the_same_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drover/config.toml");
        let f = file();
        f.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), f);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            ConfigFile::load(&dir.path().join("missing.toml")).unwrap(),
            ConfigFile::default()
        );
    }
}
