//! Log streams through a real hub on loopback, with a raw agent stream on the other end:
//! chunks are acknowledged only once read, a dropped reader cancels, a lost host ends it.
use std::time::Duration;

use drover_proto::v1::agent_channel_client::AgentChannelClient;
use drover_proto::v1::{
    AgentMessage, ControllerMessage, Hello, LogChunk, LogLine, LogsRequest, agent_message,
    controller_message,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::super::{AgentHub, HubSettings, serve_agents};
use super::LOG_WINDOW;

const WAIT: Duration = Duration::from_secs(10);

/// A hub on loopback and a connected raw agent `h1`: its uplink and its inbound stream.
async fn hub_and_agent() -> (
    AgentHub,
    mpsc::Sender<AgentMessage>,
    Streaming<ControllerMessage>,
) {
    let hub = AgentHub::new(HubSettings::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_agents(listener, hub.clone(), std::future::pending()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let hello = Hello {
        name: "h1".into(),
        ..Default::default()
    };
    tx.send(body(agent_message::Body::Hello(hello)))
        .await
        .unwrap();
    let inbound = AgentChannelClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    hub.wait_connected("h1", WAIT).await.unwrap();
    (hub, tx, inbound)
}

fn body(b: agent_message::Body) -> AgentMessage {
    AgentMessage { body: Some(b) }
}

/// The next message other than the welcome.
async fn next(inbound: &mut Streaming<ControllerMessage>) -> controller_message::Body {
    loop {
        let m = tokio::time::timeout(WAIT, inbound.message())
            .await
            .expect("a controller message in time")
            .unwrap()
            .expect("the stream is open");
        match m.body {
            Some(controller_message::Body::Welcome(_)) | None => {}
            Some(b) => return b,
        }
    }
}

fn chunk(stream_id: &str, text: &str) -> AgentMessage {
    body(agent_message::Body::LogChunk(LogChunk {
        stream_id: stream_id.into(),
        lines: vec![LogLine {
            text: text.into(),
            ..Default::default()
        }],
        ..Default::default()
    }))
}

fn request() -> LogsRequest {
    LogsRequest {
        service: "web".into(),
        tail: 10,
        ..Default::default()
    }
}

#[tokio::test]
async fn chunks_are_acknowledged_once_read_and_a_dropped_reader_cancels() {
    let (hub, agent, mut inbound) = hub_and_agent().await;
    let mut sub = hub.open_logs("h1", request()).await.unwrap();
    let controller_message::Body::Logs(req) = next(&mut inbound).await else {
        panic!("expected a logs request")
    };
    assert_eq!(req.window, LOG_WINDOW);
    assert_eq!(req.service, "web");
    agent.send(chunk(&req.stream_id, "one")).await.unwrap();
    agent.send(chunk(&req.stream_id, "two")).await.unwrap();
    assert_eq!(sub.next().await.unwrap().lines[0].text, "one");
    // The first chunk is acknowledged when the reader asks for the second.
    assert_eq!(sub.next().await.unwrap().lines[0].text, "two");
    let controller_message::Body::LogsAck(ack) = next(&mut inbound).await else {
        panic!("expected an acknowledgement")
    };
    assert_eq!(
        (ack.stream_id.as_str(), ack.chunks),
        (req.stream_id.as_str(), 1)
    );
    drop(sub);
    let controller_message::Body::LogsCancel(cancel) = next(&mut inbound).await else {
        panic!("expected a cancel")
    };
    assert_eq!(cancel.stream_id, req.stream_id);
}

#[tokio::test]
async fn a_lost_host_ends_its_log_streams() {
    let (hub, agent, mut inbound) = hub_and_agent().await;
    let mut sub = hub.open_logs("h1", request()).await.unwrap();
    assert!(matches!(
        next(&mut inbound).await,
        controller_message::Body::Logs(_)
    ));
    drop(agent);
    drop(inbound);
    let ended = tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("ends in time");
    assert!(ended.is_none());
    let err = match hub.open_logs("h1", request()).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a lost host must refuse new log streams"),
    };
    assert!(err.contains("is not connected"), "{err}");
}
