//! Following a deployment through the CLI's JSON: fields of a snapshot, the phase of
//! every host, and waits (with deadlines) until a deployment reaches a state.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Fleet;

/// States a deployment never leaves.
pub const TERMINAL: [&str; 5] = ["succeeded", "failed", "rolled_back", "cancelled", "skipped"];

/// How often the waits below ask again.
const POLL: Duration = Duration::from_millis(100);

/// `name` as a JSON string field of `v` (`""` when missing).
pub fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name].as_str().unwrap_or("")
}

/// Host name to phase, from a deployment snapshot.
pub fn phases(snapshot: &Value) -> BTreeMap<String, String> {
    snapshot["hosts"]
        .as_array()
        .expect("a snapshot lists its hosts")
        .iter()
        .map(|h| (field(h, "host").to_string(), field(h, "phase").to_string()))
        .collect()
}

/// The hosts of a deployment snapshot in `phase`.
pub fn hosts_in_phase<'a>(snapshot: &'a Value, phase: &str) -> Vec<&'a Value> {
    snapshot["hosts"]
        .as_array()
        .expect("a snapshot lists its hosts")
        .iter()
        .filter(|h| field(h, "phase") == phase)
        .collect()
}

/// The (first) host planned for batch `batch` (from 0) in a snapshot.
pub fn host_in_batch(snapshot: &Value, batch: u64) -> String {
    snapshot["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|h| h["batch"].as_u64() == Some(batch + 1))
        .map(|h| field(h, "host").to_string())
        .unwrap_or_else(|| panic!("no host in batch {batch}: {snapshot}"))
}

impl Fleet {
    /// `drover status ID --json --no-follow`: the deployment's snapshot now.
    pub async fn status(&self, id: &str) -> Value {
        self.drover(&["status", id, "--json", "--no-follow"])
            .await
            .final_snapshot()
    }

    /// Waits until deployment `id` ends; returns its snapshot.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            if TERMINAL.contains(&field(&s, "state")) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "deployment {id} did not end within {timeout:?}: {s}\n{}",
                self.controller_logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until deployment `id` is in `state`; panics with the last snapshot when the
    /// time runs out or the deployment ends in another state.
    pub async fn wait_state(&self, id: &str, state: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            let now = field(&s, "state");
            if now == state {
                return s;
            }
            assert!(
                Instant::now() < deadline && !TERMINAL.contains(&now),
                "deployment {id} did not reach {state} (within {timeout:?}): {s}\n{}",
                self.controller_logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
