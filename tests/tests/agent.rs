//! End-to-end tests of `drover-agent`: the real binary, the real Docker engine, a real
//! registry with htpasswd auth, and a real stream to the controller's hub in-process.
//! Each test has its own host name, loopback address, registry and hub, so they run in
//! parallel; each cleans up through its [`Fixture`] even when it fails.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use drover_proto::v1::{ContainerState, ErrorKind, Phase, ServiceState, SwapResult};
use drover_shared::labels;
use drover_tests::commands::{
    self, demo_spec, expect_error, expect_inspect, expect_prepare, expect_rollback, expect_swap,
    http_ready,
};
use drover_tests::docker::{container_status, containers_with_label};
use drover_tests::{DemoImage, Fixture, TestController, http};

/// The service every test deploys.
const SERVICE: &str = "web";
/// Readiness deadline for versions that become ready.
const READY: Duration = Duration::from_secs(20);
/// Readiness deadline for versions that never do (kept short: the test waits it out).
const NOT_READY: Duration = Duration::from_secs(3);

/// Pushes and prepares `variant`, then swaps to it on `publish`; must succeed.
async fn deploy(fx: &Fixture, variant: DemoImage, publish: SocketAddr, epoch: u64) -> SwapResult {
    let (_, prepared) = fx.prepare(variant).await;
    let spec = demo_spec(SERVICE, &prepared.pinned, variant.version(), publish);
    let swapped = expect_swap(
        &fx.send(commands::swap(spec, http_ready(READY)), epoch)
            .await,
    );
    let current = swapped
        .current
        .clone()
        .expect("swap result names the current container");
    assert_eq!(current.version, variant.version());
    assert_eq!(current.state(), ContainerState::Running);
    swapped
}

/// What `GET /` answers on `publish` (must be 200).
async fn version_at(publish: SocketAddr) -> String {
    http::get_version(publish)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn managed_containers(fx: &Fixture) -> Vec<String> {
    containers_with_label(labels::AGENT, &fx.name).await
}

fn current(s: &SwapResult) -> ServiceState {
    s.current.clone().expect("current service state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_pulls_with_credentials_and_pins_the_digest() {
    let fx = Fixture::start().await;
    let host = fx.hub().host(&fx.name).expect("host known to the hub");
    assert_eq!(host.advertise_address, fx.host_ip.to_string());
    assert_eq!(host.labels.get("role").map(String::as_str), Some("web"));
    assert!(!host.agent_version.is_empty());
    assert_eq!(host.docker_error, None);

    let (pushed, first) = fx.prepare(DemoImage::V1).await;
    assert_eq!(first.image, pushed.reference);
    assert_eq!(
        first.digest, pushed.digest,
        "the digest the registry stored"
    );
    assert_eq!(
        first.pinned,
        format!("{}/demo@{}", fx.registry.host(), pushed.digest)
    );
    assert!(first.pulled, "the image was not present locally: {first:?}");
    assert!(
        inspect_image(&first.pinned).await,
        "{} not present after Prepare",
        first.pinned
    );

    let again = fx
        .send(
            commands::prepare(&pushed.reference, Some(fx.registry.auth())),
            1,
        )
        .await;
    let again = expect_prepare(&again);
    assert_eq!(
        (again.digest.as_str(), again.pinned.as_str()),
        (first.digest.as_str(), first.pinned.as_str())
    );
    assert!(
        !again.pulled,
        "second Prepare of a present digest must not pull: {again:?}"
    );
}

async fn inspect_image(reference: &str) -> bool {
    drover_tests::docker::docker(&["image", "inspect", reference])
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_with_wrong_credentials_is_registry_auth_and_hides_the_password() {
    let fx = Fixture::start().await;
    let pushed = fx.registry.push_demo(DemoImage::V1).await;
    let mut auth = fx.registry.auth();
    auth.password = format!("wrong-{:x}", rand::random::<u64>());
    let wrong = auth.password.clone();
    let r = fx
        .send(commands::prepare(&pushed.reference, Some(auth)), 1)
        .await;
    let e = expect_error(&r, ErrorKind::RegistryAuth);
    assert!(
        e.message.contains(&fx.registry.host()),
        "names the registry: {}",
        e.message
    );
    for secret in [wrong.as_str(), fx.registry.password()] {
        assert!(
            !e.message.contains(secret),
            "the error leaks a password: {}",
            e.message
        );
        assert!(
            !fx.agent_logs().contains(secret),
            "the agent logs a password:\n{}",
            fx.agent_logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_of_a_missing_image_is_image_not_found() {
    let fx = Fixture::start().await;
    let missing = format!("{}/demo:nope", fx.registry.host());
    let r = fx
        .send(commands::prepare(&missing, Some(fx.registry.auth())), 1)
        .await;
    let e = expect_error(&r, ErrorKind::ImageNotFound);
    assert!(
        e.message.contains(&missing),
        "names the image: {}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_of_an_unparsable_reference_is_invalid_argument() {
    let fx = Fixture::start().await;
    let bad = "Demo App:v1";
    let r = fx.send(commands::prepare(bad, None), 1).await;
    let e = expect_error(&r, ErrorKind::InvalidArgument);
    assert!(
        e.message.contains(bad),
        "names the reference: {}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_v1_to_v2_serves_v2_and_keeps_v1_stopped() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    assert_eq!(version_at(publish).await, "version=v1\n");

    let swapped = deploy(&fx, DemoImage::V2, publish, 1).await;
    let v2 = current(&swapped);
    assert_eq!(version_at(publish).await, "version=v2\n");
    assert!(
        [&v1.container_id, &v1.container_name].contains(&&swapped.previous_container),
        "previous_container {:?} is not the v1 container {v1:?}",
        swapped.previous_container
    );
    assert_eq!(
        container_status(&v1.container_id).await.as_deref(),
        Some("exited"),
        "v1 is kept, stopped"
    );
    assert_eq!(
        container_status(&v2.container_id).await.as_deref(),
        Some("running")
    );

    let inspected = expect_inspect(&fx.send(commands::inspect(SERVICE), 1).await);
    let web = inspected
        .services
        .iter()
        .find(|s| s.service == SERVICE)
        .unwrap_or_else(|| panic!("no {SERVICE} in {inspected:?}"));
    assert_eq!(
        (web.version.as_str(), web.state()),
        ("v2", ContainerState::Running)
    );
    assert_eq!(web.container_id, v2.container_id);
    assert!(
        web.previous
            .iter()
            .any(|k| k.container_id == v1.container_id && k.version == "v1"),
        "v1 not among the kept containers: {:?}",
        web.previous
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_to_a_never_ready_version_restores_v1() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    let (_, bad) = fx.prepare(DemoImage::NeverReady).await;

    let spec = demo_spec(SERVICE, &bad.pinned, "never-ready", publish);
    let r = fx
        .send(commands::swap(spec, http_ready(NOT_READY)), 1)
        .await;
    let e = expect_error(&r, ErrorKind::ReadinessFailed);
    assert!(
        e.log_tail.iter().any(|l| l.contains("mode=never-ready")),
        "log_tail shows the new container's log: {:?}",
        e.log_tail
    );
    let restored = e.restored.expect("the error says what runs now");
    assert_eq!(
        (restored.version.as_str(), restored.state()),
        ("v1", ContainerState::Running)
    );
    assert_eq!(version_at(publish).await, "version=v1\n");
    assert_eq!(
        managed_containers(&fx).await,
        vec![v1.container_id.clone()],
        "the failed container is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_to_a_crashing_version_restores_v1_with_the_crash_in_the_log_tail() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    let (_, bad) = fx.prepare(DemoImage::Crash).await;

    let spec = demo_spec(SERVICE, &bad.pinned, "crash", publish);
    let r = fx
        .send(commands::swap(spec, http_ready(NOT_READY)), 1)
        .await;
    let e = r.error.clone().expect("the swap must fail");
    let kind = ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::Unspecified);
    assert!(
        matches!(
            kind,
            ErrorKind::ContainerExited | ErrorKind::ReadinessFailed
        ),
        "expected CONTAINER_EXITED or READINESS_FAILED, got {kind:?}: {}",
        e.message
    );
    assert!(
        e.log_tail.iter().any(|l| l.contains("crashing at start")),
        "log_tail has the crash line: {:?}",
        e.log_tail
    );
    let restored = e.restored.expect("the error says what runs now");
    assert_eq!(
        (restored.version.as_str(), restored.state()),
        ("v1", ContainerState::Running)
    );
    assert_eq!(version_at(publish).await, "version=v1\n");
    assert_eq!(
        managed_containers(&fx).await,
        vec![v1.container_id.clone()],
        "the failed container is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_onto_a_taken_port_is_port_in_use_and_leaves_v1_running() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    let (_, v2) = fx.prepare(DemoImage::V2).await;

    let taken = TcpListener::bind((fx.host_ip, 0)).expect("bind a port to take");
    let taken_addr = taken.local_addr().unwrap();
    let spec = demo_spec(SERVICE, &v2.pinned, "v2", taken_addr);
    let r = fx.send(commands::swap(spec, http_ready(READY)), 1).await;
    let e = expect_error(&r, ErrorKind::PortInUse);
    assert!(
        e.message.contains(&taken_addr.to_string()),
        "names {taken_addr}: {}",
        e.message
    );

    assert_eq!(version_at(publish).await, "version=v1\n");
    assert_eq!(
        container_status(&v1.container_id).await.as_deref(),
        Some("running")
    );
    assert_eq!(
        managed_containers(&fx).await,
        vec![v1.container_id.clone()],
        "no leftover v2 container"
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_to_the_kept_v1_without_pulling() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    deploy(&fx, DemoImage::V2, publish, 1).await;

    let mut progress = fx.hub().progress();
    let cmd = commands::command(
        commands::rollback(SERVICE, http_ready(READY)),
        &fx.deployment,
        1,
    );
    let r = fx.send_command(cmd.clone()).await;
    let back = expect_rollback(&r);
    let now = back
        .current
        .expect("rollback result names the current container");
    assert_eq!(
        (now.version.as_str(), now.state()),
        ("v1", ContainerState::Running)
    );
    assert_eq!(
        now.container_id, v1.container_id,
        "a rollback restarts the kept container"
    );
    assert_eq!(version_at(publish).await, "version=v1\n");

    let mut phases = vec![];
    while let Ok((host, p)) = progress.try_recv() {
        if host == fx.name && p.command_id == cmd.command_id {
            phases.push(p.phase());
        }
    }
    assert!(
        !phases.contains(&Phase::Pulling),
        "a rollback must not pull: {phases:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_command_id_gets_the_first_result_and_does_the_work_once() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    deploy(&fx, DemoImage::V1, publish, 1).await;
    let (_, v2) = fx.prepare(DemoImage::V2).await;

    let spec = demo_spec(SERVICE, &v2.pinned, "v2", publish);
    let cmd = commands::command(commands::swap(spec, http_ready(READY)), &fx.deployment, 1);
    let first = fx.send_command(cmd.clone()).await;
    expect_swap(&first);
    let containers = managed_containers(&fx).await;
    let again = fx.send_command(cmd).await;
    assert_eq!(
        again, first,
        "a repeated id is answered with the first result"
    );
    assert_eq!(
        managed_containers(&fx).await,
        containers,
        "no container created by the repeat"
    );
    assert_eq!(version_at(publish).await, "version=v2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_is_refused_and_changes_nothing() {
    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    // Both images are prepared first (at epoch 1): after epoch 5, epoch 1 is stale too.
    let (_, v2) = fx.prepare(DemoImage::V2).await;
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 5).await);

    let spec = demo_spec(SERVICE, &v2.pinned, "v2", publish);
    let r = fx.send(commands::swap(spec, http_ready(READY)), 3).await;
    let e = expect_error(&r, ErrorKind::StaleEpoch);
    assert!(
        e.message.contains('3') && e.message.contains('5'),
        "names both epochs: {}",
        e.message
    );
    assert_eq!(version_at(publish).await, "version=v1\n");
    assert_eq!(managed_containers(&fx).await, vec![v1.container_id.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_adopts_the_running_service() {
    let mut fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let v1 = current(&deploy(&fx, DemoImage::V1, publish, 1).await);
    let (_, v2) = fx.prepare(DemoImage::V2).await;
    let spec = demo_spec(SERVICE, &v2.pinned, "v2", publish);
    let swap = commands::command(commands::swap(spec, http_ready(READY)), &fx.deployment, 1);
    let first = expect_swap(&fx.send_command(swap.clone()).await);
    let containers = managed_containers(&fx).await;
    let session = fx.hub().host(&fx.name).unwrap().session;

    let mut agent = fx.agent.take().unwrap();
    let (status, killed) = agent.stop(Duration::from_secs(15));
    assert!(
        !killed && status.is_some_and(|s| s.success()),
        "agent exit on SIGTERM: {status:?}\n{}",
        agent.logs()
    );
    drop(agent);
    assert_eq!(
        version_at(publish).await,
        "version=v2\n",
        "stopping the agent never stops the app"
    );

    fx.start_agent();
    let host = fx.wait_session_above(session).await;
    let web = host
        .services
        .iter()
        .find(|s| s.service == SERVICE)
        .unwrap_or_else(|| {
            panic!(
                "the hello after restart lacks {SERVICE}: {:?}",
                host.services
            )
        });
    assert_eq!(
        (web.version.as_str(), web.state()),
        ("v2", ContainerState::Running)
    );
    assert_eq!(web.container_id, current(&first).container_id);
    assert!(
        web.previous
            .iter()
            .any(|k| k.container_id == v1.container_id),
        "{:?}",
        web.previous
    );

    let again = expect_swap(&fx.send_command(swap).await);
    assert_eq!(current(&again).container_id, current(&first).container_id);
    assert_eq!(
        managed_containers(&fx).await,
        containers,
        "the repeat after restart created nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_docker_engine_is_reported_not_fatal() {
    let socket = "/nonexistent/docker.sock";
    let fx = Fixture::start_with(&["--docker-host", &format!("unix://{socket}")]).await;
    let host = fx.hub().host(&fx.name).unwrap();
    let docker_error = host
        .docker_error
        .expect("the hello reports the Docker error");
    assert!(
        docker_error.contains(socket),
        "names the socket: {docker_error}"
    );

    let image = format!("{}/demo:v1", fx.registry.host());
    let r = fx
        .send(commands::prepare(&image, Some(fx.registry.auth())), 1)
        .await;
    let e = expect_error(&r, ErrorKind::DockerUnavailable);
    assert!(
        e.message.contains(socket),
        "names the socket: {}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reconnects_when_the_controller_comes_back() {
    let mut fx = Fixture::start().await;
    let session = fx.hub().host(&fx.name).unwrap().session;
    let gone = fx.controller.take().unwrap();
    let (addr, hub, ca) = (gone.addr, gone.hub.clone(), gone.ca.clone());
    drop(gone);
    assert!(
        fx.agent.as_mut().unwrap().exited().is_none(),
        "the agent survives losing the controller"
    );

    fx.controller = Some(TestController::start_on(addr, hub, ca).await);
    fx.wait_session_above(session).await;
    // Commands flow again on the new stream.
    expect_inspect(&fx.send(commands::inspect(""), 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_on_one_engine_run_the_same_service_side_by_side() {
    // Two agents on one engine (how the fleet tests simulate hosts) both run service
    // `web` without their containers colliding.
    let fx = Fixture::start().await;
    let other = Fixture::start().await;
    let (a, b) = (fx.publish_addr(), other.publish_addr());
    deploy(&fx, DemoImage::V1, a, 1).await;
    deploy(&other, DemoImage::V2, b, 1).await;
    assert_eq!(version_at(a).await, "version=v1\n");
    assert_eq!(version_at(b).await, "version=v2\n");
    let (x, y) = (
        managed_containers(&fx).await,
        managed_containers(&other).await,
    );
    assert!(
        x.len() == 1 && y.len() == 1 && x != y,
        "one container per agent: {x:?} {y:?}"
    );
}

/// `docker inspect` of the one container of `service` the agent runs now.
async fn running_container(fx: &Fixture) -> serde_json::Value {
    for id in managed_containers(fx).await {
        if container_status(&id).await.as_deref() == Some("running") {
            return drover_tests::docker::inspect_container(&id)
                .await
                .expect("inspect the running container");
        }
    }
    panic!("no running container of {}", fx.name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_are_mounted_read_only_and_leave_with_their_container() {
    use drover_proto::v1::{SecretDelivery, SecretValue, Secrets, command};
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;

    let fx = Fixture::start().await;
    let publish = fx.publish_addr();
    let (_, v1) = fx.prepare(DemoImage::V1).await;
    let value = format!("agent-secret-{:032x}", rand::random::<u128>());
    let mut swap = commands::swap(
        demo_spec(SERVICE, &v1.pinned, "v1", publish),
        http_ready(READY),
    );
    if let command::Kind::Swap(s) = &mut swap {
        s.secrets = Some(Secrets {
            delivery: SecretDelivery::Files as i32,
            mount_path: "/run/secrets".into(),
            values: vec![SecretValue {
                name: "DB_PASSWORD".into(),
                value: value.clone().into_bytes(),
            }],
        });
    }
    expect_swap(&fx.send(swap, 1).await);

    let answer = http::get(publish, "/file/run/secrets/DB_PASSWORD")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = format!(
        "sha256={} len={}\n",
        hex::encode(Sha256::digest(value.as_bytes())),
        value.len()
    );
    assert_eq!((answer.status, answer.body.as_str()), (200, want.as_str()));
    assert_eq!(
        http::get(publish, "/env/DB_PASSWORD")
            .await
            .map(|r| r.status),
        Ok(404),
        "files mode puts nothing in the environment"
    );

    let container = running_container(&fx).await;
    let name = container["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string();
    let root = fx
        .agent
        .as_ref()
        .expect("agent")
        .secrets_dir()
        .to_path_buf();
    let dir = root.join(&name);
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&root), 0o700, "{}", root.display());
    assert_eq!(mode(&dir), 0o755, "{}", dir.display());
    assert_eq!(mode(&dir.join("DB_PASSWORD")), 0o444);
    let mount = container["Mounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["Destination"] == "/run/secrets"))
        .unwrap_or_else(|| panic!("no /run/secrets mount: {}", container["Mounts"]));
    assert_eq!(mount["RW"], false, "{mount}");
    assert!(
        !container.to_string().contains(&value),
        "docker inspect shows the secret"
    );

    // v2 replaces it, keeping it stopped for a rollback: its secrets stay. The next swap
    // (keeping one) removes it, and its secrets with it.
    let (_, v2) = fx.prepare(DemoImage::V2).await;
    for (pinned, version) in [(&v2.pinned, "v2"), (&v1.pinned, "v1-again")] {
        let mut swap = commands::swap(
            demo_spec(SERVICE, pinned, version, publish),
            http_ready(READY),
        );
        if let command::Kind::Swap(s) = &mut swap {
            s.keep_previous = 1;
        }
        expect_swap(&fx.send(swap, 1).await);
        if version == "v2" {
            assert!(
                dir.join("DB_PASSWORD").is_file(),
                "the kept container lost its secrets"
            );
        }
    }
    drover_tests::wait_until(
        Duration::from_secs(20),
        "the removed container's secrets to be removed",
        || {
            let dir = dir.clone();
            async move { !dir.exists() }
        },
    )
    .await;
    assert!(
        !fx.agent_logs().contains(&value),
        "the agent logged the secret"
    );
}
