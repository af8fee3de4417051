//! The `chromedriver` process a [`Browser`](super::Browser) drives Chromium through:
//! Debian's `chromedriver` on a free loopback port, in a process group of its own, with
//! its log and Chromium's profile in a temporary directory of its own.
//!
//! Dropping a [`Chromedriver`] ends everything it started, also when the test panicked:
//! SIGKILL to its process group (chromedriver and the Chromium it launched), then to any
//! process whose command line names the profile directory (a Chromium helper that left
//! the group), each by its pid; then the directory is removed.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long chromedriver may take to answer `/status` with `ready: true`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often `/status` is asked.
const POLL: Duration = Duration::from_millis(50);

/// A running chromedriver, owned by one [`Browser`](super::Browser).
pub struct Chromedriver {
    /// Where it serves WebDriver (plain HTTP on loopback).
    addr: SocketAddr,
    /// The process (leader of its own process group); `None` once reaped.
    child: Option<Child>,
    /// Its log and Chromium's profile (`profile/`).
    dir: tempfile::TempDir,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until `/status` says it is
    /// ready. Panics naming what is missing (the packages) or what it printed.
    pub async fn start() -> Self {
        let program = find_program("chromedriver").unwrap_or_else(|| {
            panic!("chromedriver is missing: run tests/setup.sh (it installs Debian's chromium and chromium-driver)")
        });
        let dir = tempfile::Builder::new()
            .prefix("drover-browser-")
            .tempdir()
            .expect("create the browser's directory");
        std::fs::create_dir(dir.path().join("profile")).expect("create the profile directory");
        // A port probed now may be taken before chromedriver binds it: a few tries.
        let mut last = String::new();
        for _ in 0..3 {
            let addr =
                SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port(Ipv4Addr::LOCALHOST)));
            let log = File::create(dir.path().join("chromedriver.log")).expect("create the log");
            let mut child = Command::new(&program)
                .arg(format!("--port={}", addr.port()))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file"))
                .stderr(log)
                // Its own group: dropping kills chromedriver and the Chromium it started.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            match wait_ready(addr, &mut child).await {
                Ok(()) => {
                    return Self {
                        addr,
                        child: Some(child),
                        dir,
                    };
                }
                Err(e) => {
                    last = format!("{e}\n{}", read_log(dir.path()));
                    kill_group(child);
                }
            }
        }
        panic!("chromedriver did not get ready (3 tries): {last}");
    }

    /// `http://127.0.0.1:PORT`, the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory Chromium keeps its profile in (`--user-data-dir`).
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.path().join("profile")
    }

    /// What chromedriver printed so far.
    pub fn log(&self) -> String {
        format!(
            "----- chromedriver {} -----\n{}",
            self.addr,
            read_log(self.dir.path())
        )
    }

    /// SIGKILLs the process group, then every process left that names the profile
    /// directory, and reaps chromedriver.
    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_group(child);
        }
        for pid in processes_naming(&self.profile_dir()) {
            kill_pid(&pid.to_string());
        }
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        self.kill();
    }
}

/// Polls `/status` until it reports `ready: true`, the process exits, or the deadline
/// passes.
async fn wait_ready(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver exited ({status})"));
        }
        // chromedriver keeps connections open whatever the request says: hyper reads
        // the answer by its length.
        let status = super::WebClient::new(addr, None).get("/status", None).await;
        let last = match status {
            Ok(answer) => match serde_json::from_slice::<serde_json::Value>(&answer.body) {
                Ok(v) if v["value"]["ready"] == true => return Ok(()),
                Ok(_) => format!("not ready: {}", answer.text()),
                Err(e) => format!("/status is not JSON ({e}): {}", answer.text()),
            },
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("not ready within {READY_TIMEOUT:?}: {last}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILL to `child`'s process group (its pid: it was started with `process_group(0)`),
/// then reaps it.
fn kill_group(mut child: Child) {
    kill_pid(&format!("-{}", child.id()));
    let _ = child.kill();
    let _ = child.wait();
}

/// chromedriver's log in `dir`.
fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("chromedriver.log")).unwrap_or_default()
}

/// `kill -KILL TARGET` (a pid, or `-PGID` for a process group); errors ignored: the
/// target may be gone already.
fn kill_pid(target: &str) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", target])
        .stderr(Stdio::null())
        .status();
}

/// The pids of this user's processes whose command line contains `path`.
fn processes_naming(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// `name` on `PATH`, else in `/usr/bin` (Debian's place for both packages).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
