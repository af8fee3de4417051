//! Serving a router over HTTPS (or plain HTTP for `/metrics` and `--insecure-dev`):
//! one task per connection, each owned by a [`JoinSet`]; the TLS handshake has a
//! deadline; on shutdown the listener closes, open connections get a grace period to
//! finish (server-sent event streams never do on their own), then they are cut.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span};

/// How long a client gets to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Where the web interface's certificate comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// The controller's own serving certificate (renewed daily as it is).
    Controller(drover_shared::tls::SwappableCert),
    /// `--web-cert` / `--web-key` (PEM).
    Files {
        /// The certificate chain.
        cert: std::path::PathBuf,
        /// Its private key.
        key: std::path::PathBuf,
    },
}

/// Why the web interface's TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WebTlsError {
    /// A `--web-cert` or `--web-key` file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate or key is not usable.
    #[error("cannot use --web-cert/--web-key: {0}")]
    Key(#[from] drover_shared::tls::TlsConfigError),
    /// rustls refused the configuration.
    #[error("cannot configure TLS for the web interface: {0}")]
    Rustls(#[from] rustls::Error),
}

fn read(path: &Path) -> Result<String, WebTlsError> {
    std::fs::read_to_string(path).map_err(|source| WebTlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A browser-facing TLS configuration: TLS 1.2 and 1.3, no client certificate asked
/// for, HTTP/2 and HTTP/1.1. Blocking (reads files): call at start.
pub fn web_tls_config(source: TlsSource) -> Result<Arc<rustls::ServerConfig>, WebTlsError> {
    let cert = match source {
        TlsSource::Controller(c) => c,
        TlsSource::Files { cert, key } => drover_shared::tls::SwappableCert::new(
            drover_shared::tls::certified_key(&read(&cert)?, &read(&key)?)?,
        ),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until `shutdown`.
pub async fn serve_router(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut connections = JoinSet::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    debug!(error = %e, "accepting a web connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Reap finished connections as they end, so the set stays small.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        connections.spawn(
            async move {
                let builder = Builder::new(TokioExecutor::new());
                let result = match acceptor {
                    Some(acceptor) => {
                        let tls =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    return debug!(reason = %e, "web TLS handshake failed");
                                }
                                Err(_) => return debug!("web TLS handshake timed out"),
                            };
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    None => {
                        let conn =
                            builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                        watcher.watch(conn.into_owned()).await
                    }
                };
                if let Err(e) = result {
                    debug!(error = %e, "web connection ended with an error");
                }
            }
            .instrument(info_span!("web_connection", %peer)),
        );
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!(
            open = connections.len(),
            "cutting web connections still open after the grace period"
        );
    }
    connections.shutdown().await;
}
