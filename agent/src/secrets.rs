//! Secrets on the host: how a swap's `Secrets` reach the container, and the directory that
//! holds file-delivered ones.
//!
//! - [`plan`] checks a swap's secrets (names, delivery, mount path) before anything is
//!   touched and turns them into environment variables or files to write. Messages name
//!   secrets, never their values.
//! - [`SecretsDir`] owns `--secrets-dir`: one subdirectory per container,
//!   `<dir>/<container name>/<NAME>` (directory 0755, files 0444, the root 0700), written
//!   only when the root is on tmpfs or ramfs, so values never reach a disk. A container's
//!   subdirectory lives exactly as long as the container: it is removed with it, and
//!   [`SecretsDir::orphans`] finds those whose container is gone (e.g. after a crash).
//!
//! The file operations are blocking; async callers run them through `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use drover_shared::proto::{SecretDelivery, Secrets};

use crate::error::CommandFailure;
use crate::runtime::{MountSpec, Secret, SecretEnv};

/// Mode of the secrets root: only the agent may list it.
pub const ROOT_MODE: u32 = 0o700;
/// Mode of a container's directory: readable by any user the container runs as.
pub const CONTAINER_DIR_MODE: u32 = 0o755;
/// Mode of a secret file: read-only for everyone.
pub const FILE_MODE: u32 = 0o444;
/// Where files appear in the container when the command does not say.
pub const DEFAULT_MOUNT: &str = "/run/secrets";
/// Where the kernel lists the mounts the agent sees.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One secret file to write. `Debug` shows the name only.
#[derive(Clone)]
pub struct SecretFile {
    /// File name: the secret's name.
    pub name: String,
    /// The bytes to write.
    value: Vec<u8>,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretFile({}, <redacted>)", self.name)
    }
}

/// How a swap's container gets its secrets.
#[derive(Debug)]
pub enum Delivery {
    /// The swap carries no secrets.
    None,
    /// As environment variables.
    Env(Vec<SecretEnv>),
    /// As files under `mount` in the container.
    Files {
        /// Absolute path inside the container.
        mount: String,
        /// The files.
        files: Vec<SecretFile>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks a swap's secrets for `service` and decides their delivery. `env` is the spec's
/// own environment (`KEY=value`) and `mounts` its mounts, so clashes are refused by name.
pub fn plan(
    secrets: Option<&Secrets>,
    service: &str,
    env: &[String],
    mounts: &[MountSpec],
) -> Result<Delivery, CommandFailure> {
    let Some(secrets) = secrets.filter(|s| !s.values.is_empty()) else {
        return Ok(Delivery::None);
    };
    let mut seen = HashSet::new();
    for v in &secrets.values {
        check_name(&v.name).map_err(|reason| {
            CommandFailure::invalid(format!(
                "service {service}: invalid secret name {:?}: {reason}",
                v.name
            ))
        })?;
        if !seen.insert(v.name.as_str()) {
            return Err(CommandFailure::invalid(format!(
                "service {service}: secret {} is sent twice",
                v.name
            )));
        }
    }
    let delivery = SecretDelivery::try_from(secrets.delivery).map_err(|_| {
        CommandFailure::invalid(format!(
            "service {service}: unknown secret delivery {}: this agent (version {}) may be older than the controller",
            secrets.delivery,
            drover_shared::VERSION
        ))
    })?;
    match delivery {
        SecretDelivery::Env => {
            let mut vars = Vec::with_capacity(secrets.values.len());
            for v in &secrets.values {
                let prefix = format!("{}=", v.name);
                if env.iter().any(|e| e.starts_with(&prefix)) {
                    return Err(CommandFailure::invalid(format!(
                        "service {service}: secret {} is also a plain environment variable of the spec: remove one of them",
                        v.name
                    )));
                }
                let value = String::from_utf8(v.value.clone())
                    .ok()
                    .filter(|s| !s.contains('\0'))
                    .ok_or_else(|| {
                        CommandFailure::invalid(format!(
                            "service {service}: secret {} is not text without NUL bytes, which an environment variable needs: deliver it as files",
                            v.name
                        ))
                    })?;
                vars.push(SecretEnv {
                    name: v.name.clone(),
                    value: Secret::new(value),
                });
            }
            Ok(Delivery::Env(vars))
        }
        // Files is the default delivery.
        SecretDelivery::Files | SecretDelivery::Unspecified => {
            let mount = if secrets.mount_path.is_empty() {
                DEFAULT_MOUNT.to_string()
            } else {
                secrets.mount_path.clone()
            };
            check_mount_path(&mount).map_err(|reason| {
                CommandFailure::invalid(format!(
                    "service {service}: invalid secrets mount path {mount:?}: {reason}"
                ))
            })?;
            if let Some(m) = mounts
                .iter()
                .find(|m| Path::new(&m.target) == Path::new(&mount))
            {
                return Err(CommandFailure::invalid(format!(
                    "service {service}: the secrets mount path {mount} is also the target of mount {:?}: choose another",
                    m.source
                )));
            }
            let files = secrets
                .values
                .iter()
                .map(|v| SecretFile {
                    name: v.name.clone(),
                    value: v.value.clone(),
                })
                .collect();
            Ok(Delivery::Files { mount, files })
        }
    }
}

/// Secret names: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !(c.is_ascii_alphabetic() || c == '_') => {
            return Err("it must start with a letter or '_'");
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("use only letters, digits and '_'");
    }
    if name.len() > 128 {
        return Err("it is longer than 128 characters");
    }
    Ok(())
}

fn check_mount_path(path: &str) -> Result<(), &'static str> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err("it must be an absolute path");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("it may not contain '..'");
    }
    if p.parent().is_none() {
        return Err("it may not be the container's root");
    }
    Ok(())
}

/// The root of file-delivered secrets (`--secrets-dir`).
#[derive(Debug, Clone)]
pub struct SecretsDir {
    /// The directory (absolute).
    root: PathBuf,
    /// The mount table consulted for the tmpfs check (a sample file in tests).
    mountinfo: PathBuf,
    /// Values of environment-delivered secrets per container name, kept in memory only so
    /// that log lines can be redacted (file-delivered ones are read back from the files).
    env_values: Arc<Mutex<HashMap<String, Vec<Secret>>>>,
}

/// A mount as `/proc/self/mountinfo` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its filesystem type, e.g. `tmpfs`.
    pub fs_type: String,
}

impl SecretsDir {
    /// The secrets root at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            mountinfo: PathBuf::from(MOUNTINFO),
            env_values: Arc::default(),
        }
    }

    /// The same, checking the mount table in `mountinfo` instead of the process's own.
    pub fn with_mountinfo(root: impl Into<PathBuf>, mountinfo: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            mountinfo: mountinfo.into(),
            env_values: Arc::default(),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `container`'s secrets.
    pub fn container_dir(&self, container: &str) -> PathBuf {
        self.root.join(container)
    }

    /// Refuses a root that is not on tmpfs or ramfs; the message names the directory, the
    /// filesystem it is on and what to do.
    pub fn check_tmpfs(&self) -> Result<(), String> {
        let resolved = resolve(&self.root);
        let table = fs::read_to_string(&self.mountinfo).map_err(|e| {
            format!(
                "cannot tell whether the secrets directory {} is on tmpfs: reading {}: {e}",
                self.root.display(),
                self.mountinfo.display()
            )
        })?;
        match filesystem_of(&table, &resolved) {
            Some(m) if m.fs_type == "tmpfs" || m.fs_type == "ramfs" => Ok(()),
            Some(m) => Err(format!(
                "the secrets directory {} is on {} (mounted at {}), not on tmpfs, so secrets would be written to disk: \
                 set the agent's --secrets-dir to a directory on tmpfs, e.g. /run/drover-agent/secrets (systemd's \
                 RuntimeDirectory) or one under /dev/shm",
                self.root.display(),
                m.fs_type,
                m.mount_point.display()
            )),
            None => Err(format!(
                "the secrets directory {} is on no mount listed in {}: set the agent's --secrets-dir to a directory on tmpfs",
                self.root.display(),
                self.mountinfo.display()
            )),
        }
    }

    /// Writes `files` into `<root>/<container>/` (replacing what was there) and returns the
    /// directory. All or nothing: the files are written into a temporary directory that is
    /// renamed into place.
    pub fn write(&self, container: &str, files: &[SecretFile]) -> io::Result<PathBuf> {
        check_dir_name(container)?;
        if !self.root.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(ROOT_MODE)
                .create(&self.root)?;
            // Explicitly: the process umask may have narrowed or the builder not applied it.
            fs::set_permissions(&self.root, fs::Permissions::from_mode(ROOT_MODE))?;
        }
        let dir = self.container_dir(container);
        let tmp = self
            .root
            .join(format!(".{container}.{:08x}.tmp", rand::random::<u32>()));
        let written = (|| {
            fs::DirBuilder::new().mode(0o700).create(&tmp)?;
            for f in files {
                let path = tmp.join(&f.name);
                let mut out = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                out.write_all(&f.value)?;
                out.sync_all()?;
                fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE))?;
            }
            fs::set_permissions(&tmp, fs::Permissions::from_mode(CONTAINER_DIR_MODE))?;
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            fs::rename(&tmp, &dir)
        })();
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        Ok(dir)
    }

    /// Remembers (in memory) the environment-delivered secrets of `container`, for
    /// [`SecretsDir::values_of`].
    pub fn remember_env(&self, container: &str, vars: &[SecretEnv]) {
        let values = vars.iter().map(|v| v.value.clone()).collect();
        lock(&self.env_values).insert(container.to_string(), values);
    }

    /// Every secret value `container` was given, as text: the remembered environment
    /// values and the contents of its secret files. Blocking (reads files). Values given
    /// as environment variables before this agent started are not known.
    pub fn values_of(&self, container: &str) -> Vec<String> {
        let mut values: Vec<String> = lock(&self.env_values)
            .get(container)
            .map(|v| v.iter().map(|s| s.expose().to_string()).collect())
            .unwrap_or_default();
        if check_dir_name(container).is_ok()
            && let Ok(entries) = fs::read_dir(self.container_dir(container))
        {
            for entry in entries.flatten() {
                if let Ok(bytes) = fs::read(entry.path()) {
                    values.push(String::from_utf8_lossy(&bytes).into_owned());
                }
            }
        }
        values
    }

    /// Removes `container`'s directory; a missing one is fine.
    pub fn remove(&self, container: &str) -> io::Result<()> {
        lock(&self.env_values).remove(container);
        check_dir_name(container)?;
        match fs::remove_dir_all(self.container_dir(container)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Directories of `agent`'s containers (named `drover-<agent>-...`) that are not in
    /// `live`, including unfinished temporary ones: candidates for removal once the caller
    /// has made sure no container of that name exists (several agents may share a root).
    pub fn orphans(&self, agent: &str, live: &HashSet<String>) -> Vec<String> {
        let prefix = format!("drover-{agent}-");
        let Ok(entries) = fs::read_dir(&self.root) else {
            return vec![];
        };
        entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                let container = name
                    .strip_prefix('.')
                    .and_then(|n| n.strip_suffix(".tmp"))
                    .and_then(|n| n.rsplit_once('.').map(|(c, _)| c))
                    .unwrap_or(name);
                container.starts_with(&prefix) && !live.contains(container)
            })
            .collect()
    }

    /// Removes an entry [`SecretsDir::orphans`] returned.
    pub fn remove_orphan(&self, entry: &str) -> io::Result<()> {
        if let Some(tmp) = entry.strip_prefix('.') {
            check_dir_name(tmp)?;
            match fs::remove_dir_all(self.root.join(entry)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            self.remove(entry)
        }
    }
}

/// A container name is a single path component.
fn check_dir_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a container name"),
        ))
    }
}

/// `path` with symlinks resolved as far as it exists (it may not exist yet).
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = vec![];
    loop {
        if let Ok(real) = existing.canonicalize() {
            return rest.iter().rev().fold(real, |p, c| p.join(c));
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => return path.to_path_buf(),
        }
    }
}

/// The mount that holds `path` according to `mountinfo` (the text of
/// `/proc/self/mountinfo`): the longest mount point that is a prefix of `path`, component
/// by component; of mounts stacked on the same point, the last one listed.
pub fn filesystem_of(mountinfo: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // id parent major:minor root mount-point options [optional...] - fstype source super
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|i| i + 6) else {
            continue;
        };
        let (Some(point), Some(fs_type)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !path.starts_with(&point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| point.components().count() >= b.mount_point.components().count());
        if longer {
            best = Some(MountEntry {
                mount_point: point,
                fs_type: (*fs_type).to_string(),
            });
        }
    }
    best
}

/// Undoes the octal escapes (`\040` for a space) of mountinfo paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d[0] <= b'3' && d.iter().all(|b| (b'0'..=b'7').contains(b))
        });
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
