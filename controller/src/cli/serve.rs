//! `drover serve`: the controller daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tracing::info;

use crate::hub::HubSettings;
use crate::leader::LeaseSettings;
use crate::registry_auth::RegistryCredentials;
use crate::rollout::DeployerSettings;
use crate::server::{
    Database, Security, ServeError, ServeSettings, TlsSettings, run as run_server,
};
use crate::store::PgTls;

/// Exit code for a configuration `drover serve` refuses (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Flags of `drover serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on for agents and operators.
    #[arg(long, env = "DROVER_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Where deployments, history and locks are kept: a SQLite file (created if missing;
    /// one controller), or a PostgreSQL URL (postgres://USER@HOST/DB, or
    /// postgresql:///DB?host=/run/postgresql for a socket) shared by two or three
    /// replicas, one of which leads (the others stand by and take over when it is lost).
    #[arg(
        long,
        env = "DROVER_DATABASE",
        hide_env_values = true,
        value_name = "FILE|URL",
        default_value = "/var/lib/drover/drover.db"
    )]
    pub database: String,
    /// With PostgreSQL: the address agents and operators are sent to while this replica
    /// leads (https://HOST:PORT) [default: https://<--listen>, unless that is 0.0.0.0
    /// or ::, when it must be given].
    #[arg(long, env = "DROVER_ADVERTISE", value_name = "URL")]
    pub advertise: Option<String>,
    /// With PostgreSQL: the leader lease's length. The leader renews it every third
    /// and, unable to, stops acting a third early; a standby takes it once expired, so
    /// a lost leader is replaced within about one lease.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_lease: Duration,
    /// With PostgreSQL over a network: the CA certificate (PEM) that signed the
    /// database server's certificate. Connections then use TLS, the server's certificate
    /// checked against it and the URL's host name (add sslmode=require to the URL to
    /// refuse a server without TLS). Without it the connection is plaintext: use a Unix
    /// socket or loopback.
    #[arg(long, env = "DROVER_DATABASE_CA", value_name = "FILE")]
    pub database_ca: Option<PathBuf>,
    /// With PostgreSQL: this replica's own files (the web interface's session key).
    #[arg(long, env = "DROVER_STATE_DIR", default_value = "/var/lib/drover")]
    pub state_dir: PathBuf,
    /// Heartbeat period asked of agents; an agent silent for three periods is lost.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// How long a host whose agent vanished mid-step may take to reconnect before the
    /// step fails (the host is then reported, never silently left out of rotation).
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub reconnect_grace: Duration,
    /// Address for Prometheus metrics (`GET /metrics`); empty to disable.
    #[arg(long, env = "DROVER_METRICS_LISTEN", default_value = "127.0.0.1:9464")]
    pub metrics_listen: String,
    /// Address for the web interface (HTTPS); empty to disable. When not given,
    /// 127.0.0.1:7443 is used if it is free (a warning says so when it is not).
    #[arg(long, env = "DROVER_WEB_LISTEN", value_name = "ADDR")]
    pub web_listen: Option<String>,
    /// Certificate chain (PEM) the web interface presents instead of the controller's
    /// own (which browsers do not trust unless the fleet CA is installed). With --web-key.
    #[arg(long, env = "DROVER_WEB_CERT", requires = "web_key")]
    pub web_cert: Option<PathBuf>,
    /// Private key (PEM) of --web-cert.
    #[arg(long, env = "DROVER_WEB_KEY", requires = "web_cert")]
    pub web_key: Option<PathBuf>,
    /// Registry credentials the controller holds (TOML `[[registry]]` tables with server,
    /// username, password; mode 0600), used by deployments that carry none of their own,
    /// such as a scheduled deploy resumed after a restart.
    #[arg(long, env = "DROVER_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// How long in-flight rollouts get to stop at a step boundary on SIGTERM; they
    /// resume on the next start either way.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
    /// The fleet PKI directory (from `drover ca init`): ca.crt, ca.key and secrets.key.
    #[arg(long, env = "DROVER_PKI_DIR", default_value = "/etc/drover/pki")]
    pub pki_dir: PathBuf,
    /// A further DNS name or IP address for the controller's serving certificate, for
    /// clients that check the address they dial (repeatable). Drover's own clients check
    /// the controller identity instead and need none.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// Lifetime of the certificates agents get at enrollment and renewal; agents renew
    /// at two thirds of it.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub agent_cert_ttl: Duration,
    /// How often the error-budget sampler reads each watched HAProxy's counters.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub slo_interval: Duration,
    /// DEVELOPMENT ONLY: serve plaintext gRPC with no authentication at all (every caller
    /// is admin; the secrets key is kept next to the database). Logged on every start.
    #[arg(long)]
    pub insecure_dev: bool,
}

/// Exit code of a replica that lost the leader lease (`EX_TEMPFAIL`): started again, it
/// stands by.
pub const EXIT_LEASE_LOST: i32 = 75;

/// The shortest `--leader-lease` accepted (renewals every third of it).
const MIN_LEADER_LEASE: Duration = Duration::from_secs(1);

/// Where the state is kept, from `--database` (a postgres URL or a SQLite file) and, for
/// PostgreSQL, the lease flags; a message naming the flag when they cannot work.
fn database(args: &ServeArgs) -> Result<Database, String> {
    let db = args.database.trim();
    if !(db.starts_with("postgres://") || db.starts_with("postgresql://")) {
        return Ok(Database::Sqlite(PathBuf::from(db)));
    }
    if args.leader_lease < MIN_LEADER_LEASE {
        return Err(format!(
            "--leader-lease {} is too short: give at least {}",
            humantime::format_duration(args.leader_lease),
            humantime::format_duration(MIN_LEADER_LEASE)
        ));
    }
    let scheme = if args.insecure_dev { "http" } else { "https" };
    let address = match &args.advertise {
        Some(a) => {
            crate::cli::connect::check_address(a, args.insecure_dev)
                .map_err(|e| format!("--advertise: {e}"))?;
            a.trim().to_owned()
        }
        None if args.listen.ip().is_unspecified() => {
            return Err(format!(
                "--listen {} is every address: give --advertise {scheme}://HOST:{}, the address agents and operators reach this replica at",
                args.listen,
                args.listen.port()
            ));
        }
        None => format!("{scheme}://{}", args.listen),
    };
    let tls = match &args.database_ca {
        None => PgTls::default(),
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("--database-ca {}: {e}", path.display()))?;
            PgTls::verified(&pem).map_err(|e| format!("--database-ca {}: {e}", path.display()))?
        }
    };
    Ok(Database::Postgres {
        tls,
        url: db.to_owned(),
        lease: LeaseSettings {
            ttl: args.leader_lease,
            address,
        },
        state_dir: args.state_dir.clone(),
    })
}

/// The smallest `--agent-cert-ttl` accepted: renewal needs time to happen.
const MIN_AGENT_CERT_TTL: Duration = Duration::from_secs(60);

pub async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    if args.slo_interval.is_zero() {
        eprintln!("drover serve: --slo-interval must be above zero; write e.g. 10s");
        return Ok(EXIT_CONFIG);
    }
    let database = match database(&args) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("drover serve: {e}");
            return Ok(EXIT_CONFIG);
        }
    };
    let security = if args.insecure_dev {
        Security::InsecureDev
    } else {
        if args.agent_cert_ttl < MIN_AGENT_CERT_TTL {
            eprintln!(
                "drover serve: --agent-cert-ttl {} is too short: give at least {}",
                humantime::format_duration(args.agent_cert_ttl),
                humantime::format_duration(MIN_AGENT_CERT_TTL)
            );
            return Ok(EXIT_CONFIG);
        }
        let (dir, names, ttl) = (
            args.pki_dir.clone(),
            args.tls_names.clone(),
            args.agent_cert_ttl,
        );
        match tokio::task::spawn_blocking(move || TlsSettings::load(&dir, names, ttl)).await? {
            Ok(tls) => Security::Tls(tls),
            Err(e) => {
                eprintln!("drover serve: {e}");
                return Ok(EXIT_CONFIG);
            }
        }
    };
    let listener =
        listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let metrics = if args.metrics_listen.is_empty() {
        None
    } else {
        let addr: SocketAddr = args.metrics_listen.parse().with_context(|| {
            format!(
                "invalid --metrics-listen {:?}: write ip:port",
                args.metrics_listen
            )
        })?;
        Some(listen(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?)
    };
    let web = match web_listener(args.web_listen.as_deref())? {
        None => None,
        Some(listener) => Some(crate::server::WebListen {
            listener,
            cert: args.web_cert.clone().zip(args.web_key.clone()),
        }),
    };
    let registry_credentials = match &args.registry_auth_file {
        None => RegistryCredentials::default(),
        Some(path) => match RegistryCredentials::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("drover serve: {e}");
                return Ok(EXIT_CONFIG);
            }
        },
    };
    let settings = ServeSettings {
        hub: HubSettings {
            heartbeat_interval: args.heartbeat_interval,
            lost_after: args.heartbeat_interval * 3,
            ..HubSettings::default()
        },
        deployer: DeployerSettings {
            reconnect_grace: args.reconnect_grace,
            registry_credentials,
            ..DeployerSettings::default()
        },
        database,
        shutdown_grace: args.shutdown_grace,
        metrics,
        clock: crate::schedule::SystemClock::shared(),
        security,
        web,
        slo: crate::slo::SloSettings {
            interval: args.slo_interval,
            ..Default::default()
        },
    };
    match run_server(listener, settings, shutdown_signal()).await {
        Ok(()) => {}
        Err(e @ ServeError::LeaseLost(_)) => {
            eprintln!("drover serve: {e}; exiting so that it starts again as a standby");
            return Ok(EXIT_LEASE_LOST);
        }
        Err(e) => return Err(e.into()),
    }
    info!("controller stopped");
    Ok(0)
}

/// Where the web interface listens when `--web-listen` is not given.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:7443";

/// The web interface's listener: `--web-listen` as given (failing to bind it is an
/// error), none for an empty one, or the default address if it is free.
fn web_listener(flag: Option<&str>) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let (text, given) = match flag {
        Some("") => return Ok(None),
        Some(t) => (t, true),
        None => (DEFAULT_WEB_LISTEN, false),
    };
    let addr: SocketAddr = text.parse().with_context(|| {
        format!("invalid --web-listen {text:?}: write ip:port, or \"\" to disable")
    })?;
    match listen(addr) {
        Ok(l) => Ok(Some(l)),
        Err(e) if !given => {
            tracing::warn!(%addr, error = %e, "the web interface is off: its default address is taken; give --web-listen ADDR (or \"\" to silence this)");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen for the web interface on {addr}")),
    }
}

/// Completes on SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received, shutting down"),
    }
}

/// How many connections may wait to be accepted. The usual default (128, as std and
/// tokio bind) is too few when a whole fleet reconnects at once (after a controller
/// restart, say): the surplus SYNs are dropped and those agents wait a full TCP
/// retransmission timeout.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (the kernel still caps it at
/// `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_listener_queues_a_whole_fleet_reconnecting_at_once() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        // `ss` shows a listening socket's backlog in its Send-Q column.
        let out = std::process::Command::new("ss")
            .args(["-Hltn", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) is installed");
        let text = String::from_utf8_lossy(&out.stdout);
        let backlog: u32 = text
            .split_whitespace()
            .nth(2)
            .and_then(|q| q.parse().ok())
            .unwrap_or_else(|| panic!("no backlog in {text:?}"));
        let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(LISTEN_BACKLOG);
        assert_eq!(backlog, LISTEN_BACKLOG.min(cap));
    }
}
