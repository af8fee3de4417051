//! A clean Debian host in a container, for installing Drover's packages: the minimal
//! bookworm root filesystem `tests/setup.sh` makes once with debootstrap
//! (`$DROVER_TEST_ROOTFS`), imported into Docker as [`IMAGE`] when missing or made from
//! another file (kept between runs, like the demo images), and a container of it that
//! is removed, whatever happens to the test, when its guard drops.
//!
//! The container shares the host's network namespace (`--network host`), so the agent
//! in it dials a controller on 127.0.0.1: traffic stays on loopback. Its image has no
//! package lists, so installing a `.deb` whose dependencies are met never downloads.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use crate::docker::{docker, docker_blocking};

/// The local image of the root filesystem.
pub const IMAGE: &str = "drover-tests-debian:bookworm";

/// Image label recording which root filesystem file the image was imported from.
const BUILD_LABEL: &str = "org.drover-tests.rootfs";

/// The root filesystem tar: `$DROVER_TEST_ROOTFS`, else where `tests/setup.sh` puts it.
pub fn rootfs_tar() -> PathBuf {
    if let Some(path) = std::env::var_os("DROVER_TEST_ROOTFS") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME is set");
    cache.join("drover-tests/debian-bookworm-minbase.tar")
}

/// Makes sure [`IMAGE`] holds the current root filesystem; once per process. Blocking.
pub fn ensure_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = import_if_stale() {
            panic!("cannot make the Debian image {IMAGE}: {e}");
        }
    });
}

fn import_if_stale() -> Result<(), String> {
    let tar = rootfs_tar();
    let meta = fs::metadata(&tar).map_err(|e| {
        format!(
            "{}: {e}: make the Debian root filesystem first with\n  \
             DROVER_SETUP_ROOTFS=1 . tests/setup.sh\n(tests/run.sh does this; it runs \
             debootstrap once)",
            tar.display()
        )
    })?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let build_id = format!("{}-{modified}", meta.len());

    let _lock = crate::exclusive_lock("debian-image")?;

    let format = format!("{{{{index .Config.Labels \"{BUILD_LABEL}\"}}}}");
    let current = docker_blocking(&["image", "inspect", "--format", &format, IMAGE]).ok();
    if current.as_deref().map(str::trim) == Some(build_id.as_str()) {
        return Ok(());
    }
    let label = format!("LABEL {BUILD_LABEL}={build_id}");
    docker_blocking(&[
        "import",
        "--change",
        &label,
        "--change",
        "CMD [\"/bin/bash\"]",
        &tar.to_string_lossy(),
        IMAGE,
    ])?;
    Ok(())
    // The lock is released when `_lock` drops.
}

/// A running container of [`IMAGE`] on the host's network, with a directory of the
/// test's mounted read-only at [`DebianHost::INBOX`]; removed on drop.
pub struct DebianHost {
    /// The container's name.
    name: String,
}

impl DebianHost {
    /// Where the test's directory appears in the container.
    pub const INBOX: &str = "/inbox";

    /// Starts a container that idles until the test runs commands in it.
    pub async fn start(inbox: &Path) -> Self {
        tokio::task::spawn_blocking(ensure_image)
            .await
            .expect("import the Debian image");
        let name = crate::unique_name("drover-pkg-host");
        let mount = format!("{}:{}:ro", inbox.display(), Self::INBOX);
        // The guard exists before the container, so a failed start still removes it.
        let host = Self { name };
        docker(&[
            "run",
            "-d",
            "--name",
            &host.name,
            "--hostname",
            &host.name,
            "--network",
            "host",
            "-v",
            &mount,
            IMAGE,
            "sleep",
            "infinity",
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        host
    }

    /// The container's name (for `docker exec` by hand).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `script` with `bash -c` as root in the container, to its end.
    pub async fn run(&self, script: &str) -> Output {
        tokio::process::Command::new("docker")
            .args(["exec", &self.name, "bash", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("docker exec runs")
    }

    /// [`Self::run`], panicking with everything it printed unless it succeeded; returns
    /// stdout and stderr together.
    pub async fn ok(&self, script: &str) -> String {
        let out = self.run(script).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "in {}: `{script}` failed ({}):\n{text}",
            self.name,
            out.status
        );
        text
    }
}

impl Drop for DebianHost {
    fn drop(&mut self) {
        if let Err(e) = docker_blocking(&["rm", "-f", "-v", &self.name]) {
            eprintln!("cleanup of container {}: {e}", self.name);
        }
    }
}
