//! Exec hooks over the in-memory FAKE runtime: which container is exec'd in and with
//! what, the exit code and redacted output, the timeout and the `kill` by a second exec,
//! and what is said when the process cannot be killed. Real Docker is exercised by the
//! end-to-end tests (`tests/tests/hooks.rs`).

use std::sync::Arc;

use drover_shared::proto::{
    ContainerSpec, Fence, RunHookCommand, SecretValue, Secrets, SwapCommand,
};

use crate::commands::{CommandContext, Job, hook, swap};
use crate::runtime::{LogFrame, LogOutput};
use crate::testing::{FakeExec, FakeRuntime};

const SECRET: &str = "hunter2-exec-secret";

struct Fixture {
    ctx: CommandContext<FakeRuntime>,
    rt: Arc<FakeRuntime>,
    _dir: tempfile::TempDir,
}

/// A host running v1 of service `web` (swapped in through the fake).
async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let rt = Arc::new(FakeRuntime::new());
    rt.add_image("app:v1");
    let ctx = crate::testing::context(&rt, dir.path(), "tmpfs");
    let swapped = swap::swap(
        &ctx,
        &Job::new("s1", None),
        &Fence::default(),
        SwapCommand {
            spec: Some(spec("app:v1", vec![])),
            ..Default::default()
        },
    )
    .await;
    assert!(swapped.is_ok(), "{swapped:?}");
    Fixture { ctx, rt, _dir: dir }
}

fn spec(image: &str, command: Vec<String>) -> ContainerSpec {
    ContainerSpec {
        service: "web".into(),
        image: image.into(),
        version: "v1".into(),
        command,
        env: [("DROVER_HOST".to_string(), "h1".to_string())].into(),
        ..Default::default()
    }
}

fn frame(text: &str) -> LogFrame {
    LogFrame {
        output: LogOutput::Stdout,
        bytes: text.as_bytes().to_vec(),
    }
}

impl Fixture {
    async fn run(
        &self,
        image: &str,
        timeout_ms: u64,
    ) -> Result<drover_shared::proto::RunHookResult, crate::error::CommandFailure> {
        let cmd = RunHookCommand {
            hook: "check".into(),
            spec: Some(spec(image, vec!["/demo-app".into(), "check".into()])),
            secrets: Some(Secrets {
                values: vec![SecretValue {
                    name: "DB_PASSWORD".into(),
                    value: SECRET.as_bytes().to_vec(),
                }],
                ..Default::default()
            }),
            timeout_ms,
            exec: true,
            auth: None,
        };
        hook::run_hook(&self.ctx, &Job::new("h1", None), &Fence::default(), cmd).await
    }

    fn execs(&self) -> Vec<(String, Vec<String>)> {
        self.rt
            .execs
            .lock()
            .unwrap()
            .iter()
            .map(|(c, s)| (c.clone(), s.argv.clone()))
            .collect()
    }

    fn serving(&self) -> String {
        self.rt
            .containers()
            .into_iter()
            .find(|c| c.state == crate::runtime::RunState::Running)
            .map(|c| c.id)
            .expect("a running container")
    }
}

#[tokio::test]
async fn an_exec_runs_in_the_service_container_with_its_exit_code_and_redacted_output() {
    let f = fixture().await;
    *f.rt.exec_behaviour.lock().unwrap() = FakeExec::Exit(
        4,
        vec![
            frame(&format!("check: FAILED with {SECRET}\n")),
            frame("part"),
        ],
    );
    let r = f.run("app:v1", 30_000).await.expect("a result");
    assert_eq!((r.exit_code, r.timed_out), (4, false));
    assert_eq!(r.output, "check: FAILED with [redacted]\npart\n");
    assert_eq!(
        f.execs(),
        vec![(f.serving(), vec!["/demo-app".into(), "check".into()])]
    );
    let env = f.rt.execs.lock().unwrap()[0].1.env.clone();
    assert!(env.contains(&"DROVER_HOST=h1".to_string()), "{env:?}");
    assert_eq!(f.rt.creates.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_exec_is_killed_by_a_second_exec_at_its_timeout() {
    let f = fixture().await;
    *f.rt.exec_behaviour.lock().unwrap() = FakeExec::Hang(vec![frame("check: waiting\n")]);
    let r = f.run("app:v1", 2_000).await.expect("a result");
    assert!(r.timed_out);
    assert_eq!(r.exit_code, -1);
    assert!(r.duration_ms >= 2_000 && r.duration_ms < 3_000, "{r:?}");
    assert!(r.output.starts_with("check: waiting\n"), "{}", r.output);
    assert!(r.output.contains("killed (kill -KILL 7"), "{}", r.output);
    let execs = f.execs();
    assert_eq!(execs.len(), 2);
    assert_eq!(execs[1].1, vec!["kill", "-KILL", "7"]);
    assert_eq!(
        execs[0].0, execs[1].0,
        "the kill runs in the same container"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exec_that_cannot_be_killed_says_what_happens_to_it() {
    let f = fixture().await;
    *f.rt.exec_behaviour.lock().unwrap() = FakeExec::HangUnkillable(vec![]);
    let r = f.run("app:v1", 1_000).await.expect("a result");
    assert!(r.timed_out);
    assert!(r.output.contains("could not be killed"), "{}", r.output);
    assert!(r.output.contains("runs on in container"), "{}", r.output);
    assert_eq!(f.execs().len(), 1, "no kill without a process id");
}

#[tokio::test]
async fn an_exec_is_refused_when_the_running_container_is_not_the_new_digest() {
    let f = fixture().await;
    let other = format!("app@sha256:{}", "f".repeat(64));
    let e = f.run(&other, 30_000).await.expect_err("refused");
    assert!(e.message.contains("not the new"), "{}", e.message);
    assert!(f.execs().is_empty());
}

#[tokio::test]
async fn an_exec_without_a_running_container_fails() {
    let f = fixture().await;
    let id = f.serving();
    use crate::runtime::ContainerRuntime;
    f.rt.stop(&id, std::time::Duration::ZERO).await.unwrap();
    let e = f.run("app:v1", 30_000).await.expect_err("refused");
    assert!(
        e.message.contains("no container of service web runs"),
        "{}",
        e.message
    );
}
