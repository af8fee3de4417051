//! Environments and releases on a real fleet: the `drover` CLI and controller processes,
//! real agents on their own 127.0.0.N labelled `env=staging` or `env=production`, the
//! real Docker engine, a real registry with htpasswd auth, and one real HAProxy per
//! environment in front of that environment's hosts, under load.
//!
//! Staging proves a release; production takes exactly its digest, only after the soak,
//! only with a second person's approval, and refuses what staging never ran or rolled
//! back; an admin's override with a reason puts an older release back; the two
//! environments deploy at once under their own locks, and a production secret never
//! reaches a staging container. Each fleet removes its processes and containers when
//! dropped, also when an assertion fails.

use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::docker::{inspect_container, managed_by};
use drover_tests::fleet::{As, BACKEND, CliRun, Fleet, FleetOptions, field, haproxy_options};
use drover_tests::haproxy::Haproxy;
use drover_tests::load::{Load, LoadOptions};
use serde_json::Value;
use tokio::time::Instant;

const ENVIRONMENTS: [&str; 2] = ["staging", "production"];

/// An HAProxy of its own in front of the hosts labelled `env`, all UP.
async fn environment_haproxy(fleet: &Fleet, env: &str) -> Haproxy {
    let servers: Vec<(&str, std::net::SocketAddr)> = fleet
        .hosts()
        .iter()
        .filter(|h| h.env.as_deref() == Some(env))
        .map(|h| (h.name.as_str(), h.addr))
        .collect();
    let hp = Haproxy::start(BACKEND, &servers, haproxy_options()).await;
    hp.wait_all_up(Duration::from_secs(30)).await;
    hp
}

/// The fleet's spec with `[env.staging]` and `[env.production]`, each on its own hosts
/// and HAProxy; `production` adds lines to production's overlay (gates, secrets).
fn spec_with_environments(fleet: &Fleet, hp: [&Haproxy; 2], production: &str) -> String {
    format!(
        "{base}\n[env.staging]\ntargets = {{ selector = \"role={role},env=staging\" }}\nload_balancer = {{ runtime = [\"unix:{s}\"] }}\n\n[env.production]\ntargets = {{ selector = \"role={role},env=production\" }}\nload_balancer = {{ runtime = [\"unix:{p}\"] }}\n{production}\n",
        base = fleet.spec_toml("1"),
        role = fleet.role(),
        s = hp[0].admin_socket().display(),
        p = hp[1].admin_socket().display(),
    )
}

/// A fleet of four hosts, two `env=staging` and two `env=production`, all on v1, with
/// one HAProxy per environment, and the path of its spec with environments
/// (`production` added to production's overlay). Fields drop in order: the HAProxies,
/// then the fleet.
struct EnvFleet {
    staging_lb: Haproxy,
    production_lb: Haproxy,
    fleet: Fleet,
    spec: String,
}

async fn env_fleet(production: &str) -> EnvFleet {
    let fleet = Fleet::start(FleetOptions {
        images: &[DemoImage::V1, DemoImage::V2],
        env_labels: &ENVIRONMENTS,
        ..Default::default()
    })
    .await;
    let staging_lb = environment_haproxy(&fleet, "staging").await;
    let production_lb = environment_haproxy(&fleet, "production").await;
    let spec = fleet.write_spec(
        "environments.toml",
        &spec_with_environments(&fleet, [&staging_lb, &production_lb], production),
    );
    EnvFleet {
        staging_lb,
        production_lb,
        spec: spec.to_string_lossy().into_owned(),
        fleet,
    }
}

/// Keep-alive load through `hp`, bounded.
fn load(hp: &Haproxy) -> Load {
    Load::start(
        hp.frontend_addr(),
        LoadOptions {
            keep_alive: true,
            concurrency: 2,
            max_requests: 200_000,
            max_duration: Duration::from_secs(240),
            request_timeout: Duration::from_secs(5),
        },
    )
}

/// The image id of the container running on each host labelled `env`.
async fn image_ids(fleet: &Fleet, env: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for h in fleet
        .hosts()
        .iter()
        .filter(|h| h.env.as_deref() == Some(env))
    {
        let running: Vec<_> = managed_by(&h.name)
            .await
            .into_iter()
            .filter(|c| c.state == "running")
            .collect();
        assert_eq!(running.len(), 1, "{}: {running:?}", h.name);
        let c = inspect_container(&running[0].id).await.expect("inspect");
        ids.push(c["Image"].as_str().unwrap_or_default().to_string());
    }
    ids
}

/// `drover ARGS` as the admin.
async fn run_owned(fleet: &Fleet, args: Vec<String>) -> CliRun {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fleet.drover(&args).await
}

/// The id printed by `drover deploy --detach` (or a failure naming the run).
fn detached_id(run: &CliRun) -> String {
    assert_eq!(run.code, Some(0), "{}", run.describe());
    run.stdout.trim().to_string()
}

/// Exit 2, with each of `words` in what the CLI printed (stderr, or the `refused`
/// JSON object on stdout with --json).
fn expect_refused(run: &CliRun, words: &[&str]) {
    assert_eq!(run.code, Some(2), "{}", run.describe());
    let said = format!("{}{}", run.stdout, run.stderr);
    for w in words {
        assert!(said.contains(w), "{w:?} in {}", run.describe());
    }
}

/// The release id of `tag` in `drover releases web --json`.
async fn release_of(fleet: &Fleet, tag: &str) -> (String, Value) {
    let run = fleet.drover(&["releases", "web", "--json"]).await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let all = run.json().pop().expect("one object");
    let r = all["releases"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["tag"] == tag))
        .unwrap_or_else(|| panic!("no release of {tag}: {all}"))
        .clone();
    (field(&r, "id").to_string(), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_proves_a_release_and_production_takes_exactly_its_digest_through_its_gates() {
    let EnvFleet {
        staging_lb,
        production_lb,
        fleet,
        spec,
    } = env_fleet("requires = \"staging\"\nsoak = \"12s\"\napproval = \"required\"").await;
    let bob = fleet
        .drover(&["api-token", "create", "bob", "--role", "deployer"])
        .await;
    assert_eq!(bob.code, Some(0), "{}", bob.describe());
    let bob = As::Token(bob.stdout.trim().to_string());
    let staging_load = load(&staging_lb);
    let production_load = load(&production_lb);
    let deploy = |args: &[&str]| {
        let mut all = vec!["deploy", "-f", spec.as_str(), "--json"];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| run_owned(&fleet, args);

    // Bad input, refused before anything is recorded.
    expect_refused(
        &run(deploy(&["--version", "v2"])).await,
        &["defines environments (production, staging)", "--env"],
    );
    expect_refused(
        &run(deploy(&["--version", "v2", "--env", "qa"])).await,
        &["unknown environment \"qa\""],
    );
    expect_refused(
        &run(deploy(&["--env", "production", "--from", "staging"])).await,
        &["no successful deployment in staging"],
    );
    // Production refuses a release staging never ran.
    expect_refused(
        &run(deploy(&["--env", "production", "--version", "v2"])).await,
        &[
            "gate `requires = \"staging\"` holds",
            "has no successful deployment in staging",
        ],
    );
    expect_refused(
        &run(deploy(&["--env", "staging", "--release", "r-000000000000"])).await,
        &["no release \"r-000000000000\""],
    );

    // A release of another service is refused by name.
    let api = fleet.write_spec(
        "api.toml",
        &fleet
            .spec_toml("1")
            .replace("name = \"web\"", "name = \"api\""),
    );
    let made = fleet
        .drover(&[
            "release",
            "create",
            "-f",
            &api.to_string_lossy(),
            "--version",
            "v1",
        ])
        .await;
    assert_eq!(made.code, Some(0), "{}", made.describe());
    let api_release = made.stdout.trim().to_string();
    expect_refused(
        &run(deploy(&["--env", "staging", "--release", &api_release])).await,
        &["is of service api, not web"],
    );
    // Production's baseline: v1, put there by an admin past the gates.
    let baseline = run(deploy(&[
        "--env",
        "production",
        "--version",
        "v1",
        "--override",
        "--reason",
        "baseline before the first promotion",
    ]))
    .await;
    assert_eq!(baseline.code, Some(0), "{}", baseline.describe());
    // Staging runs v1, then v2: each makes (or finds) the release of its tag.
    for v in ["v1", "v2"] {
        let r = run(deploy(&["--version", v, "--env", "staging"])).await;
        assert_eq!(r.code, Some(0), "staging {v}: {}", r.describe());
    }
    let (v1, _) = release_of(&fleet, "v1").await;
    let (v2, release) = release_of(&fleet, "v2").await;
    assert_eq!(
        release["digest"],
        fleet.pushed(DemoImage::V2).digest.as_str(),
        "the release holds the registry's digest: {release}"
    );
    // Its commit comes from the image's OCI labels.
    assert_eq!(release["commit_sha"], "demo-v2", "{release}");
    let created: jiff::Timestamp = drover_tests::images::DEMO_CREATED.parse().unwrap();
    assert_eq!(
        release["commit_ms"].as_u64(),
        Some(created.as_millisecond() as u64),
        "{release}"
    );

    // Too early: the soak holds, and says when it opens (detached: were the gate
    // wrongly open, the deploy would wait for approval instead of blocking the test).
    expect_refused(
        &run(deploy(&[
            "--env",
            "production",
            "--from",
            "staging",
            "--detach",
        ]))
        .await,
        &["soak = \"12s\"", "opens in"],
    );
    // Once soaked, the plan is accepted.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let plan = run(deploy(&[
            "--env",
            "production",
            "--from",
            "staging",
            "--plan",
        ]))
        .await;
        if plan.code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline && plan.stdout.contains("soak"),
            "{}",
            plan.describe()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let id = detached_id(
        &fleet
            .drover(&[
                "deploy",
                "-f",
                &spec,
                "--env",
                "production",
                "--from",
                "staging",
                "--detach",
            ])
            .await,
    );
    let waiting = fleet
        .drover(&["status", &id, "--no-follow", "--json"])
        .await;
    let snapshot = waiting.json().pop().expect("a snapshot");
    assert_eq!(field(&snapshot, "state"), "awaiting_approval", "{snapshot}");
    assert_eq!(field(&snapshot, "release_id"), v2, "{snapshot}");
    // Nothing moves while it waits: production still runs v1's image.
    let before = image_ids(&fleet, "production").await;
    expect_refused(
        &fleet.drover(&["approve", &id]).await,
        &["cannot approve it too"],
    );
    let approved = fleet.drover_as(&bob, &["approve", &id]).await;
    assert_eq!(approved.code, Some(0), "{}", approved.describe());
    let done = fleet.drover(&["status", &id, "--json"]).await;
    assert_eq!(done.code, Some(0), "{}", done.describe());
    assert_eq!(field(&done.final_snapshot(), "state"), "succeeded");

    assert_ne!(image_ids(&fleet, "production").await, before);
    // Production runs exactly the image staging ran.
    let staging_images = image_ids(&fleet, "staging").await;
    let production_images = image_ids(&fleet, "production").await;
    assert!(
        staging_images
            .iter()
            .chain(&production_images)
            .all(|i| *i == staging_images[0]),
        "one image everywhere: staging {staging_images:?}, production {production_images:?}"
    );
    let (_, release) = release_of(&fleet, "v2").await;
    let mut runs_in: Vec<&str> = release["runs_in"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    runs_in.sort();
    assert_eq!(runs_in, ["production", "staging"], "{release}");

    // Staging rolls v2 back: production now refuses v2, naming the rollback.
    let back = fleet
        .drover(&["rollback", "web", "--env", "staging", "--json"])
        .await;
    assert_eq!(back.code, Some(0), "{}", back.describe());
    expect_refused(
        &run(deploy(&["--env", "production", "--release", &v2])).await,
        &["staging rolled release", "--override"],
    );
    // A deployer may not override; an admin may, with a reason: the button that puts
    // a known-good release back, recorded in history.
    let button_args = [
        "deploy",
        "-f",
        &spec,
        "--env",
        "production",
        "--release",
        &v1,
        "--override",
        "--reason",
        "v2 breaks checkout",
    ];
    let refused = fleet.drover_as(&bob, &button_args).await;
    expect_refused(&refused, &["may not override gates"]);
    let button = fleet.drover(&button_args).await;
    assert_eq!(button.code, Some(0), "{}", button.describe());
    let history = fleet
        .drover(&["history", "--service", "web", "--env", "production"])
        .await;
    // What an operator reads, printed for the test log.
    for args in [
        &["releases", "web"][..],
        &["status", "--env", "production"],
        &["history", "--service", "web", "--env", "production"],
    ] {
        let out = fleet.drover(args).await;
        eprintln!("$ drover {}\n{}{}", args.join(" "), out.stdout, out.stderr);
    }
    assert!(
        history.stdout.contains("gates overridden by")
            && history.stdout.contains("v2 breaks checkout"),
        "{}",
        history.describe()
    );
    assert_eq!(
        image_ids(&fleet, "production").await,
        image_ids(&fleet, "staging").await,
        "both back on v1"
    );
    // In DORA, the push-button return to the older v1 makes the v2 deploy a failed
    // change, restored by that same deploy.
    let dora = fleet
        .drover(&["dora", "web", "--env", "production", "--json"])
        .await;
    assert_eq!(dora.code, Some(0), "{}", dora.describe());
    let dora = dora.json().pop().expect("one object");
    let row = &dora["rows"][0];
    assert_eq!(row["finished_deploys"], 3, "{dora}");
    assert_eq!(row["failed_changes"], 1, "{dora}");
    assert_eq!(row["restored"], 1, "{dora}");

    let staging_seen = staging_load.stop().await;
    let production_seen = production_load.stop().await;
    eprintln!(
        "staging: {}\nproduction: {}",
        staging_seen.summary(),
        production_seen.summary()
    );
    assert_eq!(staging_seen.failed, 0, "{}", staging_seen.summary());
    assert_eq!(production_seen.failed, 0, "{}", production_seen.summary());
    assert!(staging_seen.ok > 0 && production_seen.ok > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_deploy_at_once_under_their_own_locks_and_keep_their_secrets() {
    let EnvFleet {
        staging_lb,
        production_lb,
        fleet,
        spec,
    } = env_fleet("secrets = { names = [\"PROD_TOKEN\"], delivery = \"env\" }").await;
    const SECRET: &str = "prod-only-s3cret-value";
    let set = fleet
        .drover_stdin(
            &As::Admin,
            &["secret", "set", "web", "PROD_TOKEN", "--env", "production"],
            SECRET.as_bytes(),
        )
        .await;
    assert_eq!(set.code, Some(0), "{}", set.describe());
    let staging_load = load(&staging_lb);
    let production_load = load(&production_lb);

    let mut staging = fleet.spawn_drover(&[
        "deploy",
        "-f",
        &spec,
        "--version",
        "v2",
        "--env",
        "staging",
        "--json",
    ]);
    let mut production = fleet.spawn_drover(&[
        "deploy",
        "-f",
        &spec,
        "--version",
        "v2",
        "--env",
        "production",
        "--json",
    ]);
    // Both hold their own environment's lock at once.
    for (cli, env) in [(&mut staging, "staging"), (&mut production, "production")] {
        cli.wait_json(Duration::from_secs(60), &format!("{env} started"), |v| {
            v["type"] == "event" && v["host"].is_string()
        })
        .await;
    }
    let second = fleet
        .drover(&[
            "deploy",
            "-f",
            &spec,
            "--version",
            "v2",
            "--env",
            "production",
            "--json",
        ])
        .await;
    expect_refused(&second, &["locked", "in environment \"production\""]);
    let staging = staging.finish(Duration::from_secs(180)).await;
    let production = production.finish(Duration::from_secs(180)).await;
    assert_eq!(staging.code, Some(0), "{}", staging.describe());
    assert_eq!(production.code, Some(0), "{}", production.describe());

    // The production secret is in production's containers and in no staging one.
    for h in fleet.hosts() {
        let running = managed_by(&h.name)
            .await
            .into_iter()
            .find(|c| c.state == "running")
            .expect("a running container");
        let c = inspect_container(&running.id).await.expect("inspect");
        let env: Vec<&str> = c["Config"]["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let has = env.iter().any(|e| *e == format!("PROD_TOKEN={SECRET}"));
        match h.env.as_deref() {
            Some("production") => assert!(has, "{}: {env:?}", h.name),
            _ => assert!(
                !env.iter().any(|e| e.starts_with("PROD_TOKEN")),
                "{} is staging: {env:?}",
                h.name
            ),
        }
    }
    let status = fleet
        .drover(&["status", "--env", "production", "--json"])
        .await;
    assert_eq!(status.code, Some(0), "{}", status.describe());
    let now = status.json().pop().expect("web in production");
    assert_eq!(field(&now, "version"), "v2", "{now}");
    assert!(
        !fleet.transcript().text().contains(SECRET) && !fleet.all_logs().contains(SECRET),
        "the secret's value appeared in CLI output or a log"
    );
    let staging_seen = staging_load.stop().await;
    let production_seen = production_load.stop().await;
    assert_eq!(staging_seen.failed, 0, "{}", staging_seen.summary());
    assert_eq!(production_seen.failed, 0, "{}", production_seen.summary());

    // A release whose digest the registry has since lost is refused, naming both; an
    // override without a reason is refused before anything is sent.
    let (v2, _) = release_of(&fleet, "v2").await;
    let digest = &fleet.pushed(DemoImage::V2).digest;
    fleet.registry().delete_manifest("demo", digest).await;
    let gone = fleet
        .drover(&["deploy", "-f", &spec, "--env", "staging", "--release", &v2])
        .await;
    expect_refused(&gone, &[&v2, digest.as_str(), "no longer has"]);
    let no_reason = fleet
        .drover(&[
            "deploy",
            "-f",
            &spec,
            "--env",
            "staging",
            "--release",
            &v2,
            "--override",
        ])
        .await;
    expect_refused(&no_reason, &["--reason"]);
}

/// `drover slo web --env production --json` once it says `pred`.
async fn wait_budget(fleet: &Fleet, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = fleet
            .drover(&["slo", "web", "--env", "production", "--json"])
            .await;
        let last = run.json().pop();
        if let Some(b) = last.as_ref().filter(|b| pred(b)) {
            return b.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the budget never showed {what}: {}",
            run.describe()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_error_budget_holds_deploys_but_not_a_rollback() {
    let EnvFleet {
        staging_lb: _staging_lb,
        production_lb,
        fleet,
        spec,
    } = env_fleet("slo = { availability = \"99%\", window = \"10m\" }").await;
    for v in ["v1", "v2"] {
        let r = fleet
            .drover(&[
                "deploy",
                "-f",
                &spec,
                "--version",
                v,
                "--env",
                "production",
                "--json",
            ])
            .await;
        assert_eq!(r.code, Some(0), "production {v}: {}", r.describe());
    }
    // Good traffic, then HAProxy's own 503s while every production server is in
    // maintenance: 20 errors in about 220 requests is far beyond 1%.
    let front = production_lb.frontend_addr();
    for _ in 0..200 {
        assert!(drover_tests::fleet::version_of(front).await.is_ok());
    }
    wait_budget(&fleet, "200 requests", |b| {
        b["requests"].as_u64() >= Some(200)
    })
    .await;
    let runtime = production_lb.runtime();
    let servers: Vec<String> = production_lb
        .servers()
        .await
        .into_iter()
        .map(|s| s.server)
        .collect();
    for s in &servers {
        runtime
            .set_admin(BACKEND, s, drover_controller::lb::AdminState::Maint)
            .await
            .expect("maint");
    }
    for _ in 0..20 {
        assert!(drover_tests::fleet::version_of(front).await.is_err());
    }
    for s in &servers {
        runtime
            .set_admin(BACKEND, s, drover_controller::lb::AdminState::Ready)
            .await
            .expect("ready");
    }
    production_lb.wait_all_up(Duration::from_secs(30)).await;
    let spent = wait_budget(&fleet, "spent", |b| b["spent"] == true).await;
    assert!(spent["errors"].as_u64() >= Some(20), "{spent}");

    // A deploy into production is held with the numbers; staging is not.
    let held = fleet
        .drover(&[
            "deploy",
            "-f",
            &spec,
            "--version",
            "v1",
            "--env",
            "production",
        ])
        .await;
    expect_refused(
        &held,
        &["gate `slo` holds", "error budget", "spent", "--override"],
    );
    let staging = fleet
        .drover(&[
            "deploy",
            "-f",
            &spec,
            "--version",
            "v2",
            "--env",
            "staging",
            "--json",
        ])
        .await;
    assert_eq!(staging.code, Some(0), "{}", staging.describe());
    // A rollback still goes through.
    let back = fleet
        .drover(&["rollback", "web", "--env", "production", "--json"])
        .await;
    assert_eq!(back.code, Some(0), "{}", back.describe());
    assert_eq!(field(&back.final_snapshot(), "version"), "v1");
}
