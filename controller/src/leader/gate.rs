//! What a standby answers: every gRPC call but `WhoAmI` (agents' streams and
//! enrollments included) is refused with `UNAVAILABLE`, a message naming the leader and
//! its address in the `drover-leader` metadata, which agents and the CLI follow; the web
//! interface answers 503 with the same words. The metadata is there even while no replica
//! leads (empty then): it is what tells a standby's refusal from any other. One layer in front of every service, so
//! no handler of a standby can act.

use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::Leadership;

/// The metadata key (and HTTP header) carrying the leader's address.
pub const LEADER_METADATA: &str = "drover-leader";

/// The one call a standby answers itself: `drover whoami` shows its role.
const ALWAYS_SERVED: &[&str] = &["/drover.v1.Operator/WhoAmI"];

/// Which answer a refused request gets.
#[derive(Clone, Copy, Debug)]
enum Face {
    /// A gRPC status.
    Grpc,
    /// A plain-text HTTP 503 page.
    Web,
}

/// Wraps a service so that a standby refuses it (see the module doc).
#[derive(Clone, Debug)]
pub struct GateLayer {
    /// The role, read at every request.
    leadership: Leadership,
    /// gRPC or web answers.
    face: Face,
}

impl GateLayer {
    /// For the gRPC server (agents, enrollment, operators).
    pub fn grpc(leadership: Leadership) -> Self {
        Self {
            leadership,
            face: Face::Grpc,
        }
    }

    /// For the web interface.
    pub fn web(leadership: Leadership) -> Self {
        Self {
            leadership,
            face: Face::Web,
        }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            leadership: self.leadership.clone(),
            face: self.face,
        }
    }
}

/// See [`GateLayer`].
#[derive(Clone, Debug)]
pub struct Gate<S> {
    /// The wrapped service.
    inner: S,
    /// The role.
    leadership: Leadership,
    /// gRPC or web answers.
    face: Face,
}

/// What a standby says instead of acting.
pub fn standby_message(leader: Option<&str>) -> String {
    match leader {
        Some(l) => format!(
            "this controller is a standby replica; the leader is {l}: ask it (--controller {l}, or give every replica's address, comma-separated)"
        ),
        None => "this controller is a standby replica and no replica leads at the moment (a new leader is being chosen); retry in a few seconds".to_owned(),
    }
}

/// A response body a refusal can be written in.
pub trait RefusalBody: Default {
    /// A body holding `text` (a gRPC refusal carries its message in headers instead).
    fn text(text: String) -> Self;
}

impl RefusalBody for tonic::body::Body {
    fn text(_: String) -> Self {
        Self::default()
    }
}

impl RefusalBody for axum::body::Body {
    fn text(text: String) -> Self {
        Self::from(text)
    }
}

impl RefusalBody for String {
    fn text(text: String) -> Self {
        text
    }
}

impl<S, B, RB> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: RefusalBody,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Self::Response, Self::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if self.leadership.acts() || ALWAYS_SERVED.contains(&request.uri().path()) {
            return Either::Left(self.inner.call(request));
        }
        let leader = self.leadership.leader();
        let message = standby_message(leader.as_deref());
        let mut response = match self.face {
            Face::Grpc => tonic::Status::unavailable(message).into_http::<RB>(),
            Face::Web => {
                let mut r = http::Response::new(RB::text(format!("{message}\n")));
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
        };
        // Always present, so a client tells a standby from any other UNAVAILABLE;
        // empty while no replica leads.
        let value = leader
            .and_then(|l| http::HeaderValue::from_str(&l).ok())
            .unwrap_or_else(|| http::HeaderValue::from_static(""));
        response.headers_mut().insert(LEADER_METADATA, value);
        Either::Right(ready(Ok(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leader::Role;
    use tokio::sync::watch;

    fn standby(leader: Option<&str>) -> (watch::Sender<Role>, Leadership) {
        let (tx, role) = watch::channel(Role::Standby {
            leader: leader.map(str::to_owned),
        });
        (tx, Leadership { role })
    }

    async fn call(layer: &GateLayer, path: &str) -> http::Response<String> {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new("served".to_owned()))
        });
        let mut gate = layer.layer(inner);
        let req = http::Request::builder().uri(path).body(()).unwrap();
        gate.call(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_standby_refuses_all_but_whoami_and_names_the_leader() {
        let (tx, leadership) = standby(Some("https://b:7070"));
        let layer = GateLayer::grpc(leadership);
        let r = call(&layer, "/drover.v1.Operator/Deploy").await;
        assert_eq!(r.headers()["grpc-status"], "14", "UNAVAILABLE");
        assert_eq!(r.headers()[LEADER_METADATA], "https://b:7070");
        let status = tonic::Status::from_header_map(r.headers()).unwrap();
        assert!(
            status.message().contains("the leader is https://b:7070"),
            "{status:?}"
        );
        let r = call(&layer, "/drover.v1.AgentChannel/Connect").await;
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(
            call(&layer, "/drover.v1.Operator/WhoAmI").await.body(),
            "served"
        );
        // Once it leads, everything is served.
        tx.send_replace(Role::Leader { epoch: 2 });
        assert_eq!(
            call(&layer, "/drover.v1.Operator/Deploy").await.body(),
            "served"
        );
    }

    #[tokio::test]
    async fn a_standby_without_a_leader_says_to_retry_and_the_web_gets_503() {
        let (_tx, leadership) = standby(None);
        let r = call(&GateLayer::web(leadership), "/deployments").await;
        assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.body().contains("no replica leads"), "{}", r.body());
        assert_eq!(
            r.headers()[LEADER_METADATA],
            "",
            "a standby, no leader named"
        );
    }
}
