//! The fleet's web interface ([`FleetOptions::web`](super::FleetOptions::web)) as the
//! browser tests use it: API tokens to sign in with, a headless browser on it, a raw
//! client trusting the fleet CA, and a deployment's recorded events with their times.

use serde_json::Value;

use super::{Fleet, Transport, field};
use crate::browser::{Browser, WebClient};

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

    /// Every event deployment `id` recorded (`drover status ID --json`, followed to
    /// its end: call it once the deployment ended), each with `seq`, `at_ms`, `host`,
    /// `phase`, `state` and `message`.
    pub async fn events(&self, id: &str) -> Vec<Value> {
        let run = self.drover(&["status", id, "--json"]).await;
        assert!(
            matches!(run.code, Some(0) | Some(1)),
            "drover status {id}: {}",
            run.describe()
        );
        run.json()
            .into_iter()
            .filter(|v| field(v, "type") == "event")
            .collect()
    }
}
