//! Deploy hooks with real parts: a real controller and agents, the demo app's containers in
//! real Docker (its `migrate` subcommand appends a line to a file on a bind mount), a
//! real registry and HAProxy, under load.
//!
//! One fleet, the migration checks in turn: a failing migration drains nothing and keeps
//! v1 serving with zero failed requests, its output (secret redacted) in `drover status`;
//! a hanging one is killed at its timeout and leaves no container; a good one runs exactly
//! once before any drain; a controller killed right after it and restarted does not run
//! it again; a deploy of the same digest skips it; `--rerun-hooks` runs it again; the
//! secret is in no stored output, history or controller log; an agent killed mid-hook
//! and restarted ends the hook container and the deploy fails with nothing drained.
//!
//! A second fleet checks after a batch, in a one-off container and inside each new
//! container (`run_in = "exec"`), failing on one host and passing, and the smoke test.

use std::path::Path;
use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::docker::docker;
use drover_tests::fleet::{As, Fleet, FleetOptions, SERVICE, field};
use drover_tests::wait::wait_until;
use serde_json::Value;

const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The fleet's spec with a data bind mount, the secret and `hooks` appended.
fn spec(fleet: &Fleet, data: &Path, hooks: &str) -> String {
    let base = fleet.spec_toml("1");
    let base = base.replacen(
        "host_port =",
        &format!("mounts = [\"{}:/data\"]\nhost_port =", data.display()),
        1,
    );
    format!("{base}\n[secrets]\nnames = [\"DB_PASSWORD\"]\ndelivery = \"env\"\n\n{hooks}")
}

fn migration(args: &str, timeout: &str) -> String {
    format!(
        "[[hooks]]\nname = \"migrate\"\nphase = \"before_rollout\"\ncommand = [\"migrate\", \"/data/migrations.log\", \"--print-env\", \"DB_PASSWORD\"{args}]\ntimeout = \"{timeout}\"\n"
    )
}

fn lines(data: &Path) -> Vec<String> {
    std::fs::read_to_string(data.join("migrations.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The agents of this fleet that Docker still has a hook container of, one per container.
async fn hook_containers(fleet: &Fleet) -> Vec<String> {
    hook_containers_in(fleet, "-a").await
}

/// The agents of this fleet that have a hook container running, one per container.
async fn running_hook_containers(fleet: &Fleet) -> Vec<String> {
    hook_containers_in(fleet, "--filter=status=running").await
}

async fn hook_containers_in(fleet: &Fleet, which: &str) -> Vec<String> {
    let mut left = vec![];
    for h in fleet.hosts() {
        let found = docker(&[
            "ps",
            which,
            "--filter",
            &format!("label={}", drover_shared::labels::HOOK),
            "--filter",
            &format!("label={}={}", drover_shared::labels::AGENT, h.name),
            "--format",
            &format!("{{{{.Label \"{}\"}}}}", drover_shared::labels::AGENT),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        left.extend(
            found
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    left
}

async fn deploy(fleet: &Fleet, spec: &str, version: &str, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["deploy", "-f", spec, "--version", version, "--json"];
    args.extend_from_slice(extra);
    let run = fleet.drover(&args).await;
    (run.code, run.final_snapshot())
}

fn hook_runs(snapshot: &Value) -> Vec<Value> {
    snapshot["hooks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_runs_once_before_any_drain_and_its_failures_leave_the_fleet_untouched() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 3,
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let data = fleet.dir().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let secret = format!("hook-secret-{:032x}", rand::random::<u128>());
    let set = fleet
        .drover_stdin(
            &As::Admin,
            &["secret", "set", SERVICE, "DB_PASSWORD"],
            secret.as_bytes(),
        )
        .await;
    assert_eq!(set.code, Some(0), "{}", set.describe());

    // A failing migration: the deploy fails, nothing was drained, v1 serves throughout.
    let failing = fleet.write_spec(
        "fail.toml",
        &spec(&fleet, &data, &migration(", \"--fail\"", "1m")),
    );
    let failing = failing.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let (code, snap) = deploy(&fleet, &failing, "v2", &[]).await;
    let report = load.stop().await;
    assert_eq!(code, Some(1), "{snap}");
    assert_eq!(field(&snap, "state"), "failed", "{snap}");
    assert_eq!(report.failed, 0, "{}", report.summary());
    for h in snap["hosts"].as_array().expect("hosts") {
        assert!(
            matches!(field(h, "phase"), "prepared" | "pending"),
            "nothing drained: {snap}"
        );
    }
    fleet.assert_serves("v1").await;
    let runs = hook_runs(&snap);
    assert_eq!(runs.len(), 1, "{snap}");
    assert_eq!(runs[0]["outcome"], "failed");
    assert_eq!(runs[0]["exit_code"], 3);
    let output = runs[0]["output"].as_str().unwrap_or("");
    assert!(
        output.contains("column \"email\" already exists"),
        "{output}"
    );
    assert!(output.contains("DB_PASSWORD=[redacted]"), "{output}");
    assert!(lines(&data).is_empty());
    let status = fleet
        .drover(&["status", field(&snap, "id"), "--no-follow"])
        .await;
    assert!(
        status.stdout.contains("already exists"),
        "{}",
        status.describe()
    );
    assert!(
        hook_containers(&fleet).await.is_empty(),
        "a hook container was left"
    );

    // A hanging migration: killed at its timeout, no container left behind.
    let hanging = fleet.write_spec(
        "hang.toml",
        &spec(&fleet, &data, &migration(", \"--hang\"", "2s")),
    );
    let hanging = hanging.to_string_lossy().into_owned();
    let (code, snap) = deploy(&fleet, &hanging, "v2", &[]).await;
    assert_eq!(code, Some(1), "{snap}");
    let runs = hook_runs(&snap);
    assert_eq!(runs[0]["outcome"], "timed_out", "{snap}");
    assert!(
        runs[0]["duration_ms"].as_u64().unwrap_or(0) < 30_000,
        "{snap}"
    );
    assert!(
        hook_containers(&fleet).await.is_empty(),
        "a hook container was left"
    );
    fleet.assert_serves("v1").await;

    // An agent killed (SIGKILL) while its migration hangs, and restarted: it finds and
    // ends the hook container; the deploy fails with nothing drained; v1 serves
    // throughout.
    let stuck = fleet.write_spec(
        "stuck.toml",
        &spec(&fleet, &data, &migration(", \"--hang\"", "10m")),
    );
    let stuck = stuck.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let detached = fleet
        .drover(&[
            "deploy",
            "-f",
            &stuck,
            "--version",
            "v2",
            "--detach",
            "--json",
        ])
        .await;
    assert_eq!(detached.code, Some(0), "{}", detached.describe());
    let id = field(&detached.json()[0], "id").to_string();
    wait_until(
        STEP_TIMEOUT,
        "the hanging migration's container to run",
        || async { !running_hook_containers(&fleet).await.is_empty() },
    )
    .await;
    let running = running_hook_containers(&fleet).await;
    assert_eq!(running.len(), 1, "{running:?}");
    let i = fleet.index_of(&running[0]);
    fleet.kill_agent(i);
    fleet.start_agent(i).await;
    wait_until(
        STEP_TIMEOUT,
        "the restarted agent to end the hook container",
        || async { hook_containers(&fleet).await.is_empty() },
    )
    .await;
    let status = fleet.drover(&["status", &id, "--json"]).await;
    let snap = status.final_snapshot();
    let report = load.stop().await;
    assert_eq!(field(&snap, "state"), "failed", "{}", status.describe());
    for h in snap["hosts"].as_array().expect("hosts") {
        assert!(
            matches!(field(h, "phase"), "prepared" | "pending"),
            "nothing drained: {snap}"
        );
    }
    assert_eq!(
        hook_runs(&snap)[0]["outcome"],
        "error",
        "its agent was lost: {snap}"
    );
    assert_eq!(report.failed, 0, "{}", report.summary());
    fleet.assert_serves("v1").await;
    assert!(
        lines(&data).is_empty(),
        "the hanging migration appended nothing"
    );

    // A good migration: once, before the first drain.
    let good = fleet.write_spec("good.toml", &spec(&fleet, &data, &migration("", "1m")));
    let good = good.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let run = fleet
        .drover(&["deploy", "-f", &good, "--version", "v2", "--json"])
        .await;
    let report = load.stop().await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert_eq!(report.failed, 0, "{}", report.summary());
    fleet.assert_serves("v2").await;
    let migrated = lines(&data);
    assert_eq!(migrated.len(), 1, "{migrated:?}");
    let at_ms: u64 = migrated[0]
        .rsplit(' ')
        .next()
        .and_then(|t| t.parse().ok())
        .expect("a timestamp");
    let first_drain = run
        .json()
        .iter()
        .filter(|e| e["type"] == "event" && e["phase"] == "draining")
        .filter_map(|e| e["at_ms"].as_u64())
        .min()
        .expect("a drain event");
    assert!(
        at_ms < first_drain,
        "migrated at {at_ms}, first drain at {first_drain}"
    );

    // Back to v1 (a new digest: it runs), with the controller killed right after the
    // hook and restarted: it does not run again.
    let mut detached = fleet
        .drover(&[
            "deploy",
            "-f",
            &good,
            "--version",
            "v1",
            "--detach",
            "--json",
        ])
        .await;
    assert_eq!(detached.code, Some(0), "{}", detached.describe());
    let id = field(&detached.json()[0], "id").to_string();
    wait_until(STEP_TIMEOUT, "the v1 migration", || async {
        lines(&data).len() == 2
    })
    .await;
    fleet.kill_controller();
    fleet.start_controller().await;
    detached = fleet.drover(&["status", &id, "--json"]).await;
    let snap = detached.final_snapshot();
    assert_eq!(
        field(&snap, "state"),
        "succeeded",
        "{}",
        detached.describe()
    );
    assert_eq!(
        lines(&data).len(),
        2,
        "the migration ran again after the restart"
    );
    fleet.assert_serves("v1").await;

    // The same digest again: skipped; with --rerun-hooks: runs.
    let (code, snap) = deploy(&fleet, &good, "v2", &[]).await;
    assert_eq!(code, Some(0), "{snap}");
    assert_eq!(hook_runs(&snap)[0]["outcome"], "skipped", "{snap}");
    assert_eq!(lines(&data).len(), 2);
    let (code, snap) = deploy(&fleet, &good, "v1", &["--rerun-hooks"]).await;
    assert_eq!(code, Some(0), "{snap}");
    assert_eq!(hook_runs(&snap)[0]["outcome"], "succeeded", "{snap}");
    assert_eq!(lines(&data).len(), 3);

    // The secret is nowhere Drover keeps or prints.
    let history = fleet.drover(&["history", "--json", "-n", "50"]).await;
    assert!(
        history.stdout.contains("DB_PASSWORD=[redacted]"),
        "{}",
        history.describe()
    );
    assert!(
        !history.stdout.contains(&secret),
        "the secret is in the history"
    );
    let text = fleet.drover(&["history", "-n", "50"]).await;
    assert!(!text.stdout.contains(&secret));
    assert!(
        !fleet.all_logs().contains(&secret),
        "the secret is in a log"
    );
}

/// The fleet's spec with one after_batch `check` hook that fails on `fail_on`: in a one-off
/// container, or with `exec` inside each new container (the image is FROM scratch: the
/// argv names the binary, no entrypoint is added).
fn check_spec(base: &str, exec: bool, fail_on: &str) -> String {
    let (program, run_in) = if exec {
        ("\"/demo-app\", ", "run_in = \"exec\"\n")
    } else {
        ("", "")
    };
    format!(
        "{base}\n[[hooks]]\nname = \"check\"\nphase = \"after_batch\"\ncommand = [{program}\"check\", \"--fail-on-host\", \"{fail_on}\"]\n{run_in}timeout = \"30s\"\n"
    )
}

/// Deploys v2 with `spec` under load, expecting its after_batch check to fail on `host`
/// and the deployment to roll back with zero failed requests; the failed run.
async fn deploy_failing_check(fleet: &Fleet, spec: &str, host: &str) -> Value {
    let path = fleet.write_spec("check.toml", spec);
    let path = path.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let (code, snap) = deploy(fleet, &path, "v2", &[]).await;
    let report = load.stop().await;
    assert_eq!(code, Some(1), "{snap}");
    assert_eq!(field(&snap, "state"), "rolled_back", "{snap}");
    assert!(
        field(&snap, "error").contains("after_batch hook check"),
        "{snap}"
    );
    assert_eq!(report.failed, 0, "{}", report.summary());
    fleet.assert_serves("v1").await;
    hook_runs(&snap)
        .into_iter()
        .find(|r| r["host"] == host && r["outcome"] == "failed")
        .unwrap_or_else(|| panic!("no failed run on {host}: {snap}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_checks_after_a_batch_and_after_the_rollout_roll_changed_hosts_back() {
    let fleet = Fleet::start(FleetOptions {
        hosts: 3,
        images: &[DemoImage::V1, DemoImage::V2],
        ..Default::default()
    })
    .await;
    let failing_host = fleet.host(1).name.clone();
    let base = fleet.spec_toml("1");

    // after_batch fails on the second host, in a one-off container and then inside each
    // new container (`run_in = "exec"`): that host goes back to v1, the deployment rolls
    // back (the default on_failure), zero failed requests.
    for exec in [false, true] {
        let failed = deploy_failing_check(
            &fleet,
            &check_spec(&base, exec, &failing_host),
            &failing_host,
        )
        .await;
        assert_eq!(failed["exit_code"], 4, "{failed}");
        assert!(
            failed["output"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("check: FAILED on {failing_host}")),
            "{failed}"
        );
    }

    // The smoke test through the frontend fails for v2: every changed host rolls back.
    let url = format!("http://{}/", fleet.haproxy().frontend_addr());
    let smoke = format!(
        "{base}\n[[hooks]]\nname = \"smoke\"\nphase = \"after_rollout\"\ntimeout = \"30s\"\n[hooks.http]\nurl = \"{url}\"\nstatus = 200\nbody_contains = \"a word v2 never says\"\ntries = 2\ninterval = \"200ms\"\n"
    );
    let path = fleet.write_spec("smoke.toml", &smoke);
    let path = path.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let (code, snap) = deploy(&fleet, &path, "v2", &[]).await;
    let report = load.stop().await;
    assert_eq!(code, Some(1), "{snap}");
    assert_eq!(field(&snap, "state"), "rolled_back", "{snap}");
    assert!(
        field(&snap, "error").contains("after_rollout hook smoke"),
        "{snap}"
    );
    assert_eq!(report.failed, 0, "{}", report.summary());
    fleet.assert_serves("v1").await;
    let runs = hook_runs(&snap);
    assert_eq!(runs[0]["outcome"], "failed", "{snap}");
    assert!(
        runs[0]["output"]
            .as_str()
            .unwrap_or("")
            .contains("body lacks"),
        "{snap}"
    );
    let history = fleet.drover(&["history", "-n", "5"]).await;
    assert!(history.stdout.contains("smoke"), "{}", history.describe());

    // An exec check that passes everywhere: the deploy succeeds, each host's run says
    // which host it ran on (DROVER_HOST reached the exec), and no hook container was made.
    let path = fleet.write_spec("exec-passes.toml", &check_spec(&base, true, "no-such-host"));
    let path = path.to_string_lossy().into_owned();
    let load = fleet.load(true);
    let (code, snap) = deploy(&fleet, &path, "v2", &[]).await;
    let report = load.stop().await;
    assert_eq!(code, Some(0), "{snap}");
    assert_eq!(field(&snap, "state"), "succeeded", "{snap}");
    assert_eq!(report.failed, 0, "{}", report.summary());
    fleet.assert_serves("v2").await;
    let runs = hook_runs(&snap);
    assert_eq!(runs.len(), fleet.hosts().len(), "{snap}");
    for h in fleet.hosts() {
        let run = runs
            .iter()
            .find(|r| r["host"] == h.name.as_str())
            .unwrap_or_else(|| panic!("no run on {}: {snap}", h.name));
        assert_eq!(run["outcome"], "succeeded", "{snap}");
        assert!(
            run["output"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("check: ok on {}", h.name)),
            "{snap}"
        );
    }
    assert!(hook_containers(&fleet).await.is_empty());
}
