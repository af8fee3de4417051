//! Agents join with one-time join tokens, leave with `drover hosts remove`, and renew
//! their certificates without a restart.

use std::path::PathBuf;

use drover_shared::tls::Identity;
use drover_tests::fleet::now_ms;
use drover_tests::logs::wait_line;
use drover_tests::pki::read_certificate;
use drover_tests::process::{ChildGuard, bin_path};
use drover_tests::{DockerCleanup, wait_until};

use super::*;

/// An agent of the test's own next to the fleet's, enrolling with `token`.
struct ExtraAgent {
    /// The process.
    process: ChildGuard,
    /// Its state directory (certificate and key).
    state_dir: PathBuf,
    /// Removes its containers (it has the fleet's role label).
    _cleanup: DockerCleanup,
}

impl ExtraAgent {
    fn spawn(fleet: &Fleet, name: &str, token: &str) -> Self {
        let state_dir = fleet.dir().join(name);
        let secrets = fleet.extra_secrets_dir(name);
        let mut args = fleet.agent_args(name, drover_tests::loopback_host(), &state_dir, &secrets);
        args.extend(["--token".to_string(), token.to_string()]);
        let process = ChildGuard::spawn(
            &format!("agent {name}"),
            &bin_path("drover-agent"),
            args,
            &[("RUST_LOG", "info,drover_agent=debug")],
        );
        Self {
            process,
            state_dir,
            _cleanup: DockerCleanup::for_agent(name),
        }
    }

    fn logs(&self) -> String {
        self.process.logs()
    }
}

/// Waits until `name` is connected; returns its labels.
async fn wait_host_connected(fleet: &Fleet, name: &str, logs: impl Fn() -> String) -> Vec<String> {
    let found = drover_tests::poll(Duration::from_secs(40), || async {
        let hosts = fleet.list_hosts().await?;
        hosts
            .into_iter()
            .find(|h| h.name == name && h.connected)
            .map(|h| h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .ok_or_else(|| format!("{name} not connected"))
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}\n{}\n{}", logs(), fleet.controller_logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_enrolls_one_agent_and_is_refused_the_second_time() {
    let fleet = small_fleet(1).await;
    let token = fleet.create_join_token("10m", &[("zone", "z9")]).await;
    let secret = token.rsplit('.').next().expect("token parts").to_string();

    let first_name = format!("{}-first", fleet.role());
    let first = ExtraAgent::spawn(&fleet, &first_name, &token);
    let labels = wait_host_connected(&fleet, &first_name, || first.logs()).await;
    assert!(
        labels.contains(&"zone=z9".to_string()),
        "the token's label is on the host: {labels:?}"
    );
    let cert = read_certificate(&first.state_dir.join("agent.crt"))
        .expect("the enrolled agent's certificate");
    assert_eq!(
        cert.identity,
        Some(Identity::Agent {
            name: first_name.clone()
        })
    );
    let key_mode = mode_of(&first.state_dir.join("agent.key"));
    assert_eq!(key_mode & 0o777, 0o600, "agent.key mode {key_mode:o}");

    let second_name = format!("{}-second", fleet.role());
    let second = ExtraAgent::spawn(&fleet, &second_name, &token);
    let agent_line = wait_line(
        LOG_TIMEOUT,
        "the second agent's refusal",
        || second.logs(),
        &["refused to enroll", "token"],
    )
    .await;
    let controller_line = wait_line(
        LOG_TIMEOUT,
        "the controller's refusal of the reused token",
        || fleet.controller_logs(),
        &["token", "used"],
    )
    .await;
    assert!(
        !second.state_dir.join("agent.crt").exists(),
        "the second agent got a certificate"
    );
    let hosts = fleet.list_hosts().await.expect("hosts");
    assert!(
        !hosts.iter().any(|h| h.name == second_name),
        "{second_name} is in the inventory: {hosts:?}"
    );
    for line in [&agent_line, &controller_line] {
        assert!(!line.contains(&secret), "a log shows the token: {line}");
    }
    // The token itself is printed once, by `drover token create`; nothing else has it.
    assert_no_secret_anywhere(&fleet, &secret, &[second.logs(), first.logs()], Cli::Skip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_is_refused_after_its_ttl() {
    let fleet = small_fleet(1).await;
    let before = now_ms();
    let token = fleet.create_join_token("2s", &[]).await;
    // The controller set the expiry at most 2 s after the request left: wait until the
    // clock is surely past it.
    let expired_at = before + 2_000 + 500;
    wait_until(
        Duration::from_secs(10),
        "the token's expiry to pass",
        || async { now_ms() > expired_at },
    )
    .await;

    let name = format!("{}-late", fleet.role());
    let late = ExtraAgent::spawn(&fleet, &name, &token);
    wait_line(
        LOG_TIMEOUT,
        "the late agent's refusal",
        || late.logs(),
        &["refused to enroll", "expired"],
    )
    .await;
    wait_line(
        LOG_TIMEOUT,
        "the controller's refusal of the expired token",
        || fleet.controller_logs(),
        &["token", "expired"],
    )
    .await;
    assert!(!late.state_dir.join("agent.crt").exists());
    let hosts = fleet.list_hosts().await.expect("hosts");
    assert!(!hosts.iter().any(|h| h.name == name), "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_is_refused_from_then_on_and_leaves_the_inventory() {
    let mut fleet = small_fleet(2).await;
    let gone = fleet.host(1).name.clone();
    let stays = fleet.host(0).name.clone();

    let run = fleet.drover(&["hosts", "remove", &gone]).await;
    assert_eq!(run.code, Some(0), "{}", run.describe());

    // Its stream is closed with the reason.
    let why = wait_line(
        LOG_TIMEOUT,
        "the removed agent's refusal",
        || fleet.agent_logs(1),
        &["removed from the fleet"],
    )
    .await;
    assert!(why.contains(&gone), "{why}");
    let listed = fleet.hosts_json().await;
    let names: Vec<&str> = listed.iter().filter_map(|h| h["name"].as_str()).collect();
    assert!(
        names.contains(&stays.as_str()) && !names.contains(&gone.as_str()),
        "drover hosts after removing {gone}: {names:?}"
    );

    // It dials again (a restarted agent dials at once; a running one backs off for up to
    // 30 s after a refusal) with its still unexpired certificate, and is refused: by this
    // controller, and by the next one, as the revocation is persisted.
    let refused = [
        "refused an agent stream",
        gone.as_str(),
        "removed from the fleet",
    ];
    for restart_controller in [false, true] {
        fleet.forget_agent(1);
        if restart_controller {
            fleet.restart_controller().await;
        }
        let before = count_lines(&fleet.controller_logs(), &refused);
        fleet.launch_agent(1).await;
        wait_until(
            LOG_TIMEOUT,
            "the controller to refuse the removed agent",
            || {
                let n = count_lines(&fleet.controller_logs(), &refused);
                async move { n > before }
            },
        )
        .await;
        let hosts = fleet.list_hosts().await.expect("hosts");
        assert!(!hosts.iter().any(|h| h.name == gone), "{hosts:?}");
    }
    eprintln!(
        "refusal: {}",
        find_line(&fleet.controller_logs(), &refused).unwrap_or_default()
    );
    fleet.forget_agent(1);
}

/// The agent renews its certificate before it expires, without a restart, and a
/// controller restart afterwards (a new handshake) works with the renewed certificate
/// only: the first one has expired by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_renews_its_certificate_without_a_restart() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 1,
        images: &[DemoImage::V1],
        initial: None,
        agent_cert_ttl: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await;
    let cert_path = fleet.agent_state_dir(0).join("agent.crt");
    let first = read_certificate(&cert_path).expect("the enrolled certificate");
    let pid = fleet.agent_pid(0).expect("agent running");
    let now_s = (now_ms() / 1000) as i64;
    assert!(
        first.not_after_unix - now_s <= 65,
        "the controller ignored --agent-cert-ttl 60s: expires in {} s",
        first.not_after_unix - now_s
    );

    let renewed = drover_tests::wait_for(
        Duration::from_secs(60),
        "the agent to renew its certificate",
        || async {
            match read_certificate(&cert_path) {
                Some(c) if c.serial != first.serial => Ok(c),
                Some(_) => Err("same serial".to_string()),
                None => Err("no readable certificate".to_string()),
            }
        },
    )
    .await;
    // Renewed at about two thirds of the lifetime (40 s): not at once, and once.
    assert!(
        renewed.not_after_unix - first.not_after_unix >= 20,
        "renewed {} s after issue, before half the lifetime",
        renewed.not_after_unix - first.not_after_unix
    );
    assert_eq!(renewed.identity, first.identity);
    let renewals = count_lines(
        &fleet.controller_logs(),
        &["renewed an agent certificate", &fleet.host(0).name],
    );
    assert!(
        (1..=2).contains(&renewals),
        "{renewals} renewals within one lifetime"
    );
    assert!(fleet.agent_running(0), "{}", fleet.agent_logs(0));
    assert_eq!(fleet.agent_pid(0), Some(pid), "the agent restarted");

    // Past the first certificate's expiry, only a renewed one can reconnect.
    let first_expired_ms = (first.not_after_unix as u64 + 1) * 1000;
    wait_until(
        Duration::from_secs(60),
        "the first certificate to expire",
        || async { now_ms() > first_expired_ms },
    )
    .await;
    fleet.restart_controller().await;
    assert_eq!(fleet.agent_pid(0), Some(pid), "the agent restarted");
    let hosts = fleet.list_hosts().await.expect("hosts");
    assert!(
        hosts
            .iter()
            .any(|h| h.name == fleet.host(0).name && h.connected),
        "{hosts:?}"
    );
}
