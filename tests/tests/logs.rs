//! `drover logs` with real parts: a real controller and agents, the demo app's containers
//! in real Docker (it writes a line to stdout or stderr on `GET /log/...`, and its own
//! secret on `GET /log-env/NAME`), a real registry and HAProxy.
//!
//! One fleet, several checks in turn: the tail of every host, each line prefixed by its
//! host and stderr kept apart; `--tail` bounds what each host sends; unknown services and
//! hosts are named; a viewer reads logs and still cannot deploy; a secret the container
//! logs never reaches the output (while Docker's own log has it); `-f` shows a line written
//! after it started; and the failed container of a never-ready deploy shows in `drover
//! status` and in `drover logs --deployment`.

use std::time::Duration;

use drover_tests::DemoImage;
use drover_tests::docker::docker;
use drover_tests::fleet::{As, Fleet, FleetOptions, SERVICE};
use drover_tests::http;
use drover_tests::logs::wait_line;
use drover_tests::wait::wait_until;

/// How long a followed line may take to show.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// Asks host `i`'s container for `path` (a `/log...` path), which must answer 200.
async fn hit(fleet: &Fleet, i: usize, path: &str) {
    let r = http::get(fleet.host(i).addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on host {i}: {e}"));
    assert_eq!(r.status, 200, "GET {path} on host {i}: {}", r.body);
}

/// Lines of `text` that host `name` printed.
fn lines_of<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("{name} | ");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_every_host_prefixed_followed_redacted_and_kept_for_a_failed_deploy() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1, DemoImage::NeverReady],
        initial: None,
        readiness_deadline: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    let (h0, h1) = (fleet.host(0).name.clone(), fleet.host(1).name.clone());
    let secret = format!("drover-secret-{:032x}", rand::random::<u128>());
    let set = fleet
        .drover_stdin(
            &As::Admin,
            &["secret", "set", SERVICE, "DB_PASSWORD"],
            secret.as_bytes(),
        )
        .await;
    assert_eq!(set.code, Some(0), "{}", set.describe());
    let spec = fleet.write_spec(
        "logs.toml",
        &format!(
            "{}\n[secrets]\nnames = [\"DB_PASSWORD\"]\ndelivery = \"env\"\n",
            fleet.spec_toml("100%")
        ),
    );
    let spec = spec.to_string_lossy().into_owned();
    let run = fleet
        .drover(&["deploy", "-f", &spec, "--version", "v1", "--json"])
        .await;
    assert_eq!(run.code, Some(0), "{}", run.describe());

    for i in 0..2 {
        let name = &fleet.host(i).name;
        hit(&fleet, i, &format!("/log/hello-from-{name}")).await;
        hit(&fleet, i, &format!("/log-stderr/trouble-on-{name}")).await;
        hit(&fleet, i, "/log-env/DB_PASSWORD").await;
    }

    // The tail of every host, prefixed; stderr apart; the secret redacted on the agent.
    // Docker writes a container's log a moment after the line is printed: wait until
    // every host's last line is there.
    let mut all = fleet.drover(&["logs", SERVICE, "--tail", "50"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while [&h0, &h1].iter().any(|name| {
        !lines_of(&all.stdout, name).contains(&format!("{name} | DB_PASSWORD=[redacted]").as_str())
    }) && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        all = fleet.drover(&["logs", SERVICE, "--tail", "50"]).await;
    }
    assert_eq!(all.code, Some(0), "{}", all.describe());
    for name in [&h0, &h1] {
        let out = lines_of(&all.stdout, name);
        assert!(
            out.contains(&format!("{name} | hello-from-{name}").as_str()),
            "{}",
            all.describe()
        );
        assert!(
            out.contains(&format!("{name} | DB_PASSWORD=[redacted]").as_str()),
            "{}",
            all.describe()
        );
        assert!(
            lines_of(&all.stderr, name).contains(&format!("{name} | trouble-on-{name}").as_str()),
            "stderr lines go to stderr: {}",
            all.describe()
        );
        assert!(
            !out.iter().any(|l| l.contains("trouble-on")),
            "{}",
            all.describe()
        );
    }
    assert!(
        !all.stdout.contains(&secret) && !all.stderr.contains(&secret),
        "the secret reached the output of drover logs"
    );
    // Docker's own log has it: the redaction is Drover's.
    let agent = format!("label={}={h0}", drover_shared::labels::AGENT);
    let id = docker(&["ps", "-q", "--filter", &agent, "--filter", "status=running"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let raw = docker(&["logs", id.trim()])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        raw.contains(&secret),
        "the demo app logged its secret to Docker"
    );

    // --tail bounds every host; one host by name.
    let one = fleet
        .drover(&["logs", SERVICE, "--tail", "1", "--host", &h1])
        .await;
    assert_eq!(one.code, Some(0), "{}", one.describe());
    assert_eq!(
        lines_of(&one.stdout, &h1).len() + lines_of(&one.stderr, &h1).len(),
        1,
        "{}",
        one.describe()
    );
    assert!(lines_of(&one.stdout, &h0).is_empty(), "{}", one.describe());

    // Unknown names are refused, naming what exists.
    let unknown = fleet.drover(&["logs", "api"]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.describe());
    assert!(
        unknown.stderr.contains("no host runs service api") && unknown.stderr.contains(SERVICE),
        "{}",
        unknown.describe()
    );
    let elsewhere = fleet.drover(&["logs", "api", "--host", &h0]).await;
    assert_eq!(elsewhere.code, Some(2), "{}", elsewhere.describe());
    assert!(
        elsewhere.stderr.contains(&format!(
            "host {h0} runs no container of service api; it has: {SERVICE}"
        )),
        "{}",
        elsewhere.describe()
    );
    let nohost = fleet.drover(&["logs", SERVICE, "--host", "nope"]).await;
    assert_eq!(nohost.code, Some(2), "{}", nohost.describe());
    assert!(
        nohost.stderr.contains("unknown host nope") && nohost.stderr.contains(&h0),
        "{}",
        nohost.describe()
    );

    // A viewer reads logs and still cannot deploy.
    let token = fleet
        .drover(&["api-token", "create", "vera", "--role", "viewer"])
        .await;
    assert_eq!(token.code, Some(0), "{}", token.describe());
    let token = token
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("dra1."))
        .expect("a dra1. token")
        .to_string();
    let viewer = As::Token(token);
    let read = fleet
        .drover_as(&viewer, &["logs", SERVICE, "--tail", "5"])
        .await;
    assert_eq!(read.code, Some(0), "{}", read.describe());
    assert!(
        !lines_of(&read.stdout, &h0).is_empty(),
        "{}",
        read.describe()
    );
    let deploy = fleet
        .drover_as(&viewer, &["deploy", "-f", &spec, "--version", "v1"])
        .await;
    assert_eq!(deploy.code, Some(2), "{}", deploy.describe());

    // -f shows a line written after it started.
    let mut follow = fleet.spawn_drover(&["logs", SERVICE, "-f", "--tail", "1"]);
    follow
        // A host's last line may be one it wrote to stderr: Docker reads the two
        // streams apart, so their order within a moment is not kept.
        .wait_output(FOLLOW_TIMEOUT, "the tail of both hosts", |out, err| {
            [&h0, &h1]
                .iter()
                .all(|h| !lines_of(out, h).is_empty() || !lines_of(err, h).is_empty())
        })
        .await;
    hit(&fleet, 0, "/log/written-while-following").await;
    let wanted = format!("{h0} | written-while-following");
    follow
        .wait_stdout(FOLLOW_TIMEOUT, &wanted, |out| out.contains(&wanted))
        .await;
    drop(follow);
    // The client went away: every agent stops reading.
    for i in 0..2 {
        wait_line(
            FOLLOW_TIMEOUT,
            "the agent stopped following",
            || fleet.agent_logs(i),
            &["log stream cancelled"],
        )
        .await;
    }

    // A never-ready deploy: its failed container's last lines are kept with the deployment.
    let failed = fleet
        .drover(&["deploy", "-f", &spec, "--version", "never-ready", "--json"])
        .await;
    assert_eq!(failed.code, Some(1), "{}", failed.describe());
    let id = failed.final_snapshot()["id"]
        .as_str()
        .expect("deployment id")
        .to_string();
    let startup = "mode=never-ready listening on";
    let status = fleet.drover(&["status", &id, "--no-follow"]).await;
    assert!(
        status
            .stdout
            .contains("last log lines of the failed container:")
            && status.stdout.contains(startup),
        "{}",
        status.describe()
    );
    let kept = fleet.drover(&["logs", SERVICE, "--deployment", &id]).await;
    assert_eq!(kept.code, Some(0), "{}", kept.describe());
    assert!(
        fleet.hosts().iter().any(|h| lines_of(&kept.stdout, &h.name)
            .iter()
            .any(|l| l.contains(startup))),
        "{}",
        kept.describe()
    );
    assert!(
        !kept.stdout.contains(&secret) && !status.stdout.contains(&secret),
        "the secret reached the failure's log lines"
    );

    // A lost host is said once, while the others still show their lines.
    fleet.kill_agent(1);
    wait_until(
        FOLLOW_TIMEOUT,
        "the controller notices the lost agent",
        || async {
            fleet
                .hosts_json()
                .await
                .iter()
                .any(|h| h["name"] == h1.as_str() && h["connected"] == false)
        },
    )
    .await;
    let partial = fleet.drover(&["logs", SERVICE, "--tail", "5"]).await;
    assert_eq!(partial.code, Some(0), "{}", partial.describe());
    assert!(
        !lines_of(&partial.stdout, &h0).is_empty(),
        "{}",
        partial.describe()
    );
    let lost: Vec<&str> = partial
        .stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{h1}: not connected since")))
        .collect();
    assert_eq!(lost.len(), 1, "{}", partial.describe());
}
