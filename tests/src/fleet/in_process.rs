//! The controller served inside the test process, on a [`ManualClock`] the test moves:
//! how deploy windows and schedules are tested without waiting for real time. Plaintext
//! (`--insecure-dev`), so the real CLI and real agents reach it as they reach a
//! `drover serve --insecure-dev`. Dropping it stops it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_controller::rollout::DeployerSettings;
use drover_controller::schedule::ManualClock;
use drover_controller::server::{Security, ServeSettings, run as serve};

/// A controller task of this process. Dropping it aborts the task.
pub struct InProcessController {
    /// Where it serves agents and operators (plaintext).
    addr: SocketAddr,
    /// Tells it to stop gracefully; `None` once sent.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The serving task; `None` once stopped.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl InProcessController {
    /// Serves on `127.0.0.1:<free port>` with its database at `database` and wall-clock
    /// time from `clock`; the reconnect grace is 5 s, as the fleet's `drover serve` has.
    pub async fn start(clock: &ManualClock, database: PathBuf) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("address");
        let settings = ServeSettings {
            hub: Default::default(),
            deployer: DeployerSettings {
                reconnect_grace: Duration::from_secs(5),
                ..Default::default()
            },
            database: drover_controller::server::Database::Sqlite(database),
            shutdown_grace: Duration::from_secs(2),
            metrics: None,
            clock: clock.shared(),
            security: Security::InsecureDev,
            slo: Default::default(),
            web: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            if let Err(e) = serve(listener, settings, async move {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("in-process controller stopped: {e}");
            }
        });
        Self {
            addr,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The flags that connect an agent to it, keeping its state in `state_dir`.
    pub fn agent_args(&self, state_dir: &Path) -> Vec<String> {
        vec![
            "--controller".into(),
            self.url(),
            "--insecure-dev".into(),
            "--state-dir".into(),
            state_dir.to_string_lossy().into_owned(),
        ]
    }

    /// Stops it gracefully (bounded: aborted after 10 s).
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for InProcessController {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
