//! Log streams over the in-memory FAKE runtime: credit bounds what is in flight, secrets
//! are redacted, a missing service is named.
use std::sync::Arc;

use drover_shared::proto::{LogSource, agent_message};

use super::*;
use crate::commands::state::tests::container;
use crate::runtime::{LogFrame, RunState, Secret, SecretEnv};
use crate::testing::{FakeRuntime, adopted_labels};

fn context() -> Arc<CommandContext<FakeRuntime>> {
    let rt = FakeRuntime::new();
    let mut c = container("c1", "web", "v1", RunState::Running, 1);
    c.labels = adopted_labels("h1", "web", "d1", 1, "cmd1");
    c.name = "drover-h1-web-1".into();
    rt.add_container(c);
    Arc::new(CommandContext {
        runtime: Arc::new(rt),
        agent: "h1".into(),
        keep_previous: 1,
        secrets: crate::secrets::SecretsDir::new("/nonexistent/drover-test-secrets"),
        ready: crate::commands::record::ReadyRecords::new(std::path::Path::new(
            "/nonexistent/drover-test-state",
        )),
    })
}

fn request(window: u32) -> LogsRequest {
    LogsRequest {
        stream_id: "s1".into(),
        service: "web".into(),
        window,
        ..Default::default()
    }
}

async fn chunk(rx: &mut mpsc::Receiver<AgentMessage>) -> LogChunk {
    match rx.recv().await.and_then(|m| m.body) {
        Some(agent_message::Body::LogChunk(c)) => c,
        other => panic!("expected a log chunk, got {other:?}"),
    }
}

#[tokio::test]
async fn credit_bounds_the_chunks_in_flight() {
    let ctx = context();
    // Enough lines for several full chunks.
    let frame = LogFrame {
        output: LogOutput::Stdout,
        bytes: "x"
            .repeat(1000)
            .into_bytes()
            .into_iter()
            .chain(*b"\n")
            .collect(),
    };
    *ctx.runtime.log_frames.lock().unwrap() = vec![frame; 200];
    let (tx, mut rx) = mpsc::channel(16);
    let mut tails = LogTails::default();
    tails.start(ctx.clone(), request(2), tx);
    let (a, b) = (chunk(&mut rx).await, chunk(&mut rx).await);
    assert!(!a.end && !b.end);
    assert!(a.lines.len() <= lines::MAX_CHUNK_LINES);
    // No credit left: nothing more arrives until the controller acknowledges.
    tokio::task::yield_now().await;
    assert!(
        rx.try_recv().is_err(),
        "a third chunk was sent without credit"
    );
    tails.ack("s1", 1);
    let c = chunk(&mut rx).await;
    assert_eq!(c.lines[0].source, LogSource::Stdout as i32);
    tails.ack("s1", lines::MAX_CHUNK_LINES as u32);
    let mut total = a.lines.len() + b.lines.len() + c.lines.len();
    loop {
        let next = chunk(&mut rx).await;
        total += next.lines.len();
        if next.end {
            assert_eq!(next.error, "");
            break;
        }
    }
    assert_eq!(total, 200);
}

#[tokio::test]
async fn secret_values_never_leave_the_host() {
    let ctx = context();
    ctx.secrets.remember_env(
        "drover-h1-web-1",
        &[SecretEnv {
            name: "DB_PASSWORD".into(),
            value: Secret::new("correct-horse-battery".into()),
        }],
    );
    *ctx.runtime.log_frames.lock().unwrap() = vec![LogFrame {
        output: LogOutput::Stderr,
        bytes: b"connecting with correct-horse-battery\n".to_vec(),
    }];
    let (tx, mut rx) = mpsc::channel(16);
    let mut tails = LogTails::default();
    tails.start(ctx, request(0), tx);
    let c = chunk(&mut rx).await;
    assert_eq!(c.lines[0].text, "connecting with [redacted]");
    assert_eq!(c.lines[0].source, LogSource::Stderr as i32);
    assert_eq!(c.lines[0].version, "v1");
}

#[tokio::test]
async fn an_unknown_service_names_what_the_host_has() {
    let (tx, mut rx) = mpsc::channel(16);
    let mut tails = LogTails::default();
    let mut req = request(1);
    req.service = "api".into();
    tails.start(context(), req, tx);
    let c = chunk(&mut rx).await;
    assert!(c.end);
    assert_eq!(
        c.error,
        "host h1 has no container of service api; it has containers of: web"
    );
}
