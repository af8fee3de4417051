//! The controller's real agent hub (`drover_controller::hub`) served on loopback inside
//! the test process, on a runtime of its own: dropping a [`TestController`] shuts that
//! runtime down, which closes every agent stream at once, exactly like a controller
//! process that went away (a graceful gRPC shutdown would wait for the streams forever).
//!
//! By default the hub serves mutual TLS with a [`TestCa`] of its own and admits any agent
//! certificate from it (`serve_agents_tls`): agents get certificates issued straight into
//! their state directories ([`TestController::agent_args`]) instead of enrolling, which
//! `drover serve` covers. [`TestController::start_insecure`] serves plaintext.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use drover_controller::hub::{AgentHub, HubSettings};
use drover_shared::tls::{self, SwappableCert};

use crate::pki::TestCa;

/// How long re-binding the port of a controller that just went away may take.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Lifetime of the hub's serving certificate.
const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// The agent hub serving on a loopback port until dropped.
pub struct TestController {
    /// Where agents dial.
    pub addr: SocketAddr,
    /// The hub: inventory, commands, progress.
    pub hub: AgentHub,
    /// The CA whose agent certificates the hub admits; `None` when serving plaintext.
    pub ca: Option<Arc<TestCa>>,
    /// The runtime that serves the hub and every agent stream; `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestController {
    /// Serves a new hub (default settings) over mTLS with a new CA, on 127.0.0.1 and a
    /// free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let hub = AgentHub::new(HubSettings::default());
        Self::serve(listener, hub, Some(Arc::new(TestCa::new())))
    }

    /// Serves a new hub in plaintext (what `--insecure-dev` agents dial).
    pub fn start_insecure() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        Self::serve(listener, AgentHub::new(HubSettings::default()), None)
    }

    /// Serves `hub` again on `addr` with the same CA (`None`: plaintext), e.g. after the
    /// previous controller on that address was dropped: agents that lost it reconnect to
    /// the same place. Keeping the hub keeps its inventory, so a reconnect shows as a new
    /// session of a known host.
    pub async fn start_on(addr: SocketAddr, hub: AgentHub, ca: Option<Arc<TestCa>>) -> Self {
        // The old runtime closes its listener asynchronously: retry until it is gone.
        let listener = crate::wait::wait_for(
            REBIND_TIMEOUT,
            &format!("{addr} to be free again"),
            || async { TcpListener::bind(addr) },
        )
        .await;
        Self::serve(listener, hub, ca)
    }

    /// `https://127.0.0.1:PORT`, or `http://` when serving plaintext.
    pub fn url(&self) -> String {
        match self.ca {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The flags that connect an agent named `name` to this hub: `--controller`, and
    /// either `--ca-cert` and `--state-dir` holding a certificate for `name` (issued now
    /// unless one is there), or `--insecure-dev`.
    pub fn agent_args(&self, name: &str, state_dir: &Path) -> Vec<String> {
        let mut args = vec![
            "--controller".to_string(),
            self.url(),
            "--state-dir".into(),
            state_dir.to_string_lossy().into_owned(),
        ];
        match &self.ca {
            Some(ca) => {
                if !state_dir.join("agent.crt").exists() {
                    ca.enroll_agent_files(name, state_dir);
                }
                args.push("--ca-cert".into());
                args.push(ca.ca_cert().to_string_lossy().into_owned());
            }
            None => args.push("--insecure-dev".into()),
        }
        args
    }

    fn serve(listener: TcpListener, hub: AgentHub, ca: Option<Arc<TestCa>>) -> Self {
        let addr = listener.local_addr().expect("listener address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let config = ca.as_ref().map(|ca| {
            let serving = ca
                .authority
                .issue_controller(&[], SERVING_CERT_TTL)
                .expect("issue the hub's serving certificate");
            let cert = SwappableCert::from_pem(&serving.cert_pem, &serving.key_pem)
                .expect("the hub's serving certificate");
            tls::server_config(ca.ca_pem(), cert).expect("the hub's TLS configuration")
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-controller")
            .enable_all()
            .build()
            .expect("controller runtime");
        let served = hub.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let never = std::future::pending::<()>();
            let result = match config {
                Some(config) => {
                    drover_controller::hub::serve_agents_tls(listener, served, config, never).await
                }
                None => drover_controller::hub::serve_agents(listener, served, never).await,
            };
            if let Err(e) = result {
                eprintln!("test controller on {addr} stopped: {e}");
            }
        });
        Self {
            addr,
            hub,
            ca,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TestController {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Allowed inside async contexts, unlike dropping the runtime.
            rt.shutdown_background();
        }
    }
}
