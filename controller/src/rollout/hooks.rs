//! Deploy hooks as steps of a rollout: `before_rollout` after the pre-pull and before any
//! drain, `after_batch` on each host before it is put back in rotation, `after_rollout`
//! once after the last batch. Each run is recorded with the deployment (outcome,
//! duration, the last 64 KiB of output with secrets redacted by the agent) and noted as
//! an event, so `drover status` and `drover history` show it.
//!
//! Hooks run under the deployment's fence like every command. A `before_rollout` hook
//! runs once per (service, environment, digest): a successful run writes a marker in the
//! same transaction as its record, and a resumed or later deployment of that digest
//! skips it unless asked with `--rerun-hooks`. A hook command is sent once: an agent
//! lost mid-hook fails it rather than running a migration twice.

use std::time::Duration;

use drover_proto::v1 as proto;
use drover_proto::v1::{command, command_result};
use futures::future::join_all;

use super::flight::{Result, Rollout};
use super::smoke;
use super::steps::{HostFailure, Left, failure, fmt_ms};
use crate::spec::{Hook, HookAction, HookPhase, RunIn};
use crate::store::{HookOutcome, HookRun, MarkerKey, now_ms};

/// Margin on top of a hook's own timeout for creating, starting and removing its
/// container before the controller stops waiting for the agent.
const COMMAND_MARGIN: Duration = Duration::from_secs(60);

/// How many bytes of a hook's output an event carries (the run's record keeps 64 KiB).
const EVENT_TAIL_BYTES: usize = 2048;

impl Rollout {
    fn hooks_in(&self, phase: HookPhase) -> Vec<Hook> {
        self.spec
            .hooks
            .iter()
            .filter(|h| h.phase == phase)
            .cloned()
            .collect()
    }

    /// The digest the markers of this deployment are for.
    fn marker_digest(&self) -> &str {
        self.d
            .pinned
            .rsplit_once('@')
            .map_or(self.d.pinned.as_str(), |(_, d)| d)
    }

    /// Runs the `before_rollout` hooks, in order, on one target host. The error is why
    /// the deployment fails; nothing has been drained.
    pub(super) async fn before_rollout(&mut self) -> Result<Result<(), String>> {
        let hooks = self.hooks_in(HookPhase::BeforeRollout);
        if hooks.is_empty() {
            return Ok(Ok(()));
        }
        let rerun = self.shared.store.reruns_hooks(&self.d.id).await?;
        let Some(host) = self.hook_host() else {
            return Ok(Err(
                "no target host is connected to run the before_rollout hooks on".into(),
            ));
        };
        for hook in &hooks {
            let digest = self.marker_digest().to_string();
            let key = MarkerKey {
                service: &self.d.service,
                environment: &self.d.environment,
                digest: &digest,
                hook: &hook.name,
            };
            if let Some(m) = self.shared.store.hook_marker(key).await?
                && (!rerun || m.deployment_id == self.d.id)
            {
                let at = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + Duration::from_millis(m.at_ms),
                );
                let output = format!(
                    "already ran for {digest} in deployment {} at {at}; `drover deploy --rerun-hooks` runs it again",
                    m.deployment_id
                );
                let now = now_ms();
                let run = HookRun {
                    name: hook.name.clone(),
                    phase: hook.phase.as_str().into(),
                    host: String::new(),
                    outcome: HookOutcome::Skipped,
                    exit_code: 0,
                    started_ms: now,
                    finished_ms: now,
                    output,
                };
                self.record(run, None).await?;
                continue;
            }
            let step = format!("hook/{}/{host}", hook.name);
            let run = self.run_on(hook, &host, &step).await;
            let ok = run.outcome == HookOutcome::Succeeded;
            let why = failed_because(&run);
            self.record(run, ok.then_some(key)).await?;
            if !ok {
                return Ok(Err(format!(
                    "before_rollout hook {} {why}; nothing was drained, every host still runs its previous version",
                    hook.name
                )));
            }
        }
        Ok(Ok(()))
    }

    /// The host a once-per-deploy hook runs on: the first connected target, in plan order.
    fn hook_host(&self) -> Option<String> {
        self.hosts
            .iter()
            .map(|h| h.host.clone())
            .find(|h| self.shared.hub.host(h).is_some_and(|s| s.connected))
    }

    /// Runs the `after_batch` hooks on each of `hosts` (in parallel across hosts, in
    /// order on each); one result per host.
    pub(super) async fn after_batch(
        &self,
        hosts: &[String],
    ) -> Result<Vec<std::result::Result<(), HostFailure>>> {
        let hooks = self.hooks_in(HookPhase::AfterBatch);
        if hooks.is_empty() || hosts.is_empty() {
            return Ok(hosts.iter().map(|_| Ok(())).collect());
        }
        // A new number per attempt (a resumed or retried batch runs its checks again).
        let attempt = self.shared.store.hook_runs(&self.d.id).await?.len();
        let this = self;
        let per_host = join_all(hosts.iter().map(|host| {
            let hooks = &hooks;
            async move {
                let mut runs = vec![];
                for hook in hooks {
                    let step = format!("hook/{}/{host}/{attempt}", hook.name);
                    let run = this.run_on(hook, host, &step).await;
                    let ok = run.outcome == HookOutcome::Succeeded;
                    runs.push(run);
                    if !ok {
                        break;
                    }
                }
                runs
            }
        }))
        .await;
        let mut out = vec![];
        for (host, runs) in hosts.iter().zip(per_host) {
            let mut result = Ok(());
            for run in runs {
                if run.outcome != HookOutcome::Succeeded {
                    let detail = format!("after_batch hook {} {}", run.name, failed_because(&run));
                    result = Err(HostFailure::new(host, Left::AsBefore, detail));
                }
                self.record(run, None).await?;
            }
            out.push(result);
        }
        Ok(out)
    }

    /// Runs the `after_rollout` hooks (smoke tests) in order. The error is why every
    /// changed host is rolled back.
    pub(super) async fn after_rollout(&mut self) -> Result<Result<(), String>> {
        for hook in self.hooks_in(HookPhase::AfterRollout) {
            let run = match &hook.action {
                HookAction::Http(check) => {
                    let started_ms = now_ms();
                    let (ok, output) = tokio::time::timeout(hook.timeout, smoke::run(check))
                        .await
                        .unwrap_or_else(|_| {
                            (
                                false,
                                format!(
                                    "timed out after {}",
                                    drover_shared::duration::human(hook.timeout)
                                ),
                            )
                        });
                    HookRun {
                        name: hook.name.clone(),
                        phase: hook.phase.as_str().into(),
                        host: String::new(),
                        outcome: if ok {
                            HookOutcome::Succeeded
                        } else {
                            HookOutcome::Failed
                        },
                        exit_code: 0,
                        started_ms,
                        finished_ms: now_ms(),
                        output,
                    }
                }
                HookAction::Command { .. } => {
                    let Some(host) = self.hook_host() else {
                        return Ok(Err(format!(
                            "after_rollout hook {}: no target host is connected to run it on",
                            hook.name
                        )));
                    };
                    let attempt = self.shared.store.hook_runs(&self.d.id).await?.len();
                    let step = format!("hook/{}/{host}/{attempt}", hook.name);
                    self.run_on(&hook, &host, &step).await
                }
            };
            let ok = run.outcome == HookOutcome::Succeeded;
            let why = failed_because(&run);
            self.record(run, None).await?;
            if !ok {
                return Ok(Err(format!("after_rollout hook {} {why}", hook.name)));
            }
        }
        Ok(Ok(()))
    }

    /// Runs `hook` on `host` through its agent, once; never fails, the run says how it
    /// ended.
    async fn run_on(&self, hook: &Hook, host: &str, step: &str) -> HookRun {
        let started_ms = now_ms();
        let mut run = HookRun {
            name: hook.name.clone(),
            phase: hook.phase.as_str().into(),
            host: host.to_string(),
            outcome: HookOutcome::Error,
            exit_code: 0,
            started_ms,
            finished_ms: started_ms,
            output: String::new(),
        };
        let _ = self
            .note(
                host,
                &format!("running {} hook {}", hook.phase.as_str(), hook.name),
            )
            .await;
        match self.send_hook(hook, host, step).await {
            Ok(r) => {
                run.exit_code = r.exit_code;
                run.output = r.output;
                run.outcome = if r.timed_out {
                    HookOutcome::TimedOut
                } else if r.exit_code == 0 {
                    HookOutcome::Succeeded
                } else {
                    HookOutcome::Failed
                };
            }
            Err(f) => run.output = f.message,
        }
        run.finished_ms = now_ms();
        run
    }

    async fn send_hook(
        &self,
        hook: &Hook,
        host: &str,
        step: &str,
    ) -> std::result::Result<proto::RunHookResult, HostFailure> {
        let HookAction::Command {
            argv,
            image,
            run_in,
        } = &hook.action
        else {
            return Err(HostFailure::new(
                host,
                Left::AsBefore,
                "an HTTP check runs on the controller",
            ));
        };
        let advertise = self
            .shared
            .hub
            .host(host)
            .map(|h| h.advertise_address)
            .unwrap_or_default();
        let image = image.clone().unwrap_or_else(|| self.d.pinned.clone());
        let mut spec = self.spec.container(&image, &self.d.version, &advertise);
        spec.ports.clear();
        spec.command = argv.clone();
        spec.restart_policy = proto::RestartPolicy::No as i32;
        for (k, v) in [
            ("DROVER_HOOK", hook.name.as_str()),
            ("DROVER_HOOK_PHASE", hook.phase.as_str()),
            ("DROVER_HOST", host),
            ("DROVER_DEPLOYMENT", self.d.id.as_str()),
            ("DROVER_VERSION", self.d.version.as_str()),
        ] {
            spec.env.insert(k.to_string(), v.to_string());
        }
        let kind = command::Kind::RunHook(proto::RunHookCommand {
            hook: hook.name.clone(),
            spec: Some(spec),
            secrets: self.secrets(host).await?,
            timeout_ms: hook.timeout.as_millis() as u64,
            exec: *run_in == RunIn::Exec,
            auth: self.auth.clone(),
        });
        let cmd = self.command(host, step, kind);
        // Sent once: an agent lost mid-hook may have run it; a migration is not resent.
        let r = self
            .shared
            .hub
            .send(host, cmd, hook.timeout + COMMAND_MARGIN)
            .await
            .map_err(|e| {
                HostFailure::new(
                    host,
                    Left::AsBefore,
                    format!("{e}; the hook was not retried (its agent removes a left-over hook container when it is back)"),
                )
            })?;
        match r.output {
            Some(command_result::Output::RunHook(h)) => Ok(h),
            _ => Err(failure(host, &r)),
        }
    }

    /// Records a hook run (and, with `marker`, that it ran for the digest) and notes it
    /// as an event with the tail of its output.
    async fn record(&self, run: HookRun, marker: Option<MarkerKey<'_>>) -> Result<()> {
        let took = fmt_ms(run.finished_ms.saturating_sub(run.started_ms));
        let what = match run.outcome {
            HookOutcome::Succeeded => format!("succeeded in {took}"),
            HookOutcome::Skipped => "skipped".to_string(),
            _ => format!("{} after {took}", failed_because(&run)),
        };
        let mut msg = format!("{} hook {} {what}", run.phase, run.name);
        let tail = tail(&run.output, EVENT_TAIL_BYTES);
        if !tail.is_empty() {
            msg.push_str(":\n");
            msg.push_str(tail.trim_end());
        }
        let host = run.host.clone();
        self.shared
            .store
            .record_hook(&self.d.id, run, marker)
            .await?;
        self.note(&host, &msg).await
    }
}

/// How a run that did not succeed ended, in words.
fn failed_because(run: &HookRun) -> String {
    match run.outcome {
        HookOutcome::Succeeded => "succeeded".into(),
        HookOutcome::Skipped => "was skipped".into(),
        HookOutcome::Failed if run.host.is_empty() => "failed".into(),
        HookOutcome::Failed => format!("exited with code {}", run.exit_code),
        HookOutcome::TimedOut => "timed out and was killed".into(),
        HookOutcome::Error => "could not run".into(),
    }
}

/// The last `max` bytes of `s`, cut at a line start when one is near.
fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let t = &s[start..];
    t.find('\n').map_or(t, |i| &t[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_end_from_a_line_start() {
        assert_eq!(tail("short", 10), "short");
        assert_eq!(tail("first line\nsecond\nthird", 12), "third");
        let s = "é".repeat(10);
        assert!(tail(&s, 5).len() <= 5);
    }
}
