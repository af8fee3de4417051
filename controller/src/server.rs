//! `drover serve`: one listener serving the agent channel, the enrollment service and the
//! operator API, over mTLS (or plaintext with `--insecure-dev`); the state database; and
//! the rollout engine (which resumes unfinished deployments first).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

use crate::auth::Authenticator;
use crate::enroll::{EnrollmentService, Issuer};
use crate::hub::{Admission, AgentHub, HubSettings};
use crate::metrics::Metrics;
use crate::operator::OperatorService;
use crate::rollout::{Deployer, DeployerSettings};
use crate::schedule::SharedClock;
use crate::secrets::{SecretsError, SecretsKey, Vault, insecure_dev_key_path};
use crate::slo::{SloMonitor, SloSettings};
use crate::store::Store;
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
    /// The SQLite database file.
    pub database: PathBuf,
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
}

/// Runs the controller on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if let Some(dir) = settings
        .database
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    let store = Store::open(&settings.database).await?;
    let secrets_key = match &settings.security {
        Security::Tls(tls) => tls.secrets_key.clone(),
        Security::InsecureDev => {
            warn!(
                "--insecure-dev: serving PLAINTEXT gRPC with NO authentication; every caller is admin and anyone who can reach this port controls the fleet. Development only."
            );
            let path = insecure_dev_key_path(&settings.database);
            tokio::task::spawn_blocking(move || SecretsKey::load_or_create(&path))
                .await
                .map_err(|e| crate::store::StoreError::Task(e.to_string()))??
        }
    };
    let vault = Vault::new(store.clone(), secrets_key);
    let hub = AgentHub::new(settings.hub);
    let metrics = Arc::new(Metrics::default());
    let slo = SloMonitor::new(store.clone(), metrics.clone(), settings.slo);
    let deployer = Deployer::new(
        store.clone(),
        hub.clone(),
        settings.deployer,
        metrics.clone(),
        settings.clock,
        vault.clone(),
        slo.clone(),
    );
    let stop_background = CancellationToken::new();
    // An early return (a failed resume) stops the background tasks too.
    let _stop_on_exit = stop_background.clone().drop_guard();
    let metrics_task = settings.metrics.map(|l| {
        if let Ok(addr) = l.local_addr() {
            info!(%addr, "serving Prometheus metrics at /metrics");
        }
        let stop = stop_background.clone();
        tokio::spawn(
            crate::web::serve_router(
                l,
                None,
                crate::metrics::router(metrics.clone(), hub.clone()),
                async move { stop.cancelled().await },
            )
            .instrument(tracing::info_span!("metrics")),
        )
    });
    let slo_task = {
        let stop = stop_background.clone();
        tokio::spawn(
            slo.clone()
                .run(async move { stop.cancelled().await })
                .instrument(tracing::info_span!("slo")),
        )
    };
    // The delivery-metric gauges, only where something scrapes them.
    let dora_task = metrics_task.is_some().then(|| {
        tokio::spawn(
            crate::metrics::dora::refresh(
                store.clone(),
                metrics.clone(),
                crate::metrics::dora::REFRESH,
                stop_background.clone(),
            )
            .instrument(tracing::info_span!("dora_metrics")),
        )
    });
    let resumed = deployer.resume().await?;
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
    let ops = Arc::new(OperatorService::new(
        hub.clone(),
        deployer.clone(),
        vault,
        slo,
    ));
    let web_task = match settings.web {
        None => None,
        Some(web) => {
            let task = start_web(
                web,
                &settings.database,
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
                stop_background.clone(),
            )
            .await?;
            Some(task)
        }
    };
    let router = tonic::transport::Server::builder()
        .add_service(hub.grpc_service(admission))
        .add_service(EnrollmentService::server(issuer, store.clone()))
        .add_service(OperatorService::server(ops, auth));
    let graceful = async {
        shutdown.await;
        // Rollouts stop at a step boundary first (their state stays recorded for the
        // next start), then open streams close so the server can finish.
        deployer.shutdown(settings.shutdown_grace).await;
        hub.shutdown();
    };
    let addr = listener.local_addr().ok();
    let database = settings.database.display().to_string();
    let mut renewal = None;
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
            renewal = Some(tokio::spawn(
                serving
                    .renew_daily(tls.clone(), stop_background.clone(), move |at| {
                        renewed.controller_certificate(at)
                    })
                    .instrument(tracing::info_span!("serving_cert")),
            ));
            if let Some(addr) = addr {
                info!(%addr, database, resumed, agent_cert_ttl = ?tls.agent_cert_ttl, "controller listening (mTLS) for agents and operators");
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
                info!(%addr, database, resumed, "controller listening in plaintext for agents and operators");
            }
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), graceful)
                .await?;
        }
    }
    stop_background.cancel();
    let _ = slo_task.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = dora_task {
        let _ = t.await;
    }
    if let Some(t) = renewal {
        let _ = t.await;
    }
    if let Some(t) = web_task {
        let _ = t.await;
    }
    Ok(())
}

/// Starts the web interface: its TLS configuration (the `--web-cert` pair, else the
/// controller's own certificate, else plain HTTP under `--insecure-dev`), the session
/// key kept next to the database, and the serving task, which stops with `stop`.
async fn start_web(
    listen: WebListen,
    database: &std::path::Path,
    serving: Option<&ServingCert>,
    web: impl FnOnce(crate::web::Sessions) -> crate::web::Web,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
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
    let key_path = database
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join(crate::web::session::KEY_FILE);
    let key =
        tokio::task::spawn_blocking(move || crate::web::SessionKey::load_or_create(&key_path))
            .await
            .map_err(|e| crate::store::StoreError::Task(e.to_string()))??;
    let web = web(crate::web::Sessions::new(key));
    if let Ok(addr) = listen.listener.local_addr() {
        if tls.is_some() {
            info!(%addr, "serving the web interface at https://{addr}/");
        } else {
            warn!(%addr, "--insecure-dev: serving the web interface in PLAINTEXT at http://{addr}/; every visitor is admin");
        }
    }
    Ok(tokio::spawn(
        crate::web::serve(
            listen.listener,
            tls,
            web,
            async move { stop.cancelled().await },
        )
        .instrument(tracing::info_span!("web")),
    ))
}
