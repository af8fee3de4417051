//! The gate in front of the operator API: a tower service wrapping the generated
//! `OperatorServer` that authenticates and authorizes every request before it is
//! decoded, so no handler can forget to. A refused request never reaches a handler; an
//! admitted one carries its [`Principal`] in its extensions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use drover_shared::tls::TlsConnectInfo;
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;
use tonic::transport::server::TcpConnectInfo;
use tracing::{debug, error, warn};

use super::{Authenticator, Credentials, authorize, requirement};

/// `inner` behind authentication and the role check of each method.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> Guarded<S> {
    /// Puts `inner` behind `auth`.
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for Guarded<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Guarded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request; a fresh clone stays.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let auth = self.auth.clone();
        Box::pin(async move {
            let method = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let creds = Credentials {
                tls: request.extensions().get::<TlsConnectInfo>().cloned(),
                // Taken out of the request: no handler ever sees the token.
                authorization: request
                    .headers_mut()
                    .remove(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok().map(str::to_owned)),
            };
            let peer = creds.peer().or_else(|| {
                request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(|t| t.remote_addr)
            });
            let peer = peer_text(peer);
            let principal = match auth.authenticate(&creds).await {
                Ok(Ok(p)) => p,
                Ok(Err(refusal)) => {
                    warn!(%peer, %method, reason = %refusal.message, "refused an operator request: not authenticated");
                    return Ok(refusal.status().into_http());
                }
                Err(e) => {
                    error!(%peer, %method, error = %e, "cannot authenticate an operator request");
                    return Ok(Status::unavailable(
                        "the controller cannot check credentials right now (its database failed); see its log",
                    )
                    .into_http());
                }
            };
            if let Err(refusal) = authorize(&principal, requirement(&method)) {
                warn!(%peer, %method, who = %principal.name, role = %principal.role, reason = %refusal.message, "refused an operator request: role too low");
                return Ok(refusal.status().into_http());
            }
            debug!(%peer, %method, who = %principal.name, via = principal.method.as_str(), "operator request");
            request.extensions_mut().insert(principal);
            inner.call(request).await
        })
    }
}

fn peer_text(addr: Option<SocketAddr>) -> String {
    addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}
