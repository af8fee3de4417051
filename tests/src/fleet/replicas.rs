//! The fleet's controller as replicas ([`FleetOptions::replicas`](super::FleetOptions)):
//! a throwaway PostgreSQL cluster of the fleet's own (initdb and pg_ctl from Debian's
//! packages, on a private socket directory), and N `drover serve --database postgres://`
//! processes, each on its own loopback port with its own state directory, sharing the
//! fleet's PKI. Agents and the CLI get every replica's address, comma-separated. Tests
//! kill, freeze (SIGSTOP) and thaw (SIGCONT) replicas and restart PostgreSQL.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use drover_controller::store::pg_cluster::PgCluster;
use drover_proto::v1::WhoAmIRequest;
use drover_proto::v1::operator_client::OperatorClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{CONNECT_TIMEOUT, Fleet, Transport, free_addr, sigkill};
use crate::process::{ChildGuard, bin_path};

/// The replicas' `--leader-lease`: short, so a test sees a failover within seconds.
pub const LEASE: Duration = Duration::from_secs(3);

/// One replica.
pub(super) struct Replica {
    /// Where it serves agents and operators.
    addr: SocketAddr,
    /// Where it serves metrics.
    metrics: SocketAddr,
    /// Where it serves the web interface ([`FleetOptions::web`](super::FleetOptions)).
    web: Option<SocketAddr>,
    /// Its own state directory.
    state_dir: PathBuf,
    /// The process; `None` while a test has it killed (or once it exited).
    child: Option<ChildGuard>,
}

/// The replicas, then their database (dropped in this order).
pub(super) struct Replicas {
    /// The replicas, in order.
    nodes: Vec<Replica>,
    /// Processes that were killed or exited, for their logs.
    dead: Vec<ChildGuard>,
    /// The database URL every replica uses.
    url: String,
    /// The PostgreSQL cluster.
    cluster: PgCluster,
    /// `https://` or `http://`.
    scheme: &'static str,
}

impl Replicas {
    /// Every replica's address, in order.
    pub(super) fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("{}://{}", self.scheme, n.addr))
            .collect()
    }

    /// Logs of every replica process so far.
    pub(super) fn logs(&self) -> Vec<String> {
        self.dead
            .iter()
            .chain(self.nodes.iter().filter_map(|n| n.child.as_ref()))
            .map(ChildGuard::logs)
            .collect()
    }
}

/// `host=H user=U dbname=D` as the `postgresql://U@/D?host=H` URL `--database` takes.
fn as_url(key_values: &str) -> String {
    let get = |key: &str| {
        key_values
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_default()
            .to_owned()
    };
    format!(
        "postgresql://{}@/{}?host={}",
        get("user"),
        get("dbname"),
        get("host")
    )
}

impl Fleet {
    fn replicas(&self) -> &Replicas {
        self.replicas.as_ref().expect("the fleet runs no replicas")
    }

    fn replicas_mut(&mut self) -> &mut Replicas {
        self.replicas.as_mut().expect("the fleet runs no replicas")
    }

    /// Starts the PostgreSQL cluster and `n` replicas; waits until one leads.
    pub(super) async fn start_replicas(&mut self, n: usize) {
        // The cluster's own client is synchronous: off the runtime's threads.
        let (cluster, url) = tokio::task::spawn_blocking(|| {
            let cluster = PgCluster::start()
                .unwrap_or_else(|e| panic!("cannot start a PostgreSQL cluster: {e:#}"));
            let url = cluster
                .create_database()
                .unwrap_or_else(|e| panic!("cannot create the fleet's database: {e:#}"));
            (cluster, as_url(&url))
        })
        .await
        .expect("starting PostgreSQL panicked");
        let nodes = (0..n)
            .map(|i| Replica {
                addr: free_addr(),
                metrics: free_addr(),
                web: self.web_addr.map(|_| free_addr()),
                state_dir: self.dir.path().join(format!("replica-{i}")),
                child: None,
            })
            .collect();
        let scheme = match self.transport {
            Transport::Mtls => "https",
            Transport::InsecureDev => "http",
        };
        self.replicas = Some(Replicas {
            nodes,
            dead: vec![],
            url,
            cluster,
            scheme,
        });
        for i in 0..n {
            self.start_replica(i);
        }
        self.controller_addr = self.replicas().nodes[0].addr;
        self.metrics_addr = self.replicas().nodes[0].metrics;
        let leader = crate::poll(CONNECT_TIMEOUT, || async {
            self.leader().await.ok_or("no replica leads")
        })
        .await;
        if let Err(e) = leader {
            panic!(
                "{e} within {CONNECT_TIMEOUT:?}:\n{}",
                self.controller_logs()
            );
        }
    }

    /// Starts replica `i` (again), on its address, state directory and the database.
    pub fn start_replica(&mut self, i: usize) {
        let r = self.replicas();
        let node = &r.nodes[i];
        assert!(node.child.is_none(), "replica {i} runs already");
        let mut args = self.controller_args(node.addr, node.metrics, &r.url);
        // Agents of a frozen leader take up to two HTTP/2 pings (8 s) to leave it: the
        // production grace (15 s), not the single controller's short test one.
        if let Some(i) = args.iter().position(|a| a == "--reconnect-grace") {
            args[i + 1] = "15s".to_owned();
        }
        // Each replica serves the web interface on an address of its own, or none.
        if let Some(i) = args.iter().position(|a| a == "--web-listen") {
            args.drain(i..i + 2);
        }
        args.extend([
            "--leader-lease".to_owned(),
            format!("{}ms", LEASE.as_millis()),
            "--advertise".to_owned(),
            format!("{}://{}", r.scheme, node.addr),
            "--state-dir".to_owned(),
            node.state_dir.to_string_lossy().into_owned(),
            "--web-listen".to_owned(),
            node.web.map(|a| a.to_string()).unwrap_or_default(),
        ]);
        let child = ChildGuard::spawn(
            &format!("controller replica-{i} {}", node.addr),
            &bin_path("drover"),
            args,
            &[("RUST_LOG", "info,drover_controller=debug")],
        );
        self.replicas_mut().nodes[i].child = Some(child);
    }

    /// Replica `i`'s address (`https://127.0.0.1:PORT`).
    pub fn replica_url(&self, i: usize) -> String {
        self.replicas().urls()[i].clone()
    }

    /// `https://127.0.0.1:PORT` of replica `i`'s web interface (the fleet was started
    /// with [`FleetOptions::web`](super::FleetOptions)).
    pub fn replica_web_url(&self, i: usize) -> String {
        let addr = self.replicas().nodes[i]
            .web
            .expect("the fleet serves no web interface (FleetOptions::web)");
        format!("{}://{addr}", self.replicas().scheme)
    }

    /// A raw client of replica `i`'s web interface (the fleet was started with
    /// [`FleetOptions::web`](super::FleetOptions)), trusting the fleet CA.
    pub fn replica_web_client(&self, i: usize) -> crate::browser::WebClient {
        let addr = self.replicas().nodes[i]
            .web
            .expect("the fleet serves no web interface (FleetOptions::web)");
        let ca = match self.transport {
            Transport::Mtls => Some(self.pki().ca_pem()),
            Transport::InsecureDev => None,
        };
        crate::browser::WebClient::new(addr, ca.as_deref())
    }

    /// Replica `i`'s metrics address.
    pub fn replica_metrics(&self, i: usize) -> SocketAddr {
        self.replicas().nodes[i].metrics
    }

    /// The PostgreSQL cluster.
    pub fn postgres(&self) -> &PgCluster {
        &self.replicas().cluster
    }

    /// An admin channel to replica `i`.
    async fn replica_channel(&self, i: usize) -> Result<Channel, String> {
        let url = self.replica_url(i);
        match self.transport {
            Transport::Mtls => self.pki().admin_channel(&url).await,
            Transport::InsecureDev => {
                drover_shared::tls::insecure_channel(&url, Duration::from_secs(2))
                    .await
                    .map_err(|e| format!("connect to {url}: {e}"))
            }
        }
    }

    /// Replica `i`'s role and epoch, as `drover whoami` shows them.
    pub async fn replica_role(&self, i: usize) -> Result<(String, u64), String> {
        let channel = self.replica_channel(i).await?;
        let mut client = OperatorClient::new(channel);
        let call = client.who_am_i(WhoAmIRequest {});
        let r = tokio::time::timeout(Duration::from_secs(2), call)
            .await
            .map_err(|_| "WhoAmI took over 2s".to_owned())?
            .map_err(|s| format!("WhoAmI: {}", s.message()))?
            .into_inner();
        Ok((r.controller_role, r.epoch))
    }

    /// The replica that leads now (asking each running one), if any.
    pub async fn leader(&self) -> Option<usize> {
        for (i, node) in self.replicas().nodes.iter().enumerate() {
            if node.child.is_some()
                && let Ok((role, _)) = self.replica_role(i).await
                && role == "leader"
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a replica other than `not` leads; returns it.
    pub async fn wait_leader_other_than(&self, not: usize, timeout: Duration) -> usize {
        let found = crate::poll(timeout, || async {
            match self.leader().await {
                Some(i) if i != not => Ok(i),
                other => Err(format!("leader: {other:?}")),
            }
        })
        .await;
        found.unwrap_or_else(|e| {
            panic!(
                "no replica but {not} led within {timeout:?} ({e}):\n{}",
                self.controller_logs()
            )
        })
    }

    /// A channel to the leading replica.
    pub(super) async fn leader_channel(&self) -> Result<Channel, String> {
        match self.leader().await {
            Some(i) => self.replica_channel(i).await,
            None => Err("no replica leads".to_owned()),
        }
    }

    /// The process id of replica `i`.
    pub fn replica_pid(&self, i: usize) -> u32 {
        self.replicas().nodes[i]
            .child
            .as_ref()
            .and_then(ChildGuard::pid)
            .unwrap_or_else(|| panic!("replica {i} is not running"))
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to replica `i`.
    pub fn signal_replica(&self, i: usize, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.replica_pid(i).to_string()])
            .stderr(Stdio::null())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} replica {i}");
    }

    /// Kills replica `i` with SIGKILL.
    pub fn kill_replica(&mut self, i: usize) {
        let r = self.replicas_mut();
        let mut child = r.nodes[i].child.take().expect("replica not running");
        sigkill(&mut child);
        r.dead.push(child);
    }

    /// Waits until replica `i` exits by itself; its exit status.
    pub async fn wait_replica_exit(&mut self, i: usize, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.replicas_mut();
            let child = r.nodes[i].child.as_mut().expect("replica not running");
            if let Some(status) = child.try_exit_status() {
                let child = r.nodes[i].child.take().expect("checked");
                r.dead.push(child);
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "replica {i} did not exit within {timeout:?}:\n{}",
                    self.controller_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Logs of replica `i`: every process it ran as.
    pub fn replica_logs(&self, i: usize) -> String {
        let header = format!("----- controller replica-{i} ");
        self.replicas()
            .logs()
            .into_iter()
            .filter(|l| l.starts_with(&header))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
