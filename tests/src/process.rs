//! A guard for a child process: its stdout and stderr go to files in a temporary
//! directory (printed when the test fails), and it is stopped (SIGTERM, then SIGKILL
//! after a deadline) when the guard drops.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a dropped guard waits after SIGTERM before SIGKILL.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A running child process owned by a test.
pub struct ChildGuard {
    /// A short label for messages, e.g. `agent t-1a2b3c`.
    label: String,
    /// The process; `None` once it has been reaped.
    child: Option<Child>,
    /// How it ended, once reaped.
    status: Option<ExitStatus>,
    /// Holds the log files; removed on drop.
    dir: tempfile::TempDir,
}

impl ChildGuard {
    /// Starts `program` with `args` and extra environment, logs captured to files.
    pub fn spawn<I, S>(label: &str, program: &Path, args: I, env: &[(&str, &str)]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let dir = tempfile::Builder::new()
            .prefix("drover-test-logs-")
            .tempdir()
            .expect("create a log directory");
        let out = File::create(dir.path().join("stdout")).expect("create stdout log");
        let err = File::create(dir.path().join("stderr")).expect("create stderr log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({}): {e}", program.display()));
        Self {
            label: label.to_string(),
            child: Some(child),
            status: None,
            dir,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where stdout and stderr are written.
    pub fn log_paths(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("stdout"),
            self.dir.path().join("stderr"),
        )
    }

    /// Everything the process printed so far, stdout then stderr.
    pub fn logs(&self) -> String {
        let (out, err) = self.log_paths();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "----- {} stdout -----\n{}----- {} stderr -----\n{}",
            self.label,
            read(&out),
            self.label,
            read(&err)
        )
    }

    /// Has the process exited? Returns its status if so (non-blocking).
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            self.status = Some(status);
            self.child = None;
        }
        self.status
    }

    /// Sends SIGTERM and waits up to `deadline` for the exit, then SIGKILLs.
    /// Returns the exit status and whether SIGKILL was needed.
    pub fn stop(&mut self, deadline: Duration) -> (Option<ExitStatus>, bool) {
        let Some(pid) = self.pid() else {
            return (self.status, false);
        };
        // std has no way to send SIGTERM; kill(1) is on every Linux.
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(status) = self.try_exit_status() {
                return (Some(status), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.status = child.wait().ok();
        }
        (self.status, true)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let (_, killed) = self.stop(STOP_DEADLINE);
        if killed {
            eprintln!(
                "{} did not stop within {STOP_DEADLINE:?} of SIGTERM: killed",
                self.label
            );
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// The path of a workspace binary: `$DROVER_BIN_DIR/<name>`, else `<target>/debug/<name>`.
/// Panics with the command to run when it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("DROVER_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::target_dir().join("debug"));
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --workspace --bins` first (or set DROVER_BIN_DIR)",
        path.display()
    );
    path
}
