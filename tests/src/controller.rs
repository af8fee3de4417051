//! The controller's real agent hub (`drover_controller::hub`) served on loopback inside
//! the test process, on a runtime of its own: dropping a [`TestController`] shuts that
//! runtime down, which closes every agent stream at once, exactly like a controller
//! process that went away (a graceful gRPC shutdown would wait for the streams forever).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use drover_controller::hub::{AgentHub, HubSettings};

/// How long re-binding the port of a controller that just went away may take.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

/// The agent hub serving on a loopback port until dropped.
pub struct TestController {
    /// Where agents dial (`http://{addr}`).
    pub addr: SocketAddr,
    /// The hub: inventory, commands, progress.
    pub hub: AgentHub,
    /// The runtime that serves the hub and every agent stream; `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestController {
    /// Serves a new hub (default settings) on 127.0.0.1 and a free port.
    pub fn start() -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        Self::serve(listener, AgentHub::new(HubSettings::default()))
    }

    /// Serves `hub` again on `addr`, e.g. after the previous controller on that address
    /// was dropped: agents that lost it reconnect to the same place. Keeping the hub
    /// keeps its inventory, so a reconnect shows as a new session of a known host.
    pub async fn start_on(addr: SocketAddr, hub: AgentHub) -> Self {
        // The old runtime closes its listener asynchronously: retry until it is gone.
        let listener = crate::wait::wait_for(
            REBIND_TIMEOUT,
            &format!("{addr} to be free again"),
            || async { TcpListener::bind(addr) },
        )
        .await;
        Self::serve(listener, hub)
    }

    fn serve(listener: TcpListener, hub: AgentHub) -> Self {
        let addr = listener.local_addr().expect("listener address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
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
            if let Err(e) = drover_controller::hub::serve_agents(listener, served, never).await {
                eprintln!("test controller on {addr} stopped: {e}");
            }
        });
        Self {
            addr,
            hub,
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
