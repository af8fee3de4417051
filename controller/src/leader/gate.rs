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

/// What a standby's web interface still serves: its static files (the stylesheet of
/// the page that names the leader), which read no state.
const WEB_ASSETS: &str = "/assets/";

/// How often a standby's page looks again (it shows the fleet once this replica leads).
const STANDBY_REFRESH_S: u32 = 5;

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

/// The page a browser gets from a standby: who leads, and that it reloads itself
/// every [`STANDBY_REFRESH_S`] seconds, to show the fleet once this replica leads.
fn standby_page(leader: Option<&str>) -> String {
    maud::html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(STANDBY_REFRESH_S);
                title { "Drover: standby replica" }
                link rel="stylesheet" href="/assets/app.css";
            }
            body {
                main.narrow data-page="standby" {
                    h1 { "This controller is a standby replica" }
                    @match leader {
                        Some(l) => p #standby role="status" {
                            "The leader is " code { (l) } " (the address agents and the CLI \
                             use). Open the leader's web interface to deploy and watch."
                        },
                        None => p #standby role="status" {
                            "No replica leads at the moment: a new leader is being chosen."
                        },
                    }
                    p {
                        "This page looks again every " (STANDBY_REFRESH_S) " seconds and \
                         shows the fleet as soon as this replica leads."
                    }
                }
            }
        }
    }
    .into_string()
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
        let path = request.uri().path();
        let served = match self.face {
            Face::Grpc => ALWAYS_SERVED.contains(&path),
            Face::Web => path.starts_with(WEB_ASSETS),
        };
        if self.leadership.acts() || served {
            return Either::Left(self.inner.call(request));
        }
        let leader = self.leadership.leader();
        let message = standby_message(leader.as_deref());
        let mut response = match self.face {
            Face::Grpc => tonic::Status::unavailable(message).into_http::<RB>(),
            Face::Web => {
                // A browser gets a page (in the app's style, reloading itself); a
                // script or a load balancer's check, the words.
                let html = request
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|a| a.to_str().ok())
                    .is_some_and(|a| a.contains("text/html"));
                let (body, kind) = if html {
                    (standby_page(leader.as_deref()), "text/html; charset=utf-8")
                } else {
                    (format!("{message}\n"), "text/plain; charset=utf-8")
                };
                let mut r = http::Response::new(RB::text(body));
                *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(kind),
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
        call_accepting(layer, path, "*/*").await
    }

    async fn call_accepting(layer: &GateLayer, path: &str, accept: &str) -> http::Response<String> {
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new("served".to_owned()))
        });
        let mut gate = layer.layer(inner);
        let req = http::Request::builder()
            .uri(path)
            .header(http::header::ACCEPT, accept)
            .body(())
            .unwrap();
        gate.call(req).await.unwrap()
    }

    #[tokio::test]
    async fn a_browser_gets_a_page_naming_the_leader_that_reloads_itself() {
        let (_tx, leadership) = standby(Some("https://b:7070/<x>"));
        let web = GateLayer::web(leadership);
        let r = call_accepting(&web, "/", "text/html,application/xhtml+xml,*/*;q=0.8").await;
        assert_eq!(r.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let page = r.body();
        assert!(
            page.contains("This controller is a standby replica"),
            "{page}"
        );
        assert!(
            page.contains("<code>https://b:7070/&lt;x&gt;</code>"),
            "escaped: {page}"
        );
        assert!(
            page.contains(r#"http-equiv="refresh" content="5""#),
            "{page}"
        );
        // Its stylesheet is served; nothing else is.
        assert_eq!(call(&web, "/assets/app.css").await.body(), "served");
        assert_ne!(call(&web, "/deployments").await.body(), "served");
        // A script (or a load balancer's check) gets the words.
        let r = call(&web, "/").await;
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert!(
            r.body().contains("the leader is https://b:7070/<x>"),
            "{}",
            r.body()
        );
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
