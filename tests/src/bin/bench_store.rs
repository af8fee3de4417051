//! The controller's store on SQLite (a file in a temporary directory) against
//! PostgreSQL (a throwaway cluster on a unix socket, fsync off), the same workload in
//! one process: deployments of 100 hosts created, rolled in 10-host batches (each
//! batch's host changes, event lines and a read of the deployment), and finished.
//! Prints ops/s and rows/s per backend and PostgreSQL's ratio to SQLite.
//!
//!   cargo run --release -p drover-tests --bin bench_store -- [--deployments N] [--rounds R]
//!
//! Bounded: N deployments (default 20) per round, R rounds (default 3), interleaved;
//! the medians are printed. Needs Debian's PostgreSQL binaries (`apt-get install
//! postgresql`); no Docker.

use std::time::{Duration, Instant};

use anyhow::Context;
use drover_controller::rollout::machine::{self, Event};
use drover_controller::state::{Control, DeploymentKind, DeploymentState, HostPhase};
use drover_controller::store::pg_cluster::PgCluster;
use drover_controller::store::{Deployment, DeploymentHost, Fence, HostChange, Store, now_ms};
use drover_tests::bench::median;

const HOSTS: usize = 100;
const BATCH: usize = 10;

/// What one run did.
#[derive(Default, Clone, Copy)]
struct Tally {
    ops: u64,
    rows: u64,
    elapsed: Duration,
}

fn deployment(id: &str) -> Deployment {
    Deployment {
        id: id.into(),
        service: id.into(),
        environment: String::new(),
        release_id: String::new(),
        gate_note: None,
        kind: DeploymentKind::Deploy,
        version: "v2".into(),
        image: "reg/web:v2".into(),
        pinned: String::new(),
        spec: "[service]".into(),
        state: DeploymentState::Pending,
        epoch: 1,
        requested_by: "bench".into(),
        created_ms: now_ms(),
        finished_ms: None,
        error: None,
        stage: 0,
        scheduled_ms: None,
        hold: None,
        control: Control::None,
        promoted: -1,
    }
}

async fn step(s: &Store, id: &str, event: Event, t: &mut Tally) -> anyhow::Result<()> {
    let state = s.deployment(id).await?.state;
    let tr = machine::apply(state, event)?;
    s.transition(id, tr, None, &format!("{event:?}")).await?;
    t.ops += 2;
    t.rows += 3;
    Ok(())
}

/// The workload: `n` deployments, each rolled batch by batch.
async fn workload(s: &Store, round: usize, n: usize) -> anyhow::Result<Tally> {
    let mut t = Tally::default();
    let started = Instant::now();
    for d in 0..n {
        let id = format!("d-{round}-{d}");
        let hosts: Vec<DeploymentHost> = (0..HOSTS)
            .map(|i| DeploymentHost {
                host: format!("h{i:03}"),
                batch: (i / BATCH) as u32,
                stage: 0,
                phase: HostPhase::Pending,
                from_version: "v1".into(),
                to_version: "v2".into(),
                error: None,
                started_ms: None,
                finished_ms: None,
            })
            .collect();
        s.create(deployment(&id), hosts).await?;
        t.ops += 1;
        t.rows += 2 + HOSTS as u64;
        step(s, &id, Event::Prepare, &mut t).await?;
        step(s, &id, Event::Roll, &mut t).await?;
        for batch in 0..HOSTS / BATCH {
            let names: Vec<String> = (batch * BATCH..(batch + 1) * BATCH)
                .map(|i| format!("h{i:03}"))
                .collect();
            for phase in [HostPhase::Swapping, HostPhase::Done] {
                let changes = names
                    .iter()
                    .map(|h| HostChange::new(h, phase, None, "step"))
                    .collect();
                s.change_hosts(&id, changes).await?;
                t.ops += 1;
                t.rows += 2 * BATCH as u64;
            }
            let lines = names
                .iter()
                .map(|h| (h.clone(), "drained".to_owned()))
                .collect();
            s.add_events(&id, lines).await?;
            t.ops += 1;
            t.rows += BATCH as u64;
            let (_, rows) = s.get(&id).await?;
            t.ops += 1;
            t.rows += 1 + rows.len() as u64;
        }
        step(s, &id, Event::Succeed, &mut t).await?;
    }
    t.elapsed = started.elapsed();
    Ok(t)
}

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name} needs a number"))?
            .parse()
            .with_context(|| format!("{name} needs a number")),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--deployments", 20)?.clamp(1, 1_000);
    let rounds = arg("--rounds", 3)?.clamp(1, 20);
    let dir = tempfile::tempdir()?;
    let sqlite = Store::open(&dir.path().join("bench.db")).await?;
    let (cluster, url) = tokio::task::spawn_blocking(|| -> anyhow::Result<_> {
        let cluster = PgCluster::start()?;
        let url = cluster.create_database()?;
        Ok((cluster, url))
    })
    .await??;
    let fence = Fence::new("bench".into());
    fence.set(1);
    let pg = Store::open_postgres(&url, fence).await?;
    let lead = url.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut c = postgres::Client::connect(&lead, postgres::NoTls)?;
        c.execute(
            "UPDATE drover_leader SET holder = 'bench', epoch = 1 WHERE id = 1",
            &[],
        )?;
        Ok(())
    })
    .await??;

    println!(
        "bench_store: {n} deployments of {HOSTS} hosts per round ({BATCH}-host batches), {rounds} rounds, interleaved"
    );
    let mut results: [(Vec<f64>, Vec<f64>); 2] = Default::default();
    for round in 0..rounds {
        for (i, (name, store)) in [("sqlite", &sqlite), ("postgres", &pg)].iter().enumerate() {
            let t = workload(store, round, n).await?;
            let secs = t.elapsed.as_secs_f64();
            println!(
                "  round {round} {name:<8} {:>6} ops {:>7} rows in {:>6.2} s: {:>8.0} ops/s {:>9.0} rows/s",
                t.ops,
                t.rows,
                secs,
                t.ops as f64 / secs,
                t.rows as f64 / secs
            );
            results[i].0.push(t.ops as f64 / secs);
            results[i].1.push(t.rows as f64 / secs);
        }
    }
    let (sq_ops, sq_rows) = (median(&results[0].0), median(&results[0].1));
    let (pg_ops, pg_rows) = (median(&results[1].0), median(&results[1].1));
    println!("median   sqlite   {sq_ops:>8.0} ops/s {sq_rows:>9.0} rows/s");
    println!("median   postgres {pg_ops:>8.0} ops/s {pg_rows:>9.0} rows/s");
    println!(
        "RATIO postgres/sqlite: {:.2} (ops/s), {:.2} (rows/s)",
        pg_ops / sq_ops,
        pg_rows / sq_rows
    );
    drop(pg);
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    Ok(())
}
