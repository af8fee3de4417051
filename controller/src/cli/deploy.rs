//! `drover deploy -f drover.toml --version TAG [--env E]`, or `--release ID`, or
//! `--from ENV`: validate, start, follow to the end.

use std::path::PathBuf;

use anyhow::Context;
use drover_proto::v1::{DeployRequest, DeploymentState, PlanRequest, RegistryAuth, plan_request};

use super::ClientArgs;
use super::progress::{self, Mode};
use crate::spec::SpecFile;

/// Flags of `drover deploy`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  drover deploy -f drover.toml --version v2            # live progress, exit 0 when every host runs v2
  drover deploy -f drover.toml --version v2 --json     # one JSON event per line, for CI
  drover deploy -f drover.toml --version v2 --detach   # print the id; follow with `drover status ID`
  drover deploy -f drover.toml --version v2 --at \"2026-12-01T02:00 Europe/Berlin\"
  drover deploy -f drover.toml --version v2 --env staging     # makes release r-... of v2
  drover deploy -f drover.toml --env production --from staging  # what staging runs, exactly
  drover deploy -f drover.toml --env production --release r-3f2a9c0d1e2b  # any release, e.g. a known-good one

Exit codes: 0 every host runs the new version; 1 the deployment failed or was rolled back;
2 refused before anything changed (bad spec, no spec file, no matching host, locked, not
allowed); 3 the controller was lost and the outcome is unknown here; 130 Ctrl-C (the
deployment goes on: `drover status ID`, `drover abort ID`).")]
pub struct DeployArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The service spec (TOML).
    #[arg(long, short = 'f', default_value = "drover.toml")]
    pub file: PathBuf,
    /// Version (tag) to deploy: the image is the spec's repository with this tag. Its
    /// release (the tag resolved to a digest, once) is made, or found, with the deploy.
    #[arg(long, short = 'v', required_unless_present_any = ["image", "release", "from"])]
    pub version: Option<String>,
    /// A full image reference instead (e.g. `registry:5000/app@sha256:...`).
    #[arg(long, conflicts_with_all = ["version", "release", "from"])]
    pub image: Option<String>,
    /// The environment to deploy to (`[env.NAME]` of the spec); required when the spec
    /// defines environments.
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// Deploy this release (`r-...`, see `drover releases SERVICE`): exactly its digest.
    #[arg(long, value_name = "ID", conflicts_with_all = ["version", "from"])]
    pub release: Option<String>,
    /// Deploy the release that last succeeded in this environment (promotion).
    #[arg(long, value_name = "ENV", conflicts_with = "version")]
    pub from: Option<String>,
    /// Open the environment's gates anyway (admin only; needs --reason, kept in history).
    #[arg(long = "override", requires = "reason")]
    pub override_gates: bool,
    /// Why the gates are opened.
    #[arg(long, value_name = "TEXT", requires = "override_gates")]
    pub reason: Option<String>,
    /// The commit the version is built from, kept with its release (default: the
    /// image's `org.opencontainers.image.revision` label, when the registry can be asked).
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// When that commit was made, RFC 3339 (the start of DORA's lead time).
    #[arg(long, value_name = "TIME")]
    pub commit_time: Option<String>,
    /// Start at this time instead of now: RFC 3339 (`2026-12-01T02:00:00Z`) or a local
    /// time with a zone (`2026-12-01T02:00 Europe/Berlin`). Implies --detach.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Start the deployment and return its id without following it.
    #[arg(long)]
    pub detach: bool,
    /// One JSON object per event on stdout (with --plan: the plan as one object).
    #[arg(long)]
    pub json: bool,
    /// Print what the deploy would do (digest, hosts, batches, stages, gates, windows)
    /// and change nothing; exit 2 with the reason if it would be refused.
    #[arg(long, conflicts_with = "detach")]
    pub plan: bool,
    /// Run the spec's before_rollout hooks (migrations) even if they already ran for
    /// this service, environment and digest.
    #[arg(long)]
    pub rerun_hooks: bool,
}

/// Exit code when the request was refused before anything was touched.
pub use super::EXIT_REFUSED;

pub async fn run(args: DeployArgs) -> anyhow::Result<i32> {
    let at_ms = match &args.at {
        None => 0,
        Some(at) => match crate::schedule::parse_at(at) {
            Ok(ts) => ts.as_millisecond().max(0) as u64,
            Err(e) => {
                eprintln!("error: {e}");
                return Ok(EXIT_REFUSED);
            }
        },
    };
    let text = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read the service spec {}: {e}; pass the spec with -f FILE (see deploy/drover.example.toml)",
                args.file.display()
            );
            return Ok(EXIT_REFUSED);
        }
    };
    let file = match SpecFile::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: invalid spec {}: {e}", args.file.display());
            return Ok(EXIT_REFUSED);
        }
    };
    let spec = match file.environment(args.environment.as_deref()) {
        Ok(env) => env.spec,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(EXIT_REFUSED);
        }
    };
    let commit_ms = match args.commit_time.as_deref().map(parse_time).transpose() {
        Ok(ms) => ms.unwrap_or(0),
        Err(e) => {
            eprintln!("error: --commit-time: {e}");
            return Ok(EXIT_REFUSED);
        }
    };
    let registry_auth = match &spec.registry {
        None => None,
        Some(r) => {
            let password = std::env::var(&r.password_env).with_context(|| {
                format!(
                    "the spec's registry.password_env names {:?}, which is not set in this environment",
                    r.password_env
                )
            })?;
            Some(RegistryAuth {
                username: r.username.clone(),
                password,
                server: String::new(),
            })
        }
    };
    let mut client = args.client.client().await?;
    let request = DeployRequest {
        // The whole file: the controller resolves the environment (and its gates) itself.
        spec_toml: text,
        version: args.version.clone().unwrap_or_default(),
        image: args.image.clone().unwrap_or_default(),
        requested_by: whoami(),
        registry_auth,
        at_ms,
        environment: args.environment.clone().unwrap_or_default(),
        release_id: args.release.clone().unwrap_or_default(),
        from_environment: args.from.clone().unwrap_or_default(),
        override_gates: args.override_gates,
        override_reason: args.reason.clone().unwrap_or_default(),
        commit_sha: args.commit.clone().unwrap_or_default(),
        commit_ms,
        rerun_hooks: args.rerun_hooks,
    };
    if args.plan {
        let request = PlanRequest {
            request: Some(plan_request::Request::Deploy(request)),
        };
        return super::plan::run(&mut client, request, args.json, &rerun(&args)).await;
    }
    let response = client.deploy(request).await;
    let info = match response {
        Ok(r) => r.into_inner().deployment.unwrap_or_default(),
        Err(status) if super::is_refusal(status.code()) => {
            eprintln!(
                "error: deploy refused, nothing was changed: {}",
                status.message()
            );
            return Ok(EXIT_REFUSED);
        }
        Err(status) => {
            return Err(super::Lost(format!(
                "lost the controller after sending the deploy request ({}: {}); it may have recorded and started the deployment: look with `drover history --service {}` and follow it with `drover status ID`",
                status.code(),
                status.message(),
                spec.service.name
            ))
            .into());
        }
    };
    if info.state == DeploymentState::AwaitingApproval as i32 && !args.json {
        eprintln!(
            "{} waits for approval: environment {} needs a second person with the deployer role to run `drover approve {}`",
            info.id, info.environment, info.id
        );
    }
    if at_ms > 0 && !args.json {
        eprintln!(
            "scheduled {} for {}; see `drover schedule list`, cancel with `drover schedule cancel {}`",
            info.id,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(at_ms)
            ),
            info.id
        );
    }
    follow_or_detach(&mut client, &info.id, args.detach || at_ms > 0, args.json).await
}

/// The command line that would run the planned deploy.
fn rerun(args: &DeployArgs) -> String {
    let mut cmd = format!("drover deploy -f {}", args.file.display());
    if let Some(v) = &args.version {
        cmd.push_str(&format!(" --version {v}"));
    }
    if let Some(i) = &args.image {
        cmd.push_str(&format!(" --image {i}"));
    }
    if let Some(e) = &args.environment {
        cmd.push_str(&format!(" --env {e}"));
    }
    if let Some(r) = &args.release {
        cmd.push_str(&format!(" --release {r}"));
    }
    if let Some(f) = &args.from {
        cmd.push_str(&format!(" --from {f}"));
    }
    if let Some(at) = &args.at {
        cmd.push_str(&format!(" --at {at:?}"));
    }
    cmd
}

/// Prints the id (detached) or follows the deployment to its end.
pub(crate) async fn follow_or_detach(
    client: &mut super::Client,
    id: &str,
    detach: bool,
    json: bool,
) -> anyhow::Result<i32> {
    if detach {
        if json {
            println!("{}", serde_json::json!({ "type": "started", "id": id }));
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    progress::follow_to_end(client, id, Mode::pick(json)).await
}

/// `user@host` of whoever runs the CLI, for the history.
pub(crate) fn whoami() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}

/// Unix ms of an RFC 3339 time (`2026-12-01T02:00:00Z`) or a local time with a zone.
pub(crate) fn parse_time(text: &str) -> Result<u64, String> {
    crate::schedule::parse_at(text)
        .map(|ts| ts.as_millisecond().max(0) as u64)
        .map_err(|e| e.to_string())
}
