//! Smoke test of the commands against the REAL Docker engine and a REAL local registry
//! (no gRPC; the end-to-end tests in tests/ drive the binary over the stream).
//!
//! Ignored by default. Needs a registry on loopback with htpasswd auth holding an image
//! `<registry>/smoke/app:v1` whose entrypoint serves HTTP on $PORT (answers 200 with
//! $VERSION, 503 when NOTREADY is set, exits 3 when CRASH is set). Run with:
//!
//! ```text
//! SMOKE_REGISTRY=127.0.0.1:5055 SMOKE_USER=smoke SMOKE_PASS=s3cret \
//!   cargo test -p drover-agent --test docker_smoke -- --ignored --nocapture
//! ```
//!
//! Every container it creates carries a unique drover.agent label and is removed by a
//! guard, even when the test fails.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use drover_agent::commands::{self, CommandContext, Job};
use drover_agent::docker::DockerRuntime;
use drover_agent::runtime::ContainerRuntime;
use drover_shared::proto::{
    ContainerSpec, ErrorKind, Fence, HttpProbe, InspectCommand, PortMapping, PrepareCommand,
    ReadinessProbe, RegistryAuth, RollbackCommand, SwapCommand, command, command_result,
    readiness_probe,
};

/// Removes every container of the test's agent when dropped.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=drover.agent={}", self.0),
            ])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(String::from)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .arg("rm")
                    .arg("-f")
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().last().map(str::to_string)
}

struct Smoke {
    ctx: CommandContext<DockerRuntime>,
    fence: Fence,
    n: usize,
}

impl Smoke {
    async fn run(
        &mut self,
        kind: command::Kind,
    ) -> Result<command_result::Output, drover_agent::CommandFailure> {
        self.n += 1;
        let job = Job::new(&format!("smoke-{}", self.n), None);
        let (output, tidy) = commands::execute(&self.ctx, &job, &self.fence, kind).await?;
        if let Some(tidy) = tidy {
            tidy.run(&self.ctx).await;
        }
        Ok(output)
    }
}

fn swap(
    image: &str,
    version: &str,
    port: u16,
    extra_env: &[(&str, &str)],
    deadline_ms: u64,
) -> command::Kind {
    let mut env: HashMap<String, String> = HashMap::from([
        ("VERSION".into(), version.into()),
        ("PORT".into(), "8080".into()),
    ]);
    for (k, v) in extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    command::Kind::Swap(SwapCommand {
        spec: Some(ContainerSpec {
            service: "web".into(),
            image: image.into(),
            version: version.into(),
            env,
            ports: vec![PortMapping {
                container_port: 8080,
                host_ip: "127.0.0.1".into(),
                host_port: u32::from(port),
                protocol: "tcp".into(),
            }],
            ..Default::default()
        }),
        readiness: Some(ReadinessProbe {
            kind: Some(readiness_probe::Kind::Http(HttpProbe {
                path: "/".into(),
                expected_status: 200,
                port: 8080,
            })),
            interval_ms: 100,
            deadline_ms,
            success_threshold: 2,
            ..Default::default()
        }),
        stop_timeout_ms: 2000,
        keep_previous: 2,
        secrets: None,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Docker and a local registry: see the module docs"]
async fn commands_against_real_docker() {
    let (Some(registry), Some(user), Some(pass)) =
        (env("SMOKE_REGISTRY"), env("SMOKE_USER"), env("SMOKE_PASS"))
    else {
        panic!("set SMOKE_REGISTRY, SMOKE_USER and SMOKE_PASS");
    };
    let agent = format!("smoke-{:06x}", rand::random::<u32>() & 0xffffff);
    let _cleanup = Cleanup(agent.clone());
    let mut s = Smoke {
        ctx: CommandContext {
            runtime: Arc::new(DockerRuntime::new("unix:///var/run/docker.sock")),
            agent: agent.clone(),
            keep_previous: 3,
            secrets: drover_agent::secrets::SecretsDir::new("/dev/shm/drover-smoke-secrets"),
            ready: drover_agent::commands::record::ReadyRecords::new(std::path::Path::new(
                "/dev/shm/drover-smoke-state",
            )),
        },
        fence: Fence {
            deployment_id: "smoke".into(),
            epoch: 1,
        },
        n: 0,
    };
    s.ctx.runtime.ping().await.expect("Docker must run");
    let image = format!("{registry}/smoke/app:v1");
    let auth = |p: &str| {
        Some(RegistryAuth {
            username: user.clone(),
            password: p.into(),
            server: String::new(),
        })
    };
    let prepare = |image: &str, auth| {
        command::Kind::Prepare(PrepareCommand {
            image: image.into(),
            auth,
            timeout_ms: 60_000,
        })
    };

    // Registry errors.
    let e = s.run(prepare(&image, auth("wrong"))).await.unwrap_err();
    println!("wrong password: {:?}: {}", e.kind, e.message);
    assert_eq!(e.kind, ErrorKind::RegistryAuth);
    assert!(
        e.message.contains(&format!(
            "registry {registry} refused the credentials for user '{user}'"
        )),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong"));
    let e = s
        .run(prepare(&format!("{registry}/smoke/nope:v1"), auth(&pass)))
        .await
        .unwrap_err();
    println!("missing image: {:?}: {}", e.kind, e.message);
    assert_eq!(e.kind, ErrorKind::ImageNotFound);
    let e = s
        .run(prepare("127.0.0.1:1/smoke/app:v1", None))
        .await
        .unwrap_err();
    println!("no registry: {:?}: {}", e.kind, e.message);
    assert_eq!(e.kind, ErrorKind::RegistryUnavailable);
    let e = s.run(prepare("Bad Image", None)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);

    // Prepare for real.
    let Ok(command_result::Output::Prepare(p)) = s.run(prepare(&image, auth(&pass))).await else {
        panic!("prepare failed")
    };
    println!("prepared: {p:?}");
    assert!(p.digest.starts_with("sha256:"));
    let pinned = p.pinned.clone();
    let Ok(command_result::Output::Prepare(p2)) = s.run(prepare(&image, auth(&pass))).await else {
        panic!("prepare failed")
    };
    assert!(!p2.pulled, "second prepare must not pull");

    // Unprepared image.
    let e = s
        .run(swap(
            &format!("{registry}/smoke/other:v1"),
            "v0",
            free_port(),
            &[],
            5000,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::ImageNotFound);
    assert!(e.message.contains("send Prepare first"), "{}", e.message);

    let port = free_port();
    // First deploy, then a second version.
    let Ok(command_result::Output::Swap(r)) = s.run(swap(&pinned, "v1", port, &[], 10_000)).await
    else {
        panic!("swap v1 failed")
    };
    println!("v1 ready after {} ms", r.ready_after_ms);
    assert_eq!(get(port).await.as_deref(), Some("v1"));
    let r = s.run(swap(&pinned, "v2", port, &[], 10_000)).await;
    let Ok(command_result::Output::Swap(r)) = r else {
        panic!("swap v2 failed: {r:?}")
    };
    assert_eq!(get(port).await.as_deref(), Some("v2"));
    let cur = r.current.unwrap();
    assert_eq!(cur.version, "v2");
    assert_eq!(cur.previous.len(), 1);
    assert!(!r.previous_container.is_empty());

    // A crashing version: CONTAINER_EXITED, log tail, v2 restored.
    let e = s
        .run(swap(&pinned, "v3", port, &[("CRASH", "1")], 10_000))
        .await
        .unwrap_err();
    println!("crash: {:?}: {} / {:?}", e.kind, e.message, e.log_tail);
    assert_eq!(e.kind, ErrorKind::ContainerExited);
    assert!(
        e.log_tail.iter().any(|l| l.contains("crashing on purpose")),
        "{:?}",
        e.log_tail
    );
    assert_eq!(e.restored.as_ref().unwrap().version, "v2");
    assert_eq!(get(port).await.as_deref(), Some("v2"));

    // A version that never gets ready: READINESS_FAILED, v2 restored.
    let e = s
        .run(swap(&pinned, "v4", port, &[("NOTREADY", "1")], 1500))
        .await
        .unwrap_err();
    println!("not ready: {:?}: {}", e.kind, e.message);
    assert_eq!(e.kind, ErrorKind::ReadinessFailed);
    assert_eq!(get(port).await.as_deref(), Some("v2"));

    // Port held by someone else: nothing touched.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let mut k = swap(&pinned, "v5", port, &[], 5000);
    if let command::Kind::Swap(sw) = &mut k {
        sw.spec.as_mut().unwrap().ports.push(PortMapping {
            container_port: 9090,
            host_ip: "127.0.0.1".into(),
            host_port: u32::from(taken),
            protocol: String::new(),
        });
    }
    let e = s.run(k).await.unwrap_err();
    println!("port: {:?}: {}", e.kind, e.message);
    assert_eq!(e.kind, ErrorKind::PortInUse);
    assert!(e.message.contains(&format!("127.0.0.1:{taken}")));
    assert_eq!(get(port).await.as_deref(), Some("v2"));

    // Rollback to v1.
    let rb = command::Kind::Rollback(RollbackCommand {
        service: "web".into(),
        readiness: None,
        stop_timeout_ms: 2000,
        to_version: String::new(),
        start_first: None,
    });
    let r = s.run(rb).await;
    let Ok(command_result::Output::Rollback(r)) = r else {
        panic!("rollback failed: {r:?}")
    };
    assert_eq!(r.current.as_ref().unwrap().version, "v1");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(get(port).await.as_deref(), Some("v1"));
    let e = s
        .run(command::Kind::Rollback(RollbackCommand {
            service: "web".into(),
            to_version: "v9".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NothingToRollBack);
    println!("nothing: {}", e.message);

    let Ok(command_result::Output::Inspect(i)) = s
        .run(command::Kind::Inspect(InspectCommand::default()))
        .await
    else {
        panic!()
    };
    println!("inspect: {i:?}");
    assert_eq!(i.services.len(), 1);
    assert_eq!(i.services[0].version, "v1");
    assert_eq!(i.services[0].previous[0].version, "v2");
}
