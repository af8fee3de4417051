//! HAProxy restarted or reloaded in the middle of a rollout: a new process (a reload
//! with `-sf`, a new master-worker generation, a restart) starts from its configuration
//! and forgets the runtime states Drover set, so a server drained for its swap could
//! come back into rotation before its new container is ready.
//!
//! [`Restarts`] remembers the admin state Drover last set on each server and which
//! process answered each HAProxy (`show info`: pid and start time). The load balancer's
//! waits look at most every [`CHECK_EVERY`]; a new process gets every remembered state
//! again before the wait goes on, and the rollout is told (a notice for its events).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

use super::{AdminState, HaproxyRuntime, LbError, LoadBalancer, ProcessInfo};

/// How often the waits ask which process answers.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Shared by the clones of one [`LoadBalancer`].
#[derive(Debug, Clone, Default)]
pub(super) struct Restarts(Arc<Mutex<Book>>);

#[derive(Debug, Default)]
struct Book {
    /// The admin state Drover last set per server (same on every HAProxy).
    desired: BTreeMap<String, AdminState>,
    /// The port Drover last pointed each server at (start-first handovers).
    ports: BTreeMap<String, u16>,
    /// The process last seen answering each HAProxy, in configuration order.
    seen: Vec<Option<ProcessInfo>>,
    /// When the processes were last read.
    checked: Option<Instant>,
    /// What happened, for the rollout's events (taken by [`LoadBalancer::take_notices`]).
    notices: Vec<String>,
}

impl Restarts {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers that `server` was set to `state` on every HAProxy.
    pub(super) fn set(&self, server: &str, state: AdminState) {
        self.book().desired.insert(server.to_string(), state);
    }

    /// Remembers that `server` was pointed at `port` on every HAProxy.
    pub(super) fn set_port(&self, server: &str, port: u16) {
        self.book().ports.insert(server.to_string(), port);
    }

    /// The ports Drover pointed servers at.
    fn ports(&self) -> Vec<(String, u16)> {
        self.book()
            .ports
            .iter()
            .map(|(s, p)| (s.clone(), *p))
            .collect()
    }

    /// Whether the processes are due for another look (and marks them looked at).
    fn due(&self) -> bool {
        let mut book = self.book();
        let due = book.checked.is_none_or(|at| at.elapsed() >= CHECK_EVERY);
        if due {
            book.checked = Some(Instant::now());
        }
        due
    }

    /// Records what answered each HAProxy; returns, for each one whose process changed
    /// since the last look, its index, the old and new process, and the states to apply.
    #[allow(clippy::type_complexity)]
    fn observe(
        &self,
        now: &[ProcessInfo],
    ) -> Vec<(usize, ProcessInfo, ProcessInfo, Vec<(String, AdminState)>)> {
        let mut book = self.book();
        if book.seen.len() != now.len() {
            book.seen = vec![None; now.len()];
        }
        let desired: Vec<(String, AdminState)> =
            book.desired.iter().map(|(s, a)| (s.clone(), *a)).collect();
        let mut changed = vec![];
        for (i, p) in now.iter().enumerate() {
            if let Some(before) = book.seen[i]
                && before != *p
            {
                changed.push((i, before, *p, desired.clone()));
            }
            book.seen[i] = Some(*p);
        }
        changed
    }
}

impl LoadBalancer {
    /// Looks (at most every [`CHECK_EVERY`]) whether any HAProxy now runs a new process;
    /// gives a new one every state Drover set, and records a notice. Called by the
    /// waits, so a rollout notices within one poll.
    pub(super) async fn reapply_after_restart(&self) -> Result<(), LbError> {
        if !self.restarts.due() {
            return Ok(());
        }
        let now = self.each(HaproxyRuntime::process_info).await?;
        for (i, before, after, states) in self.restarts.observe(&now) {
            self.acting("set the states it lost on a restarted HAProxy again")?;
            let rt = &self.runtimes[i];
            for (server, state) in &states {
                rt.set_admin(&self.backend, server, *state).await?;
            }
            let ports = self.restarts.ports();
            for (server, port) in &ports {
                rt.set_port(&self.backend, server, *port).await?;
            }
            let mut words: Vec<String> = states.iter().map(|(s, a)| format!("{s} {a}")).collect();
            words.extend(ports.iter().map(|(s, p)| format!("{s} port {p}")));
            let notice = format!(
                "HAProxy at {} restarted or reloaded (pid {} started at {}, now pid {} started at {}): its runtime states were lost; set again: {}",
                rt.addr(),
                before.pid,
                before.start_unix_s,
                after.pid,
                after.start_unix_s,
                if words.is_empty() {
                    "none".to_string()
                } else {
                    words.join(", ")
                }
            );
            warn!(backend = %self.backend, "{notice}");
            self.restarts.book().notices.push(notice);
        }
        Ok(())
    }

    /// What the load balancer noticed since the last call (HAProxy restarts, and the
    /// states it set again), for the rollout's events.
    pub fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut self.restarts.book().notices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_process_gets_every_state_drover_set_and_the_first_look_is_a_baseline() {
        let r = Restarts::default();
        let p = |pid, start| ProcessInfo {
            pid,
            start_unix_s: start,
        };
        r.set("h1", AdminState::Drain);
        r.set("h2", AdminState::Ready);
        r.set("h1", AdminState::Drain);
        assert!(r.observe(&[p(10, 100), p(20, 100)]).is_empty(), "baseline");
        assert!(r.observe(&[p(10, 100), p(20, 100)]).is_empty(), "unchanged");
        let changed = r.observe(&[p(10, 100), p(21, 160)]);
        assert_eq!(changed.len(), 1);
        let (i, before, after, states) = &changed[0];
        assert_eq!((*i, before.pid, after.pid), (1, 20, 21));
        assert_eq!(
            states,
            &[
                ("h1".to_string(), AdminState::Drain),
                ("h2".to_string(), AdminState::Ready)
            ]
        );
        assert!(r.observe(&[p(10, 100), p(21, 160)]).is_empty(), "seen now");
    }
}
