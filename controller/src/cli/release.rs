//! `drover release create` and `drover releases SERVICE`: immutable releases (a tag
//! resolved to its digest once, with its commit), where each runs now and where it was
//! deployed, with outcomes.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use drover_proto::v1::{
    CreateReleaseRequest, EnvironmentState, ListReleasesRequest, ListReleasesResponse,
    RegistryAuth, ReleaseInfo,
};

use super::deploy::{parse_time, whoami};
use super::progress::state_name;
use super::{ClientArgs, Refused, rpc_error};
use crate::spec::SpecFile;

/// `drover release ...`
#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Record a release of a version: its tag resolved to a digest now, once, so every
    /// environment it is deployed to runs exactly that image. Prints the release id.
    /// Making the same release again (same tag, same digest) prints the first one's id.
    #[command(after_help = "Examples:
  drover release create -f drover.toml --version v2 --commit \"$GIT_SHA\"
  drover deploy -f drover.toml --env staging --release \"$(drover release create -f drover.toml --version v2)\"")]
    Create(CreateArgs),
}

/// Flags of `drover release create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service spec (TOML): the service and its image repository.
    #[arg(long, short = 'f', default_value = "drover.toml")]
    pub file: PathBuf,
    /// The tag to resolve.
    #[arg(long, short = 'v')]
    pub version: String,
    /// The commit the image was built from.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// When that commit was made, RFC 3339 (the start of DORA's lead time).
    #[arg(long, value_name = "TIME")]
    pub commit_time: Option<String>,
    /// The release as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `drover releases`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover releases web            # newest first: where each runs, where it was deployed
  drover releases web --json     # one object: releases and what each environment runs")]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service.
    pub service: String,
    /// How many releases, newest first.
    #[arg(long, short = 'n', default_value_t = 20)]
    pub limit: u32,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `drover release create`.
pub async fn run(cmd: ReleaseCommand) -> anyhow::Result<i32> {
    let ReleaseCommand::Create(args) = cmd;
    let text = std::fs::read_to_string(&args.file).map_err(|e| {
        Refused(format!(
            "cannot read the service spec {}: {e}; pass the spec with -f FILE",
            args.file.display()
        ))
    })?;
    let file = SpecFile::parse(&text)
        .map_err(|e| Refused(format!("invalid spec {}: {e}", args.file.display())))?;
    let commit_ms = match args.commit_time.as_deref().map(parse_time).transpose() {
        Ok(ms) => ms.unwrap_or(0),
        Err(e) => return Err(Refused(format!("--commit-time: {e}")).into()),
    };
    let registry_auth = match &file.base().registry {
        None => None,
        Some(r) => Some(RegistryAuth {
            username: r.username.clone(),
            password: std::env::var(&r.password_env).with_context(|| {
                format!(
                    "the spec's registry.password_env names {:?}, which is not set in this environment",
                    r.password_env
                )
            })?,
            server: String::new(),
        }),
    };
    let mut client = args.client.client().await?;
    let release = client
        .create_release(CreateReleaseRequest {
            spec_toml: text,
            version: args.version.clone(),
            commit_sha: args.commit.clone().unwrap_or_default(),
            commit_ms,
            requested_by: whoami(),
            registry_auth,
        })
        .await
        .map_err(|s| rpc_error(&format!("creating a release of {}", args.version), &s))?
        .into_inner();
    if args.json {
        println!("{}", release_json(&release));
    } else {
        println!("{}", release.id);
        let digest = if release.digest.is_empty() {
            "digest resolved at the first pull".to_string()
        } else {
            release.digest.clone()
        };
        let made = if release.created {
            "recorded"
        } else {
            "already recorded"
        };
        eprintln!(
            "release {} of {} {}: {made} ({digest})",
            release.id, release.service, release.tag
        );
    }
    Ok(0)
}

/// Runs `drover releases SERVICE`.
pub async fn list(args: ReleasesArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    let r = client
        .list_releases(ListReleasesRequest {
            service: args.service.clone(),
            limit: args.limit,
        })
        .await
        .map_err(|s| rpc_error(&format!("listing the releases of {}", args.service), &s))?
        .into_inner();
    if args.json {
        println!("{}", releases_json(&r));
        return Ok(0);
    }
    if r.releases.is_empty() {
        eprintln!(
            "{} has no releases yet; `drover deploy --version TAG` or `drover release create` makes one",
            args.service
        );
        return Ok(0);
    }
    print!("{}", table(&r));
    Ok(0)
}

fn when(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

use crate::store::environment_name as env_name;

fn short_digest(d: &str) -> &str {
    if d.is_empty() {
        "-"
    } else {
        drover_shared::image::short_digest(d)
    }
}

/// What each environment runs, then one block per release.
fn table(r: &ListReleasesResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if !r.environments.is_empty() {
        let _ = writeln!(
            out,
            "{:<14} {:<16} {:<10} {:<22} MOVING",
            "ENVIRONMENT", "RUNS", "VERSION", "SINCE"
        );
        for e in &r.environments {
            let moving = if e.active_deployment_id.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{} ({})",
                    e.active_deployment_id,
                    state_name(e.active_state)
                )
            };
            let _ = writeln!(
                out,
                "{:<14} {:<16} {:<10} {:<22} {moving}",
                env_name(&e.environment),
                if e.release_id.is_empty() {
                    "-"
                } else {
                    &e.release_id
                },
                if e.version.is_empty() {
                    "-"
                } else {
                    &e.version
                },
                when(e.since_ms),
            );
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "{:<16} {:<10} {:<20} {:<10} {:<22} {:<16} RUNS IN",
        "RELEASE", "VERSION", "DIGEST", "COMMIT", "CREATED", "BY"
    );
    for rel in &r.releases {
        let runs = if rel.runs_in.is_empty() {
            "-".to_string()
        } else {
            rel.runs_in
                .iter()
                .map(|e| env_name(e))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let commit: String = rel.commit_sha.chars().take(10).collect();
        let _ = writeln!(
            out,
            "{:<16} {:<10} {:<20} {:<10} {:<22} {:<16} {runs}",
            rel.id,
            rel.tag,
            short_digest(&rel.digest),
            if commit.is_empty() { "-" } else { &commit },
            when(rel.created_ms),
            rel.created_by,
        );
        for d in &rel.deployments {
            let _ = writeln!(
                out,
                "    {:<14} {:<16} {:<9} {:<12} {}",
                env_name(&d.environment),
                d.id,
                d.kind,
                state_name(d.state),
                when(d.created_ms)
            );
        }
    }
    out
}

fn release_json(r: &ReleaseInfo) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "service": r.service, "tag": r.tag, "image": r.image,
        "digest": (!r.digest.is_empty()).then_some(&r.digest),
        "commit_sha": (!r.commit_sha.is_empty()).then_some(&r.commit_sha),
        "commit_ms": (r.commit_ms > 0).then_some(r.commit_ms),
        "created_by": r.created_by, "created_ms": r.created_ms, "created": r.created,
        "runs_in": r.runs_in,
        "deployments": r.deployments.iter().map(|d| serde_json::json!({
            "id": d.id, "environment": d.environment, "kind": d.kind,
            "state": state_name(d.state), "created_ms": d.created_ms,
        })).collect::<Vec<_>>(),
    })
}

fn environment_json(e: &EnvironmentState) -> serde_json::Value {
    serde_json::json!({
        "environment": e.environment,
        "release_id": (!e.release_id.is_empty()).then_some(&e.release_id),
        "version": (!e.version.is_empty()).then_some(&e.version),
        "pinned": (!e.pinned.is_empty()).then_some(&e.pinned),
        "deployment_id": (!e.deployment_id.is_empty()).then_some(&e.deployment_id),
        "since_ms": (e.since_ms > 0).then_some(e.since_ms),
        "active_deployment_id": (!e.active_deployment_id.is_empty()).then_some(&e.active_deployment_id),
        "active_state": (!e.active_deployment_id.is_empty()).then(|| state_name(e.active_state)),
    })
}

fn releases_json(r: &ListReleasesResponse) -> serde_json::Value {
    serde_json::json!({
        "releases": r.releases.iter().map(release_json).collect::<Vec<_>>(),
        "environments": r.environments.iter().map(environment_json).collect::<Vec<_>>(),
    })
}

/// `drover status --env E`: what the environment runs, per service.
pub(super) fn environment_rows(
    service: &str,
    environment: &str,
    r: &ListReleasesResponse,
) -> Option<serde_json::Value> {
    r.environments
        .iter()
        .find(|e| e.environment == environment)
        .map(|e| {
            let mut v = environment_json(e);
            v["service"] = serde_json::Value::from(service);
            v
        })
}
