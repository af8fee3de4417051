//! `bench_web`: the server's time to render the web interface's Hosts and Overview
//! pages for a large fleet, and the size of each page sent.
//!
//! A fresh database (opened by the real store, so schema and indexes are `drover
//! serve`'s) gets `--deployments` finished deployments (1,000 by default) written straight
//! into it: 20 services in 3 environments over the last 90 days, each with its hosts'
//! rows (`--hosts-per-deployment`, 50) and a few events, and the release of its digest.
//! Then the real `drover serve --insecure-dev --web-listen` (release build) serves it,
//! and `--hosts` SIMULATED agents (10,000 by default; `drover_tests::sim_agents`, no
//! Docker) connect and stay connected, heartbeating, labelled with a role, a zone and an
//! environment and each running one service. Once the controller reports them all, a
//! viewer signs in and each round GETs, on one kept-alive HTTP/1.1 connection,
//! interleaved: `/` (the overview), `/hosts` (first page), `/hosts?page=100` (a page deep
//! in the list) and `/hosts?label=zone%3Db` (a filter). Reported per page: the median and
//! p90 time from request to the last byte, the bytes sent, the host cells on it, and the
//! controller's CPU time per request; the target is under 200 ms for each.
//!
//! ```text
//! bench_web [--hosts 10000] [--deployments 1000] [--hosts-per-deployment 50] [--rounds 20]
//! ```

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use drover_tests::bench::{self, BinDir, Flags, Stats, StopChildren, cpu_seconds, ms};
use drover_tests::browser::WebClient;
use drover_tests::process::{ChildGuard, bin_path};
use drover_tests::sim_agents::{SimHost, SimulatedAgents};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICES: [&str; 20] = [
    "web", "api", "worker", "billing", "search", "auth", "mailer", "reports", "gateway", "cart",
    "checkout", "catalog", "images", "notify", "ledger", "quotes", "ingest", "export", "admin",
    "feeds",
];
const ENVIRONMENTS: [&str; 3] = ["staging", "canary", "production"];
const ZONES: [&str; 3] = ["a", "b", "c"];
const DAY_MS: u64 = 86_400_000;
/// What the history spans, back from now.
const SPAN_DAYS: u64 = 90;
/// How long the controller may take to start, and the agents to connect.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(300);
/// Simulated agents per HTTP/2 connection.
const AGENTS_PER_CONNECTION: usize = 100;
/// The target for every page.
const TARGET_MS: f64 = 200.0;
/// The pages timed, in the order of each round.
const PAGES: [&str; 4] = ["/", "/hosts", "/hosts?page=100", "/hosts?label=zone%3Db"];

struct Args {
    hosts: usize,
    deployments: usize,
    hosts_per_deployment: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        hosts: 10_000,
        deployments: 1_000,
        hosts_per_deployment: 50,
        rounds: 20,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--hosts" => a.hosts = flags.number_in(&flag, 1..=100_000)?,
            "--deployments" => a.deployments = flags.number_in(&flag, 1..=1_000_000)?,
            "--hosts-per-deployment" => {
                a.hosts_per_deployment = flags.number_in(&flag, 1..=10_000)?
            }
            "--rounds" => a.rounds = flags.number_in(&flag, 1..=1000)?,
            other => {
                return Err(format!(
                    "unknown flag {other}: use --hosts, --deployments, --hosts-per-deployment, --rounds"
                ));
            }
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    bench::run_main(
        "bench_web",
        parse_args(),
        BinDir::Release,
        StopChildren::Term,
        run,
    )
}

async fn run(a: Args) -> ExitCode {
    match measure(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_web: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Host `i`'s name.
fn host_name(i: usize) -> String {
    format!("host-{i:05}")
}

/// The simulated fleet: every host labelled with a role (its service), a zone and an
/// environment, running its service at some version.
fn fleet(n: usize) -> Vec<SimHost> {
    (0..n)
        .map(|i| {
            let service = SERVICES[i % SERVICES.len()];
            let env = ENVIRONMENTS[(i / SERVICES.len()) % ENVIRONMENTS.len()];
            let labels: HashMap<String, String> = [
                ("role", service),
                ("zone", ZONES[i % ZONES.len()]),
                ("env", env),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            SimHost {
                name: host_name(i),
                labels,
                runs: (service.to_string(), format!("v{}", 1 + i % 7)),
            }
        })
        .collect()
}

/// Writes `a.deployments` finished deployments (with host rows, events and releases)
/// into `db`, after the real store created its schema.
async fn write_history(db: &std::path::Path, a: &Args) -> anyhow::Result<()> {
    drop(drover_controller::store::Store::open(db).await?);
    let now = drover_controller::store::now_ms();
    let mut rng = StdRng::seed_from_u64(20261213);
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    {
        let mut deployment = tx.prepare(
            "INSERT INTO deployments (id, service, kind, version, image, pinned, spec, state, epoch, requested_by, created_ms, finished_ms, error, environment, release_id)
             VALUES (?1, ?2, 'deploy', ?3, ?4, ?5, '', ?6, 1, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        let mut release = tx.prepare(
            "INSERT OR IGNORE INTO releases (id, service, tag, image, digest, commit_sha, commit_ms, created_by, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 'abc', ?6, 'bench', ?6)",
        )?;
        let mut host = tx.prepare(
            "INSERT INTO deployment_hosts (deployment_id, host, batch, stage, phase, from_version, to_version, error, started_ms, finished_ms)
             VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let mut event = tx.prepare(
            "INSERT INTO events (deployment_id, seq, at_ms, host, message, phase, state)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let step = SPAN_DAYS * DAY_MS / a.deployments as u64;
        for i in 0..a.deployments {
            let service = SERVICES[i % SERVICES.len()];
            let env = ENVIRONMENTS[(i / SERVICES.len()) % ENVIRONMENTS.len()];
            let n = i / (SERVICES.len() * ENVIRONMENTS.len()) + 1;
            let version = format!("v{n}");
            let digest = format!("sha256:{:064x}", i / ENVIRONMENTS.len() + 1);
            let image = format!("127.0.0.1:5000/{service}");
            let created = now - SPAN_DAYS * DAY_MS + i as u64 * step;
            let finished = created + 60_000 + rng.random_range(0..300_000);
            let roll: u32 = rng.random_range(0..100);
            let (state, error) = match roll {
                0..=5 => ("failed", Some("host-00042: not ready within 30 s")),
                6..=9 => (
                    "rolled_back",
                    Some("canary breach in stage 1: 5xx rate 4.1%"),
                ),
                _ => ("succeeded", None),
            };
            let id = format!("d-{i:012x}");
            let release_id = format!("r-{service}-{}", i / ENVIRONMENTS.len() + 1);
            release.execute(rusqlite::params![
                release_id,
                service,
                version,
                image,
                digest,
                created.saturating_sub(3_600_000),
            ])?;
            deployment.execute(rusqlite::params![
                id,
                service,
                version,
                image,
                format!("{image}@{digest}"),
                state,
                format!("token:{}", ["alice", "bob", "ci"][i % 3]),
                created,
                finished,
                error,
                env,
                release_id,
            ])?;
            let from = format!("v{}", n.saturating_sub(1).max(1));
            for h in 0..a.hosts_per_deployment {
                let name = host_name((i * a.hosts_per_deployment + h) % a.hosts.max(1));
                let phase = match (state, h) {
                    ("succeeded", _) => "done",
                    (_, 0) => "failed",
                    ("rolled_back", _) => "rolled_back",
                    _ => "prepared",
                };
                let at = created + h as u64 * 1_000;
                host.execute(rusqlite::params![
                    id,
                    name,
                    (h / 5 + 1) as i64,
                    phase,
                    from,
                    version,
                    (phase == "failed").then_some("not ready within 30 s"),
                    at,
                    at + 900,
                ])?;
            }
            let events = [
                (created, "", "deployment created", "", "pending"),
                (created + 500, "", "pulled everywhere", "", "rolling"),
                (finished, "", "deployment ended", "", state),
            ];
            for (seq, (at, h, message, phase, st)) in events.into_iter().enumerate() {
                event.execute(rusqlite::params![
                    id,
                    seq as i64 + 1,
                    at,
                    h,
                    message,
                    phase,
                    st
                ])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// One page's figures over the rounds.
#[derive(Default)]
struct Figures {
    wall_ms: Vec<f64>,
    cpu_s: f64,
    bytes: usize,
    cells: usize,
}

async fn measure(a: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("drover-bench-web-")
        .tempdir()?;
    bench::on_abort(|c| c.dirs.push(dir.path().to_path_buf()));
    let db = dir.path().join("drover.db");
    let t0 = Instant::now();
    write_history(&db, &a).await?;
    println!(
        "history: {} deployments ({} services x {} environments, {} days, {} host rows each) written in {:.1} s",
        a.deployments,
        SERVICES.len(),
        ENVIRONMENTS.len(),
        SPAN_DAYS,
        a.hosts_per_deployment,
        t0.elapsed().as_secs_f64()
    );
    let free = || format!("127.0.0.1:{}", drover_tests::free_port(Ipv4Addr::LOCALHOST));
    let (addr, web) = (free(), free());
    let db_arg = db.to_string_lossy().into_owned();
    let mut controller = ChildGuard::spawn(
        "drover serve",
        &bin_path("drover"),
        [
            "serve",
            "--insecure-dev",
            "--listen",
            &addr,
            "--database",
            &db_arg,
            "--metrics-listen",
            "",
            "--web-listen",
            &web,
        ],
        &[("RUST_LOG", "warn")],
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(&web).await.is_err() {
        anyhow::ensure!(
            controller.try_exit_status().is_none() && Instant::now() < deadline,
            "drover serve did not start listening on {web}:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = controller.pid().expect("the controller runs");
    let url = format!("http://{addr}");

    let t0 = Instant::now();
    let agents = SimulatedAgents::start(&url, fleet(a.hosts), AGENTS_PER_CONNECTION)
        .await
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while agents.connected() < a.hosts {
        anyhow::ensure!(
            Instant::now() < deadline && controller.try_exit_status().is_none(),
            "{} of {} simulated agents connected after {CONNECT_TIMEOUT:?}:\n{}",
            agents.connected(),
            a.hosts,
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "fleet: {} simulated agents connected in {:.1} s ({} per HTTP/2 connection)",
        a.hosts,
        t0.elapsed().as_secs_f64(),
        AGENTS_PER_CONNECTION
    );

    let token = viewer_token(&url, dir.path()).await?;
    let client = WebClient::new(web.parse()?, None);
    let session = client
        .sign_in(&token)
        .await
        .map_err(|e| anyhow::anyhow!("sign in as the viewer: {e}"))?;
    let mut conn = client.connect().await.map_err(anyhow::Error::msg)?;
    let mut figures: Vec<Figures> = PAGES.iter().map(|_| Figures::default()).collect();
    // One unmeasured round warms the controller's statements and the page cache.
    for round in 0..=a.rounds {
        for (page, f) in PAGES.iter().zip(&mut figures) {
            let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
            let t = Instant::now();
            let resp = conn
                .get(page, Some(&session.cookie))
                .await
                .map_err(anyhow::Error::msg)?;
            let wall = t.elapsed();
            let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
            anyhow::ensure!(resp.status == 200, "GET {page}: {}", resp.describe());
            if round == 0 {
                f.bytes = resp.body.len();
                f.cells = resp.text().matches("data-host=").count();
                continue;
            }
            f.wall_ms.push(ms(wall));
            f.cpu_s += cpu;
        }
    }
    println!(
        "\n{} hosts connected, {} deployments; {} rounds, interleaved, one kept-alive connection; time = request to last byte",
        a.hosts, a.deployments, a.rounds
    );
    println!(
        "{:<24} {:>10} {:>10} {:>12} {:>11} {:>18}  target < {TARGET_MS} ms",
        "page", "median ms", "p90 ms", "bytes", "host cells", "controller CPU ms"
    );
    let mut all_met = true;
    for (page, f) in PAGES.iter().zip(&figures) {
        let s = Stats::of(&f.wall_ms);
        let met = s.median < TARGET_MS;
        all_met &= met;
        println!(
            "{page:<24} {:>10.1} {:>10.1} {:>12} {:>11} {:>18.1}  {}",
            s.median,
            s.p90,
            f.bytes,
            f.cells,
            f.cpu_s * 1000.0 / a.rounds as f64,
            if met { "met" } else { "NOT met" }
        );
    }
    println!(
        "\ntarget: every page under {TARGET_MS} ms (median): {}",
        if all_met { "met" } else { "NOT met" }
    );
    drop(conn);
    agents.stop().await;
    controller.stop(Duration::from_secs(10));
    Ok(())
}

/// `drover api-token create bench-viewer --role viewer` against the controller.
async fn viewer_token(url: &str, home: &std::path::Path) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(bin_path("drover"))
        .args(["api-token", "create", "bench-viewer", "--role", "viewer"])
        .args(["--insecure-dev", "--controller", url])
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("DROVER_PROFILE")
        .env_remove("DROVER_CONTROLLER")
        .env_remove("DROVER_TOKEN")
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "drover api-token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "drover api-token create printed no token"
    );
    Ok(token)
}
