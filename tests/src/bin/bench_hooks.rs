//! The cost of a no-op `before_rollout` hook: one fleet ([`drover_tests::fleet::Fleet`]:
//! real `drover serve`, 10 real agents, real Docker, registry and HAProxy), deploys
//! alternating v1/v2 with and without the hook in the same run (interleaved, so drift
//! hits both), each timed from `drover deploy` to its exit. The hooked deploys pass
//! `--rerun-hooks` so the hook runs every time. Prints each round and the medians.

use std::process::ExitCode;

use drover_tests::DemoImage;
use drover_tests::bench::Flags;
use drover_tests::fleet::{Fleet, FleetOptions};
use tokio::time::Instant;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let mut rounds = 3usize;
    let mut flags = Flags::from_env();
    while let Some(flag) = flags.flag() {
        match flag.as_str() {
            "--rounds" => match flags.number_in(&flag, 1..=20) {
                Ok(n) => rounds = n,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(64);
                }
            },
            other => {
                eprintln!("unknown argument {other:?}; usage: bench_hooks [--rounds N]");
                return ExitCode::from(64);
            }
        }
    }
    let fleet = Fleet::start(FleetOptions {
        hosts: 10,
        batch_size: "5",
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let base = fleet.spec_toml("5");
    let plain = fleet.write_spec("plain.toml", &base);
    let hooked = fleet.write_spec(
        "hooked.toml",
        &format!(
            "{base}\n[[hooks]]\nname = \"noop\"\nphase = \"before_rollout\"\ncommand = [\"check\"]\ntimeout = \"1m\"\n"
        ),
    );
    let (plain, hooked) = (
        plain.to_string_lossy().into_owned(),
        hooked.to_string_lossy().into_owned(),
    );
    let mut version = "v2";
    let (mut without, mut with, mut hook_ms) = (vec![], vec![], vec![]);
    println!("10 hosts, batches of 5; ms from `drover deploy` to its exit");
    for round in 1..=rounds {
        for hook in [false, true] {
            let spec = if hook { &hooked } else { &plain };
            let mut args = vec![
                "deploy",
                "-f",
                spec.as_str(),
                "--version",
                version,
                "--json",
            ];
            if hook {
                args.push("--rerun-hooks");
            }
            let t = Instant::now();
            let run = fleet.drover(&args).await;
            let ms = t.elapsed().as_millis() as u64;
            if run.code != Some(0) {
                eprintln!("deploy failed: {}", run.describe());
                return ExitCode::FAILURE;
            }
            let snap = run.final_snapshot();
            let own = snap["hooks"][0]["duration_ms"].as_u64().unwrap_or(0);
            println!(
                "round {round}: {version} {:<12} {ms:>6} ms{}",
                if hook { "with hook" } else { "without" },
                if hook {
                    format!("  (the hook itself: {own} ms)")
                } else {
                    String::new()
                }
            );
            if hook {
                with.push(ms);
                hook_ms.push(own);
            } else {
                without.push(ms);
            }
            version = if version == "v2" { "v1" } else { "v2" };
        }
    }
    let (a, b) = (median(without), median(with));
    println!(
        "median without {a} ms, with a no-op before_rollout hook {b} ms: overhead {} ms (the hook run itself: median {} ms)",
        b as i64 - a as i64,
        median(hook_ms)
    );
    ExitCode::SUCCESS
}
