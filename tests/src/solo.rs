//! A real `drover serve` alone (no agents, no Docker, no HAProxy), with a fleet CA made
//! by the real `drover ca init`: enough for the CLI's own behaviour (profiles, login,
//! hints, errors, exit codes). Every CLI run gets an environment of the test's choosing:
//! the test process's `DROVER_*` variables are removed, and `HOME` and
//! `XDG_CONFIG_HOME` point into the controller's temporary directory, so no profile of
//! the machine's user is read. The controller is stopped and its files removed on drop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use crate::fleet::CliRun;
use crate::process::{ChildGuard, bin_path};

/// How long the controller may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `drover serve` on 127.0.0.1 and a free port, with its own PKI, database and home.
pub struct SoloController {
    /// The process (stopped on drop, before the directory goes).
    child: ChildGuard,
    /// `https://127.0.0.1:PORT`.
    url: String,
    /// PKI, database, home and client configuration; removed on drop.
    dir: tempfile::TempDir,
}

impl SoloController {
    /// Runs `drover ca init` into `<dir>/pki`, then `drover serve` with it.
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`Self::start`] with further `drover serve` flags.
    pub async fn start_with(serve_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("drover-solo-")
            .tempdir()
            .expect("tempdir");
        let pki = dir.path().join("pki");
        let init = std::process::Command::new(bin_path("drover"))
            .args(["ca", "init", "--dir"])
            .arg(&pki)
            .output()
            .expect("drover ca init runs");
        assert!(init.status.success(), "drover ca init: {init:?}");
        let addr = format!(
            "127.0.0.1:{}",
            crate::free_port(std::net::Ipv4Addr::LOCALHOST)
        );
        let db = dir.path().join("drover.db");
        let args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            addr.clone(),
            "--database".into(),
            db.to_string_lossy().into_owned(),
            "--metrics-listen".into(),
            String::new(),
        ]
        .into_iter()
        .chain(serve_args.iter().map(|a| a.to_string()))
        .collect();
        let pki_env = pki.to_string_lossy().into_owned();
        let mut child = ChildGuard::spawn(
            &format!("controller {addr}"),
            &bin_path("drover"),
            args,
            &[("DROVER_PKI_DIR", &pki_env)],
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                child.try_exit_status().is_none() && Instant::now() < deadline,
                "drover serve did not start listening on {addr}:\n{}",
                child.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            url: format!("https://{addr}"),
            dir,
        }
    }

    /// Where agents and the CLI dial.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The controller's state database.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("drover.db")
    }

    /// The PKI directory `drover ca init` wrote.
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// A scratch directory for the test, removed with the controller.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The client configuration file a CLI run reads (`$XDG_CONFIG_HOME/drover/`).
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config/drover/config.toml")
    }

    /// What the controller printed so far.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    /// `drover <args>` with only `env` set (besides `HOME`, `XDG_CONFIG_HOME`, `PATH`),
    /// `stdin` fed to it; to its end.
    pub async fn drover(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> CliRun {
        let mut cmd = tokio::process::Command::new(bin_path("drover"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn().expect("drover runs");
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin).await.expect("write stdin");
        drop(input);
        let out = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("drover {} did not finish in time", args.join(" ")))
            .expect("drover output");
        CliRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        }
    }

    /// [`Self::drover`] as the admin of this fleet, through `DROVER_PKI_DIR` alone.
    pub async fn admin(&self, args: &[&str]) -> CliRun {
        let pki = self.pki().to_string_lossy().into_owned();
        let mut all = vec!["--controller", &self.url];
        all.splice(0..0, args.iter().copied());
        self.drover(&all, &[("DROVER_PKI_DIR", &pki)], b"").await
    }
}
