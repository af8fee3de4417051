//! TLS under tonic, done by Drover rather than tonic's own TLS features, so both ends use
//! exactly the rustls configuration in [`super::config`] and the server can hand each
//! request the verified peer identity.
//!
//! - [`incoming`] turns a `TcpListener` into a stream of finished TLS connections for
//!   `Server::serve_with_incoming*`. Handshakes run in their own tasks (one slow or hostile
//!   client does not hold up the others) with a deadline; failed handshakes are logged with
//!   the peer address and rustls' reason and dropped.
//! - Every request on such a connection carries a [`TlsConnectInfo`] in its extensions.
//! - [`channel`] / [`lazy_channel`] open a client `Channel` over TLS to an `https://` URL.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint};
use tracing::{debug, warn};

use super::identity::PeerCertificate;
use super::pki::CONTROLLER_SERVER_NAME;

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server knows about the other end of a TLS connection; in every request's
/// extensions (`request.extensions().get::<TlsConnectInfo>()`).
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate, verified against the fleet CA, if it presented one.
    pub peer: Option<PeerCertificate>,
}

/// A finished server-side TLS connection.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TlsConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections on `listener` and yields them once their TLS handshake with
/// `config` succeeded. Ends when the listener fails for good or the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> impl Stream<Item = Result<TlsConnection, io::Error>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel::<Result<TlsConnection, io::Error>>(256);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .and_then(|c| PeerCertificate::parse(c).ok());
                        let info = TlsConnectInfo {
                            remote_addr: Some(addr),
                            peer,
                        };
                        let _ = tx.send(Ok(TlsConnection { stream, info })).await;
                    }
                    Ok(Err(e)) => {
                        warn!(peer = %addr, reason = %e, "refused a connection: TLS handshake failed")
                    }
                    Err(_) => {
                        debug!(peer = %addr, "refused a connection: no TLS handshake within {HANDSHAKE_TIMEOUT:?}")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// HTTP/2 ping period and the wait for its answer: a controller that stops answering
/// (a frozen process, a machine gone without a reset) is left within two of them, so an
/// agent reaches the replica that took over while the deployment waits for it.
pub const KEEP_ALIVE: Duration = Duration::from_secs(4);

/// The endpoint for `url` with Drover's client defaults.
fn endpoint(url: &str, connect_timeout: Duration) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE)
        .keep_alive_while_idle(true))
}

/// A connector that dials TCP to the URI's host and port, then does the TLS handshake,
/// verifying the controller identity.
/// A TLS client stream as hyper wants it.
type ClientIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
/// The future a connector call returns.
type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<ClientIo>> + Send>>;

fn connector(
    config: Arc<ClientConfig>,
) -> impl tower::Service<http::Uri, Response = ClientIo, Error = io::Error, Future = ConnectFuture>
+ Clone
+ Send
+ 'static {
    let tls = TlsConnector::from(config);
    tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URL has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(CONTROLLER_SERVER_NAME)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = tls.connect(name, tcp).await?;
            Ok(TokioIo::new(stream))
        }) as Pin<Box<dyn Future<Output = io::Result<_>> + Send>>
    })
}

/// Connects to the controller at `url` (`https://host:port`) over TLS with `config`.
pub async fn channel(
    url: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(url, connect_timeout)?
        .connect_with_connector(connector(config))
        .await
}

/// Like [`channel`], but connects on first use (and reconnects after failures).
pub fn lazy_channel(
    url: &str,
    config: Arc<ClientConfig>,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(url, connect_timeout)?.connect_with_connector_lazy(connector(config)))
}

/// Connects to `url` in plaintext (`http://`); only for `--insecure-dev`.
pub async fn insecure_channel(
    url: &str,
    connect_timeout: Duration,
) -> Result<Channel, tonic::transport::Error> {
    endpoint(url, connect_timeout)?.connect().await
}
