//! Looking at a running fleet: HTTP load through HAProxy, the version each host and the
//! load balancer answer, HAProxy's view of every server, and the whole-fleet assertion
//! that everything serves one version.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use drover_controller::lb::{AdminState, OpStatus};
use serde_json::Value;

use super::Fleet;
use crate::load::{Load, LoadOptions};

impl Fleet {
    /// Continuous `GET /` through HAProxy, bounded in count and time.
    pub fn load(&self, keep_alive: bool) -> Load {
        let opts = LoadOptions {
            keep_alive,
            concurrency: 2,
            max_requests: 400_000,
            max_duration: Duration::from_secs(240),
            request_timeout: Duration::from_secs(5),
        };
        Load::start(self.haproxy.frontend_addr(), opts)
    }

    /// The version host `i` answers on `/` right now (from its own address).
    pub async fn host_version(&self, i: usize) -> Result<String, String> {
        version_of(self.hosts[i].addr).await
    }

    /// What `n` requests through HAProxy answered, per version (`Err` for failures).
    pub async fn lb_versions(&self, n: usize) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let key = match version_of(self.haproxy.frontend_addr()).await {
                Ok(v) => v,
                Err(e) => format!("error: {e}"),
            };
            *out.entry(key).or_default() += 1;
        }
        out
    }

    /// Every server's (status, admin state) in HAProxy now.
    pub async fn servers(&self) -> BTreeMap<String, (OpStatus, AdminState)> {
        self.haproxy
            .servers()
            .await
            .into_iter()
            .map(|s| (s.server, (s.status, s.admin)))
            .collect()
    }

    /// Every container (any state) host `i`'s agent manages, one line each: id, Docker
    /// state, `drover.version` and `drover.deployment` labels; sorted. Two equal lists
    /// mean no container of the host was created, removed, started or stopped between.
    pub async fn containers(&self, i: usize) -> Vec<String> {
        let agent = format!(
            "label={}={}",
            drover_shared::labels::AGENT,
            self.hosts[i].name
        );
        let format = format!(
            "{{{{.ID}}}} {{{{.State}}}} {{{{.Label \"{}\"}}}} {{{{.Label \"{}\"}}}}",
            drover_shared::labels::VERSION,
            drover_shared::labels::DEPLOYMENT
        );
        let out = crate::docker::docker(&["ps", "-a", "--filter", &agent, "--format", &format])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }

    /// Every host's [`containers`](Self::containers) once its agent has pruned what the
    /// last swap left: at most `keep` stopped containers each (the spec's
    /// `keep_previous`). Agents prune after they answer, so a deployment that has ended
    /// may still be removing a container; a test comparing container lists across a
    /// later step takes its "before" from here.
    pub async fn containers_once_pruned(&self, keep: usize) -> Vec<Vec<String>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut all = Vec::with_capacity(self.hosts.len());
        for i in 0..self.hosts.len() {
            loop {
                let now = self.containers(i).await;
                let stopped = now.iter().filter(|l| !l.contains(" running ")).count();
                if stopped <= keep {
                    all.push(now);
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{} still keeps {stopped} stopped containers (more than {keep}) 30s after its swap: {now:?}",
                    self.hosts[i].name
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        all
    }

    /// Asserts that every host answers `version` on its own address, HAProxy has them all
    /// UP and READY, requests through HAProxy reach only `version`, and `drover hosts`
    /// agrees (connected, one `web` service of `version`, running).
    pub async fn assert_serves(&self, version: &str) {
        for (i, h) in self.hosts().iter().enumerate() {
            assert_eq!(
                self.host_version(i).await.as_deref(),
                Ok(version),
                "host {} ({})",
                h.name,
                h.addr
            );
        }
        let servers = self.servers().await;
        for h in self.hosts() {
            assert_eq!(
                servers.get(&h.name),
                Some(&(OpStatus::Up, AdminState::Ready)),
                "{} in HAProxy: {servers:?}",
                h.name
            );
        }
        let through_lb = self.lb_versions(2 * self.hosts().len()).await;
        assert_eq!(
            through_lb.keys().collect::<Vec<_>>(),
            [version],
            "through HAProxy"
        );
        let field = |v: &Value, name: &str| v[name].as_str().unwrap_or("").to_string();
        for h in self.hosts_json().await {
            let web: Vec<&Value> = h["services"]
                .as_array()
                .map(|s| s.iter().filter(|s| s["service"] == "web").collect())
                .unwrap_or_default();
            assert!(
                h["connected"] == true
                    && web.len() == 1
                    && field(web[0], "version") == version
                    && field(web[0], "state").ends_with("RUNNING"),
                "drover hosts: {h}"
            );
        }
    }
}

/// The version `GET /` on `addr` answered (`X-Version`), or why it failed.
pub async fn version_of(addr: SocketAddr) -> Result<String, String> {
    let r = crate::http::get(addr, "/").await?;
    if r.status != 200 {
        return Err(format!(
            "GET / on {addr} answered {}: {:?}",
            r.status, r.body
        ));
    }
    r.header("x-version")
        .map(str::to_string)
        .ok_or_else(|| format!("GET / on {addr} named no version: {:?}", r.body))
}
