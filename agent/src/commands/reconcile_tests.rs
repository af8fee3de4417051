//! Reconciliation over the in-memory FAKE runtime: every way a swap can be left half done
//! by an agent that died, what the restarted agent makes of it, and what a swap resent
//! under the same command id does afterwards. Real Docker is exercised end to end in
//! `tests/tests/agent_reconcile.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use drover_shared::proto::{
    ContainerSpec, DockerHealthProbe, ErrorKind, Fence, ReadinessProbe, SwapCommand, SwapResult,
    readiness_probe,
};

use super::*;
use crate::commands::record::{ReadyRecords, handover_labels};
use crate::commands::{Job, spec, swap};
use crate::error::CommandFailure;
use crate::secrets::SecretsDir;
use crate::testing::FakeRuntime;

struct Fixture {
    ctx: CommandContext<FakeRuntime>,
    rt: Arc<FakeRuntime>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::new());
    for v in ["v1", "v2"] {
        rt.add_image(&format!("app:{v}"));
    }
    Fixture {
        ctx: CommandContext {
            runtime: rt.clone(),
            agent: "h1".into(),
            keep_previous: 2,
            secrets: SecretsDir::new(dir.path().join("secrets")),
            ready: ReadyRecords::new(&dir.path().join("state")),
        },
        rt,
        _dir: dir,
    }
}

/// Waits on the image's HEALTHCHECK, briefly.
fn probe() -> ReadinessProbe {
    ReadinessProbe {
        kind: Some(readiness_probe::Kind::DockerHealth(DockerHealthProbe {})),
        interval_ms: 10,
        timeout_ms: 100,
        success_threshold: 1,
        deadline_ms: 200,
    }
}

fn container_spec(version: &str) -> ContainerSpec {
    ContainerSpec {
        service: "web".into(),
        image: format!("app:{version}"),
        version: version.into(),
        ..Default::default()
    }
}

impl Fixture {
    /// A swap to `version` under `command_id`, run to its end.
    async fn swap(&self, command_id: &str, version: &str) -> Result<SwapResult, CommandFailure> {
        let cmd = SwapCommand {
            spec: Some(container_spec(version)),
            readiness: Some(probe()),
            stop_timeout_ms: 10,
            ..Default::default()
        };
        swap::swap(
            &self.ctx,
            &Job::new(command_id, None),
            &Fence::default(),
            cmd,
        )
        .await
    }

    /// What a swap to `version` under `command_id` leaves when the agent dies after it
    /// stopped the running container: the new one created, and started when `start`.
    async fn interrupted_swap(&self, command_id: &str, version: &str, start: bool) -> String {
        let checked = spec::check(&container_spec(version)).unwrap();
        let origin = spec::Origin {
            agent: "h1",
            command_id,
            fence: &Fence::default(),
            digest: crate::testing::DIGEST,
        };
        let mut create = spec::create_spec(&checked, &origin);
        create
            .labels
            .extend(handover_labels(Some(&probe()), Duration::from_millis(10)));
        let id = self.rt.create(&create).await.unwrap();
        for c in self.running() {
            self.rt.stop(&c.id, Duration::ZERO).await.unwrap();
        }
        if start {
            self.rt.start(&id).await.unwrap();
        }
        id
    }

    fn running(&self) -> Vec<ContainerInfo> {
        self.rt
            .containers()
            .into_iter()
            .filter(ContainerInfo::is_active)
            .collect()
    }

    /// The versions of the running containers, and of all containers, sorted.
    fn versions(&self) -> (Vec<String>, Vec<String>) {
        let v = |cs: Vec<ContainerInfo>| {
            let mut v: Vec<String> = cs.iter().map(|c| c.version().to_string()).collect();
            v.sort();
            v
        };
        (v(self.running()), v(self.rt.containers()))
    }

    async fn reconcile(&self) -> Outcome {
        let mut all = all(&self.ctx).await.unwrap();
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0).1
    }

    fn name_of(&self, version: &str) -> String {
        let c = self.rt.containers();
        let found = c.iter().find(|c| c.version() == version);
        found.map(|c| c.name.clone()).unwrap_or_default()
    }

    fn creates(&self) -> usize {
        self.rt.creates.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_never_started_container_is_removed_and_the_previous_one_restarted() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.interrupted_swap("s2", "v2", false).await;
    assert_eq!(f.versions(), (vec![], vec!["v1".into(), "v2".into()]));

    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Restored {
            container: f.name_of("v1")
        }
    );
    assert_eq!(f.versions(), (vec!["v1".into()], vec!["v1".into()]));
    assert!(f.ctx.ready.was_ready(&f.name_of("v1")).await);

    // The controller resends the swap: it is redone, not reported done.
    let creates = f.creates();
    let r = f.swap("s2", "v2").await.unwrap();
    assert_eq!(f.creates(), creates + 1);
    assert_eq!(r.current.unwrap().version, "v2");
    assert_eq!(f.versions().0, ["v2"]);
}

#[tokio::test]
async fn a_running_candidate_that_never_gets_ready_is_undone_and_a_resent_swap_is_redone() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.rt.never_ready("v2");
    f.interrupted_swap("s2", "v2", true).await;
    assert_eq!(f.versions().0, ["v2"]);

    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Restored {
            container: f.name_of("v1")
        }
    );
    // The candidate never became ready: removed, as a failed swap removes it.
    assert_eq!(f.versions(), (vec!["v1".into()], vec!["v1".into()]));

    // The resent swap runs again (and fails again, restoring v1), never "already done".
    let creates = f.creates();
    let e = f.swap("s2", "v2").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadinessFailed, "{}", e.message);
    assert_eq!(f.creates(), creates + 1);
    assert_eq!(e.restored.unwrap().version, "v1");
    assert_eq!(f.versions(), (vec!["v1".into()], vec!["v1".into()]));
}

#[tokio::test]
async fn a_running_candidate_that_gets_ready_finishes_the_swap_and_a_resent_swap_is_done() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.interrupted_swap("s2", "v2", true).await;

    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Finished {
            container: f.name_of("v2")
        }
    );
    assert_eq!(
        f.versions(),
        (vec!["v2".into()], vec!["v1".into(), "v2".into()])
    );
    let creates = f.creates();
    let r = f.swap("s2", "v2").await.unwrap();
    assert_eq!(f.creates(), creates, "already done: nothing created");
    let current = r.current.unwrap();
    assert_eq!(current.version, "v2");
    assert_eq!(current.previous[0].version, "v1");
}

#[tokio::test]
async fn a_resent_swap_finishes_or_undoes_its_own_interrupted_handover_first() {
    // Docker was unavailable at start, so nothing was reconciled: the resent swap does it.
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.interrupted_swap("s2", "v2", true).await;
    let creates = f.creates();
    f.swap("s2", "v2").await.unwrap();
    assert_eq!(f.creates(), creates, "ready: the swap is done");
    assert!(f.ctx.ready.was_ready(&f.name_of("v2")).await);

    let g = fixture();
    g.swap("s1", "v1").await.unwrap();
    g.rt.never_ready("v2");
    g.interrupted_swap("s2", "v2", true).await;
    let creates = g.creates();
    let e = g.swap("s2", "v2").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadinessFailed, "{}", e.message);
    assert_eq!(g.creates(), creates + 1, "undone, then redone");
    assert_eq!(g.versions(), (vec!["v1".into()], vec!["v1".into()]));
}

#[tokio::test]
async fn a_running_container_that_was_ready_is_left_alone() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.swap("s2", "v2").await.unwrap();
    let starts = f.rt.starts.load(Ordering::SeqCst);
    // Even unhealthy now: it was ready, and reconciliation is no health check.
    f.rt.never_ready("v2");
    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Untouched {
            container: f.name_of("v2")
        }
    );
    assert_eq!(f.rt.starts.load(Ordering::SeqCst), starts);
    assert_eq!(
        f.versions(),
        (vec!["v2".into()], vec!["v1".into(), "v2".into()])
    );
}

#[tokio::test]
async fn with_nothing_running_the_last_ready_container_is_started_else_the_one_before() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.swap("s2", "v2").await.unwrap();
    // Everything stopped (say the host rebooted): v2 ran last and was ready.
    for c in f.running() {
        f.rt.stop(&c.id, Duration::ZERO).await.unwrap();
    }
    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Restored {
            container: f.name_of("v2")
        }
    );
    // Once more, but v2 no longer gets ready: v1 is next, v2 stays as a kept container.
    for c in f.running() {
        f.rt.stop(&c.id, Duration::ZERO).await.unwrap();
    }
    f.rt.never_ready("v2");
    let out = f.reconcile().await;
    assert_eq!(
        out,
        Outcome::Restored {
            container: f.name_of("v1")
        }
    );
    assert_eq!(
        f.versions(),
        (vec!["v1".into()], vec!["v1".into(), "v2".into()])
    );
    // And when nothing gets ready, nothing runs, and that is what the state says.
    for c in f.running() {
        f.rt.stop(&c.id, Duration::ZERO).await.unwrap();
    }
    f.rt.never_ready("v1");
    assert_eq!(f.reconcile().await, Outcome::NothingRuns);
    assert!(f.running().is_empty());
    let state = super::super::handover::service_state(&f.ctx, "web").await;
    assert_eq!(
        state.state,
        drover_shared::proto::ContainerState::Exited as i32
    );
}

#[tokio::test]
async fn reconciliation_is_idempotent_and_survives_its_own_interruption() {
    let f = fixture();
    f.swap("s1", "v1").await.unwrap();
    f.rt.never_ready("v2");
    let candidate = f.interrupted_swap("s2", "v2", true).await;
    // Killed during reconciliation: the candidate stopped and removed, v1 not started yet.
    f.rt.stop(&candidate, Duration::ZERO).await.unwrap();
    f.rt.remove(&candidate).await.unwrap();
    let first = f.reconcile().await;
    assert_eq!(
        first,
        Outcome::Restored {
            container: f.name_of("v1")
        }
    );
    let again = f.reconcile().await;
    assert_eq!(
        again,
        Outcome::Untouched {
            container: f.name_of("v1")
        }
    );
    assert_eq!(f.versions(), (vec!["v1".into()], vec!["v1".into()]));
}

#[test]
fn a_running_candidate_gets_what_is_left_of_its_deadline_counted_from_its_start() {
    let ago = |s| Some(SystemTime::now() - Duration::from_secs(s));
    let left = |started| left_of_deadline(Some(probe()), started).map(|p| p.deadline_ms);
    // probe(): a 200 ms deadline.
    assert_eq!(left(None), Some(200));
    assert_eq!(left(ago(3600)), Some(1), "one check is always made");
    let long = ReadinessProbe {
        deadline_ms: 15_000,
        ..probe()
    };
    let ms = left_of_deadline(Some(long), ago(5)).unwrap().deadline_ms;
    assert!((9_000..=10_000).contains(&ms), "{ms}");
    assert_eq!(left_of_deadline(None, ago(5)), None, "running is enough");
}
