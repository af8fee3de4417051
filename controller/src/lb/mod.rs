//! The load balancer driver: takes hosts out of rotation and puts them back, through
//! HAProxy's runtime API, on every HAProxy configured for a service.
//!
//! [`HaproxyRuntime`] talks to one HAProxy; [`LoadBalancer`] applies each step to all of
//! them for one backend, and waits on conditions (drained, UP) with short polls bounded
//! by a deadline. Every step is idempotent: draining a drained server or enabling an
//! enabled one is a no-op, so a retried or resumed rollout ends in the same state.

mod counters;
mod error;
mod haproxy;
mod restarts;
mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::time::{Instant, sleep};
use tracing::{info, warn};

pub use counters::{BackendCounters, ProcessInfo};
pub use error::{LbError, NotUp};
pub use haproxy::{HaproxyRuntime, RuntimeAddr};
pub use stats::{AdminState, OpStatus, ParseError, ServerStatus};

use crate::store::Fence;

/// How often `wait_*` look again.
const POLL: Duration = Duration::from_millis(50);

/// How a drain wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOutcome {
    /// Sessions still attached to the server, summed over every HAProxy (0 unless timed out).
    pub sessions_left: u64,
    /// The drain timeout passed first; the rollout goes on anyway, by design.
    pub timed_out: bool,
    /// How long the wait took.
    pub waited: Duration,
}

/// All configured HAProxies for one service's backend: every operation applies to each.
#[derive(Debug, Clone)]
pub struct LoadBalancer {
    /// One handle per HAProxy, in configuration order.
    runtimes: Vec<HaproxyRuntime>,
    /// The backend holding the service's servers, the same name on every HAProxy.
    backend: String,
    /// The states Drover set and the processes seen, to set them again on a restarted
    /// HAProxy.
    restarts: restarts::Restarts,
    /// A replica's claim to lead: while it does not hold, nothing changes on HAProxy
    /// (HAProxy knows no epochs, so the check is made here, before each change).
    fence: Option<Arc<Fence>>,
}

impl LoadBalancer {
    /// A balancer over `addrs`; `timeout` bounds each runtime API command.
    pub fn new(addrs: Vec<RuntimeAddr>, backend: String, timeout: Duration) -> Self {
        let runtimes = addrs
            .into_iter()
            .map(|a| HaproxyRuntime::new(a, timeout))
            .collect();
        Self {
            runtimes,
            backend,
            restarts: Default::default(),
            fence: None,
        }
    }

    /// The same balancer, changing HAProxy only while `fence` holds (`None`: a single
    /// controller, always).
    pub fn fenced(mut self, fence: Option<Arc<Fence>>) -> Self {
        self.fence = fence;
        self
    }

    /// Refuses `step` (what it would change, for the message) when this controller no
    /// longer leads: a replica that lost the lease, or was stalled past it, must not put
    /// a host in or out of rotation behind its successor's back.
    fn acting(&self, step: &str) -> Result<(), LbError> {
        match &self.fence {
            Some(fence) if fence.epoch().is_none() => {
                warn!(backend = %self.backend, step, "refused to change the load balancer: this controller is no longer the leader");
                Err(LbError::NotLeader {
                    backend: self.backend.clone(),
                    step: step.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The backend this balancer drives.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// One handle per configured HAProxy.
    pub fn runtimes(&self) -> &[HaproxyRuntime] {
        &self.runtimes
    }

    /// Checks, before anything changes, that every HAProxy has the backend and knows
    /// every server.
    pub async fn validate(&self, servers: &[String]) -> Result<(), LbError> {
        self.each(|rt| async move {
            let known = rt.servers(&self.backend).await?;
            match servers
                .iter()
                .find(|s| !known.iter().any(|k| &k.server == *s))
            {
                Some(missing) => Err(LbError::NoSuchServer {
                    haproxy: rt.addr().to_string(),
                    backend: self.backend.clone(),
                    server: missing.clone(),
                }),
                None => Ok(()),
            }
        })
        .await
        .map(drop)
    }

    /// Stops new load-balanced traffic to `server` on every HAProxy (`state drain`).
    pub async fn drain(&self, server: &str) -> Result<(), LbError> {
        self.acting(&format!("drain {server}"))?;
        info!(backend = %self.backend, %server, "draining");
        self.set_admin(server, AdminState::Drain).await
    }

    /// Makes every HAProxy forget what its health checks saw before now (the container
    /// behind `server` changed): the server counts as UP again only after fresh passing
    /// checks against what runs now. Call while the server is drained.
    pub async fn expect_fresh_checks(&self, server: &str) -> Result<(), LbError> {
        self.each(|rt| rt.expect_fresh_checks(&self.backend, server))
            .await
            .map(drop)
    }

    /// Keeps `server`'s health checks on their fast cadence on every HAProxy while the
    /// container behind it changes (call it drained, around the swap; it runs until
    /// dropped, or returns the error that stopped it).
    ///
    /// HAProxy checks a server whose health is at the top of its range every `inter`,
    /// and nothing on the runtime API reschedules a pending check: forcing the health
    /// down just before the re-enable leaves the first fresh check up to a whole `inter`
    /// away (about 1 s per batch with `inter 1s`). Held at 0 from the drain, the server
    /// is checked every `downinter`/`fastinter` once the check pending at the drain has
    /// run (at most `inter` after it), so a swap that takes longer than that is UP
    /// `rise` × `fastinter` after the re-enable; a shorter one waits for the rest of
    /// that `inter` first.
    ///
    /// An HAProxy that cannot be reached for a moment (restarting) is asked again: the
    /// hold is also what gives a restarted HAProxy its states back during a swap.
    pub async fn hold_checks(&self, server: &str) -> LbError {
        loop {
            let held = async {
                self.reapply_after_restart().await?;
                self.each(|rt| rt.hold_health_down(&self.backend, server))
                    .await
            };
            match held.await {
                Ok(_) => {}
                Err(e) if e.is_transient() => {
                    warn!(backend = %self.backend, %server, error = %e, "HAProxy unreachable; asking again")
                }
                Err(e) => return e,
            }
            sleep(POLL).await;
        }
    }

    /// Points `server` at `port` of its address on every HAProxy (start-first: the new
    /// container's port). It stays in rotation: new connections go to the new port,
    /// established ones end where they are.
    pub async fn point(&self, server: &str, port: u16) -> Result<(), LbError> {
        self.acting(&format!("point {server} at port {port}"))?;
        info!(backend = %self.backend, %server, port, "pointing at a new port");
        self.restarts.set_port(server, port);
        self.each(|rt| rt.set_port(&self.backend, server, port))
            .await
            .map(drop)
    }

    /// Where `server` sends traffic on the first HAProxy: its address and port.
    pub async fn addr(&self, server: &str) -> Result<(String, u16), LbError> {
        match self.runtimes.first() {
            Some(rt) => rt.server_addr(&self.backend, server).await,
            None => Ok((String::new(), 0)),
        }
    }

    /// Puts `server` back in rotation on every HAProxy (`state ready`).
    pub async fn enable(&self, server: &str) -> Result<(), LbError> {
        info!(backend = %self.backend, %server, "enabling");
        self.set_admin(server, AdminState::Ready).await
    }

    /// Waits until no session is attached to `server` on any HAProxy, or `timeout`
    /// passes: that is not an error, the outcome says how many sessions were left.
    pub async fn wait_drained(
        &self,
        server: &str,
        timeout: Duration,
    ) -> Result<DrainOutcome, LbError> {
        let start = Instant::now();
        loop {
            let left = match self.look(server, start, timeout).await? {
                Some(statuses) => statuses.iter().map(|s| s.current_sessions).sum(),
                None => {
                    sleep(POLL).await;
                    continue;
                }
            };
            let waited = start.elapsed();
            if left == 0 || waited >= timeout {
                let timed_out = left > 0;
                if timed_out {
                    warn!(backend = %self.backend, %server, sessions_left = left, ?waited,
                        "drain timeout passed with sessions left; going on");
                }
                return Ok(DrainOutcome {
                    sessions_left: left,
                    timed_out,
                    waited,
                });
            }
            sleep(POLL.min(timeout - waited)).await;
        }
    }

    /// Waits until every HAProxy reports `server` UP (health checks pass, not drained).
    /// The error names the first HAProxy where it is not, and what it last showed.
    pub async fn wait_up(&self, server: &str, timeout: Duration) -> Result<(), LbError> {
        let start = Instant::now();
        loop {
            let Some(statuses) = self.look(server, start, timeout).await? else {
                sleep(POLL).await;
                continue;
            };
            let not_up = self
                .runtimes
                .iter()
                .zip(&statuses)
                .find(|(_, s)| s.status != OpStatus::Up);
            let Some((rt, s)) = not_up else {
                info!(backend = %self.backend, %server, waited = ?start.elapsed(), "up");
                return Ok(());
            };
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(LbError::NotUp(Box::new(NotUp {
                    haproxy: rt.addr().to_string(),
                    backend: self.backend.clone(),
                    server: server.to_string(),
                    status: s.status.clone(),
                    check: format!("{} {}", s.check_status, s.check_detail),
                    waited,
                })));
            }
            sleep(POLL.min(timeout - waited)).await;
        }
    }

    /// One look of a wait at `server` on every HAProxy (after giving a restarted one its
    /// states back). `None`: an HAProxy could not be reached (it may be restarting) and
    /// the wait, started at `start`, has time left to ask again.
    async fn look(
        &self,
        server: &str,
        start: Instant,
        timeout: Duration,
    ) -> Result<Option<Vec<ServerStatus>>, LbError> {
        let looked = async {
            self.reapply_after_restart().await?;
            self.status(server).await
        };
        match looked.await {
            Ok(statuses) => Ok(Some(statuses)),
            Err(e) if e.is_transient() && start.elapsed() < timeout => {
                warn!(backend = %self.backend, %server, error = %e, "HAProxy unreachable; asking again");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `server` as each HAProxy sees it, in configuration order.
    pub async fn status(&self, server: &str) -> Result<Vec<ServerStatus>, LbError> {
        self.each(|rt| rt.server(&self.backend, server)).await
    }

    async fn set_admin(&self, server: &str, state: AdminState) -> Result<(), LbError> {
        self.acting(&format!("set {server} {state}"))?;
        self.restarts.set(server, state);
        self.each(|rt| rt.set_admin(&self.backend, server, state))
            .await
            .map(drop)
    }

    /// Runs `op` on every HAProxy at once and waits for all of them (a slow or failing
    /// one does not cancel the others); returns the first error, logging the rest.
    async fn each<'a, T, F, Fut>(&'a self, op: F) -> Result<Vec<T>, LbError>
    where
        F: Fn(&'a HaproxyRuntime) -> Fut,
        Fut: Future<Output = Result<T, LbError>>,
    {
        let mut out = Vec::with_capacity(self.runtimes.len());
        let mut first_err = None;
        for result in join_all(self.runtimes.iter().map(op)).await {
            match result {
                Ok(v) => out.push(v),
                Err(e) if first_err.is_none() => first_err = Some(e),
                Err(e) => warn!(backend = %self.backend, error = %e, "load balancer step failed"),
            }
        }
        first_err.map_or(Ok(out), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A balancer over a runtime socket that does not exist: any step that reaches for
    /// HAProxy fails to connect, so a `NotLeader` error proves none was attempted.
    fn balancer(fence: &Arc<Fence>) -> LoadBalancer {
        let addr: RuntimeAddr = "unix:/nonexistent/drover-test/admin.sock".parse().unwrap();
        LoadBalancer::new(vec![addr], "web".into(), Duration::from_secs(1))
            .fenced(Some(fence.clone()))
    }

    #[tokio::test]
    async fn a_replica_that_no_longer_leads_changes_nothing_on_haproxy() {
        let fence = Fence::new("replica-a".into());
        fence.set(4);
        let lb = balancer(&fence);
        // Leading: the step goes out (and fails here for want of an HAProxy).
        let err = lb.drain("web-1").await.unwrap_err();
        assert!(matches!(err, LbError::Connect { .. }), "{err}");
        // Stalled past its deadline: refused before anything is sent.
        fence.hold_until(std::time::Instant::now());
        for err in [
            lb.drain("web-1").await.unwrap_err(),
            lb.enable("web-1").await.unwrap_err(),
            lb.point("web-1", 8081).await.unwrap_err(),
        ] {
            assert!(matches!(err, LbError::NotLeader { .. }), "{err}");
            assert!(err.to_string().contains("no longer the leader"), "{err}");
        }
        // Cleared by the lease loop: the same.
        fence.set(4);
        fence.clear();
        let err = lb.enable("web-1").await.unwrap_err();
        assert!(matches!(err, LbError::NotLeader { .. }), "{err}");
    }
}
