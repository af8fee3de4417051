//! A SIMULATED container engine, for scale benchmarks only: the real agent (connection,
//! executor, fencing, commands) runs against it many times in one process, so that one
//! machine can stand in for thousands of hosts. Containers live in memory; pulls, stops,
//! starts and readiness take the configured latencies; failures are injected by version.
//!
//! It is compiled only with the crate's `sim` feature, which the shipped `drover-agent`
//! binary does not enable, and no flag or configuration key of the agent selects it: a
//! benchmark builds [`SimRuntime`]s itself and hands them to
//! [`crate::run_with_runtime`]. End-to-end tests always use the real Docker engine.
//!
//! Readiness: a started container reports a Docker HEALTHCHECK state, `starting` until
//! [`SimProfile::ready`] has passed, then `healthy` (or `unhealthy` for a version in
//! [`SimProfile::never_ready`]); specs of simulated services use `readiness.kind =
//! "docker"`.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use drover_shared::image::ImageRef;
use drover_shared::labels;
use tokio::time::Instant;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, CreateSpec, ExecRun, ExecSpec, ExecStatus, HealthState,
    LocalImage, LogFrame, LogFrames, LogOutput, LogsQuery, PullProgress, RegistryCredentials,
    RunState, RuntimeError,
};

/// How every simulated engine of a benchmark behaves. Shared by all of them.
#[derive(Debug, Clone, Default)]
pub struct SimProfile {
    /// How long a pull takes.
    pub pull: Duration,
    /// How long stopping a running container takes.
    pub stop: Duration,
    /// How long starting a container takes.
    pub start: Duration,
    /// From a container's start until its health check passes.
    pub ready: Duration,
    /// Versions (image tags) the registry does not have: their pulls and digest
    /// lookups fail with "image not found".
    pub missing_versions: HashSet<String>,
    /// Versions whose containers fail to start.
    pub failing_versions: HashSet<String>,
    /// Versions whose containers run but never pass their health check.
    pub never_ready: HashSet<String>,
}

/// Calls every simulated engine of a process received, by kind (for a benchmark's
/// report).
#[derive(Debug, Default)]
pub struct SimCounters {
    /// Pulls.
    pub pulls: AtomicU64,
    /// Containers created.
    pub creates: AtomicU64,
    /// Containers started.
    pub starts: AtomicU64,
    /// Containers stopped.
    pub stops: AtomicU64,
}

/// One simulated host's engine.
pub struct SimRuntime {
    profile: Arc<SimProfile>,
    counters: Arc<SimCounters>,
    state: Mutex<Engine>,
}

#[derive(Default)]
struct Engine {
    containers: Vec<Sim>,
    images: HashSet<String>,
    next_id: u64,
}

/// A container and when it started (for its health).
struct Sim {
    info: ContainerInfo,
    started: Option<Instant>,
}

impl SimRuntime {
    /// An engine with no containers and no images.
    pub fn new(profile: Arc<SimProfile>, counters: Arc<SimCounters>) -> Self {
        Self {
            profile,
            counters,
            state: Mutex::default(),
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container as an engine would report it now (health from the clock).
    fn view(&self, c: &Sim) -> ContainerInfo {
        let mut info = c.info.clone();
        if info.state == RunState::Running {
            info.health = if self.profile.never_ready.contains(info.version()) {
                HealthState::Unhealthy
            } else if c.started.is_some_and(|t| t.elapsed() >= self.profile.ready) {
                HealthState::Healthy
            } else {
                HealthState::Starting
            };
        }
        info
    }

    fn missing(&self, image: &ImageRef) -> Option<RuntimeError> {
        let tag = image.tag.as_deref().unwrap_or("latest");
        self.profile
            .missing_versions
            .contains(tag)
            .then(|| RuntimeError::ImageNotFound {
                image: image.to_string(),
                detail: "manifest unknown (simulated)".into(),
            })
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Sim)) -> Result<(), RuntimeError> {
        let mut engine = self.engine();
        let c = engine
            .containers
            .iter_mut()
            .find(|c| c.info.id == id || c.info.name == id)
            .ok_or_else(|| RuntimeError::NotFound {
                what: format!("container {id}"),
            })?;
        f(c);
        Ok(())
    }
}

/// The digest a simulated registry gives `image`: stable, different per name and tag.
fn digest_of(image: &ImageRef) -> String {
    let mut h = DefaultHasher::new();
    image.name().hash(&mut h);
    image.tag.hash(&mut h);
    let x = h.finish();
    format!("sha256:{x:016x}{x:016x}{x:016x}{x:016x}")
}

impl ContainerRuntime for SimRuntime {
    fn endpoint(&self) -> &str {
        "sim://"
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn resolve_digest(
        &self,
        image: &ImageRef,
        _: Option<&RegistryCredentials>,
    ) -> Result<String, RuntimeError> {
        match self.missing(image) {
            Some(e) => Err(e),
            None => Ok(digest_of(image)),
        }
    }

    async fn pull(
        &self,
        image: &ImageRef,
        _: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError> {
        self.counters.pulls.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.missing(image) {
            return Err(e);
        }
        tokio::time::sleep(self.profile.pull).await;
        progress(PullProgress {
            current: 1,
            total: 1,
        });
        self.engine().images.insert(image.to_string());
        Ok(())
    }

    async fn tag(&self, _: &str, repo: &str, tag: &str) -> Result<(), RuntimeError> {
        self.engine().images.insert(format!("{repo}:{tag}"));
        Ok(())
    }

    async fn image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError> {
        let present = self.engine().images.contains(reference);
        Ok(present.then(|| {
            let mut h = DefaultHasher::new();
            reference.hash(&mut h);
            LocalImage {
                id: format!("sha256:{:064x}", h.finish()),
                repo_digests: reference
                    .contains('@')
                    .then(|| reference.to_string())
                    .into_iter()
                    .collect(),
            }
        }))
    }

    async fn list_managed(&self, agent: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let engine = self.engine();
        Ok(engine
            .containers
            .iter()
            .filter(|c| c.info.labels.get(labels::AGENT).map(String::as_str) == Some(agent))
            .map(|c| self.view(c))
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let engine = self.engine();
        Ok(engine
            .containers
            .iter()
            .find(|c| c.info.id == id || c.info.name == id)
            .map(|c| self.view(c)))
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        self.counters.creates.fetch_add(1, Ordering::Relaxed);
        let mut engine = self.engine();
        if engine.containers.iter().any(|c| c.info.name == spec.name) {
            return Err(RuntimeError::Engine {
                op: format!("create container {}", spec.name),
                message: format!("the container name \"/{}\" is already in use", spec.name),
            });
        }
        engine.next_id += 1;
        let id = format!("sim{:012x}", engine.next_id);
        engine.containers.push(Sim {
            info: ContainerInfo {
                id: id.clone(),
                name: spec.name.clone(),
                image: spec.image.clone(),
                labels: spec.labels.clone(),
                state: RunState::Created,
                exit_code: 0,
                health: HealthState::None,
                health_output: None,
                restart_count: 0,
                created: Some(SystemTime::now()),
                started_at: None,
                finished_at: None,
                ports: spec.ports.clone(),
                addresses: vec![],
                pid: None,
            },
            started: None,
        });
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        tokio::time::sleep(self.profile.start).await;
        let failing = self.profile.failing_versions.clone();
        let mut refused = None;
        self.update(id, |c| {
            if failing.contains(c.info.version()) {
                refused = Some(c.info.version().to_string());
                c.info.state = RunState::Exited;
                c.info.exit_code = 127;
                return;
            }
            c.info.state = RunState::Running;
            c.info.started_at = Some(SystemTime::now());
            c.started = Some(Instant::now());
        })?;
        if let Some(version) = refused {
            return Err(RuntimeError::Engine {
                op: format!("start container {id}"),
                message: format!("version {version} cannot start (simulated failure)"),
            });
        }
        self.counters.starts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn stop(&self, id: &str, _: Duration) -> Result<(), RuntimeError> {
        let running = self
            .inspect(id)
            .await?
            .is_some_and(|c| c.state == RunState::Running);
        if running {
            tokio::time::sleep(self.profile.stop).await;
            self.counters.stops.fetch_add(1, Ordering::Relaxed);
        }
        self.update(id, |c| {
            if c.info.state == RunState::Running {
                c.info.state = RunState::Exited;
                c.info.finished_at = Some(SystemTime::now());
                c.started = None;
            }
        })
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.engine()
            .containers
            .retain(|c| c.info.id != id && c.info.name != id);
        Ok(())
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        Ok(vec![format!("simulated container {id}")]
            .into_iter()
            .take(lines)
            .collect())
    }

    async fn logs(&self, id: &str, _: LogsQuery) -> Result<LogFrames, RuntimeError> {
        let frame = LogFrame {
            output: LogOutput::Stdout,
            bytes: format!("simulated container {id}\n").into_bytes(),
        };
        Ok(Box::pin(futures::stream::iter([Ok(frame)])))
    }

    async fn exec(&self, container: &str, _: &ExecSpec) -> Result<ExecRun, RuntimeError> {
        Err(RuntimeError::Engine {
            op: format!("exec in container {container}"),
            message: "the simulated engine runs no processes".into(),
        })
    }

    async fn exec_status(&self, exec_id: &str) -> Result<ExecStatus, RuntimeError> {
        Err(RuntimeError::NotFound {
            what: format!("exec {exec_id}"),
        })
    }
}

/// Engines for `n` simulated hosts sharing one profile and one set of counters.
pub fn engines(n: usize, profile: SimProfile) -> (Vec<Arc<SimRuntime>>, Arc<SimCounters>) {
    let profile = Arc::new(profile);
    let counters = Arc::new(SimCounters::default());
    let engines = (0..n)
        .map(|_| Arc::new(SimRuntime::new(profile.clone(), counters.clone())))
        .collect();
    (engines, counters)
}

/// Which versions a set of simulated engines runs, counted (for a benchmark's check that
/// every host ended on the version it expects).
pub fn versions_running<'a>(
    engines: impl IntoIterator<Item = &'a Arc<SimRuntime>>,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for e in engines {
        for c in e.engine().containers.iter() {
            if c.info.state == RunState::Running {
                *out.entry(c.info.version().to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
