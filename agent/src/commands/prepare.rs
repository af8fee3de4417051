//! Prepare: resolve the image to a digest at its registry (with the given credentials)
//! unless the reference is pinned already, and pull it unless that digest is already on
//! the host. Runs before any host leaves the
//! load balancer, so wrong credentials and missing images fail the deploy early.

use std::time::Duration;

use drover_shared::image::ImageRef;
use drover_shared::proto::{ErrorKind, Phase, PrepareCommand, PrepareResult};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{CommandContext, Job};
use crate::error::CommandFailure;
use crate::runtime::{ContainerRuntime, PullProgress, RegistryCredentials, Secret};

/// Bound of a prepare when the command gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Pull progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs a prepare.
/// The credentials a command carries for `image`'s registry, if any.
pub(super) fn credentials(
    auth: Option<drover_shared::proto::RegistryAuth>,
    image: &ImageRef,
) -> Option<RegistryCredentials> {
    auth.filter(|a| !a.username.is_empty() || !a.password.is_empty())
        .map(|a| RegistryCredentials {
            server: if a.server.is_empty() {
                image.registry_host().to_string()
            } else {
                a.server
            },
            username: a.username,
            password: Secret::new(a.password),
        })
}

pub async fn prepare<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    cmd: PrepareCommand,
) -> Result<PrepareResult, CommandFailure> {
    let image = ImageRef::parse(&cmd.image).map_err(|e| {
        CommandFailure::invalid(format!("{e}: fix the image reference in the service spec"))
    })?;
    let creds = credentials(cmd.auth, &image);
    let limit = if cmd.timeout_ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(cmd.timeout_ms)
    };
    tokio::time::timeout(limit, resolve_and_pull(ctx, job, &image, creds.as_ref()))
        .await
        .map(|r| {
            r.map(|mut p| {
                p.image = cmd.image.clone();
                p
            })
        })
        .unwrap_or_else(|_| {
            Err(CommandFailure::new(
                ErrorKind::Timeout,
                format!(
                    "preparing {image} did not finish within {}: raise the prepare timeout or check the registry",
                    humantime::format_duration(limit)
                ),
            ))
        })
}

async fn resolve_and_pull<R: ContainerRuntime>(
    ctx: &CommandContext<R>,
    job: &Job,
    image: &ImageRef,
    creds: Option<&RegistryCredentials>,
) -> Result<PrepareResult, CommandFailure> {
    let rt = &*ctx.runtime;
    // The controller resolves a tag once per deployment and sends the pinned reference:
    // asking the registry again on every host would only cost a round trip each.
    let digest = match &image.digest {
        Some(digest) => digest.clone(),
        None => {
            job.phase(Phase::Resolving, format!("resolving {image}"));
            rt.resolve_digest(image, creds).await?
        }
    };
    let pinned = image.pinned(&digest);
    let pinned_ref = ImageRef::parse(&pinned).map_err(|e| {
        CommandFailure::internal(format!(
            "the registry answered a digest that does not parse: {e}"
        ))
    })?;
    let present = rt.image(&pinned).await?.is_some();
    if present {
        info!(image = %image, digest = %digest, "image already present");
    } else {
        info!(image = %image, digest = %digest, "pulling");
        job.phase(Phase::Pulling, format!("pulling {pinned}"));
        let mut last = Instant::now();
        let mut latest = PullProgress::default();
        let mut report = |p: PullProgress| {
            latest = p;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                job.bytes(&pinned, p.current, p.total);
            }
        };
        rt.pull(&pinned_ref, creds, &mut report).await?;
        job.bytes(&pinned, latest.total.max(latest.current), latest.total);
        if rt.image(&pinned).await?.is_none() {
            return Err(CommandFailure::internal(format!(
                "Docker reported {pinned} pulled but does not find it: check the engine's log"
            )));
        }
    }
    // Give the digest its tag locally too, so `docker images` and tag references work.
    if let Some(tag) = &image.tag
        && let Err(e) = rt.tag(&pinned, &image.name(), tag).await
    {
        warn!(image = %image, error = %e, "could not tag the pulled image");
    }
    Ok(PrepareResult {
        image: image.to_string(),
        digest,
        pinned,
        pulled: !present,
    })
}
