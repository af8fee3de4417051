//! `drover serve`: one listener serving the agent channel, the enrollment service and the
//! operator API, over mTLS (or plaintext with `--insecure-dev`); the state database; and
//! the rollout engine (which resumes unfinished deployments first).
//!
//! On SQLite there is one controller. On PostgreSQL, replicas campaign for the leader
//! lease ([`crate::leader`]): a standby serves only `WhoAmI` and names the leader to
//! everyone else; the replica that takes the lease resumes the deployments, runs the
//! rollouts and samplers, and, should it lose the lease, stops acting at once and exits
//! (`EX_TEMPFAIL`) so that its service manager starts it again as a standby: nothing of
//! its term survives in memory (the practice of Kubernetes' controllers).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::auth::Authenticator;
use crate::enroll::{EnrollmentService, Issuer};
use crate::hub::{Admission, AgentHub, HubSettings};
use crate::leader::gate::GateLayer;
use crate::leader::{Campaign, Leadership, LeaseLost, LeaseSettings};
use crate::metrics::Metrics;
use crate::operator::OperatorService;
use crate::rollout::{Deployer, DeployerSettings};
use crate::schedule::SharedClock;
use crate::secrets::{SecretsError, SecretsKey, Vault, insecure_dev_key_path};
use crate::slo::{SloMonitor, SloSettings};
use crate::store::{Fence, PgOptions, PgTls, Store};
use crate::tls::ServingCert;

pub use crate::tls::TlsSettings;

/// How the controller protects its listener.
#[derive(Clone, Debug)]
pub enum Security {
    /// mTLS with the fleet CA: agents need certificates this controller issued,
    /// operators an operator certificate or an API token.
    Tls(TlsSettings),
    /// Plaintext, and every caller is admin. Development only; warned about on every start.
    InsecureDev,
}

/// What the controller daemon needs to start.
pub struct ServeSettings {
    /// Agent stream tunables.
    pub hub: HubSettings,
    /// Rollout engine tunables.
    pub deployer: DeployerSettings,
    /// Where the state is kept.
    pub database: Database,
    /// How long in-flight rollouts get to reach a step boundary on shutdown.
    pub shutdown_grace: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<TcpListener>,
    /// Wall-clock time for schedules and deploy windows (injectable for tests).
    pub clock: SharedClock,
    /// TLS and authentication, or `--insecure-dev`.
    pub security: Security,
    /// The error-budget sampler's interval and command timeout.
    pub slo: SloSettings,
    /// Where to serve the web interface, if anywhere.
    pub web: Option<WebListen>,
}

/// Where the controller keeps its state.
#[derive(Clone, Debug)]
pub enum Database {
    /// An embedded SQLite file: one controller.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by controller replicas, one of which leads.
    Postgres {
        /// `postgres://...` (or key-value form).
        url: String,
        /// The leader lease's length and this replica's advertised address.
        lease: LeaseSettings,
        /// TLS to the database (`--database-ca`), or none.
        tls: PgTls,
        /// This replica's own files: the web session key (and, under
        /// `--insecure-dev`, the secrets key).
        state_dir: PathBuf,
    },
}

impl Database {
    /// The directory of this controller's own files.
    pub fn state_dir(&self) -> PathBuf {
        match self {
            Database::Sqlite(path) => path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf(),
            Database::Postgres { state_dir, .. } => state_dir.clone(),
        }
    }

    /// What to call it in logs: the file, or the URL without its password.
    pub fn describe(&self) -> String {
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres { url, .. } => redact_url(url),
        }
    }
}

/// `url` with any password replaced by `***` (URL or key-value form).
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if let Some((userinfo, host)) = authority.rsplit_once('@')
            && let Some((user, _)) = userinfo.split_once(':')
        {
            return format!("{scheme}://{user}:***@{host}{tail}");
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// This process's name in the leader lease: host, pid and a random suffix, so a
/// restarted replica never mistakes itself for its previous life.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "controller".to_owned());
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        rand::random::<u32>() & 0xff_ffff
    )
}

/// The web interface's listener and certificate.
pub struct WebListen {
    /// Bound by the caller (`--web-listen`).
    pub listener: TcpListener,
    /// `--web-cert` and `--web-key`; `None`: the controller's own serving certificate
    /// (plain HTTP under `--insecure-dev`, which has none).
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// Why the controller could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Resuming unfinished deployments failed.
    #[error(transparent)]
    Resume(#[from] crate::rollout::DeployError),
    /// The secrets key could not be loaded or created.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The serving certificate or TLS configuration could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::ServingError),
    /// The web interface's certificate could not be used.
    #[error(transparent)]
    WebTls(#[from] crate::web::WebTlsError),
    /// The web interface's session key could not be loaded or made.
    #[error(transparent)]
    WebSessionKey(#[from] crate::web::session::SessionKeyError),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// This replica led and lost the lease: it stopped acting; start it again (its
    /// service manager does) and it stands by.
    #[error(transparent)]
    LeaseLost(#[from] LeaseLost),
}

/// Runs the controller on `listener` until `shutdown` completes (or, for a replica that
/// led, until it loses the lease: [`ServeError::LeaseLost`]).
pub async fn run(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state_dir = settings.database.state_dir();
    let _ = tokio::fs::create_dir_all(&state_dir).await;
    let (store, fence, campaign, leadership) = match &settings.database {
        Database::Sqlite(path) => (Store::open(path).await?, None, None, Leadership::single()),
        Database::Postgres {
            url, lease, tls, ..
        } => {
            let fence = Fence::new(holder_name());
            let options = PgOptions {
                tls: tls.clone(),
                ..PgOptions::default()
            };
            let store = Store::open_postgres_with(url, fence.clone(), options).await?;
            let (campaign, leadership) =
                Campaign::new(url, lease.clone(), fence.clone(), tls.clone());
            info!(holder = fence.holder(), address = %lease.address, lease = %drover_shared::duration::human(lease.ttl), tls = tls.enabled(), role = "standby", "replica on PostgreSQL: campaigning for the leader lease");
            (store, Some(fence), Some(campaign), leadership)
        }
    };
    let secrets_key = match &settings.security {
        Security::Tls(tls) => tls.secrets_key.clone(),
        Security::InsecureDev => {
            warn!(
                "--insecure-dev: serving PLAINTEXT gRPC with NO authentication; every caller is admin and anyone who can reach this port controls the fleet. Development only."
            );
            let path = insecure_dev_key_path(&state_dir);
            tokio::task::spawn_blocking(move || SecretsKey::load_or_create(&path))
                .await
                .map_err(|e| crate::store::StoreError::Task(e.to_string()))??
        }
    };
    // Replicas share their web sessions' key, so a failover signs no browser out.
    let shared_session_key = matches!(settings.database, Database::Postgres { .. })
        .then(|| crate::web::SessionKey::from_secrets(&secrets_key));
    let vault = Vault::new(store.clone(), secrets_key);
    let hub = match &fence {
        Some(fence) => AgentHub::fenced(settings.hub, fence.clone()),
        None => AgentHub::new(settings.hub),
    };
    let metrics = Arc::new(Metrics::default());
    metrics.leadership(leadership.clone());
    let slo = SloMonitor::new(store.clone(), metrics.clone(), settings.slo);
    let deployer = Deployer::new(
        store.clone(),
        hub.clone(),
        DeployerSettings {
            fence,
            ..settings.deployer
        },
        metrics.clone(),
        settings.clock,
        vault.clone(),
        slo.clone(),
    );
    let stop_background = CancellationToken::new();
    // An early return (a failed resume) stops the background tasks too.
    let _stop_on_exit = stop_background.clone().drop_guard();
    let background = TaskTracker::new();
    let scraped = settings.metrics.is_some();
    if let Some(l) = settings.metrics {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "serving Prometheus metrics at /metrics");
        }
        let stop = stop_background.clone();
        background.spawn(
            crate::web::serve_router(
                l,
                None,
                crate::metrics::router(metrics.clone(), hub.clone()),
                async move { stop.cancelled().await },
            )
            .instrument(tracing::info_span!("metrics")),
        );
    }
    // What only the acting controller runs: the error-budget sampler and the
    // delivery-metric gauges (only where something scrapes them).
    let duties = {
        let (slo, store, metrics, stop, background) = (
            slo.clone(),
            store.clone(),
            metrics.clone(),
            stop_background.clone(),
            background.clone(),
        );
        move || {
            let halt = stop.clone();
            background.spawn(
                slo.run(async move { halt.cancelled().await })
                    .instrument(tracing::info_span!("slo")),
            );
            if scraped {
                background.spawn(
                    crate::metrics::dora::refresh(
                        store,
                        metrics,
                        crate::metrics::dora::REFRESH,
                        stop,
                    )
                    .instrument(tracing::info_span!("dora_metrics")),
                );
            }
        }
    };
    let mut resumed = 0;
    let mut duties = Some(duties);
    if campaign.is_none() {
        resumed = deployer.resume().await?;
        if let Some(start) = duties.take() {
            start();
        }
    }
    let (admission, auth, issuer) = match &settings.security {
        Security::Tls(tls) => (
            Admission::Enrolled(store.clone()),
            Authenticator::verified(store.clone()),
            Some(Issuer {
                ca: tls.ca.clone(),
                agent_cert_ttl: tls.agent_cert_ttl,
            }),
        ),
        Security::InsecureDev => (Admission::Open, Authenticator::insecure_dev(), None),
    };
    let serving = match &settings.security {
        Security::Tls(tls) => Some(ServingCert::mint(tls)?),
        Security::InsecureDev => None,
    };
    let ops = Arc::new(
        OperatorService::new(hub.clone(), deployer.clone(), vault, slo)
            .with_leadership(leadership.clone()),
    );
    if let Some(web) = settings.web {
        start_web(
            web,
            session_key(&state_dir, shared_session_key).await?,
            serving.as_ref(),
            |sessions| {
                crate::web::Web::new(
                    ops.clone(),
                    hub.clone(),
                    store.clone(),
                    auth.clone(),
                    sessions,
                    deployer.subscribe(),
                )
            },
            GateLayer::web(leadership.clone()),
            &background,
            stop_background.clone(),
        )
        .await?;
    }
    let router = tonic::transport::Server::builder()
        .layer(GateLayer::grpc(leadership.clone()))
        .add_service(hub.grpc_service(admission))
        .add_service(EnrollmentService::server(issuer, store.clone()))
        .add_service(OperatorService::server(ops, auth));
    // Leadership: campaign, resume, hold; `lost` fires if the lease is lost.
    let lost = CancellationToken::new();
    let release = CancellationToken::new();
    let leading = campaign.map(|campaign| {
        let (deployer, lost, release) = (deployer.clone(), lost.clone(), release.clone());
        let start = duties.take();
        tokio::spawn(
            async move {
                let outcome = lead(campaign, &deployer, start, &release).await;
                if outcome.is_err() {
                    lost.cancel();
                }
                outcome
            }
            .instrument(tracing::info_span!("leadership")),
        )
    });
    let grace = settings.shutdown_grace;
    let graceful = {
        let (deployer, hub, lost) = (deployer.clone(), hub.clone(), lost.clone());
        async move {
            tokio::select! {
                () = shutdown => {
                    // Rollouts stop at a step boundary first (their state stays recorded
                    // for the next leader), then open streams close so the server can
                    // finish.
                    deployer.shutdown(grace).await;
                }
                () = lost.cancelled() => {
                    // Fenced already: nothing they do is written, sent or changed on
                    // a load balancer; what they try is refused, and logged.
                    deployer.fenced_out(LOST_LEASE_GRACE).await;
                }
            }
            hub.shutdown();
        }
    };
    let addr = listener.local_addr().ok();
    let database = settings.database.describe();
    let role = leadership.role();
    match &settings.security {
        Security::Tls(tls) => {
            let serving = serving.ok_or_else(|| {
                ServeError::Store(crate::store::StoreError::Task(
                    "the serving certificate was not minted".to_owned(),
                ))
            })?;
            let config = serving.server_config(tls)?;
            if let Some(at) = serving.not_after_unix() {
                metrics.controller_certificate(at);
            }
            let renewed = metrics.clone();
            background.spawn(
                serving
                    .renew_daily(tls.clone(), stop_background.clone(), move |at| {
                        renewed.controller_certificate(at)
                    })
                    .instrument(tracing::info_span!("serving_cert")),
            );
            if let Some(addr) = addr {
                info!(%addr, database, resumed, role = role.as_str(), agent_cert_ttl = ?tls.agent_cert_ttl, "controller listening (mTLS) for agents and operators");
            }
            router
                .serve_with_incoming_shutdown(
                    drover_shared::tls::incoming(listener, config),
                    graceful,
                )
                .await?;
        }
        Security::InsecureDev => {
            if let Some(addr) = addr {
                info!(%addr, database, resumed, role = role.as_str(), "controller listening in plaintext for agents and operators");
            }
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), graceful)
                .await?;
        }
    }
    // The server is done: give the lease up (a standby takes over at once).
    release.cancel();
    let outcome = match leading {
        Some(task) => match task.await {
            Ok(outcome) => outcome,
            Err(e) => Err(crate::store::StoreError::Task(e.to_string()).into()),
        },
        None => Ok(()),
    };
    stop_background.cancel();
    background.close();
    background.wait().await;
    outcome
}

/// How long rollouts of a replica that lost the lease run into the fence before they
/// are stopped (each of their steps is refused: a moment to log what they tried).
const LOST_LEASE_GRACE: Duration = Duration::from_secs(1);

/// A replica's leadership: waits for the lease, resumes the deployments under it and
/// starts the leader's duties, then holds the lease until `release` (given up) or it is
/// lost.
async fn lead(
    mut campaign: Campaign,
    deployer: &Deployer,
    duties: Option<impl FnOnce()>,
    release: &CancellationToken,
) -> Result<(), ServeError> {
    let Some(epoch) = campaign.acquire(release).await else {
        return Ok(());
    };
    let herald = campaign.herald();
    let holding = campaign.hold(epoch, release);
    tokio::pin!(holding);
    tokio::select! {
        resumed = deployer.resume() => {
            let resumed = resumed?;
            herald.lead(epoch);
            info!(epoch, resumed, role = "leader", "leading: unfinished deployments resumed");
            if let Some(start) = duties {
                start();
            }
        }
        held = &mut holding => return held.map_err(ServeError::from),
    }
    holding.await.map_err(ServeError::from)
}

/// The key sealing web sessions: `shared` (replicas derive it from the secrets key they
/// share), else the one kept in `state_dir` (made on the first start).
async fn session_key(
    state_dir: &std::path::Path,
    shared: Option<crate::web::SessionKey>,
) -> Result<crate::web::SessionKey, ServeError> {
    if let Some(key) = shared {
        return Ok(key);
    }
    let path = state_dir.join(crate::web::session::KEY_FILE);
    Ok(
        tokio::task::spawn_blocking(move || crate::web::SessionKey::load_or_create(&path))
            .await
            .map_err(|e| crate::store::StoreError::Task(e.to_string()))??,
    )
}

/// Starts the web interface: its TLS configuration (the `--web-cert` pair, else the
/// controller's own certificate, else plain HTTP under `--insecure-dev`), its sessions
/// sealed with `key`, and the serving task, which stops with `stop`.
async fn start_web(
    listen: WebListen,
    key: crate::web::SessionKey,
    serving: Option<&ServingCert>,
    web: impl FnOnce(crate::web::Sessions) -> crate::web::Web,
    gate: GateLayer,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), ServeError> {
    let source = match (listen.cert, serving) {
        (Some((cert, key)), _) => Some(crate::web::TlsSource::Files { cert, key }),
        (None, Some(s)) => Some(crate::web::TlsSource::Controller(s.resolver())),
        (None, None) => None,
    };
    let tls = match source {
        Some(source) => Some(
            tokio::task::spawn_blocking(move || crate::web::web_tls_config(source))
                .await
                .map_err(|e| crate::store::StoreError::Task(e.to_string()))??,
        ),
        None => None,
    };
    let web = web(crate::web::Sessions::new(key));
    if let Ok(addr) = listen.listener.local_addr() {
        if tls.is_some() {
            info!(%addr, "serving the web interface at https://{addr}/");
        } else {
            warn!(%addr, "--insecure-dev: serving the web interface in PLAINTEXT at http://{addr}/; every visitor is admin");
        }
    }
    tasks.spawn(
        crate::web::serve(listen.listener, tls, web, gate, async move {
            stop.cancelled().await
        })
        .instrument(tracing::info_span!("web")),
    );
    Ok(())
}
