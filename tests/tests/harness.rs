//! Self-tests of the harness and of the demo app's images: if these fail, the agent
//! tests cannot mean anything. Real Docker, real registry, real processes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use drover_tests::docker::{DockerCleanup, docker, inspect_container};
use drover_tests::process::ChildGuard;
use drover_tests::{
    DemoImage, Registry, ensure_demo_images, free_port, http, images, loopback_host, unique_name,
    wait_for,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn demo_images() {
    tokio::task::spawn_blocking(ensure_demo_images)
        .await
        .unwrap();
}

/// Runs a demo image as a container labelled so that `cleanup` removes it.
async fn run_demo(variant: DemoImage, owner: &str, publish: SocketAddr) -> String {
    let label = format!("{}={owner}", drover_shared::labels::AGENT);
    let port = format!("{}:{}:8080", publish.ip(), publish.port());
    let out = docker(&[
        "run",
        "-d",
        "--label",
        &label,
        "-p",
        &port,
        &variant.local_ref(),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    out.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_requires_auth_and_accepts_a_push() {
    demo_images().await;
    let registry = Registry::start().await;
    let pushed = registry.push_demo(DemoImage::V1).await;
    assert!(
        pushed.digest.starts_with("sha256:") && pushed.digest.len() == 71,
        "{pushed:?}"
    );
    assert!(
        docker(&["image", "inspect", &pushed.reference])
            .await
            .is_err(),
        "the pushed tag must be removed locally so that the agent has to pull"
    );
    // Anonymous pulls are refused: the registry really checks credentials.
    let anonymous = tempfile::tempdir().unwrap();
    let config = anonymous.path().to_string_lossy().into_owned();
    let err = docker(&["--config", &config, "pull", &pushed.reference])
        .await
        .unwrap_err();
    assert!(
        err.contains("no basic auth credentials") || err.contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_image_answers_its_version_and_stops_at_once_on_sigterm() {
    demo_images().await;
    let owner = unique_name("t");
    let _cleanup = DockerCleanup::for_agent(&owner);
    let ip = loopback_host();
    let publish = SocketAddr::from((ip, free_port(ip)));
    let id = run_demo(DemoImage::V2, &owner, publish).await;

    let answer = wait_for(Duration::from_secs(10), "the demo app to answer", || {
        http::get(publish, "/")
    })
    .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "version=v2\n"));
    assert_eq!(answer.header("X-Version"), Some("v2"));
    assert_eq!(http::get(publish, "/ready").await.unwrap().status, 200);
    assert_eq!(http::get(publish, "/health").await.unwrap().status, 200);

    // As PID 1 it must handle SIGTERM itself, or docker stop waits the full 10 s.
    let started = Instant::now();
    docker(&["stop", "-t", "10", &id]).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "docker stop took {:?}",
        started.elapsed()
    );
    let state = inspect_container(&id).await.unwrap();
    assert_eq!(state["State"]["ExitCode"], 0, "{}", state["State"]);
    let logs = docker(&["logs", &id]).await.unwrap();
    assert!(
        logs.contains("stopping") && logs.contains("stopped"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_image_exits_with_an_error_line() {
    demo_images().await;
    let owner = unique_name("t");
    let _cleanup = DockerCleanup::for_agent(&owner);
    let ip = loopback_host();
    let id = run_demo(
        DemoImage::Crash,
        &owner,
        SocketAddr::from((ip, free_port(ip))),
    )
    .await;
    let exit = wait_for(
        Duration::from_secs(10),
        "the crash container to exit",
        || async {
            let c = inspect_container(&id).await.ok_or("container missing")?;
            match c["State"]["Status"].as_str() {
                Some("exited") => Ok(c["State"]["ExitCode"].as_i64()),
                other => Err(format!("status {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(exit, Some(1));
    let err = tokio::process::Command::new("docker")
        .args(["logs", &id])
        .output()
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("crashing at start"),
        "{err:?}"
    );
}

/// Reads one response with a Content-Length from a keep-alive connection.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).await.unwrap(),
            1,
            "connection closed: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    head + &String::from_utf8(body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_app_serves_many_requests_per_connection_and_drains_on_sigterm() {
    let ip = loopback_host();
    let port = free_port(ip);
    let addr = SocketAddr::from((ip, port));
    let (ip_s, port_s) = (ip.to_string(), port.to_string());
    let env = [
        ("DEMO_VERSION", "v5"),
        ("DEMO_ADDR", ip_s.as_str()),
        ("DEMO_PORT", port_s.as_str()),
    ];
    let mut app = ChildGuard::spawn("demo-app", &images::demo_binary(), Vec::<&str>::new(), &env);
    wait_for(Duration::from_secs(10), "demo-app to listen", || {
        http::get(addr, "/health")
    })
    .await;

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    for path in ["/", "/ready", "/"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let resp = read_response(&mut conn).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(!resp.contains("Connection: close"), "{resp}");
    }
    conn.write_all(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let last = read_response(&mut conn).await;
    assert!(
        last.contains("Connection: close") && last.ends_with("version=v5\n"),
        "{last}"
    );
    assert_eq!(
        conn.read(&mut [0u8; 1]).await.unwrap(),
        0,
        "closed after Connection: close"
    );

    // An idle keep-alive connection must not hold the shutdown up.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    read_response(&mut idle).await;
    let started = Instant::now();
    let (status, killed) = app.stop(Duration::from_secs(5));
    assert!(
        !killed && status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        app.logs()
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drain took {:?}",
        started.elapsed()
    );
    assert_eq!(
        idle.read(&mut [0u8; 1]).await.unwrap_or(0),
        0,
        "idle connection closed"
    );
    assert!(http::get(addr, "/").await.is_err(), "no longer accepting");
}

/// Starts the demo binary on a fresh loopback address with `mode`.
fn spawn_demo(mode: &str) -> (ChildGuard, SocketAddr) {
    let ip = loopback_host();
    let addr = SocketAddr::from((ip, free_port(ip)));
    let (ip_s, port_s) = (ip.to_string(), addr.port().to_string());
    let env = [
        ("DEMO_VERSION", "v3"),
        ("DEMO_MODE", mode),
        ("DEMO_ADDR", ip_s.as_str()),
        ("DEMO_PORT", port_s.as_str()),
    ];
    let app = ChildGuard::spawn(
        &format!("demo-app {mode}"),
        &images::demo_binary(),
        Vec::<&str>::new(),
        &env,
    );
    (app, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_app_error_rate_fails_that_share_of_requests() {
    let (_app, addr) = spawn_demo("error-rate:20");
    wait_for(Duration::from_secs(10), "demo-app to listen", || {
        http::get(addr, "/health")
    })
    .await;
    let mut statuses = vec![];
    for _ in 0..10 {
        statuses.push(http::get(addr, "/").await.unwrap().status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 500, 200, 200, 200, 200, 500]);
    assert_eq!(http::get(addr, "/ready").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_app_crash_after_is_ready_then_exits_1() {
    let (mut app, addr) = spawn_demo("crash-after:500");
    wait_for(Duration::from_secs(10), "demo-app to be ready", || {
        http::get(addr, "/ready")
    })
    .await;
    let status = wait_for(Duration::from_secs(10), "demo-app to crash", || {
        let status = app.try_exit_status();
        async move { status.ok_or("still running") }
    })
    .await;
    assert_eq!(status.code(), Some(1));
    assert!(
        app.logs().contains("crashing 500ms after start"),
        "{}",
        app.logs()
    );
}
