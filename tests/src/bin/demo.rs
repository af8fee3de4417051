//! The demo behind `bash tests/demo.sh`: a whole fleet on this machine (a registry with
//! htpasswd auth, HAProxy, a controller and four agents enrolled with join tokens, all
//! over mutual TLS, each host on its own 127.0.0.N), the demo app at v1 everywhere, then `drover deploy --version v2` with its
//! live progress on this terminal while HTTP load goes through HAProxy. It prints how many
//! requests were sent during the deploy and how many failed, and removes everything it
//! started, also on Ctrl-C or SIGTERM.
//!
//! Exit code 0 only when the deploy succeeded, no request failed, and every host serves
//! v2. Network: loopback and the demo's own containers only.

#![forbid(unsafe_code)]

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions};
use drover_tests::load::LoadReport;
use tokio::time::Instant;

/// Hosts in the demo fleet.
const HOSTS: usize = 4;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    // Whichever ends first; dropping `run` removes everything it started.
    tokio::select! {
        code = run() => code,
        _ = tokio::signal::ctrl_c() => interrupted("Ctrl-C"),
        _ = term.recv() => interrupted("SIGTERM"),
    }
}

fn interrupted(what: &str) -> ExitCode {
    eprintln!("\n==> {what}: stopping and removing everything the demo started");
    ExitCode::from(130)
}

async fn run() -> ExitCode {
    say(&format!(
        "starting a registry, HAProxy, a controller and {HOSTS} agents, and deploying v1 everywhere"
    ));
    let started = Instant::now();
    let fleet = Fleet::start(FleetOptions {
        hosts: HOSTS,
        batch_size: "1",
        readiness_deadline: Duration::from_secs(30),
        images: &[DemoImage::V1, DemoImage::V2],
        initial: Some(DemoImage::V1),
        ..Default::default()
    })
    .await;
    say(&format!(
        "fleet ready in {:.1}s:",
        started.elapsed().as_secs_f64()
    ));
    println!(
        "    controller   {} (mutual TLS; fleet CA and admin certificate in {})",
        fleet.controller_url(),
        fleet.pki().dir.display()
    );
    println!("    registry     {}", fleet.registry().addr);
    println!(
        "    HAProxy      http://{} (backend {})",
        fleet.haproxy().frontend_addr(),
        drover_tests::fleet::BACKEND
    );
    for h in fleet.hosts() {
        println!("    host         {:<16} serves on {}", h.name, h.addr);
    }
    inherit(&fleet, &["hosts"]).await;

    say("sending HTTP load through HAProxy (keep-alive, and a new connection per request)");
    let keep_alive = fleet.load(true);
    let close = fleet.load(false);
    let flowing = drover_tests::poll(Duration::from_secs(30), || async {
        if keep_alive.completed() >= 50 && close.completed() >= 50 {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    if flowing.is_err() {
        eprintln!(
            "error: no load flows through HAProxy at {}",
            fleet.haproxy().frontend_addr()
        );
        return ExitCode::FAILURE;
    }

    let spec = fleet.spec_path().to_string_lossy().into_owned();
    say(&format!("drover deploy -f {spec} --version v2"));
    let deploy_start = Instant::now();
    let code = inherit(&fleet, &["deploy", "-f", &spec, "--version", "v2"]).await;
    let deploy_end = Instant::now();
    // A little more traffic after the deploy: it must all come from v2.
    let (ka_done, cl_done) = (keep_alive.completed(), close.completed());
    let _ = drover_tests::poll(Duration::from_secs(10), || async {
        if keep_alive.completed() >= ka_done + 100 && close.completed() >= cl_done + 100 {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let reports = [keep_alive.stop().await, close.stop().await];

    let during = |r: &LoadReport| {
        r.outcomes
            .iter()
            .filter(|o| o.at >= deploy_start && o.at <= deploy_end)
            .fold((0u64, 0u64), |(n, failed), o| {
                (n + 1, failed + u64::from(o.result.is_err()))
            })
    };
    let (sent, failed_during) = reports
        .iter()
        .map(during)
        .fold((0, 0), |(a, b), (n, f)| (a + n, b + f));
    let failed: u64 = reports.iter().map(|r| r.failed).sum();
    let total: u64 = reports.iter().map(|r| r.sent).sum();
    let mut after = std::collections::BTreeMap::new();
    for r in &reports {
        for (v, n) in r.versions_since(deploy_end) {
            *after.entry(v).or_insert(0u64) += n;
        }
    }
    let mut hosts_on_v2 = 0;
    for (i, h) in fleet.hosts().iter().enumerate() {
        match fleet.host_version(i).await {
            Ok(v) if v == "v2" => hosts_on_v2 += 1,
            Ok(v) => println!("    {} serves {v}", h.name),
            Err(e) => println!("    {}: {e}", h.name),
        }
    }

    println!();
    say("summary");
    println!(
        "    deploy exit code {} after {:.1}s",
        code.map_or("none (killed)".to_string(), |c| c.to_string()),
        (deploy_end - deploy_start).as_secs_f64()
    );
    println!(
        "    {sent} requests during the deploy, {failed_during} failed ({total} in all, {failed} failed)"
    );
    println!(
        "    after the deploy, answers per version through HAProxy: {after:?}; {hosts_on_v2} of {} hosts serve v2",
        fleet.hosts().len()
    );
    for r in reports.iter().filter(|r| r.failed > 0) {
        println!("    {}", r.summary());
    }
    let ok = code == Some(0)
        && failed == 0
        && hosts_on_v2 == fleet.hosts().len()
        && after.keys().all(|v| v == "v2");
    if ok {
        println!("\n    {sent} requests during the deploy, 0 failed; every host now serves v2\n");
        inherit(&fleet, &["history", "--hosts"]).await;
    } else {
        println!("\n    the demo FAILED; the controller's log follows\n");
        println!("{}", fleet.controller_logs());
    }
    say("cleaning up");
    drop(fleet);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `drover <args>` with this terminal as its stdout and stderr; its exit code.
async fn inherit(fleet: &Fleet, args: &[&str]) -> Option<i32> {
    let mut cmd = fleet.cli(args);
    cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot run drover {}: {e}", args.join(" "));
            return None;
        }
    };
    match tokio::time::timeout(CLI_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status.code(),
        Ok(Err(e)) => {
            eprintln!("error: drover {}: {e}", args.join(" "));
            None
        }
        Err(_) => {
            eprintln!(
                "error: drover {} took over {CLI_TIMEOUT:?}: killed",
                args.join(" ")
            );
            let _ = child.kill().await;
            None
        }
    }
}

fn say(what: &str) {
    println!("==> {what}");
}
