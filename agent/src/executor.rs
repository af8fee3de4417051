//! The executor: the agent's guard rails around every command.
//!
//! - **Idempotency**: each command id runs at most once. A repeated id gets the first
//!   result; a repeat that arrives while the first still runs waits for it. The last
//!   [`REMEMBERED_RESULTS`] results are kept.
//! - **Fencing**: per deployment, the highest epoch seen. A command carrying a lower one
//!   is refused with STALE_EPOCH. Seeded from container labels, so it survives restarts.
//! - **Serialization**: commands for the same service run one at a time (a per-service
//!   async mutex); other commands run concurrently.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use drover_shared::proto::{AgentMessage, Command, CommandResult, ErrorKind, Fence};
use tokio::sync::{OwnedMutexGuard, watch};
use tracing::{info, warn};

use crate::commands::{self, CommandContext, Job, Tidy};
use crate::error::CommandFailure;
use crate::runtime::{ContainerInfo, ContainerRuntime};

/// How many finished results are remembered for repeated command ids.
pub const REMEMBERED_RESULTS: usize = 1024;

/// Runs commands with idempotency, fencing and per-service serialization. Cheap to clone.
pub struct Executor<R> {
    /// What the commands run against.
    ctx: Arc<CommandContext<R>>,
    /// Bookkeeping, behind a plain mutex that is never held across an await.
    book: Arc<Mutex<Book>>,
}

impl<R> Clone for Executor<R> {
    fn clone(&self) -> Self {
        Self {
            ctx: self.ctx.clone(),
            book: self.book.clone(),
        }
    }
}

#[derive(Default)]
struct Book {
    /// Result (or pending result) per command id.
    results: HashMap<String, Slot>,
    /// Finished ids, oldest first, to bound `results`.
    finished: VecDeque<String>,
    /// Highest epoch seen per deployment id.
    epochs: HashMap<String, u64>,
    /// One async mutex per service, serializing its swaps and rollbacks.
    services: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

enum Slot {
    /// Still running; the receiver yields the result once it is there.
    Running(watch::Receiver<Option<CommandResult>>),
    /// Finished.
    Done(Box<CommandResult>),
}

/// What to do with an arriving command, decided under the book's lock.
enum Admission {
    /// Answer at once with this result.
    Answer(Box<CommandResult>),
    /// Wait for the run already under way.
    Wait(watch::Receiver<Option<CommandResult>>),
    /// Run it, publishing the result through this sender.
    Run(watch::Sender<Option<CommandResult>>),
}

impl<R: ContainerRuntime> Executor<R> {
    /// An executor over `ctx`, with empty bookkeeping.
    pub fn new(ctx: CommandContext<R>) -> Self {
        Self {
            ctx: Arc::new(ctx),
            book: Arc::default(),
        }
    }

    /// The command context (runtime, agent name).
    pub fn context(&self) -> &CommandContext<R> {
        &self.ctx
    }

    /// The command context, shared (for tasks that outlive a borrow, such as log streams).
    pub fn shared_context(&self) -> Arc<CommandContext<R>> {
        self.ctx.clone()
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // The book stays consistent even if a holder panicked: every update is one step.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Learns deployment epochs from container labels (at start and on every hello).
    pub fn observe(&self, containers: &[ContainerInfo]) {
        let mut book = self.book();
        for c in containers {
            if !c.deployment().is_empty() {
                let seen = book.epochs.entry(c.deployment().to_string()).or_insert(0);
                *seen = (*seen).max(c.epoch());
            }
        }
    }

    /// Runs `cmd` (at most once per command id) and returns its result. Progress goes to
    /// `uplink`. What the command leaves to tidy runs before this returns.
    pub async fn execute(
        &self,
        cmd: Command,
        uplink: Option<tokio::sync::mpsc::Sender<AgentMessage>>,
    ) -> CommandResult {
        self.execute_then(cmd, uplink, |_| async {}).await
    }

    /// Like [`execute`](Self::execute), and hands the result to `deliver` as soon as it
    /// is known, before the command's tidying (pruning kept containers) runs; the
    /// service stays serialized until that is done too.
    pub async fn execute_then<F, Fut>(
        &self,
        cmd: Command,
        uplink: Option<tokio::sync::mpsc::Sender<AgentMessage>>,
        deliver: F,
    ) -> CommandResult
    where
        F: FnOnce(CommandResult) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let job = Job::new(&cmd.command_id, uplink);
        let fence = cmd.fence.clone().unwrap_or_default();
        let tx = match self.admit(&cmd.command_id, &fence, &job) {
            Admission::Answer(r) => {
                deliver((*r).clone()).await;
                return *r;
            }
            Admission::Wait(mut rx) => {
                info!("command already running; waiting for its result");
                let result = match rx.wait_for(Option::is_some).await {
                    Ok(r) => r.clone().unwrap_or_default(),
                    Err(_) => failed(
                        &job,
                        CommandFailure::internal(format!(
                            "command {} was interrupted before it finished (the agent is shutting down); resend it",
                            job.command_id
                        )),
                    ),
                };
                deliver(result.clone()).await;
                return result;
            }
            Admission::Run(tx) => tx,
        };
        // Forget the pending slot if this future is dropped before it finishes.
        let mut pending = PendingSlot {
            executor: self,
            id: &cmd.command_id,
            armed: true,
        };
        let (result, tidy) = self.run(&job, &fence, cmd.kind).await;
        self.finish(&job.command_id, result.clone());
        pending.armed = false;
        let _ = tx.send(Some(result.clone()));
        deliver(result.clone()).await;
        if let Some((tidy, _serial)) = tidy {
            tidy.run(&self.ctx).await;
        }
        result
    }

    fn admit(&self, id: &str, fence: &Fence, job: &Job) -> Admission {
        let mut book = self.book();
        match book.results.get(id) {
            Some(Slot::Done(r)) => return Admission::Answer(r.clone()),
            Some(Slot::Running(rx)) => return Admission::Wait(rx.clone()),
            None => {}
        }
        if id.is_empty() {
            return Admission::Answer(Box::new(failed(
                job,
                CommandFailure::invalid(
                    "command without a command_id: every command needs a unique id",
                ),
            )));
        }
        if let Some(stale) = stale(&book.epochs, id, fence) {
            drop(book);
            let result = failed(job, stale);
            self.finish(id, result.clone());
            return Admission::Answer(Box::new(result));
        }
        if !fence.deployment_id.is_empty() {
            book.epochs.insert(fence.deployment_id.clone(), fence.epoch);
        }
        let (tx, rx) = watch::channel(None);
        book.results.insert(id.to_string(), Slot::Running(rx));
        Admission::Run(tx)
    }

    /// Runs the command under its service's lock; what is left to tidy comes back with
    /// that lock still held.
    async fn run(
        &self,
        job: &Job,
        fence: &Fence,
        kind: Option<drover_shared::proto::command::Kind>,
    ) -> (CommandResult, Option<(Tidy, Option<OwnedMutexGuard<()>>)>) {
        let Some(kind) = kind else {
            let result = failed(
                job,
                CommandFailure::invalid(format!(
                    "command {} has no kind: this agent (version {}) may be older than the controller",
                    job.command_id,
                    drover_shared::VERSION
                )),
            );
            return (result, None);
        };
        let _serial: Option<OwnedMutexGuard<()>> = match commands::service_of(&kind) {
            Some(service) => {
                let lock = self
                    .book()
                    .services
                    .entry(service.to_string())
                    .or_default()
                    .clone();
                Some(lock.lock_owned().await)
            }
            None => None,
        };
        // A newer epoch may have arrived while this command waited for its service.
        if let Some(stale) = stale(&self.book().epochs, &job.command_id, fence) {
            return (failed(job, stale), None);
        }
        match commands::execute(&self.ctx, job, fence, kind).await {
            Ok((output, tidy)) => {
                let result = CommandResult {
                    command_id: job.command_id.clone(),
                    error: None,
                    output: Some(output),
                    elapsed_ms: job.elapsed_ms(),
                };
                (result, tidy.map(|t| (t, _serial)))
            }
            Err(f) => {
                warn!(kind = ?f.kind, error = %f.message, "command failed");
                (failed(job, f), None)
            }
        }
    }

    fn finish(&self, id: &str, result: CommandResult) {
        let mut book = self.book();
        book.results
            .insert(id.to_string(), Slot::Done(Box::new(result)));
        book.finished.push_back(id.to_string());
        while book.finished.len() > REMEMBERED_RESULTS {
            if let Some(old) = book.finished.pop_front() {
                book.results.remove(&old);
            }
        }
    }
}

/// Removes a command's pending slot when its run is abandoned (task aborted).
struct PendingSlot<'a, R> {
    executor: &'a Executor<R>,
    id: &'a str,
    armed: bool,
}

impl<R> Drop for PendingSlot<'_, R> {
    fn drop(&mut self) {
        if self.armed {
            let mut book = self
                .executor
                .book
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if matches!(book.results.get(self.id), Some(Slot::Running(_))) {
                book.results.remove(self.id);
            }
        }
    }
}

fn stale(epochs: &HashMap<String, u64>, id: &str, fence: &Fence) -> Option<CommandFailure> {
    if fence.deployment_id.is_empty() {
        return None;
    }
    let seen = *epochs.get(&fence.deployment_id)?;
    (fence.epoch < seen).then(|| {
        CommandFailure::new(
            ErrorKind::StaleEpoch,
            format!(
                "command {id} carries epoch {} of deployment {}, but epoch {seen} was already seen; a newer controller owns this deployment",
                fence.epoch, fence.deployment_id
            ),
        )
    })
}

fn failed(job: &Job, f: CommandFailure) -> CommandResult {
    CommandResult {
        command_id: job.command_id.clone(),
        error: Some(f.into_proto()),
        output: None,
        elapsed_ms: job.elapsed_ms(),
    }
}

#[cfg(test)]
mod tests {
    //! Idempotency and fencing over the in-memory FAKE runtime (pure-layer tests only).
    use super::*;
    use crate::runtime::RunState;
    use crate::testing::{FakeRuntime, adopted_labels};
    use drover_shared::proto::{
        ContainerSpec, PrepareCommand, SwapCommand, command, command_result,
    };
    use std::sync::atomic::Ordering;

    fn executor() -> Executor<FakeRuntime> {
        Executor::new(CommandContext {
            runtime: Arc::new(FakeRuntime::new()),
            agent: "h1".into(),
            keep_previous: 1,
            secrets: crate::secrets::SecretsDir::new("/nonexistent/drover-test-secrets"),
            ready: crate::commands::record::ReadyRecords::new(std::path::Path::new(
                "/nonexistent/drover-test-state",
            )),
        })
    }

    fn prepare(id: &str, deployment: &str, epoch: u64) -> Command {
        Command {
            command_id: id.into(),
            fence: Some(Fence {
                deployment_id: deployment.into(),
                epoch,
            }),
            kind: Some(command::Kind::Prepare(PrepareCommand {
                image: "127.0.0.1:5000/app:v1".into(),
                ..Default::default()
            })),
        }
    }

    fn swap(id: &str, version: &str, epoch: u64) -> Command {
        Command {
            command_id: id.into(),
            fence: Some(Fence {
                deployment_id: "d1".into(),
                epoch,
            }),
            kind: Some(command::Kind::Swap(SwapCommand {
                spec: Some(ContainerSpec {
                    service: "web".into(),
                    image: format!("app:{version}"),
                    version: version.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }
    }

    fn kind(r: &CommandResult) -> Option<ErrorKind> {
        r.error
            .as_ref()
            .map(|e| ErrorKind::try_from(e.kind).unwrap())
    }

    #[tokio::test]
    async fn repeated_id_is_answered_with_the_first_result() {
        let ex = executor();
        let first = ex.execute(prepare("c1", "d1", 1), None).await;
        assert!(first.error.is_none(), "{first:?}");
        assert!(matches!(&first.output, Some(command_result::Output::Prepare(p)) if p.pulled));
        let again = ex.execute(prepare("c1", "d1", 1), None).await;
        assert_eq!(first, again);
        assert_eq!(ex.context().runtime.pulls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn repeat_while_running_waits_and_runs_once() {
        let ex = executor();
        let rt = ex.context().runtime.clone();
        rt.pull_gate.forget_permits(usize::MAX);
        let a = tokio::spawn({
            let ex = ex.clone();
            async move { ex.execute(prepare("c1", "d1", 1), None).await }
        });
        while rt.pulls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let b = tokio::spawn({
            let ex = ex.clone();
            async move { ex.execute(prepare("c1", "d1", 1), None).await }
        });
        tokio::task::yield_now().await;
        rt.pull_gate.add_permits(1);
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(a, b);
        assert!(a.error.is_none());
        assert_eq!(rt.pulls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn lower_epoch_is_refused() {
        let ex = executor();
        assert!(
            ex.execute(prepare("c1", "d1", 5), None)
                .await
                .error
                .is_none()
        );
        let stale = ex.execute(prepare("c2", "d1", 3), None).await;
        assert_eq!(kind(&stale), Some(ErrorKind::StaleEpoch));
        assert_eq!(
            stale.error.unwrap().message,
            "command c2 carries epoch 3 of deployment d1, but epoch 5 was already seen; a newer controller owns this deployment"
        );
        // Same epoch, newer epoch, other deployment: all fine.
        assert!(
            ex.execute(prepare("c3", "d1", 5), None)
                .await
                .error
                .is_none()
        );
        assert!(
            ex.execute(prepare("c4", "d1", 6), None)
                .await
                .error
                .is_none()
        );
        assert!(
            ex.execute(prepare("c5", "d2", 1), None)
                .await
                .error
                .is_none()
        );
        assert_eq!(
            kind(&ex.execute(prepare("c6", "d1", 5), None).await),
            Some(ErrorKind::StaleEpoch)
        );
    }

    #[tokio::test]
    async fn epochs_are_seeded_from_container_labels() {
        let ex = executor();
        let mut c =
            crate::commands::state::tests::container("old", "web", "v1", RunState::Running, 1);
        c.labels = adopted_labels("h1", "web", "d1", 7, "c0");
        ex.observe(&[c]);
        assert_eq!(
            kind(&ex.execute(prepare("c1", "d1", 6), None).await),
            Some(ErrorKind::StaleEpoch)
        );
        assert!(
            ex.execute(prepare("c2", "d1", 7), None)
                .await
                .error
                .is_none()
        );
    }

    #[tokio::test]
    async fn swap_keeps_the_old_container_and_survives_a_restart() {
        let ex = executor();
        let rt = ex.context().runtime.clone();
        rt.add_image("app:v1");
        rt.add_image("app:v2");
        let missing = ex.execute(swap("s0", "v9", 1), None).await;
        assert_eq!(kind(&missing), Some(ErrorKind::ImageNotFound));
        assert!(
            missing
                .error
                .unwrap()
                .message
                .contains("send Prepare first")
        );
        let r1 = ex.execute(swap("s1", "v1", 1), None).await;
        assert!(r1.error.is_none(), "{r1:?}");
        let r2 = ex.execute(swap("s2", "v2", 1), None).await;
        let Some(command_result::Output::Swap(s)) = &r2.output else {
            panic!("{r2:?}")
        };
        let current = s.current.as_ref().unwrap();
        assert_eq!(current.version, "v2");
        assert_eq!(current.previous.len(), 1);
        assert_eq!(current.previous[0].version, "v1");
        // A fresh executor (agent restart) sees the same command id on the running
        // container and does no work.
        let restarted = Executor::new(CommandContext {
            runtime: rt.clone(),
            agent: "h1".into(),
            keep_previous: 1,
            secrets: ex.context().secrets.clone(),
            ready: ex.context().ready.clone(),
        });
        let creates = rt.creates.load(Ordering::SeqCst);
        let again = restarted.execute(swap("s2", "v2", 1), None).await;
        assert!(again.error.is_none(), "{again:?}");
        assert_eq!(rt.creates.load(Ordering::SeqCst), creates);
        // keep_previous = 1: a third swap prunes v1, after its result is delivered.
        let at_delivery = std::sync::Mutex::new(None);
        ex.execute_then(swap("s3", "v1", 1), None, |r| {
            assert!(r.error.is_none(), "{r:?}");
            *at_delivery.lock().unwrap() = Some(rt.containers().len());
            async {}
        })
        .await;
        assert_eq!(
            *at_delivery.lock().unwrap(),
            Some(3),
            "pruned before the result"
        );
        let versions: Vec<String> = rt
            .containers()
            .iter()
            .map(|c| c.version().to_string())
            .collect();
        assert_eq!(versions.len(), 2, "{versions:?}");
    }

    #[tokio::test]
    async fn a_pinned_reference_is_pulled_without_asking_the_registry_again() {
        let ex = executor();
        let pinned = format!("127.0.0.1:5000/app@{}", crate::testing::DIGEST);
        let mut cmd = prepare("p1", "d1", 1);
        if let Some(command::Kind::Prepare(p)) = &mut cmd.kind {
            p.image = pinned.clone();
        }
        let r = ex.execute(cmd, None).await;
        let Some(command_result::Output::Prepare(p)) = &r.output else {
            panic!("{r:?}")
        };
        assert_eq!((p.pinned.as_str(), p.pulled), (pinned.as_str(), true));
        assert_eq!(ex.context().runtime.resolves.load(Ordering::SeqCst), 0);
        // A tag is still resolved, once per prepare.
        ex.execute(prepare("p2", "d1", 1), None).await;
        assert_eq!(ex.context().runtime.resolves.load(Ordering::SeqCst), 1);
    }
}
