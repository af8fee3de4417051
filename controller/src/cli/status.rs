//! `drover status [ID]`: follow a deployment from any terminal (the newest by default);
//! `drover status --env E`: what each service runs in an environment now.

use drover_proto::v1::{GetDeploymentRequest, ListDeploymentsRequest, ListReleasesRequest};

use super::ClientArgs;
use super::progress::{self, Mode};

/// Flags of `drover status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Deployment id (default: the newest).
    #[arg(conflicts_with = "environment")]
    pub id: Option<String>,
    /// Instead of a deployment: what each service runs in this environment now (its
    /// release, version and digest, since when, and a deployment moving it).
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// With --env: only this service.
    #[arg(long, short = 's', requires = "environment")]
    pub service: Option<String>,
    /// Print the current state and return instead of following.
    #[arg(long)]
    pub no_follow: bool,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<i32> {
    let mut client = args.client.client().await?;
    if let Some(env) = &args.environment {
        return environment(&mut client, env, args.service.as_deref(), args.json).await;
    }
    let info = client
        .get_deployment(GetDeploymentRequest {
            id: args.id.clone().unwrap_or_default(),
        })
        .await
        .map_err(|s| super::rpc_error("status", &s))?
        .into_inner();
    let mode = Mode::pick(args.json);
    if args.no_follow || progress::is_final(info.state) {
        if !args.json {
            progress::print_events(&mut client, &info.id).await?;
        }
        return Ok(progress::summarize(
            &info,
            if args.json { Mode::Json } else { Mode::Lines },
        ));
    }
    progress::follow_to_end(&mut client, &info.id, mode).await
}

/// Prints what each service (or `only` one) runs in `env`.
async fn environment(
    client: &mut super::Client,
    env: &str,
    only: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let services: Vec<String> = match only {
        Some(s) => vec![s.to_string()],
        None => {
            let mut names: Vec<String> = client
                .list_deployments(ListDeploymentsRequest {
                    environment: env.to_string(),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .map_err(|s| super::rpc_error("listing deployments", &s))?
                .into_inner()
                .deployments
                .into_iter()
                .map(|d| d.service)
                .collect();
            names.sort();
            names.dedup();
            names
        }
    };
    let mut rows = Vec::new();
    for service in &services {
        let r = client
            .list_releases(ListReleasesRequest {
                service: service.clone(),
                limit: 1,
            })
            .await
            .map_err(|s| super::rpc_error(&format!("reading {service}"), &s))?
            .into_inner();
        if let Some(row) = super::release::environment_rows(service, env, &r) {
            rows.push(row);
        }
    }
    if json {
        for r in &rows {
            println!("{r}");
        }
        return Ok(0);
    }
    if rows.is_empty() {
        eprintln!("nothing has been deployed to environment {env:?} yet");
        return Ok(0);
    }
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    println!(
        "{:<16} {:<16} {:<10} {:<20} {:<22} MOVING",
        "SERVICE", "RELEASE", "VERSION", "DIGEST", "SINCE"
    );
    for r in &rows {
        let digest = text(&r["pinned"]);
        let digest = digest
            .rsplit_once('@')
            .map_or("-".to_string(), |(_, d)| d.chars().take(19).collect());
        let since = r["since_ms"].as_u64().map_or("-".to_string(), |ms| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string()
        });
        let moving = match r["active_deployment_id"].as_str() {
            Some(id) => format!("{id} ({})", text(&r["active_state"])),
            None => "-".into(),
        };
        println!(
            "{:<16} {:<16} {:<10} {:<20} {:<22} {moving}",
            text(&r["service"]),
            text(&r["release_id"]),
            text(&r["version"]),
            digest,
            since
        );
    }
    Ok(0)
}
