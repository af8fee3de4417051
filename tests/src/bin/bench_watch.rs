//! `bench_watch`: what a rollout's checkpoint and a `Watch` stream cost the controller
//! on a large deployment, reading the deployment's own row against reading it with every
//! host row (what both did before).
//!
//! The store is the real one (SQLite, WAL, one connection, as `drover serve` opens it);
//! the deployment is SIMULATED: 2,000 host rows written straight to the store, no
//! agents. Each round does what one wake-up of a Watch stream does (new events since the
//! last seen, then the deployment's state) `--reads` times, by `--watchers` concurrent
//! readers, once per way of reading, interleaved; reported: reads per second and the
//! process's CPU time per read (user + system, from /proc/self/stat), medians over the
//! rounds, and the ratios.
//!
//! ```text
//! bench_watch [--hosts 2000] [--reads 2000] [--watchers 4] [--rounds 5]
//! ```

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use drover_controller::state::{Control, DeploymentKind, DeploymentState, HostPhase};
use drover_controller::store::{Deployment, DeploymentHost, Store, now_ms};

struct Args {
    hosts: usize,
    reads: usize,
    watchers: usize,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        hosts: 2000,
        reads: 2000,
        watchers: 4,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let n: usize = value
            .parse()
            .with_context(|| format!("{flag} {value:?}: give a whole number"))?;
        match flag.as_str() {
            "--hosts" => a.hosts = n,
            "--reads" => a.reads = n,
            "--watchers" => a.watchers = n.max(1),
            "--rounds" => a.rounds = n.max(1),
            other => bail!("unknown flag {other}: use --hosts, --reads, --watchers, --rounds"),
        }
    }
    Ok(a)
}

/// CPU time this process has used (user + system).
fn cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").context("/proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // The kernel's USER_HZ is 100 on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// The deployment's row and all its host rows (`Store::get`).
    WithHosts,
    /// The deployment's row only (`Store::deployment`).
    OwnRow,
}

struct Figures {
    reads_per_s: f64,
    cpu_us_per_read: f64,
}

async fn round(store: &Store, id: &str, way: Way, a: &Args) -> anyhow::Result<Figures> {
    let (t0, c0) = (Instant::now(), cpu()?);
    let readers = (0..a.watchers).map(|_| {
        let store = store.clone();
        let id = id.to_string();
        let n = a.reads / a.watchers;
        tokio::spawn(async move {
            let mut seq = 0;
            for _ in 0..n {
                for e in store.events(&id, seq).await? {
                    seq = e.seq;
                }
                let state = match way {
                    Way::WithHosts => store.get(&id).await?.0.state,
                    Way::OwnRow => store.deployment(&id).await?.state,
                };
                std::hint::black_box(state);
            }
            anyhow::Ok(())
        })
    });
    for r in futures::future::join_all(readers).await {
        r??;
    }
    let (took, used) = (t0.elapsed(), cpu()?.saturating_sub(c0));
    let reads = (a.reads / a.watchers * a.watchers) as f64;
    Ok(Figures {
        reads_per_s: reads / took.as_secs_f64(),
        cpu_us_per_read: used.as_secs_f64() * 1e6 / reads,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("drover.db")).await?;
    let id = "d-000000bench".to_string();
    let d = Deployment {
        environment: String::new(),
        release_id: String::new(),
        gate_note: None,
        id: id.clone(),
        service: "web".into(),
        kind: DeploymentKind::Deploy,
        version: "v2".into(),
        image: "reg/web:v2".into(),
        pinned: String::new(),
        spec: "[service]\nname = \"web\"\n".into(),
        state: DeploymentState::Rolling,
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
    };
    let hosts = (0..a.hosts)
        .map(|i| DeploymentHost {
            host: format!("host-{i:05}"),
            batch: (i / 200) as u32,
            stage: 0,
            phase: HostPhase::Pending,
            from_version: "v1".into(),
            to_version: "v2".into(),
            error: None,
            started_ms: None,
            finished_ms: None,
        })
        .collect();
    store.create(d, hosts).await?;
    for i in 0..20 {
        store.event(&id, "", &format!("event {i}")).await?;
    }
    println!(
        "bench_watch: a deployment of {} SIMULATED hosts; {} reads per round by {} watchers, {} rounds",
        a.hosts, a.reads, a.watchers, a.rounds
    );
    let mut figures = [(vec![], vec![]), (vec![], vec![])];
    for _ in 0..a.rounds {
        for (i, way) in [Way::WithHosts, Way::OwnRow].into_iter().enumerate() {
            let f = round(&store, &id, way, &a).await?;
            figures[i].0.push(f.reads_per_s);
            figures[i].1.push(f.cpu_us_per_read);
        }
    }
    let [(before_rate, before_cpu), (after_rate, after_cpu)] = figures;
    let (br, bc) = (median(before_rate), median(before_cpu));
    let (ar, ac) = (median(after_rate), median(after_cpu));
    println!("  with every host row (before): {br:>9.0} reads/s  {bc:>8.1} us CPU per read");
    println!("  own row only (after):         {ar:>9.0} reads/s  {ac:>8.1} us CPU per read");
    println!(
        "  after / before: {:.1}x the reads per second, {:.3}x the CPU per read",
        ar / br,
        ac / bc
    );
    Ok(())
}
