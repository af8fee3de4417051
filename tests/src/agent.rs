//! The real `drover-agent` binary as a child process of a test.

use std::process::ExitStatus;
use std::time::Duration;

use crate::process::{ChildGuard, bin_path};
use crate::tmpfs::TmpfsDir;

/// How often test agents send heartbeats (short, so a lost stream shows quickly).
pub const TEST_HEARTBEAT: &str = "500ms";

/// A running agent, stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Agent {
    /// The agent's host name (also its `drover.agent` container label).
    pub name: String,
    /// The process.
    process: ChildGuard,
    /// Its secrets directory (on tmpfs), removed after the process stops.
    _secrets: TmpfsDir,
}

impl Agent {
    /// Starts `drover-agent` as host `name` with `labels`, dialling the controller as
    /// `connect` says (`--controller` and the TLS flags, e.g. from
    /// [`crate::TestController::agent_args`]); `extra_args` come last (and so win, e.g.
    /// `--docker-host`). Its secrets go to a tmpfs directory of its own.
    pub fn spawn(
        connect: &[String],
        name: &str,
        labels: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Self {
        let secrets = TmpfsDir::new();
        let mut args = connect.to_vec();
        args.extend([
            "--name".to_string(),
            name.to_string(),
            "--heartbeat-interval".to_string(),
            TEST_HEARTBEAT.to_string(),
            "--secrets-dir".to_string(),
            secrets.path().to_string_lossy().into_owned(),
        ]);
        for (k, v) in labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let env = [("RUST_LOG", "info,drover_agent=debug")];
        let process = ChildGuard::spawn(
            &format!("agent {name}"),
            &bin_path("drover-agent"),
            &args,
            &env,
        );
        Self {
            name: name.to_string(),
            process,
            _secrets: secrets,
        }
    }

    /// Stops the agent with SIGTERM (SIGKILL after `deadline`); returns its exit status
    /// and whether SIGKILL was needed.
    pub fn stop(&mut self, deadline: Duration) -> (Option<ExitStatus>, bool) {
        self.process.stop(deadline)
    }

    /// Has the agent exited on its own? Its exit status if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_exit_status()
    }

    /// Where the agent writes secret files (`--secrets-dir`, on tmpfs).
    pub fn secrets_dir(&self) -> &std::path::Path {
        self._secrets.path()
    }

    /// What the agent logged so far.
    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
