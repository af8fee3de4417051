//! `bench_dora`: what `drover dora` and `drover releases` cost on a long history, end to
//! end (the CLI process, the RPC, the controller's query and computation), against
//! `drover history --limit 1` (the cheapest read of the history) measured in the same run.
//!
//! A fresh database (opened by the real store, so schema and indexes are `drover
//! serve`'s) gets `--deployments` rows (100,000 by default) written straight into it in
//! one transaction: 8 services in 3 environments over the last 365 days, about 11
//! deployments a day in each, a realistic mix of outcomes (mostly successes; failures,
//! automatic rollbacks, explicit rollbacks and push-button redeploys of an older digest
//! soon after a success; a few cancelled and skipped), each digest a release whose
//! commit came an hour before it first deployed, the same releases moving through the
//! environments. Then the real `drover serve --insecure-dev` (release build, no /metrics
//! listener, so no background refresh) serves it, and each round runs `drover history
//! --limit 1`, `drover dora` (30 days), `drover dora --since 365d` (the whole history)
//! and `drover releases web`, interleaved. Reported per command:
//! the median wall time of the CLI run and the controller's CPU time per call (user +
//! system from /proc/PID/stat, summed over the rounds), and their ratios to the baseline.
//!
//! ```text
//! bench_dora [--deployments 100000] [--rounds 9]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use drover_tests::bench::{self, BinDir, Flags, StopChildren, cpu_seconds, median, ms};
use drover_tests::process::{ChildGuard, bin_path};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SERVICES: [&str; 8] = [
    "web", "api", "worker", "billing", "search", "auth", "mailer", "reports",
];
const ENVIRONMENTS: [&str; 3] = ["staging", "canary", "production"];
const DAY_MS: u64 = 86_400_000;
/// What the history spans, back from now.
const SPAN_DAYS: u64 = 365;
/// How long the controller may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

struct Args {
    deployments: usize,
    rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        deployments: 100_000,
        rounds: 9,
    };
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--deployments" => a.deployments = flags.number_in(&flag, 24..=10_000_000)?,
            "--rounds" => a.rounds = flags.number_in(&flag, 1..=1000)?,
            other => return Err(format!("unknown flag {other}: use --deployments, --rounds")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    bench::run_main(
        "bench_dora",
        parse_args(),
        BinDir::Release,
        StopChildren::Term,
        run,
    )
}

/// One history row.
struct Row {
    service: String,
    kind: &'static str,
    state: &'static str,
    pinned: String,
    created_ms: u64,
    finished_ms: u64,
}

/// The history of one (service, environment): `n` deployments, one every ~2 hours,
/// the last finished a minute ago.
fn stream(rng: &mut StdRng, service: &str, n: usize, now: u64) -> Vec<Row> {
    let step = SPAN_DAYS * DAY_MS / n as u64;
    let mut rows: Vec<Row> = Vec::with_capacity(n);
    let mut digests = 0u64;
    let mut t = now - SPAN_DAYS * DAY_MS;
    while rows.len() < n {
        t += step / 2 + rng.random_range(0..step);
        let took = 60_000 + rng.random_range(0..600_000);
        let roll: u32 = rng.random_range(0..100);
        let last_ok = rows.last().is_some_and(|r| r.state == "succeeded");
        let (kind, state, digest) = match roll {
            // Soon after a success: an explicit rollback, or a redeploy of an older digest.
            0..=2 if last_ok => ("rollback", "succeeded", digests.saturating_sub(1)),
            3..=4 if last_ok => ("deploy", "succeeded", digests.saturating_sub(3)),
            5..=10 => ("deploy", "failed", digests + 1),
            11..=14 => ("deploy", "rolled_back", digests + 1),
            15..=16 => ("deploy", "cancelled", 0),
            17 => ("deploy", "skipped", 0),
            _ => ("deploy", "succeeded", digests + 1),
        };
        if roll <= 4 && last_ok {
            // A revert comes within the rollback window.
            t = rows
                .last()
                .map_or(t, |r| r.finished_ms + rng.random_range(60_000..1_800_000));
        }
        digests = digests.max(digest);
        let pinned = if digest == 0 {
            String::new()
        } else {
            format!("127.0.0.1:5000/{service}@sha256:{digest:064x}")
        };
        rows.push(Row {
            service: service.to_owned(),
            kind,
            state,
            pinned,
            created_ms: t,
            finished_ms: t + took,
        });
        t += took;
    }
    // End just before now, whatever the random steps added up to.
    let shift = rows.last().map_or(0, |r| r.finished_ms) as i64 - (now - 60_000) as i64;
    for r in &mut rows {
        r.created_ms = (r.created_ms as i64 - shift) as u64;
        r.finished_ms = (r.finished_ms as i64 - shift) as u64;
    }
    rows
}

/// Writes the history into `db` (after the real store created its schema).
async fn write_history(db: &std::path::Path, deployments: usize) -> anyhow::Result<()> {
    drop(drover_controller::store::Store::open(db).await?);
    let now = drover_controller::store::now_ms();
    let mut rng = StdRng::seed_from_u64(20261206);
    let per_stream = deployments / (SERVICES.len() * ENVIRONMENTS.len());
    let mut conn = rusqlite::Connection::open(db)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO deployments (id, service, kind, version, image, pinned, spec, state, epoch, requested_by, created_ms, finished_ms, environment, release_id)
             VALUES (?1, ?2, ?3, 'v', 'image', ?4, '', ?5, 1, 'bench', ?6, ?7, ?8, ?9)",
        )?;
        // One release per digest of a service, its commit made an hour before it first
        // deploys; the same digests move through every environment.
        let mut release = tx.prepare(
            "INSERT OR IGNORE INTO releases (id, service, tag, image, digest, commit_sha, commit_ms, created_by, created_ms)
             VALUES (?1, ?2, 'v', 'image', ?3, 'abc', ?4, 'bench', ?4)",
        )?;
        let mut id = 0u64;
        for s in SERVICES {
            for e in ENVIRONMENTS {
                for r in stream(&mut rng, s, per_stream, now) {
                    id += 1;
                    let digest = r.pinned.rsplit_once('@').map_or("", |(_, d)| d);
                    let release_id = if digest.is_empty() {
                        String::new()
                    } else {
                        format!("r-{s}-{}", &digest[digest.len() - 8..])
                    };
                    if !release_id.is_empty() {
                        release.execute(rusqlite::params![
                            release_id,
                            s,
                            digest,
                            r.created_ms.saturating_sub(3_600_000)
                        ])?;
                    }
                    insert.execute(rusqlite::params![
                        format!("d-{id:012x}"),
                        r.service,
                        r.kind,
                        r.pinned,
                        r.state,
                        r.created_ms,
                        r.finished_ms,
                        e,
                        release_id,
                    ])?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// One CLI command's figures.
#[derive(Default)]
struct Figures {
    wall_ms: Vec<f64>,
    cpu_s: f64,
}

async fn run(a: Args) -> ExitCode {
    match measure(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_dora: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(a: Args) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("drover-bench-dora-")
        .tempdir()?;
    bench::on_abort(|c| c.dirs.push(dir.path().to_path_buf()));
    let db = dir.path().join("drover.db");
    let t0 = Instant::now();
    write_history(&db, a.deployments).await?;
    println!(
        "history: {} deployments (8 services x 3 environments, 365 days) written in {:.1} s",
        a.deployments,
        t0.elapsed().as_secs_f64()
    );
    let addr = format!(
        "127.0.0.1:{}",
        drover_tests::free_port(std::net::Ipv4Addr::LOCALHOST)
    );
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
        ],
        &[],
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        anyhow::ensure!(
            controller.try_exit_status().is_none() && Instant::now() < deadline,
            "drover serve did not start listening on {addr}:\n{}",
            controller.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = controller.pid().expect("the controller runs");
    let url = format!("http://{addr}");
    let home = dir.path().to_string_lossy().into_owned();
    let commands: [(&str, Vec<&str>); 4] = [
        ("history --limit 1", vec!["history", "--limit", "1"]),
        ("dora (30 days)", vec!["dora"]),
        ("dora --since 365d", vec!["dora", "--since", "365d"]),
        ("releases web", vec!["releases", "web"]),
    ];
    let mut figures: Vec<Figures> = commands.iter().map(|_| Figures::default()).collect();
    let mut sample = String::new();
    // One unmeasured round warms the page cache and the controller's statements.
    for round in 0..=a.rounds {
        for ((_, args), f) in commands.iter().zip(&mut figures) {
            let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
            let t = Instant::now();
            let out = tokio::process::Command::new(bin_path("drover"))
                .args(args)
                .args(["--insecure-dev", "--controller", &url])
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", &home)
                .env_remove("DROVER_PROFILE")
                .env_remove("DROVER_CONTROLLER")
                .output()
                .await?;
            let wall = t.elapsed();
            let cpu = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
            anyhow::ensure!(
                out.status.success(),
                "drover {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            if round == 0 {
                if args == &["dora"] {
                    sample = String::from_utf8_lossy(&out.stdout).into_owned();
                }
                continue;
            }
            f.wall_ms.push(ms(wall));
            f.cpu_s += cpu;
        }
    }
    println!("\n`drover dora` on this history (first rows):");
    for line in sample.lines().take(6) {
        println!("  {line}");
    }
    let base = &figures[0];
    let (base_wall, base_cpu) = (median(&base.wall_ms), base.cpu_s * 1000.0 / a.rounds as f64);
    println!(
        "\n{} rounds, interleaved; wall = the CLI process end to end (median), controller CPU = user + system per call (mean)",
        a.rounds
    );
    println!(
        "{:<20} {:>10} {:>8} {:>20} {:>8}",
        "command", "wall ms", "ratio", "controller CPU ms", "ratio"
    );
    for ((name, _), f) in commands.iter().zip(&figures) {
        let (wall, cpu) = (median(&f.wall_ms), f.cpu_s * 1000.0 / a.rounds as f64);
        println!(
            "{name:<20} {wall:>10.1} {:>7.2}x {cpu:>20.1} {:>7.2}x",
            wall / base_wall,
            if base_cpu > 0.0 {
                cpu / base_cpu
            } else {
                f64::NAN
            }
        );
    }
    let dora = median(&figures[1].wall_ms);
    println!(
        "\ntarget: drover dora under 200 ms per call: {} ({dora:.1} ms)",
        if dora < 200.0 { "met" } else { "NOT met" }
    );
    controller.stop(Duration::from_secs(10));
    Ok(())
}
