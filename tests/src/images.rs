//! The demo app's images (`drover-demo:<variant>`), built locally FROM scratch from the
//! static `demo-app` binary. A variant is rebuilt only when missing or when the binary
//! or the Dockerfile changed (the image carries their hashes in a label). Many test
//! processes start at once, so building holds an exclusive file lock in the target dir.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::docker::docker_blocking;

/// The local repository of the demo images.
pub const REPOSITORY: &str = "drover-demo";

/// Image label recording what an image was built from. Deliberately not `drover.*`:
/// containers inherit image labels, and those keys belong to the agent.
const BUILD_LABEL: &str = "org.drover-tests.build";

/// The variants tests deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DemoImage {
    /// Healthy, answers `version=v1`.
    V1,
    /// Healthy, answers `version=v2`.
    V2,
    /// Healthy, answers `version=v3`.
    V3,
    /// `/ready` answers 503 forever.
    NeverReady,
    /// Exits 1 at start.
    Crash,
    /// Version v3 answering 500 on 20% of requests (canary tests).
    V3FiveXx,
    /// Ready, then exits 1 after 3 s.
    CrashLater,
}

impl DemoImage {
    /// Every variant.
    pub const ALL: [Self; 7] = [
        Self::V1,
        Self::V2,
        Self::V3,
        Self::NeverReady,
        Self::Crash,
        Self::V3FiveXx,
        Self::CrashLater,
    ];

    /// The tag, e.g. `v1` or `never-ready`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::V3 => "v3",
            Self::NeverReady => "never-ready",
            Self::Crash => "crash",
            Self::V3FiveXx => "v3-5xx",
            Self::CrashLater => "crash-later",
        }
    }

    /// The `DEMO_VERSION` the app reports (`version=<this>` on `/`).
    pub fn version(self) -> &'static str {
        match self {
            Self::V3FiveXx => "v3",
            other => other.tag(),
        }
    }

    /// The `DEMO_MODE` it runs with.
    pub fn mode(self) -> &'static str {
        match self {
            Self::V1 | Self::V2 | Self::V3 => "ok",
            Self::NeverReady => "never-ready",
            Self::Crash => "crash",
            Self::V3FiveXx => "error-rate:20",
            Self::CrashLater => "crash-after:3000",
        }
    }

    /// The local reference, e.g. `drover-demo:v1`.
    pub fn local_ref(self) -> String {
        format!("{REPOSITORY}:{}", self.tag())
    }
}

/// The static demo binary: `$DROVER_DEMO_APP`, else the release build for the
/// explicit gnu target. Panics with the build command when it is missing.
pub fn demo_binary() -> PathBuf {
    let path = std::env::var_os("DROVER_DEMO_APP")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("x86_64-unknown-linux-gnu/release/demo-app"));
    assert!(
        path.is_file(),
        "{} does not exist: build the static demo app first with\n  \
         RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p drover-demo-app \
         --target x86_64-unknown-linux-gnu\n(tests/run.sh does this)",
        path.display()
    );
    path
}

/// Makes sure every variant exists and matches the current binary; once per process.
/// Blocking: call it through `spawn_blocking` from async code.
pub fn ensure_demo_images() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if let Err(e) = build_missing() {
            panic!("cannot build the demo images: {e}");
        }
    });
}

fn build_missing() -> Result<(), String> {
    let binary = demo_binary();
    let dockerfile = crate::workspace_root().join("tests/images/demo/Dockerfile");
    // The labels are part of what is built: a change of them (`-labels2`) rebuilds.
    let build_id = format!("{}-{}-labels2", sha256(&binary)?, sha256(&dockerfile)?);

    let _lock = crate::exclusive_lock("demo-images")?;

    let stale: Vec<DemoImage> = DemoImage::ALL
        .into_iter()
        .filter(|v| built_from(*v).as_deref() != Some(build_id.as_str()))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let context = tempfile::tempdir().map_err(|e| format!("create a build context: {e}"))?;
    fs::copy(&binary, context.path().join("demo-app"))
        .map_err(|e| format!("copy {}: {e}", binary.display()))?;
    fs::copy(&dockerfile, context.path().join("Dockerfile"))
        .map_err(|e| format!("copy {}: {e}", dockerfile.display()))?;
    let context_path = context.path().to_string_lossy().into_owned();
    for variant in stale {
        let label = format!("{BUILD_LABEL}={build_id}");
        let version = format!("DEMO_VERSION={}", variant.version());
        let mode = format!("DEMO_MODE={}", variant.mode());
        // Where a release reads its commit from: the OCI labels of the image.
        let revision = format!("{ORIGIN_REVISION}=demo-{}", variant.tag());
        let created = format!("{ORIGIN_CREATED}={DEMO_CREATED}");
        docker_blocking(&[
            "build",
            "--quiet",
            "--tag",
            &variant.local_ref(),
            "--label",
            &label,
            "--label",
            &revision,
            "--label",
            &created,
            "--build-arg",
            &version,
            "--build-arg",
            &mode,
            &context_path,
        ])?;
    }
    Ok(())
    // The lock is released when `_lock` drops.
}

/// The commit label of every demo image: `demo-<tag>`.
pub const ORIGIN_REVISION: &str = "org.opencontainers.image.revision";
/// The creation label of every demo image.
pub const ORIGIN_CREATED: &str = "org.opencontainers.image.created";
/// What the demo images say they were created at.
pub const DEMO_CREATED: &str = "2026-11-30T12:00:00Z";

/// The build id recorded on the local image of `variant`, if it exists.
fn built_from(variant: DemoImage) -> Option<String> {
    let format = format!("{{{{index .Config.Labels \"{BUILD_LABEL}\"}}}}");
    docker_blocking(&[
        "image",
        "inspect",
        "--format",
        &format,
        &variant.local_ref(),
    ])
    .ok()
    .map(|s| s.trim().to_string())
}

fn sha256(path: &std::path::Path) -> Result<String, String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .map_err(|e| format!("run sha256sum: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .filter(|_| out.status.success())
        .ok_or_else(|| format!("sha256sum {} failed", path.display()))
}
