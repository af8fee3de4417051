//! One batch (drain, swap, ready, enable, for its hosts in parallel; swap and ready only
//! for a service without a load balancer), and the restores after a failure, in
//! parallel too.
//!
//! The plan's batch size is also its promise about capacity: never more hosts out of
//! rotation at once. A host left drained (its agent lost mid-command, or it could not be
//! put back) stays out until an operator acts, so it uses that budget: later batches and
//! rollbacks take fewer hosts at a time, or none.

use drover_proto::v1 as proto;
use futures::future::join_all;

use super::flight::{Result, Rollout};
use super::steps::{HostFailure, Left, fmt_ms};
use crate::hub::service_words;
use crate::state::{DeploymentKind, HostPhase};
use crate::store::{HostChange, HostStep, StepKind};

/// A host's service as its agent reports it after coming back.
struct Reported {
    version: String,
    /// In the words of `drover hosts`.
    words: String,
    /// Running and not unhealthy: HAProxy's fresh checks decide the rest.
    serving: bool,
}

/// A drained host to put back in rotation.
struct Back<'a> {
    host: &'a str,
    /// Why its step failed (None: a host of the batch that did not fail).
    why: Option<&'a HostFailure>,
    /// What its agent reports, when it was lost and came back.
    reported: Option<Reported>,
}

impl<'a> Back<'a> {
    fn failed(f: &'a HostFailure, reported: Option<Reported>) -> Self {
        Back {
            host: &f.host,
            why: Some(f),
            reported,
        }
    }
}

impl Rollout {
    /// Hosts left drained by this deployment, besides `these`: out of rotation until an
    /// operator acts.
    fn left_drained(&self, these: &[String]) -> Vec<String> {
        self.hosts_where(|h| h.phase == HostPhase::LeftDrained && !these.contains(&h.host))
    }

    /// How many hosts the plan allows out of rotation at once.
    fn per_batch(&self) -> usize {
        self.spec
            .rollout
            .batch_size
            .hosts_per_batch(self.hosts.len())
    }

    /// How many of `these` hosts may be out of rotation at once now.
    fn budget(&self, these: &[String]) -> usize {
        self.per_batch()
            .saturating_sub(self.left_drained(these).len())
    }

    /// The hosts left drained besides `these`, and what that does to the plan's budget.
    fn budget_used(&self, these: &[String]) -> String {
        let drained = self.left_drained(these);
        format!(
            "{} left drained, out of rotation, and the plan allows {} out at once",
            drained.join(", "),
            self.per_batch(),
        )
    }

    /// Why none of `these` hosts may leave rotation.
    fn over_budget(&self, these: &[String]) -> String {
        format!(
            "{}; put {} back in rotation first (see `drover hosts`)",
            self.budget_used(these),
            if self.left_drained(these).len() == 1 {
                "it"
            } else {
                "them"
            },
        )
    }

    /// Drain, swap, ready, enable for the hosts of one batch that are not done yet, in
    /// parts when hosts left drained use some of the budget. The error is the reason
    /// the rollout stops.
    pub(super) async fn roll_batch(&mut self, batch: u32) -> Result<Result<(), String>> {
        let todo = self.hosts_where(|h| h.batch == batch && h.phase != HostPhase::Done);
        if todo.is_empty() {
            return Ok(Ok(()));
        }
        let msg = format!(
            "batch {}/{}: {}",
            batch + 1,
            self.batch_count(),
            name_list(&todo)
        );
        self.note("", &msg).await?;
        if let Some(reason) = self.lost_before_batch(&todo).await? {
            return Ok(Err(reason));
        }
        let budget = self.budget(&todo);
        if budget == 0 {
            let reason = format!(
                "batch {} not started: {}",
                batch + 1,
                self.over_budget(&todo)
            );
            return Ok(Err(reason));
        }
        if budget < todo.len() {
            let msg = format!(
                "{budget} of {} at a time: {}",
                todo.len(),
                self.budget_used(&todo)
            );
            self.note("", &msg).await?;
        }
        for part in todo.chunks(budget) {
            if let Err(f) = self.roll_hosts(part).await? {
                return Ok(Err(f.message));
            }
        }
        Ok(Ok(()))
    }

    /// A host whose agent is gone is not drained: it keeps serving its current version,
    /// and the batch fails (within the reconnect grace it may come back). Returns the
    /// reason when any is gone.
    async fn lost_before_batch(&mut self, todo: &[String]) -> Result<Option<String>> {
        let hub = self.shared.hub.clone();
        let grace = self.shared.settings.reconnect_grace;
        let waits = todo.iter().map(|h| {
            let hub = hub.clone();
            async move { hub.wait_connected(h, grace).await.err() }
        });
        let lost: Vec<(String, String)> = todo
            .iter()
            .zip(join_all(waits).await)
            .filter_map(|(h, e)| {
                let e = e?;
                let msg = format!("{e}; not touched: it stays in rotation on its current version");
                Some((h.clone(), msg))
            })
            .collect();
        if lost.is_empty() {
            return Ok(None);
        }
        let changes = lost
            .iter()
            .map(|(h, msg)| HostChange::new(h, HostPhase::Failed, Some(msg.clone()), msg))
            .collect();
        self.change_hosts(changes).await?;
        let untouched = todo
            .iter()
            .filter(|h| !lost.iter().any(|(l, _)| l == *h))
            .map(|h| {
                let why = "untouched: another host of its batch is unreachable";
                (h.clone(), why.to_string())
            })
            .collect();
        self.notes(untouched).await?;
        let reasons: Vec<&str> = lost.iter().map(|(_, m)| m.as_str()).collect();
        Ok(Some(reasons.join("; ")))
    }

    /// Creates the new containers of `hosts` while they still serve. On a failure
    /// nothing was drained: every host stays in rotation on its current version, and the
    /// error is the first failure. Returns each host's create step.
    async fn stage_hosts(
        &mut self,
        hosts: &[String],
    ) -> Result<Result<Vec<HostStep>, HostFailure>> {
        let stages = join_all(hosts.iter().map(|h| self.stage(h))).await;
        let mut created = vec![];
        let mut failed: Vec<HostFailure> = vec![];
        for (host, r) in hosts.iter().zip(stages) {
            match r {
                Ok(ms) if ms > 0 => created.push(HostStep::new(host, StepKind::Create, ms)),
                Ok(_) => {}
                Err(f) => failed.push(f),
            }
        }
        if failed.is_empty() {
            return Ok(Ok(created));
        }
        let changes = failed
            .iter()
            .map(|f| {
                let msg = format!(
                    "{}; nothing was drained: it stays in rotation on its current version",
                    f.message
                );
                HostChange::new(&f.host, HostPhase::Failed, Some(f.message.clone()), &msg)
            })
            .collect();
        self.change_hosts(changes).await?;
        let untouched = hosts
            .iter()
            .filter(|h| !failed.iter().any(|f| &f.host == *h))
            .map(|h| {
                let why = "untouched: the new container could not be created on another host of its batch";
                (h.clone(), why.to_string())
            })
            .collect();
        self.notes(untouched).await?;
        Ok(Err(failed.remove(0)))
    }

    /// Create, drain, swap, ready, enable for `hosts`, all at once.
    async fn roll_hosts(&mut self, hosts: &[String]) -> Result<Result<(), HostFailure>> {
        let mut steps = match self.stage_hosts(hosts).await? {
            Ok(created) => created,
            Err(f) => return Ok(Err(f)),
        };
        // Without a load balancer nothing is drained: the hosts go straight to their swap.
        let balanced = self.lb.is_some();
        if balanced {
            self.set_phase(hosts, HostPhase::Draining, None, "draining")
                .await?;
        }
        let drains = join_all(hosts.iter().map(|h| self.drain(h))).await;
        let mut failed: Vec<HostFailure> = vec![];
        let mut swap_now = vec![];
        let mut drained = vec![];
        for (host, r) in hosts.iter().zip(drains) {
            match r {
                Ok((msg, ms)) => {
                    drained.push((host.clone(), msg));
                    if balanced {
                        steps.push(HostStep::new(host, StepKind::Drain, ms));
                    }
                    swap_now.push(host.clone());
                }
                Err(f) => failed.push(f),
            }
        }
        self.notes(drained).await?;
        self.shared.store.record_steps(&self.d.id, steps).await?;
        self.note_lb_notices().await?;
        if !failed.is_empty() {
            // Nothing was swapped: put every drained host back.
            self.restore(hosts, &failed).await?;
            return Ok(Err(failed.remove(0)));
        }
        let verb = if self.d.kind == DeploymentKind::Rollback {
            "rolling back"
        } else {
            "swapping"
        };
        let msg = format!("{verb} to {}", self.d.version);
        self.set_phase(&swap_now, HostPhase::Swapping, None, &msg)
            .await?;
        let swaps = join_all(swap_now.iter().map(|h| self.swap(h)));
        let swaps = self.with_checks_held(&swap_now, swaps).await;
        let mut ready = vec![];
        let mut enabling = vec![];
        let mut steps = vec![];
        for (host, r) in swap_now.iter().zip(swaps) {
            match r {
                Ok(sw) => {
                    let killed = sw.killed_note().map_or(String::new(), |n| format!("; {n}"));
                    let msg = format!(
                        "{} ready after {}{}{}{killed}",
                        self.d.version,
                        fmt_ms(sw.ready_after_ms),
                        sw.words(),
                        if balanced { "; enabling" } else { "" }
                    );
                    enabling.push((host.clone(), msg));
                    steps.extend(sw.host_steps(host));
                    ready.push(host.clone());
                }
                Err(f) => failed.push(f),
            }
        }
        self.set_phase_each(enabling, HostPhase::Enabling, None)
            .await?;
        self.shared.store.record_steps(&self.d.id, steps).await?;
        self.note_lb_notices().await?;
        let ready = self.checked_after_batch(ready, &mut failed).await?;
        if self.start_first() {
            return self.hand_over_hosts(ready, failed).await;
        }
        let enables = join_all(ready.iter().map(|h| self.enable(h))).await;
        let mut done = vec![];
        let mut steps = vec![];
        for (host, r) in ready.iter().zip(enables) {
            match r {
                Ok(ms) => {
                    if balanced {
                        steps.push(HostStep::new(host, StepKind::Up, ms));
                    }
                    done.push(host.clone());
                }
                Err(f) => failed.push(f),
            }
        }
        self.shared.store.record_steps(&self.d.id, steps).await?;
        self.note_lb_notices().await?;
        for _ in &done {
            self.shared.metrics.host_swapped();
        }
        let msg = if balanced {
            format!("runs {} and is in rotation", self.d.version)
        } else {
            format!("runs {} (no load balancer)", self.d.version)
        };
        self.set_phase(&done, HostPhase::Done, None, &msg).await?;
        if failed.is_empty() {
            return Ok(Ok(()));
        }
        self.restore(&[], &failed).await?;
        Ok(Err(failed.remove(0)))
    }

    /// Runs the `after_batch` hooks on the `ready` hosts (still out of rotation); a host
    /// whose hook fails goes back to its previous version, like a readiness failure, and
    /// joins `failed`. Returns the hosts to put back in rotation on the new version.
    async fn checked_after_batch(
        &mut self,
        ready: Vec<String>,
        failed: &mut Vec<HostFailure>,
    ) -> Result<Vec<String>> {
        // Still drained: their checks stay on the fast cadence while the hooks run.
        let checks = self
            .with_checks_held(&ready, self.after_batch(&ready))
            .await?;
        let mut passed = vec![];
        let mut undo = vec![];
        for (host, r) in ready.into_iter().zip(checks) {
            match r {
                Ok(()) => passed.push(host),
                Err(f) => undo.push(f),
            }
        }
        let this = &*self;
        let undone = join_all(undo.iter().map(|f| this.undo(&f.host))).await;
        for (f, r) in undo.into_iter().zip(undone) {
            let msg = match r {
                Ok((version, _)) => HostFailure::new(
                    &f.host,
                    Left::AsBefore,
                    format!("{}; back on {version}", strip_host(&f)),
                ),
                Err(e) => HostFailure::new(
                    &f.host,
                    Left::Unknown,
                    format!(
                        "{}; returning to the previous version failed: {}",
                        strip_host(&f),
                        e.message
                    ),
                ),
            };
            failed.push(msg);
        }
        Ok(passed)
    }

    /// Puts failed hosts (restored to their previous version by their agent) and the
    /// other drained hosts in `also_drained` back in rotation, all at once. A host whose
    /// agent was lost is put back only if it has come back reporting the service
    /// running; a host whose state is unknown is left drained and says so.
    pub(super) async fn restore(
        &mut self,
        also_drained: &[String],
        failed: &[HostFailure],
    ) -> Result<()> {
        let mut back: Vec<Back<'_>> = vec![];
        let mut changes = vec![];
        for f in failed {
            if f.can_reenable() {
                back.push(Back::failed(f, None));
                continue;
            }
            let reported = (f.left == Left::Lost)
                .then(|| self.reported(&f.host))
                .flatten();
            match reported {
                Some(r) if r.serving => back.push(Back::failed(f, Some(r))),
                r => {
                    let why = r.map_or(String::new(), |r| {
                        format!(" (its agent reports {})", r.words)
                    });
                    let msg = format!(
                        "{}; left drained on the load balancer{why}: check the host, then `drover rollback {}` or redeploy",
                        f.message, self.d.service
                    );
                    let error = Some(f.message.clone());
                    changes.push(HostChange::new(
                        &f.host,
                        HostPhase::LeftDrained,
                        error,
                        &msg,
                    ));
                }
            }
        }
        back.extend(
            also_drained
                .iter()
                .filter(|h| !failed.iter().any(|f| &f.host == *h))
                .map(|h| Back {
                    host: h,
                    why: None,
                    reported: None,
                }),
        );
        let enables = join_all(back.iter().map(|b| self.enable(b.host))).await;
        for (b, r) in back.into_iter().zip(enables) {
            let (phase, error, msg) = match (b.why, r) {
                (Some(f), Ok(_)) => {
                    let (phase, state) = match &b.reported {
                        None => (
                            HostPhase::Failed,
                            "back on its previous version".to_string(),
                        ),
                        Some(r) if r.version == self.d.version => (
                            HostPhase::Done,
                            format!("its agent came back and reports {}", r.words),
                        ),
                        Some(r) => (
                            HostPhase::Failed,
                            format!("its agent came back and reports {}", r.words),
                        ),
                    };
                    let msg = format!("{}; {state}; in rotation", f.message);
                    (phase, Some(f.message.clone()), msg)
                }
                (Some(f), Err(e)) => (
                    HostPhase::LeftDrained,
                    Some(f.message.clone()),
                    format!("{}; re-enabling failed too: {}", f.message, e.message),
                ),
                (None, Ok(_)) => (
                    HostPhase::Prepared,
                    None,
                    "untouched and back in rotation".to_string(),
                ),
                (None, Err(e)) => (HostPhase::LeftDrained, Some(e.message.clone()), e.message),
            };
            changes.push(HostChange::new(b.host, phase, error, &msg));
        }
        self.change_hosts(changes).await
    }

    /// What the agent of `host` reports of this deployment's service now, if it is
    /// connected again.
    fn reported(&self, host: &str) -> Option<Reported> {
        let h = self.shared.hub.host(host).filter(|h| h.connected)?;
        let s = h.services.iter().find(|s| s.service == self.d.service);
        let Some(s) = s else {
            return Some(Reported {
                version: String::new(),
                words: format!("{}: none running", self.d.service),
                serving: false,
            });
        };
        let serving = s.state == proto::ContainerState::Running as i32
            && s.health != proto::Health::Unhealthy as i32;
        Some(Reported {
            version: s.version.clone(),
            words: service_words(s),
            serving,
        })
    }

    /// Returns every host this deployment changed to its previous version, as many at a
    /// time as the budget allows. True when every host is back where it was (none is
    /// left drained).
    pub(super) async fn roll_back_changed(&mut self) -> Result<bool> {
        // Hosts a previous controller was already rolling back are out of rotation: first.
        let mut todo = self.hosts_where(|h| h.phase == HostPhase::RollingBack);
        todo.extend(self.hosts_where(|h| h.phase.is_changed()));
        let mut all_back = true;
        while !todo.is_empty() {
            let resumed = todo
                .iter()
                .take_while(|h| {
                    self.host(h)
                        .is_some_and(|h| h.phase == HostPhase::RollingBack)
                })
                .count();
            let n = self.budget(&todo).max(resumed).min(todo.len());
            if n == 0 {
                let reason = format!("not rolled back: {}", self.over_budget(&todo));
                let msg = format!("still runs {}, {reason}", self.d.version);
                let changes = std::mem::take(&mut todo)
                    .into_iter()
                    .map(|host| {
                        let phase = self.host(&host).map_or(HostPhase::Done, |h| h.phase);
                        HostChange::new(&host, phase, Some(reason.clone()), &msg)
                    })
                    .collect();
                self.change_hosts(changes).await?;
                return Ok(false);
            }
            let part: Vec<String> = todo.drain(..n).collect();
            all_back &= self.roll_back(&part).await?;
        }
        // A host left drained is not back either: its state is unknown.
        Ok(all_back && self.left_drained(&[]).is_empty())
    }

    /// Drain, undo, enable for `hosts`, all at once. True when every one is back.
    async fn roll_back(&mut self, hosts: &[String]) -> Result<bool> {
        let msg = "returning to the previous version";
        self.set_phase(hosts, HostPhase::RollingBack, None, msg)
            .await?;
        let this = &*self;
        let undos = join_all(hosts.iter().map(|h| async move {
            let (_, drain_ms) = this.drain(h).await?;
            let hosts = std::slice::from_ref(h);
            let (version, undone) = this.with_checks_held(hosts, this.undo(h)).await?;
            let up_ms = this.enable(h).await?;
            // Without a load balancer only the undo's own steps ran.
            let balanced = this.lb.is_some();
            let mut steps: Vec<HostStep> = balanced
                .then(|| HostStep::new(h, StepKind::Drain, drain_ms))
                .into_iter()
                .collect();
            steps.extend(undone.host_steps(h));
            steps.extend(balanced.then(|| HostStep::new(h, StepKind::Up, up_ms)));
            Ok::<_, HostFailure>((version, steps))
        }))
        .await;
        let mut all_back = true;
        let mut steps = vec![];
        let mut changes = vec![];
        for (host, r) in hosts.iter().zip(undos) {
            match r {
                Ok((version, undo_steps)) => {
                    steps.extend(undo_steps);
                    let msg = format!("back on {version} and in rotation");
                    changes.push(HostChange::new(host, HostPhase::RolledBack, None, &msg));
                }
                Err(f) => {
                    all_back = false;
                    let msg = format!("rollback failed: {}; left drained", f.message);
                    let error = Some(f.message);
                    changes.push(HostChange::new(host, HostPhase::LeftDrained, error, &msg));
                }
            }
        }
        self.change_hosts(changes).await?;
        self.shared.store.record_steps(&self.d.id, steps).await?;
        self.note_lb_notices().await?;
        Ok(all_back)
    }
}

/// How many names an event lists before it only counts the rest.
const LISTED: usize = 20;

/// `h1, h2, h3`; past [`LISTED`] names, the first ones and how many more (a batch of a
/// large fleet holds hundreds).
fn name_list(names: &[String]) -> String {
    if names.len() <= LISTED {
        return names.join(", ");
    }
    format!(
        "{} hosts: {} and {} more",
        names.len(),
        names[..LISTED].join(", "),
        names.len() - LISTED
    )
}

/// A failure's message without the host name it starts with.
fn strip_host(f: &HostFailure) -> &str {
    f.message
        .strip_prefix(&format!("{}: ", f.host))
        .unwrap_or(&f.message)
}

#[cfg(test)]
mod tests {
    use super::name_list;

    #[test]
    fn a_long_batch_lists_its_first_hosts_and_counts_the_rest() {
        let few: Vec<String> = (1..=3).map(|i| format!("h{i}")).collect();
        assert_eq!(name_list(&few), "h1, h2, h3");
        let many: Vec<String> = (1..=1000).map(|i| format!("h{i}")).collect();
        let listed = name_list(&many);
        assert!(listed.starts_with("1000 hosts: h1, h2, "), "{listed}");
        assert!(listed.ends_with("h20 and 980 more"), "{listed}");
    }
}
