//! Secrets on swap, over the in-memory FAKE runtime: which create request the engine
//! gets, and the life of a container's secrets directory (written before create, kept
//! with a kept container, removed with a removed one). Real Docker is exercised by the
//! end-to-end tests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use drover_shared::proto::{ContainerSpec, SecretDelivery, SecretValue, Secrets};

use super::*;
use crate::commands::Job;
use crate::testing::FakeRuntime;

const VALUE: &[u8] = b"hunter2-secret-value";

struct Fixture {
    ctx: CommandContext<FakeRuntime>,
    rt: Arc<FakeRuntime>,
    root: std::path::PathBuf,
    _dir: tempfile::TempDir,
    n: usize,
}

/// A context whose secrets root the (sample) mount table puts on `fs_type`.
fn fixture(fs_type: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("secrets");
    let rt = Arc::new(FakeRuntime::new());
    for v in ["v1", "v2", "v3"] {
        rt.add_image(&format!("app:{v}"));
    }
    Fixture {
        ctx: crate::testing::context(&rt, dir.path(), fs_type),
        rt,
        root,
        _dir: dir,
        n: 0,
    }
}

fn secrets(delivery: SecretDelivery) -> Secrets {
    Secrets {
        delivery: delivery as i32,
        mount_path: "/run/app-secrets".into(),
        values: vec![SecretValue {
            name: "DB_PASSWORD".into(),
            value: VALUE.to_vec(),
        }],
    }
}

impl Fixture {
    /// A swap to `version` (then the prune that follows its result).
    async fn swap(
        &mut self,
        version: &str,
        s: Option<Secrets>,
    ) -> Result<SwapResult, CommandFailure> {
        self.n += 1;
        let keep = self.ctx.keep_previous as usize;
        let out = self.run(&format!("s{}", self.n), version, s, "").await?;
        super::prune(&self.ctx, "web", keep).await;
        Ok(out)
    }

    /// Runs command `id`: a swap to `version`, or only its stage when `stage_for` names
    /// the swap it creates the container for.
    async fn run(
        &self,
        id: &str,
        version: &str,
        secrets: Option<Secrets>,
        stage_for: &str,
    ) -> Result<SwapResult, CommandFailure> {
        let job = Job::new(id, None);
        let cmd = SwapCommand {
            spec: Some(ContainerSpec {
                service: "web".into(),
                image: format!("app:{version}"),
                version: version.into(),
                ..Default::default()
            }),
            secrets,
            stage_for_command: stage_for.into(),
            ..Default::default()
        };
        swap(&self.ctx, &job, &Fence::default(), cmd).await
    }

    fn last_create(&self) -> CreateSpec {
        self.rt.created.lock().unwrap().last().unwrap().clone()
    }

    fn dirs(&self) -> Vec<String> {
        let mut d: Vec<String> = std::fs::read_dir(&self.root)
            .map(|r| {
                r.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        d.sort();
        d
    }
}

#[tokio::test]
async fn file_secrets_are_mounted_read_only_and_live_as_long_as_the_container() {
    let mut f = fixture("tmpfs");
    f.swap("v1", Some(secrets(SecretDelivery::Files)))
        .await
        .unwrap();
    let first = f.last_create();
    let dir = f.root.join(&first.name);
    assert_eq!(std::fs::read(dir.join("DB_PASSWORD")).unwrap(), VALUE);
    let mount = first.mounts.last().unwrap();
    assert_eq!(mount.kind, MountType::Bind);
    assert_eq!(Path::new(&mount.source), dir);
    assert_eq!(mount.target, "/run/app-secrets");
    assert!(mount.read_only);
    assert!(first.secret_env.is_empty());
    assert!(!format!("{first:?}").contains("hunter2"));

    // The next swap keeps v1 (keep_previous = 1), so its secrets stay for a rollback.
    f.swap("v2", Some(secrets(SecretDelivery::Files)))
        .await
        .unwrap();
    let second = f.last_create();
    assert_eq!(f.dirs(), sorted([&first.name, &second.name]));
    // The third prunes v1: its secrets go with it.
    f.swap("v3", Some(secrets(SecretDelivery::Files)))
        .await
        .unwrap();
    let third = f.last_create();
    assert_eq!(f.dirs(), sorted([&second.name, &third.name]));
    assert_eq!(f.rt.containers().len(), 2);

    // A container that cannot start is removed, and so are its secrets.
    f.rt.fail_starts.store(true, Ordering::SeqCst);
    let e = f
        .swap("v1", Some(secrets(SecretDelivery::Files)))
        .await
        .unwrap_err();
    assert!(!e.message.contains("hunter2"), "{}", e.message);
    assert_eq!(f.dirs(), sorted([&second.name, &third.name]));
}

#[tokio::test]
async fn file_secrets_off_tmpfs_are_refused_before_anything_is_touched() {
    let mut f = fixture("ext4");
    let e = f
        .swap("v1", Some(secrets(SecretDelivery::Files)))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(
        e.message.contains(&f.root.display().to_string()),
        "{}",
        e.message
    );
    assert!(e.message.contains("tmpfs"), "{}", e.message);
    assert_eq!(f.rt.creates.load(Ordering::SeqCst), 0);
    assert!(f.dirs().is_empty());
    // Without secrets the same host swaps fine.
    f.swap("v1", None).await.unwrap();
}

#[tokio::test]
async fn env_secrets_reach_the_create_request_only() {
    let mut f = fixture("ext4");
    f.swap("v1", Some(secrets(SecretDelivery::Env)))
        .await
        .unwrap();
    let spec = f.last_create();
    assert_eq!(
        spec.secret_env
            .iter()
            .map(|e| e.expose_pair())
            .collect::<Vec<_>>(),
        ["DB_PASSWORD=hunter2-secret-value"]
    );
    assert!(spec.env.iter().all(|e| !e.starts_with("DB_PASSWORD")));
    assert!(spec.mounts.is_empty());
    assert!(f.dirs().is_empty());
    let shown = format!("{spec:?}");
    assert!(
        shown.contains("DB_PASSWORD") && !shown.contains("hunter2"),
        "{shown}"
    );
}

#[tokio::test]
async fn orphaned_secrets_are_removed_at_start() {
    let f = fixture("tmpfs");
    for d in [
        "drover-h1-web-v1-aaaaaa",
        "drover-h1-web-v2-bbbbbb",
        "drover-h2-web-v1-cccccc",
    ] {
        std::fs::create_dir_all(f.root.join(d)).unwrap();
    }
    let live = std::collections::HashSet::from(["drover-h1-web-v2-bbbbbb".to_string()]);
    crate::commands::remove_orphan_secrets(&f.ctx, &live).await;
    assert_eq!(
        f.dirs(),
        ["drover-h1-web-v2-bbbbbb", "drover-h2-web-v1-cccccc"]
    );
}

fn sorted<const N: usize>(names: [&String; N]) -> Vec<String> {
    let mut v: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_staged_container_is_started_by_its_swap_and_a_stale_one_removed() {
    let f = fixture("ext4");
    f.run("d1/swap/h1", "v1", None, "").await.unwrap();
    let v1 = f.rt.containers()[0].id.clone();

    // A stage for a swap that never came (its batch failed) is left created.
    let stale = f
        .run("d0/stage/h1", "v2", None, "d0/swap/h1")
        .await
        .unwrap();
    assert!(!stale.staged_container.is_empty());

    // The stage creates the container and starts nothing: v1 still serves.
    let staged = f
        .run("d2/stage/h1", "v2", None, "d2/swap/h1")
        .await
        .unwrap();
    assert_eq!(f.rt.creates.load(Ordering::SeqCst), 3);
    assert_eq!(f.rt.starts.load(Ordering::SeqCst), 1);
    let state = staged.current.unwrap();
    assert_eq!(
        (state.container_id.as_str(), state.version.as_str()),
        (v1.as_str(), "v1")
    );
    assert!(staged.steps.is_some());

    // Its swap starts that container instead of creating one; the stale stage is gone.
    let swapped = f.run("d2/swap/h1", "v2", None, "").await.unwrap();
    assert_eq!(f.rt.creates.load(Ordering::SeqCst), 3);
    let current = swapped.current.unwrap();
    assert_eq!(current.container_name, staged.staged_container);
    assert_eq!(swapped.steps.unwrap().create_ms, 0);
    let names: Vec<String> = f.rt.containers().into_iter().map(|c| c.name).collect();
    assert!(!names.contains(&stale.staged_container), "{names:?}");
    assert_eq!(names.len(), 2, "{names:?}");

    // Resent (agent restarted, result lost): done already, nothing created.
    let again = f.run("d2/swap/h1", "v2", None, "").await.unwrap();
    assert_eq!(
        again.current.unwrap().container_name,
        staged.staged_container
    );
    let restage = f
        .run("d2/stage/h1", "v2", None, "d2/swap/h1")
        .await
        .unwrap();
    assert!(restage.staged_container.is_empty());
    assert_eq!(f.rt.creates.load(Ordering::SeqCst), 3);
}
