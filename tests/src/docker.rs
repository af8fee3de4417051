//! The `docker` CLI as tests use it: to look at what the agent did (inspect, list by
//! label) and to remove what a test created, whatever happened to the test.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `docker <args>` (blocking) and returns stdout, or an error with stderr.
pub fn docker_blocking<S: AsRef<str>>(args: &[S]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run docker {}: {e} (is the docker CLI installed?)",
                args.join(" ")
            )
        })?;
    check(&args, out)
}

/// Runs `docker <args>` on tokio and returns stdout, or an error with stderr.
pub async fn docker<S: AsRef<str>>(args: &[S]) -> Result<String, String> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let out = tokio::process::Command::new("docker")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| {
            format!(
                "cannot run docker {}: {e} (is the docker CLI installed?)",
                args.join(" ")
            )
        })?;
    check(&args, out)
}

fn check(args: &[&str], out: Output) -> Result<String, String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Ids of every container (running or not) with `label=value`, newest first.
pub async fn containers_with_label(label: &str, value: &str) -> Vec<String> {
    let filter = format!("label={label}={value}");
    docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// One container an agent manages, as `docker ps -a` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedContainer {
    /// The container id (short).
    pub id: String,
    /// Docker's state word: `created`, `running`, `exited`, ...
    pub state: String,
    /// Its `drover.version` label.
    pub version: String,
}

/// Every container of agent `agent` (label `drover.agent`), in any state, newest first.
pub async fn managed_by(agent: &str) -> Vec<ManagedContainer> {
    let filter = format!("label={}={agent}", drover_shared::labels::AGENT);
    let format = format!(
        "{{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{}\"}}}}",
        drover_shared::labels::VERSION
    );
    docker(&["ps", "-a", "--filter", &filter, "--format", &format])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some(ManagedContainer {
                id: f.next()?.to_string(),
                state: f.next()?.to_string(),
                version: f.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// `docker inspect` of one container, or `None` when it does not exist.
pub async fn inspect_container(id: &str) -> Option<Value> {
    let out = docker(&["container", "inspect", id]).await.ok()?;
    let mut all: Vec<Value> = serde_json::from_str(&out).ok()?;
    all.pop()
}

/// The `State.Status` of a container (`running`, `exited`, ...), `None` when absent.
pub async fn container_status(id: &str) -> Option<String> {
    let c = inspect_container(id).await?;
    c["State"]["Status"].as_str().map(str::to_string)
}

/// Removes, on drop, every container managed by the given agents (label `drover.agent`),
/// every Docker network and every image reference registered with it. Runs also when
/// the test panicked, so no test leaves anything behind.
#[derive(Debug, Default)]
pub struct DockerCleanup {
    /// Agent names whose containers go.
    agents: Vec<String>,
    /// Networks the test created.
    networks: Vec<String>,
    /// Image references (tags or digests) the test created.
    images: Vec<String>,
}

impl DockerCleanup {
    /// A guard for the containers of agent `name`.
    pub fn for_agent(name: &str) -> Self {
        let mut guard = Self::default();
        guard.agent(name);
        guard
    }

    /// Also remove the containers of agent `name`.
    pub fn agent(&mut self, name: &str) {
        self.agents.push(name.to_string());
    }

    /// Also remove network `name`.
    pub fn network(&mut self, name: &str) {
        self.networks.push(name.to_string());
    }

    /// Also remove image reference `reference` (untagging it when others remain).
    pub fn image(&mut self, reference: &str) {
        self.images.push(reference.to_string());
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for agent in &self.agents {
            let filter = format!("label={}={agent}", drover_shared::labels::AGENT);
            let Ok(ids) = docker_blocking(&["ps", "-aq", "--filter", &filter]) else {
                continue;
            };
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids);
                if let Err(e) = docker_blocking(&args) {
                    eprintln!("cleanup of agent {agent}'s containers: {e}");
                }
            }
        }
        for network in &self.networks {
            let _ = docker_blocking(&["network", "rm", network]);
        }
        if !self.images.is_empty() {
            let mut args = vec!["rmi"];
            args.extend(self.images.iter().map(String::as_str));
            let _ = docker_blocking(&args);
        }
    }
}
