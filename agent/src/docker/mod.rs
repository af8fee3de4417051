//! [`ContainerRuntime`] on a real Docker engine, through bollard.
//!
//! The client is created lazily and its API version negotiated on first use (the engine
//! may be older than bollard's default), so an agent whose Docker is down still starts,
//! connects to the controller and reports `docker_error`. Engine and registry errors are
//! classified in one place ([`classify`]); conversions between bollard's models and the
//! agent's live in [`convert`].

mod classify;
mod convert;
mod exec;

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use drover_shared::image::ImageRef;
use drover_shared::labels;
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, CreateSpec, ExecRun, ExecSpec, ExecStatus, LocalImage,
    LogFrame, LogFrames, LogOutput, LogsQuery, PullProgress, RegistryCredentials, RuntimeError,
};
use classify::{ImageContext, classify};
use convert::{container_info, create_body};

/// A Docker engine reached at one URL.
pub struct DockerRuntime {
    /// The engine URL (unix://, tcp:// or http://), for connecting and for messages.
    endpoint: String,
    /// The client, created and version-negotiated on first successful use.
    client: OnceCell<Docker>,
}

impl DockerRuntime {
    /// A runtime for the engine at `endpoint`. Does not connect yet.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| async {
                let docker =
                    Docker::connect_with_host(&self.endpoint).map_err(|e| self.unavailable(&e))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| self.unavailable(&e))
            })
            .await
    }

    fn unavailable(&self, e: &BollardError) -> RuntimeError {
        RuntimeError::Unavailable {
            endpoint: self.endpoint.clone(),
            detail: e.to_string(),
        }
    }

    /// Classifies an error of a container operation.
    fn engine_error(&self, op: String, e: BollardError) -> RuntimeError {
        classify(&self.endpoint, &op, None, e)
    }
}

fn credentials(creds: Option<&RegistryCredentials>) -> Option<DockerCredentials> {
    creds.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.password.expose().to_string()),
        serveraddress: Some(c.server.clone()),
        ..Default::default()
    })
}

impl ContainerRuntime for DockerRuntime {
    fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        docker
            .ping()
            .await
            .map(drop)
            .map_err(|e| self.unavailable(&e))
    }

    async fn resolve_digest(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
    ) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let user = creds.map_or("", |c| c.username.as_str());
        let inspect = docker
            .inspect_registry_image(&image.to_string(), credentials(creds))
            .await
            .map_err(|e| {
                classify(
                    &self.endpoint,
                    "resolve",
                    Some(ImageContext { image, user }),
                    e,
                )
            })?;
        inspect
            .descriptor
            .digest
            .ok_or_else(|| RuntimeError::Engine {
                op: format!("resolve {image}"),
                message: "the registry answered without a digest".into(),
            })
    }

    async fn pull(
        &self,
        image: &ImageRef,
        creds: Option<&RegistryCredentials>,
        progress: &mut (dyn FnMut(PullProgress) + Send),
    ) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let user = creds.map_or("", |c| c.username.as_str());
        let mut options = CreateImageOptionsBuilder::default().from_image(&image.name());
        if let Some(d) = &image.digest {
            options = options.tag(d);
        } else if let Some(t) = image.tag_or_latest() {
            options = options.tag(t);
        }
        let mut stream = docker.create_image(Some(options.build()), None, credentials(creds));
        // Per-layer (current, total), summed for each report.
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                classify(
                    &self.endpoint,
                    "pull",
                    Some(ImageContext { image, user }),
                    e,
                )
            })?;
            if let (Some(id), Some(detail)) = (info.id, info.progress_detail) {
                let entry = layers.entry(id).or_default();
                if let Some(c) = detail.current {
                    entry.0 = u64::try_from(c).unwrap_or(0);
                }
                if let Some(t) = detail.total {
                    entry.1 = u64::try_from(t).unwrap_or(0);
                }
                let (current, total) = layers
                    .values()
                    .fold((0, 0), |(c, t), (lc, lt)| (c + lc, t + lt));
                progress(PullProgress { current, total });
            }
        }
        Ok(())
    }

    async fn tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| self.engine_error(format!("tag {source} as {repo}:{tag}"), e))
    }

    async fn image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError> {
        let docker = self.client().await?;
        match docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(LocalImage {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.engine_error(format!("inspect image {reference}"), e)),
        }
    }

    async fn list_managed(&self, agent: &str) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={agent}", labels::AGENT)],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.engine_error("list containers".into(), e))?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            // A container removed between list and inspect is simply gone.
            if let Some(info) = self.inspect(&id).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let docker = self.client().await?;
        match docker.inspect_container(id, None).await {
            Ok(c) => Ok(Some(container_info(c))),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.engine_error(format!("inspect container {id}"), e)),
        }
    }

    async fn create(&self, spec: &CreateSpec) -> Result<String, RuntimeError> {
        let docker = self.client().await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        docker
            .create_container(Some(options), create_body(spec))
            .await
            .map(|r| r.id)
            .map_err(|e| self.engine_error(format!("create container {}", spec.name), e))
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        docker
            .start_container(id, None)
            .await
            .map_err(|e| self.engine_error(format!("start container {id}"), e))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let secs = grace.as_millis().div_ceil(1000).min(i32::MAX as u128) as i32;
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        // The request lasts as long as the grace period: give it room beyond that.
        let docker = docker.clone().with_timeout(grace + Duration::from_secs(60));
        match docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.engine_error(format!("stop container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let docker = self.client().await?;
        let options = RemoveContainerOptionsBuilder::default()
            .v(true)
            .force(true)
            .build();
        match docker.remove_container(id, Some(options)).await {
            Ok(())
            | Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(self.engine_error(format!("remove container {id}"), e)),
        }
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<String>, RuntimeError> {
        let docker = self.client().await?;
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = docker.logs(id, Some(options));
        let mut text = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.engine_error(format!("read logs of {id}"), e))?;
            text.push_str(&chunk.to_string());
        }
        let all: Vec<String> = text.lines().map(str::to_string).collect();
        Ok(all[all.len().saturating_sub(lines)..].to_vec())
    }

    async fn logs(&self, id: &str, query: LogsQuery) -> Result<LogFrames, RuntimeError> {
        let docker = self.client().await?;
        let tail = query
            .tail
            .map_or_else(|| "all".to_string(), |n| n.to_string());
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(query.follow)
            .tail(&tail);
        if let Some(since) = query.since_unix_s {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let op = format!("read logs of {id}");
        let endpoint = self.endpoint().to_string();
        let frames = docker
            .logs(id, Some(options.build()))
            .map(move |chunk| log_frame(&endpoint, &op, chunk));
        Ok(Box::pin(frames))
    }

    async fn exec(&self, container: &str, spec: &ExecSpec) -> Result<ExecRun, RuntimeError> {
        exec::start(self, container, spec).await
    }

    async fn exec_status(&self, exec_id: &str) -> Result<ExecStatus, RuntimeError> {
        exec::status(self, exec_id).await
    }
}

/// One chunk of a container's (or an exec's) output in the agent's terms.
fn log_frame(
    endpoint: &str,
    op: &str,
    chunk: Result<bollard::container::LogOutput, BollardError>,
) -> Result<LogFrame, RuntimeError> {
    use bollard::container::LogOutput as Out;
    match chunk {
        Ok(Out::StdErr { message }) => Ok(LogFrame {
            output: LogOutput::Stderr,
            bytes: message.to_vec(),
        }),
        Ok(Out::StdOut { message } | Out::Console { message } | Out::StdIn { message }) => {
            Ok(LogFrame {
                output: LogOutput::Stdout,
                bytes: message.to_vec(),
            })
        }
        Err(e) => Err(classify(endpoint, op, None, e)),
    }
}
