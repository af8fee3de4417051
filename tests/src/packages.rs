//! Drover's release artifacts as `deploy/package.sh --no-build` makes them from the
//! static release binaries (built by `tests/run.sh`): the two `.deb` packages and the
//! tarball, and what `dpkg-deb` says about a package. Packaging runs once per test
//! process, under a file lock, since test processes start at once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The static release binaries `deploy/package.sh` packages.
const RELEASE_DIR: &str = "x86_64-unknown-linux-gnu/release";

/// The artifacts in `target/packages/`.
#[derive(Debug, Clone)]
pub struct Packages {
    /// `drover_<version>_amd64.deb`: the controller and CLI.
    pub controller: PathBuf,
    /// `drover-agent_<version>_amd64.deb`.
    pub agent: PathBuf,
    /// `drover-<version>-x86_64-linux.tar.gz`.
    pub tarball: PathBuf,
    /// The workspace version they carry.
    pub version: String,
}

/// Runs `deploy/package.sh --no-build` once per process and returns its artifacts.
/// Blocking. Panics with the build command when the static binaries are missing.
pub fn packages() -> Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT
        .get_or_init(|| build().unwrap_or_else(|e| panic!("cannot build the packages: {e}")))
        .clone()
}

fn build() -> Result<Packages, String> {
    let release = crate::target_dir().join(RELEASE_DIR);
    for binary in ["drover", "drover-agent"] {
        if !release.join(binary).is_file() {
            return Err(format!(
                "{} is missing: build the static release binaries first with\n  \
                 bash deploy/package.sh\n(tests/run.sh does this)",
                release.join(binary).display()
            ));
        }
    }
    let _lock = crate::exclusive_lock("packages")?;

    let script = crate::workspace_root().join("deploy/package.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--no-build")
        .env("CARGO_TARGET_DIR", crate::target_dir())
        .output()
        .map_err(|e| format!("run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "deploy/package.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let version = env!("CARGO_PKG_VERSION").to_string();
    let dir = crate::target_dir().join("packages");
    let packages = Packages {
        controller: dir.join(format!("drover_{version}_amd64.deb")),
        agent: dir.join(format!("drover-agent_{version}_amd64.deb")),
        tarball: dir.join(format!("drover-{version}-x86_64-linux.tar.gz")),
        version,
    };
    for artifact in [&packages.controller, &packages.agent, &packages.tarball] {
        if !artifact.is_file() {
            return Err(format!(
                "deploy/package.sh did not write {}",
                artifact.display()
            ));
        }
    }
    Ok(packages)
    // The lock is released when `_lock` drops.
}

/// `dpkg-deb <args> <deb> <more>`'s stdout; panics with its stderr on failure.
pub fn dpkg_deb(args: &[&str], deb: &Path, more: &[&str]) -> String {
    let out = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .args(more)
        .output()
        .expect("dpkg-deb runs (apt-get install dpkg)");
    assert!(
        out.status.success(),
        "dpkg-deb {args:?} {} {more:?}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The paths a package installs (`./usr/bin/drover`, ...), directories included.
pub fn contents(deb: &Path) -> Vec<String> {
    dpkg_deb(&["--contents"], deb, &[])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_string))
        .collect()
}

/// Unpacks the files of `deb` into a new temporary directory.
pub fn unpack(deb: &Path) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("drover-deb-")
        .tempdir()
        .expect("tempdir");
    dpkg_deb(
        &["--extract"],
        deb,
        &[dir.path().to_str().expect("utf-8 path")],
    );
    dir
}
