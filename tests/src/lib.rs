//! The harness for Drover's cross-process tests with real parts: the real agent binary,
//! the real Docker engine, a real registry with htpasswd auth, and the controller's real
//! agent hub served in-process on loopback.
//!
//! Every piece is a guard that removes what it created when dropped, also when a test
//! panics, and prints the logs of the processes it started when the test failed. Tests
//! wait on conditions ([`wait_until`]), never on sleeps. Network rule: traffic goes only to
//! loopback addresses and to containers the test created.

#![forbid(unsafe_code)]

pub mod agent;
pub mod bench;
pub mod bench_controller;
pub mod browser;
pub mod commands;
pub mod controller;
pub mod debian;
pub mod docker;
pub mod fixture;
pub mod fleet;
pub mod haproxy;
pub mod http;
pub mod images;
pub mod load;
pub mod logs;
pub mod net;
pub mod packages;
pub mod pki;
pub mod process;
pub mod registry;
pub mod sim_agents;
pub mod solo;
pub mod tmpfs;
pub mod traffic;
pub mod wait;

use std::path::PathBuf;

pub use agent::Agent;
pub use controller::TestController;
pub use docker::DockerCleanup;
pub use fixture::Fixture;
pub use images::{DemoImage, ensure_demo_images};
pub use net::{free_port, loopback_host};
pub use process::ChildGuard;
pub use registry::Registry;
pub use wait::{poll, wait_for, wait_until};

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// An exclusive lock on `<target>/drover-tests/<name>.lock`, held until the returned file
/// drops: test processes start at once, and a shared artifact (an image, a package) is
/// made by one of them while the others wait.
pub fn exclusive_lock(name: &str) -> Result<std::fs::File, String> {
    let dir = target_dir().join("drover-tests");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file =
        std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| format!("lock {}: {e}", path.display()))?;
    Ok(file)
}

/// A name no other test (in this or another process) uses: `<prefix>-<6 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}
