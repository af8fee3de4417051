//! The bake after a stage: canary hosts (those this deployment already moved) are watched
//! against the baseline (those it has not) for the stage's bake time. Two signals:
//! HAProxy's per-server counters (see [`super::canary`]) and the canary containers
//! themselves through their agents (restarts, exits, Docker health turning unhealthy).
//! A breach fails the stage; the caller then rolls every changed host back.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_proto::v1::{command, command_result};
use futures::future::join_all;
use tokio::time::Instant;

use super::canary::{Counters, evaluate};
use super::control::Go;
use super::flight::{Result, Rollout};
use super::machine::Event;
use crate::state::{Control, DeploymentState, HostPhase};
use crate::store::{Bake, BakeSignals, BakeVerdict, now_ms};

impl Rollout {
    /// Watches the stage's canaries for its bake time; `Go::Fail` names the breach.
    pub(super) async fn bake(&mut self, stage: u32) -> Result<Go> {
        let bake = self.stage_bake(stage);
        if bake.is_zero() {
            return Ok(Go::Continue);
        }
        let canary: Vec<String> = self.hosts_in(&[HostPhase::Done]);
        let baseline: Vec<String> = self.hosts_in(&[HostPhase::Pending, HostPhase::Prepared]);
        let interval = self.spec.canary.interval;
        let msg = format!(
            "baking stage {} for {}: watching {} against {} every {}{}",
            stage + 1,
            humantime::format_duration(bake),
            canary.join(", "),
            if baseline.is_empty() {
                "nothing".to_string()
            } else {
                baseline.join(", ")
            },
            humantime::format_duration(interval),
            if self.lb.is_none() {
                " (no load balancer: only the canary containers, no request counters)"
            } else {
                ""
            }
        );
        // A rollout resumed by a new controller may already be baking this stage.
        if self.d.state != DeploymentState::Baking {
            self.advance(Event::Bake, None, &msg).await?;
        }
        let all: Vec<String> = canary.iter().chain(&baseline).cloned().collect();
        let start = self.counters(&all).await;
        let seen = self.containers(&canary, 0).await;
        let began = Instant::now();
        let started_ms = now_ms();
        let mut record = Bake {
            stage,
            started_ms,
            ends_ms: started_ms + u64::try_from(bake.as_millis()).unwrap_or(u64::MAX),
            measured_ms: started_ms,
            canary_hosts: canary.clone(),
            baseline_hosts: u32::try_from(baseline.len()).unwrap_or(u32::MAX),
            canary: BakeSignals::default(),
            baseline: BakeSignals::default(),
            limits: self.spec.canary.clone(),
            verdict: BakeVerdict::Watching,
            reason: String::new(),
        };
        self.record_bake(&record).await?;
        let mut round = 0u32;
        loop {
            let next = Instant::now() + interval;
            while Instant::now() < next {
                self.nap(next - Instant::now()).await;
                self.refresh().await?;
                if self.d.control == Control::Abort {
                    let why = self
                        .d
                        .hold
                        .clone()
                        .unwrap_or_else(|| "aborted by an operator".into());
                    record.verdict = BakeVerdict::Aborted;
                    record.reason = why.clone();
                    self.record_bake(&record).await?;
                    return Ok(Go::Abort(why));
                }
            }
            round += 1;
            let now = self.counters(&all).await;
            let delta = |hosts: &[String]| -> BTreeMap<String, Counters> {
                hosts
                    .iter()
                    .filter_map(|h| Some((h.clone(), now.get(h)?.since(start.get(h)?))))
                    .collect()
            };
            let (canary_delta, baseline_delta) = (delta(&canary), delta(&baseline));
            let containers = self.containers(&canary, round).await;
            record.measured_ms = now_ms();
            record.canary = BakeSignals {
                restarts: restarts(&canary, &seen, &containers),
                ..signals(&canary_delta)
            };
            record.baseline = signals(&baseline_delta);
            let breach = match evaluate(&canary_delta, &baseline_delta, &self.spec.canary) {
                Some(b) => Some((b.host, b.message)),
                None => self.container_breach(&canary, &seen, &containers),
            };
            if let Some((host, why)) = breach {
                let msg = format!("canary breach in stage {}: {why}", stage + 1);
                record.verdict = BakeVerdict::Breached;
                record.reason = why;
                self.record_bake(&record).await?;
                self.note(&host, &msg).await?;
                return Ok(Go::Fail(msg));
            }
            if began.elapsed() >= bake {
                let msg = format!(
                    "stage {} baked for {} without a breach",
                    stage + 1,
                    humantime::format_duration(bake)
                );
                record.verdict = BakeVerdict::Passed;
                self.record_bake(&record).await?;
                self.note("", &msg).await?;
                return Ok(Go::Continue);
            }
            self.record_bake(&record).await?;
        }
    }

    /// Keeps the bake's latest round, and tells the watchers (the page shows it).
    async fn record_bake(&self, bake: &Bake) -> Result<()> {
        self.shared
            .store
            .record_bake(&self.d.id, bake.clone())
            .await?;
        self.shared.notify();
        Ok(())
    }

    fn hosts_in(&self, phases: &[HostPhase]) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| phases.contains(&h.phase))
            .map(|h| h.host.clone())
            .collect()
    }

    /// Each host's server counters, summed over every HAProxy (none without a balancer).
    async fn counters(&self, hosts: &[String]) -> BTreeMap<String, Counters> {
        let Some(lb) = &self.lb else {
            return BTreeMap::new();
        };
        let reads = join_all(
            hosts
                .iter()
                .map(|h| async move { (h.clone(), lb.status(&self.server(h)).await) }),
        )
        .await;
        reads
            .into_iter()
            .filter_map(|(h, r)| r.ok().map(|rows| (h, Counters::from_statuses(&rows))))
            .collect()
    }

    /// The service's container on each host, through the agents.
    async fn containers(
        &self,
        hosts: &[String],
        round: u32,
    ) -> BTreeMap<String, proto::ServiceState> {
        let inspects = join_all(hosts.iter().map(|h| async move {
            let cmd = proto::Command {
                command_id: format!("{}/inspect/{h}/{}/{round}", self.d.id, self.d.stage),
                fence: Some(self.fence()),
                kind: Some(command::Kind::Inspect(proto::InspectCommand {
                    service: self.d.service.clone(),
                })),
            };
            let r = self
                .shared
                .hub
                .send(h, cmd, Duration::from_secs(10))
                .await
                .ok()?;
            match r.output {
                Some(command_result::Output::Inspect(i)) => i
                    .services
                    .into_iter()
                    .find(|s| s.service == self.d.service)
                    .map(|s| (h.clone(), s)),
                _ => None,
            }
        }))
        .await;
        inspects.into_iter().flatten().collect()
    }

    /// A canary container that restarted, exited, went unhealthy, or vanished.
    fn container_breach(
        &self,
        canary: &[String],
        seen: &BTreeMap<String, proto::ServiceState>,
        now: &BTreeMap<String, proto::ServiceState>,
    ) -> Option<(String, String)> {
        for host in canary {
            let Some(state) = now.get(host) else {
                if self.shared.hub.host(host).is_some_and(|h| !h.connected) {
                    return Some((host.clone(), format!("agent on canary {host} lost")));
                }
                continue;
            };
            let running = state.state == proto::ContainerState::Running as i32;
            if !running {
                let st = proto::ContainerState::try_from(state.state).unwrap_or_default();
                return Some((
                    host.clone(),
                    format!(
                        "container on canary {host} is {} (version {})",
                        st.as_str_name()
                            .trim_start_matches("CONTAINER_STATE_")
                            .to_ascii_lowercase(),
                        state.version
                    ),
                ));
            }
            if state.health == proto::Health::Unhealthy as i32 {
                return Some((
                    host.clone(),
                    format!("container on canary {host} turned unhealthy (Docker HEALTHCHECK)"),
                ));
            }
            if let Some(b) = seen.get(host) {
                let restarts = state.restart_count.saturating_sub(b.restart_count);
                if b.container_id != state.container_id || restarts > self.spec.canary.max_restarts
                {
                    return Some((
                        host.clone(),
                        format!(
                            "container on canary {host} restarted {restarts} times during the bake (limit {})",
                            self.spec.canary.max_restarts
                        ),
                    ));
                }
            }
        }
        None
    }
}

/// One side of a bake, its hosts' deltas summed (response time: the worst host).
fn signals(hosts: &BTreeMap<String, Counters>) -> BakeSignals {
    hosts
        .values()
        .fold(BakeSignals::default(), |a, c| BakeSignals {
            requests: a.requests + c.responses + c.errors,
            errors: a.errors + c.http_5xx + c.errors,
            response_time_ms: a.response_time_ms.max(c.response_time_ms),
            restarts: 0,
        })
}

/// The most restarts of one canary container since the bake began.
fn restarts(
    canary: &[String],
    seen: &BTreeMap<String, proto::ServiceState>,
    now: &BTreeMap<String, proto::ServiceState>,
) -> u32 {
    canary
        .iter()
        .filter_map(|h| {
            let (then, now) = (seen.get(h)?, now.get(h)?);
            Some(now.restart_count.saturating_sub(then.restart_count))
        })
        .max()
        .unwrap_or(0)
}
