//! The `drover` CLI as the fleet's tests run it: who it authenticates as ([`As`]), a
//! finished run ([`CliRun`]), a run still going ([`RunningCli`]), and the [`Transcript`] of
//! everything every run printed, so a test can search all of it (for a secret, say).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{CLI_TIMEOUT, CREDENTIAL_ENV, Fleet, PASSWORD_ENV, Transport};
use crate::process::bin_path;

/// Who a CLI invocation authenticates as. Every `DROVER_*` credential variable of the
/// test process is removed first, so only what is named here reaches the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum As {
    /// The admin operator certificate `drover ca init` wrote (the default).
    Admin,
    /// An API token, in `DROVER_TOKEN`; no client certificate.
    Token(String),
    /// A client certificate and its key (files), e.g. one from another CA or expired.
    Cert {
        /// The certificate (PEM).
        cert: PathBuf,
        /// Its private key (PEM).
        key: PathBuf,
    },
    /// Neither a certificate nor a token.
    Anonymous,
}

/// Every CLI run of a fleet (arguments, stdout, stderr), in the order they ended.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    /// Records one run.
    pub(crate) fn record(&self, args: &[String], stdout: &str, stderr: &str) {
        let entry = format!(
            "$ drover {}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
            args.join(" ")
        );
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
    }

    /// Everything recorded so far, as one text.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    /// How many runs were recorded.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Fleet {
    /// `drover <args>` aimed at this fleet's controller as the admin, with the registry
    /// password in its environment only; stdin closed, killed if dropped. Stdout and
    /// stderr are the caller's to set. Output is not recorded in the [`Transcript`].
    pub fn cli(&self, args: &[&str]) -> tokio::process::Command {
        self.cli_as(&As::Admin, args)
    }

    /// [`Fleet::cli`], authenticated as `who`.
    pub fn cli_as(&self, who: &As, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bin_path("drover"));
        cmd.args(args);
        for var in CREDENTIAL_ENV {
            cmd.env_remove(var);
        }
        cmd.env("DROVER_CONTROLLER", self.controller_url())
            .env("XDG_CONFIG_HOME", self.dir().join("client-config"))
            .env(PASSWORD_ENV, self.registry.password())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        match self.transport {
            Transport::InsecureDev => {
                cmd.env("DROVER_INSECURE_DEV", "1");
            }
            Transport::Mtls => {
                let pki = self.pki();
                cmd.env("DROVER_CA_CERT", pki.ca_cert());
                match who {
                    As::Admin => {
                        cmd.env("DROVER_CERT", pki.admin_cert())
                            .env("DROVER_KEY", pki.admin_key());
                    }
                    As::Cert { cert, key } => {
                        cmd.env("DROVER_CERT", cert).env("DROVER_KEY", key);
                    }
                    As::Token(_) | As::Anonymous => {}
                }
            }
        }
        if let As::Token(token) = who {
            cmd.env("DROVER_TOKEN", token);
        }
        cmd
    }

    /// Runs `drover <args>` as the admin to its end (at most [`CLI_TIMEOUT`]) and
    /// captures its output.
    pub async fn drover(&self, args: &[&str]) -> CliRun {
        self.drover_as(&As::Admin, args).await
    }

    /// [`Fleet::drover`], authenticated as `who`.
    pub async fn drover_as(&self, who: &As, args: &[&str]) -> CliRun {
        self.run_cli(who, args, None).await
    }

    /// [`Fleet::drover_as`] with `stdin` written to the CLI's standard input (then closed).
    pub async fn drover_stdin(&self, who: &As, args: &[&str], stdin: &[u8]) -> CliRun {
        self.run_cli(who, args, Some(stdin)).await
    }

    async fn run_cli(&self, who: &As, args: &[&str], stdin: Option<&[u8]>) -> CliRun {
        self.run_command(self.cli_as(who, args), args, stdin).await
    }

    /// Runs a CLI command made with [`Fleet::cli_as`] and then changed by the test (its
    /// environment, say) to its end, recording its output in the [`Transcript`]; `args`
    /// name it in messages.
    pub async fn run_command(
        &self,
        mut cmd: tokio::process::Command,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> CliRun {
        use tokio::io::AsyncWriteExt;
        let started = Instant::now();
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run drover {}: {e}", args.join(" ")));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A CLI that refuses early may close its stdin unread: not our failure.
            let _ = pipe.write_all(input).await;
            drop(pipe);
        }
        let run = match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
            Ok(Ok(out)) => CliRun {
                args: args.iter().map(|a| a.to_string()).collect(),
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                took: started.elapsed(),
            },
            Ok(Err(e)) => panic!("drover {}: {e}", args.join(" ")),
            Err(_) => panic!(
                "drover {} did not finish within {CLI_TIMEOUT:?} (killed)\n{}",
                args.join(" "),
                self.controller_logs()
            ),
        };
        self.transcript.record(&run.args, &run.stdout, &run.stderr);
        run
    }

    /// Starts `drover <args>` (as the admin) in the background; its output is collected
    /// as it comes.
    pub fn spawn_drover(&self, args: &[&str]) -> RunningCli {
        let mut child = self
            .cli(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run drover {}: {e}", args.join(" ")));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped stdout"), stdout.clone()),
            collect(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        RunningCli {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            stdout,
            stderr,
            readers,
            started: Instant::now(),
            transcript: self.transcript.clone(),
        }
    }

    /// `drover deploy -f <the fleet's spec> --version <version> --json`, to its end.
    pub async fn deploy(&self, version: &str) -> CliRun {
        let spec = self.spec.to_string_lossy().into_owned();
        self.drover(&["deploy", "-f", &spec, "--version", version, "--json"])
            .await
    }

    /// The same deploy, in the background.
    pub fn spawn_deploy(&self, version: &str) -> RunningCli {
        let spec = self.spec.to_string_lossy().into_owned();
        self.spawn_drover(&["deploy", "-f", &spec, "--version", version, "--json"])
    }

    /// [`Fleet::spawn_deploy`], followed until the host of batch `batch` (from 0) is
    /// swapping: the running CLI, the deployment's id and that host.
    pub async fn spawn_deploy_until_swapping(
        &self,
        version: &str,
        batch: u64,
    ) -> (RunningCli, String, String) {
        let timeout = Duration::from_secs(60);
        let mut deploy = self.spawn_deploy(version);
        let first = deploy
            .wait_json(timeout, "the first snapshot", |v| v["type"] == "deployment")
            .await;
        let id = super::field(&first, "id").to_string();
        let host = super::host_in_batch(&first, batch);
        deploy
            .wait_json(timeout, &format!("{host} swapping"), |v| {
                v["host"] == host.as_str() && v["phase"] == "swapping"
            })
            .await;
        (deploy, id, host)
    }

    /// `drover hosts --json`: one object per host.
    pub async fn hosts_json(&self) -> Vec<Value> {
        let run = self.drover(&["hosts", "--json"]).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
        run.json()
    }

    /// `drover history --json`: one object per deployment, newest first.
    pub async fn history_json(&self) -> Vec<Value> {
        let run = self.drover(&["history", "--json"]).await;
        assert_eq!(run.code, Some(0), "{}", run.describe());
        run.json()
    }
}

/// A CLI run that ended.
#[derive(Debug, Clone)]
pub struct CliRun {
    /// The arguments, for messages.
    pub args: Vec<String>,
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// How long it ran.
    pub took: Duration,
}

impl CliRun {
    /// Every stdout line that is a JSON object.
    pub fn json(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    /// The first event printed at or after `after_ms` (Unix ms) that concerns a host:
    /// when, and its message.
    pub fn first_host_event_after(&self, after_ms: u64) -> Option<(u64, String)> {
        self.json()
            .into_iter()
            .filter(|v| v["type"] == "event" && !v["host"].as_str().unwrap_or("").is_empty())
            .filter_map(|v| Some((v["at_ms"].as_u64()?, v["message"].as_str()?.to_owned())))
            .find(|(at, _)| *at >= after_ms)
    }

    /// The last deployment snapshot printed (`{"type": "deployment", ...}`).
    pub fn final_snapshot(&self) -> Value {
        self.json()
            .into_iter()
            .rev()
            .find(|v| v["type"] == "deployment")
            .unwrap_or_else(|| panic!("no deployment snapshot in the output: {}", self.describe()))
    }

    /// Exit code, duration and output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "drover {} exited with {:?} after {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args.join(" "),
            self.code,
            self.took,
            self.stdout,
            self.stderr
        )
    }
}

/// A CLI process still running, its output collected as it comes; killed if dropped.
pub struct RunningCli {
    /// The arguments, for messages.
    pub(crate) args: Vec<String>,
    /// The process (`kill_on_drop`).
    pub(crate) child: tokio::process::Child,
    /// Stdout so far.
    pub(crate) stdout: Arc<Mutex<String>>,
    /// Stderr so far.
    pub(crate) stderr: Arc<Mutex<String>>,
    /// The tasks copying stdout and stderr; aborted on drop.
    pub(crate) readers: Vec<JoinHandle<()>>,
    /// When it started.
    pub(crate) started: Instant,
    /// Where its output is recorded when it ends or is dropped.
    pub(crate) transcript: Transcript,
}

impl RunningCli {
    /// The JSON lines printed so far.
    pub fn json(&self) -> Vec<Value> {
        json_lines(&self.stdout.lock().expect("stdout lock"))
    }

    /// Waits until a JSON line matching `pred` was printed, and returns it. Panics with
    /// the output when the process ends first or `timeout` passes.
    pub async fn wait_json(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                return v;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                // Let the readers catch up with the last lines before giving up.
                if exited {
                    for r in std::mem::take(&mut self.readers) {
                        let _ = r.await;
                    }
                    if let Some(v) = self.json().into_iter().find(|v| pred(v)) {
                        return v;
                    }
                }
                panic!(
                    "drover {} {} before printing {what}\n--- stdout ---\n{}--- stderr ---\n{}",
                    self.args.join(" "),
                    if exited { "exited" } else { "timed out" },
                    self.stdout.lock().expect("stdout lock"),
                    self.stderr.lock().expect("stderr lock"),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until its stdout so far satisfies `pred`. Panics with the output when the
    /// process ends first or `timeout` passes.
    pub async fn wait_stdout(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) {
        self.wait_output(timeout, what, |out, _| pred(out)).await;
    }

    /// Waits until its (stdout, stderr) so far satisfy `pred`. Panics with the output
    /// when the process ends first or `timeout` passes.
    pub async fn wait_output(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str, &str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(
                &self.stdout.lock().expect("stdout lock"),
                &self.stderr.lock().expect("stderr lock"),
            ) {
                return;
            }
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                panic!(
                    "drover {} {} before printing {what}\n--- stdout ---\n{}--- stderr ---\n{}",
                    self.args.join(" "),
                    if exited { "exited" } else { "timed out" },
                    self.stdout.lock().expect("stdout lock"),
                    self.stderr.lock().expect("stderr lock"),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGINT, as Ctrl-C in a terminal does.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("the CLI is still running");
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -INT {pid}");
    }

    /// Waits for the process to end (killing it after `timeout`) and returns its run.
    pub async fn finish(mut self, timeout: Duration) -> CliRun {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        for r in std::mem::take(&mut self.readers) {
            let _ = r.await;
        }
        let run = CliRun {
            args: self.args.clone(),
            code: status.and_then(|s| s.code()),
            stdout: self.stdout.lock().expect("stdout lock").clone(),
            stderr: self.stderr.lock().expect("stderr lock").clone(),
            took: self.started.elapsed(),
        };
        assert!(
            status.is_some(),
            "drover did not finish within {timeout:?} (killed): {}",
            run.describe()
        );
        run
    }
}

impl Drop for RunningCli {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
        self.transcript.record(
            &self.args,
            &self.stdout.lock().unwrap_or_else(|e| e.into_inner()),
            &self.stderr.lock().unwrap_or_else(|e| e.into_inner()),
        );
    }
}

/// Copies lines of `from` into `into` until EOF.
pub(crate) fn collect(
    from: impl AsyncRead + Unpin + Send + 'static,
    into: Arc<Mutex<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut s = into.lock().expect("output lock");
            s.push_str(&line);
            s.push('\n');
        }
    })
}

pub(crate) fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}
