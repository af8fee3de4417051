//! A FAKE container runtime, for testing the pure layers (executor idempotency and
//! fencing, command bookkeeping) without Docker. It keeps containers in memory and counts
//! calls. It is never used in place of Docker in end-to-end tests: those drive the real
//! binary against a real engine and registry.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use drover_shared::image::ImageRef;
use drover_shared::labels;
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, CreateSpec, ExecRun, ExecSpec, ExecStatus, HealthState,
    LocalImage, LogFrame, LogFrames, LogsQuery, PullProgress, RegistryCredentials, RunState,
    RuntimeError,
};

/// The fake digest every image resolves to.
pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// In-memory engine.
pub struct FakeRuntime {
    containers: Mutex<Vec<ContainerInfo>>,
    images: Mutex<HashSet<String>>,
    /// Pulls wait for a permit here (tests hold them to keep a command running).
    pub pull_gate: Semaphore,
    /// Number of pulls started.
    pub pulls: AtomicUsize,
    /// Number of tags resolved at the registry.
    pub resolves: AtomicUsize,
    /// Number of containers created.
    pub creates: AtomicUsize,
    /// Every create request, in order (to check mounts and secret environment).
    pub created: Mutex<Vec<CreateSpec>>,
    /// When set, starting a container fails as if its process could not run.
    pub fail_starts: AtomicBool,
    /// Versions whose containers report an unhealthy HEALTHCHECK once started (others
    /// report healthy), for a Docker-health readiness probe that never passes.
    pub unready_versions: Mutex<HashSet<String>>,
    /// Number of container starts.
    pub starts: AtomicUsize,
    /// What every container's log holds (`logs` returns these frames, then ends).
    pub log_frames: Mutex<Vec<LogFrame>>,
    /// How the next execs behave (a `kill` exec always ends the container's hung ones).
    pub exec_behaviour: Mutex<FakeExec>,
    /// Every exec request, in order: (container id, spec).
    pub execs: Mutex<Vec<(String, ExecSpec)>>,
    exec_states: Mutex<HashMap<String, (String, ExecStatus)>>,
    clock: AtomicUsize,
}

/// How a fake exec behaves.
#[derive(Debug, Clone)]
pub enum FakeExec {
    /// Writes these frames and exits with this code.
    Exit(i64, Vec<LogFrame>),
    /// Writes these frames and never exits (until a `kill` exec in its container).
    Hang(Vec<LogFrame>),
    /// Like `Hang`, and no process id can be found for it (so it cannot be killed).
    HangUnkillable(Vec<LogFrame>),
}

impl FakeRuntime {
    /// An engine with no containers; pulls proceed at once.
    pub fn new() -> Self {
        Self {
            containers: Mutex::default(),
            images: Mutex::default(),
            pull_gate: Semaphore::new(Semaphore::MAX_PERMITS),
            pulls: AtomicUsize::new(0),
            resolves: AtomicUsize::new(0),
            creates: AtomicUsize::new(0),
            created: Mutex::default(),
            fail_starts: AtomicBool::new(false),
            unready_versions: Mutex::default(),
            starts: AtomicUsize::new(0),
            log_frames: Mutex::default(),
            exec_behaviour: Mutex::new(FakeExec::Exit(0, vec![])),
            execs: Mutex::default(),
            exec_states: Mutex::default(),
            clock: AtomicUsize::new(0),
        }
    }

    /// Makes `reference` present locally.
    pub fn add_image(&self, reference: &str) {
        self.images.lock().unwrap().insert(reference.to_string());
    }

    /// Adds a container as if created earlier.
    pub fn add_container(&self, c: ContainerInfo) {
        self.containers.lock().unwrap().push(c);
    }

    /// Every container.
    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.containers.lock().unwrap().clone()
    }

    /// Makes containers of `version` never pass a Docker-health probe once started.
    pub fn never_ready(&self, version: &str) {
        self.unready_versions
            .lock()
            .unwrap()
            .insert(version.to_string());
    }

    fn tick(&self) -> SystemTime {
        let n = self.clock.fetch_add(1, Ordering::SeqCst) as u64;
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + n)
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut ContainerInfo)) -> Result<(), RuntimeError> {
        let mut all = self.containers.lock().unwrap();
        let c = all
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("container {id}"),
            })?;
        f(c);
        Ok(())
    }
}

impl ContainerRuntime for FakeRuntime {
    fn endpoint(&self) -> &str {
        "fake://"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn resolve_digest(
        &self,
        _: &ImageRef,
        _: Option<&RegistryCredentials>,
    ) -> Result<String, RuntimeError> {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        Ok(DIGEST.to_string())
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        let _permit = self
            .pull_gate
            .acquire()
            .await
            .map_err(|_| RuntimeError::Timeout {
                op: "pull",
                after: Duration::ZERO,
            })?;
        progress(PullProgress {
            current: 10,
            total: 10,
        });
        self.add_image(&image.to_string());
        Ok(())
    }

    async fn tag(&self, _: &str, repo: &str, tag: &str) -> Result<(), RuntimeError> {
        self.add_image(&format!("{repo}:{tag}"));
        Ok(())
    }

    async fn image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError> {
        Ok(self
            .images
            .lock()
            .unwrap()
            .contains(reference)
            .then(|| LocalImage {
                id: "sha256:image".into(),
                repo_digests: vec![],
            }))
    }

    async fn list_managed(&self, agent: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        Ok(self
            .containers()
            .into_iter()
            .filter(|c| c.labels.get(labels::AGENT).map(String::as_str) == Some(agent))
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self.containers().into_iter().find(|c| c.id == id))
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let n = self.creates.fetch_add(1, Ordering::SeqCst);
        self.created.lock().unwrap().push(spec.clone());
        let id = format!("c{n}");
        let created = self.tick();
        self.add_container(ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            labels: spec.labels.clone(),
            state: RunState::Created,
            exit_code: 0,
            health: HealthState::None,
            health_output: None,
            restart_count: 0,
            created: Some(created),
            started_at: None,
            finished_at: None,
            ports: spec.ports.clone(),
            addresses: vec![],
            pid: None,
        });
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        if self.fail_starts.load(Ordering::SeqCst) {
            return Err(RuntimeError::Engine {
                op: format!("start container {id}"),
                message: "exec: \"app\": executable file not found".into(),
            });
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        let t = self.tick();
        let unready = self.unready_versions.lock().unwrap().clone();
        self.update(id, |c| {
            c.state = RunState::Running;
            c.started_at = Some(t);
            c.health = if unready.contains(c.version()) {
                HealthState::Unhealthy
            } else {
                HealthState::Healthy
            };
        })
    }

    async fn stop(&self, id: &str, _: Duration) -> Result<(), RuntimeError> {
        let t = self.tick();
        self.update(id, |c| {
            if c.state == RunState::Running {
                c.state = RunState::Exited;
                c.finished_at = Some(t);
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().retain(|c| c.id != id);
        Ok(())
    }

    async fn logs_tail(&self, _: &str, _: usize) -> Result<Vec<String>, RuntimeError> {
        Ok(vec!["fake log line".into()])
    }

    async fn logs(&self, _: &str, _: LogsQuery) -> Result<LogFrames, RuntimeError> {
        let frames: Vec<_> = self
            .log_frames
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .map(Ok)
            .collect();
        Ok(Box::pin(futures::stream::iter(frames)))
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecRun, RuntimeError> {
        let running = self
            .inspect(container)
            .await?
            .is_some_and(|c| c.state == RunState::Running);
        if !running {
            return Err(RuntimeError::Engine {
                op: format!("exec in container {container}"),
                message: format!("container {container} is not running"),
            });
        }
        let mut execs = self.execs.lock().unwrap();
        execs.push((container.to_string(), spec.clone()));
        let id = format!("exec{}", execs.len());
        let mut states = self.exec_states.lock().unwrap();
        let (frames, status, hangs) = if spec.argv.first().map(String::as_str) == Some("kill") {
            for (c, st) in states.values_mut() {
                if c == container && st.running {
                    *st = ExecStatus {
                        running: false,
                        exit_code: Some(137),
                        container_pid: None,
                    };
                }
            }
            (vec![], exited(0), false)
        } else {
            match self.exec_behaviour.lock().unwrap().clone() {
                FakeExec::Exit(code, frames) => (frames, exited(code), false),
                FakeExec::Hang(frames) => (frames, hung(Some(7)), true),
                FakeExec::HangUnkillable(frames) => (frames, hung(None), true),
            }
        };
        states.insert(id.clone(), (container.to_string(), status));
        let frames = futures::stream::iter(frames.into_iter().map(Ok));
        let output: LogFrames = if hangs {
            Box::pin(frames.chain(futures::stream::pending()))
        } else {
            Box::pin(frames)
        };
        Ok(ExecRun { id, output })
    }

    async fn exec_status(&self, exec_id: &str) -> Result<ExecStatus, RuntimeError> {
        self.exec_states
            .lock()
            .unwrap()
            .get(exec_id)
            .map(|(_, s)| *s)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("exec {exec_id}"),
            })
    }
}

fn exited(code: i64) -> ExecStatus {
    ExecStatus {
        running: false,
        exit_code: Some(code),
        container_pid: None,
    }
}

fn hung(pid: Option<u32>) -> ExecStatus {
    ExecStatus {
        running: true,
        exit_code: None,
        container_pid: pid,
    }
}

/// Labels for a container adopted from an earlier agent run.
pub fn adopted_labels(
    agent: &str,
    service: &str,
    deployment: &str,
    epoch: u64,
    command: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (labels::AGENT.to_string(), agent.to_string()),
        (labels::SERVICE.to_string(), service.to_string()),
        (labels::VERSION.to_string(), "v1".to_string()),
        (labels::DEPLOYMENT.to_string(), deployment.to_string()),
        (labels::EPOCH.to_string(), epoch.to_string()),
        (labels::COMMAND.to_string(), command.to_string()),
    ])
}

/// A context for agent `h1` over `rt`, its secrets root (`dir/secrets`) on a file system
/// of `fs_type` as a sample mount table (written in `dir`) says.
pub fn context(
    rt: &std::sync::Arc<FakeRuntime>,
    dir: &std::path::Path,
    fs_type: &str,
) -> crate::commands::CommandContext<FakeRuntime> {
    let table = dir.join("mountinfo");
    std::fs::write(
        &table,
        format!(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n30 27 0:25 / {} rw - {fs_type} x rw\n",
            dir.canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    crate::commands::CommandContext {
        runtime: rt.clone(),
        agent: "h1".into(),
        keep_previous: 1,
        secrets: crate::secrets::SecretsDir::with_mountinfo(dir.join("secrets"), &table),
        ready: crate::commands::record::ReadyRecords::new(&dir.join("state")),
    }
}
