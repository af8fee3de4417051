//! Directories on tmpfs (`/dev/shm`) for the agents' secrets: the agent refuses a
//! secrets directory that is not on tmpfs, and `/run` is not one on every test machine.
//!
//! A [`TmpfsDir`] is named `drover-test-<pid>-<random>` and removed when dropped, also when
//! the test panicked. A test process killed outright cannot clean up, so creating one
//! first removes the directories of test processes that no longer run.

use std::path::{Path, PathBuf};

/// Where the directories go.
const ROOT: &str = "/dev/shm";
/// Their name prefix (then `<pid>-<random>`).
const PREFIX: &str = "drover-test-";

/// A directory on tmpfs, removed with everything in it when dropped.
#[derive(Debug)]
pub struct TmpfsDir {
    /// The directory.
    path: PathBuf,
}

impl TmpfsDir {
    /// Creates a new, empty directory (mode 0700) under `/dev/shm`.
    pub fn new() -> Self {
        sweep_orphans();
        let path = Path::new(ROOT).join(format!(
            "{PREFIX}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("create {}: {e} (is /dev/shm a tmpfs?)", path.display()));
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
        }
        Self { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TmpfsDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TmpfsDir {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Removes a directory tree whose files may be read-only (secrets are written 0444).
fn remove(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    // A directory without write permission for its owner: open it up and retry.
    let _ = std::process::Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(path)
        .status();
    if let Err(e) = std::fs::remove_dir_all(path) {
        eprintln!("cannot remove {}: {e}", path.display());
    }
}

/// Removes the directories of test processes that are gone (killed by a timeout, say).
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_removed_with_read_only_contents() {
        let dir = TmpfsDir::new();
        let path = dir.path().to_path_buf();
        let sub = path.join("c1");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("S"), b"x").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(sub.join("S"), std::fs::Permissions::from_mode(0o444))
                .unwrap();
        }
        assert!(path.starts_with(ROOT));
        drop(dir);
        assert!(!path.exists());
    }
}
