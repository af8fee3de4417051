//! The fleet's web interface ([`FleetOptions::web`](super::FleetOptions::web)) as the
//! browser tests use it: API tokens to sign in with, a headless browser on it, a raw
//! client trusting the fleet CA, and a deployment's recorded events with their times.

use std::time::Duration;

use drover_proto::v1::{DeploymentEvent, WatchRequest, watch_event};

use super::{Fleet, Transport};
use crate::browser::{Browser, WebClient};

/// How long reading a finished deployment's events may take.
const EVENTS_TIMEOUT: Duration = Duration::from_secs(60);

impl Fleet {
    /// `drover api-token create NAME --role ROLE` as the admin: the token (`dra1.`...).
    pub async fn api_token(&self, name: &str, role: &str) -> String {
        let run = self
            .drover(&["api-token", "create", name, "--role", role])
            .await;
        let token = run.stdout.trim().to_string();
        assert!(
            run.code == Some(0) && token.starts_with("dra1.") && !token.contains('\n'),
            "drover api-token create {name}: {}",
            run.describe()
        );
        token
    }

    /// A headless Chromium on this fleet's web interface (not signed in).
    pub async fn browser(&self) -> Browser {
        Browser::start(&self.web_url()).await
    }

    /// A raw HTTP client of the web interface, verifying the controller's certificate
    /// against the fleet CA.
    pub fn web_client(&self) -> WebClient {
        let ca = match self.transport {
            Transport::Mtls => Some(self.pki().ca_pem()),
            Transport::InsecureDev => None,
        };
        WebClient::new(self.web_addr(), ca.as_deref())
    }

    /// Every event deployment `id` recorded, from the operator API's `Watch` followed
    /// to its end: call it once the deployment ended (panics after a minute otherwise).
    pub async fn events(&self, id: &str) -> Vec<DeploymentEvent> {
        let mut client = self.operator_client().await;
        let request = WatchRequest {
            id: id.to_string(),
            after_seq: 0,
        };
        let mut stream = client
            .watch(request)
            .await
            .unwrap_or_else(|s| panic!("watch {id}: {}", s.message()))
            .into_inner();
        let mut events = vec![];
        let read = async {
            while let Some(msg) = stream.message().await.expect("the watch stream") {
                if let Some(watch_event::Body::Event(e)) = msg.body {
                    events.push(e);
                }
            }
        };
        tokio::time::timeout(EVENTS_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("the watch of {id} did not end: has the deployment ended?"));
        events
    }
}
