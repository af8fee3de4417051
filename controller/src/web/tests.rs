//! Handler tests: the real router over a real (temporary) store, driven with
//! `tower::ServiceExt::oneshot`: sign-in, the redirect of a signed-out browser, CSRF,
//! the refusal of a viewer's POST, escaping, and the security headers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use drover_shared::tls::Role;
use tower::ServiceExt;

use super::*;
use crate::metrics::Metrics;
use crate::rollout::{Deployer, DeployerSettings};
use crate::secrets::{SecretsKey, Vault};
use crate::slo::SloMonitor;
use crate::store::ApiToken;
use crate::tokens::{self, TokenKind};

struct Fixture {
    web: Web,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("d.db")).await.unwrap();
    let hub = AgentHub::new(Default::default());
    let metrics = Arc::new(Metrics::default());
    let slo = SloMonitor::new(store.clone(), metrics.clone(), Default::default());
    let vault = Vault::new(store.clone(), SecretsKey::generate());
    let deployer = Deployer::new(
        store.clone(),
        hub.clone(),
        DeployerSettings::default(),
        metrics,
        crate::schedule::SystemClock::shared(),
        vault.clone(),
        slo.clone(),
    );
    let ops = Arc::new(OperatorService::new(
        hub.clone(),
        deployer.clone(),
        vault,
        slo,
    ));
    let web = Web::new(
        ops,
        hub,
        store.clone(),
        Authenticator::verified(store.clone()),
        Sessions::new(SessionKey::generate()),
        deployer.subscribe(),
    );
    Fixture {
        web,
        store,
        _dir: dir,
    }
}

impl Fixture {
    /// A token named `name` with `role`, as its text.
    async fn token(&self, name: &str, role: Role) -> String {
        let t = tokens::generate(TokenKind::Api);
        self.store
            .create_api_token(ApiToken {
                id: t.id.clone(),
                name: name.into(),
                role,
                secret_hash: t.secret_hash.clone(),
                created_by: "test".into(),
                expires_ms: None,
                revoked_ms: None,
            })
            .await
            .unwrap();
        t.token.to_string()
    }

    async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.web.clone().router().oneshot(req).await.unwrap()
    }

    /// Signs in with `token`: the cookie and the CSRF token.
    async fn sign_in(&self, token: &str) -> (String, String) {
        let r = self
            .send(form("/sign-in", None, &format!("token={token}")))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
        for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(set.contains(attr), "{set}");
        }
        let cookie = set.split(';').next().unwrap().to_owned();
        let page = body(self.send(get("/", Some(&cookie))).await).await;
        let csrf = page
            .split("name=\"csrf\" content=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        (cookie, csrf)
    }
}

fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

fn form(uri: &str, cookie: Option<&str>, fields: &str) -> Request<Body> {
    let mut b =
        Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::from(fields.to_owned())).unwrap()
}

async fn body(r: axum::response::Response) -> String {
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 22).await.unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_signed_out_browser_is_sent_to_sign_in() {
    let f = fixture().await;
    for page in [
        "/",
        "/hosts",
        "/releases",
        "/history",
        "/schedules",
        "/delivery",
        "/deployments/d-1",
    ] {
        let r = f.send(get(page, None)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert_eq!(r.headers()[header::LOCATION], "/sign-in", "{page}");
    }
    let r = f.send(get("/sign-in", None)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body(r).await.contains("<form id=\"sign-in\""));
}

#[tokio::test]
async fn a_bad_token_does_not_sign_in_and_is_not_echoed() {
    let f = fixture().await;
    let r = f
        .send(form(
            "/sign-in",
            None,
            "token=dra1.0123456789abcdef.secretsecret",
        ))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let page = body(r).await;
    assert!(!page.contains("secretsecret"), "{page}");
}

#[tokio::test]
async fn every_page_renders_for_a_viewer_with_the_security_headers_and_no_buttons() {
    let f = fixture().await;
    let token = f.token("vic", Role::Viewer).await;
    let (cookie, _) = f.sign_in(&token).await;
    for (page, name) in [
        ("/", "overview"),
        ("/hosts", "hosts"),
        ("/releases", "releases"),
        ("/history", "history"),
        ("/schedules", "schedules"),
        ("/delivery", "delivery"),
    ] {
        let r = f.send(get(page, Some(&cookie))).await;
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        let html = body(r).await;
        assert!(html.contains(&format!("data-page=\"{name}\"")), "{page}");
        assert!(
            !html.contains("data-action"),
            "a viewer sees no action on {page}"
        );
        assert!(
            !html.contains(" style=") && !html.contains("<script>"),
            "no inline style or script on {page}"
        );
        assert!(!html.contains(&token), "the token never appears on a page");
    }
}

#[tokio::test]
async fn a_post_without_the_csrf_token_or_from_a_viewer_is_refused() {
    let f = fixture().await;
    let (viewer, viewer_csrf) = f.sign_in(&f.token("vic", Role::Viewer).await).await;
    let r = f
        .send(form(
            "/deployments/d-1/abort",
            Some(&viewer),
            &format!("csrf={viewer_csrf}"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        body(r)
            .await
            .contains("may not promote, pause, resume, abort")
    );
    let (deployer, csrf) = f.sign_in(&f.token("dee", Role::Deployer).await).await;
    for fields in [
        String::new(),
        "csrf=0000".to_owned(),
        format!("csrf={viewer_csrf}"),
    ] {
        let r = f
            .send(form("/deployments/d-1/abort", Some(&deployer), &fields))
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{fields:?}");
    }
    // With its own token the deployer reaches the operator API, which knows no d-1.
    let r = f
        .send(form(
            "/deployments/d-1/abort",
            Some(&deployer),
            &format!("csrf={csrf}"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_revoked_token_ends_its_session_at_the_next_action() {
    let f = fixture().await;
    let (cookie, csrf) = f.sign_in(&f.token("dee", Role::Deployer).await).await;
    f.store.revoke_api_tokens("dee").await.unwrap();
    let r = f
        .send(form(
            "/deployments/d-1/pause",
            Some(&cookie),
            &format!("csrf={csrf}"),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[header::LOCATION], "/sign-in");
    let r = f.send(get("/", Some(&cookie))).await;
    assert_eq!(r.headers()[header::LOCATION], "/sign-in");
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let f = fixture().await;
    let (cookie, csrf) = f.sign_in(&f.token("dee", Role::Deployer).await).await;
    let r = f
        .send(form("/sign-out", Some(&cookie), &format!("csrf={csrf}")))
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(
        r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let r = f.send(get("/", Some(&cookie))).await;
    assert_eq!(r.headers()[header::LOCATION], "/sign-in");
}

#[test]
fn untrusted_values_are_escaped() {
    let evil = "<script>alert(1)</script>\"'&";
    let html =
        maud::html! { td.labels { span { (evil) "=" (evil) } } pre.log { (evil) } }.into_string();
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
        "{html}"
    );
}

/// A deployment in `state` on a done host and a failed one, as the store holds it.
async fn seed(store: &Store, id: &str, state: crate::state::DeploymentState) {
    use crate::state::HostPhase;
    use crate::store::{Deployment, DeploymentHost};
    // One service each: a deployment holds its service's lock until it ends.
    let d = Deployment {
        state,
        ..Deployment::example(id, &format!("web-{id}"))
    };
    store
        .create(
            d,
            vec![
                DeploymentHost::example("h1", 0),
                DeploymentHost::example("h2", 0),
            ],
        )
        .await
        .unwrap();
    let lines: Vec<String> = vec!["listening on :8080".into(), "panic: <no database>".into()];
    let failure = crate::logtail::with_log_tail("h2: container web-2 was not ready", &lines);
    for (h, phase, error) in [
        ("h1", HostPhase::Done, None),
        ("h2", HostPhase::Failed, Some(failure)),
    ] {
        store
            .set_hosts(id, &[h.to_owned()], phase, error, "")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_deployment_page_shows_the_bake_and_a_failed_hosts_log_tail() {
    use crate::store::{Bake, BakeSignals, BakeVerdict, now_ms};
    let f = fixture().await;
    seed(&f.store, "d-bake", crate::state::DeploymentState::Baking).await;
    let now = now_ms();
    let bake = Bake {
        stage: 0,
        started_ms: now - 30_000,
        ends_ms: now + 90_000,
        measured_ms: now,
        canary_hosts: vec!["h1".into()],
        baseline_hosts: 3,
        canary: BakeSignals {
            requests: 400,
            errors: 2,
            response_time_ms: 12,
            restarts: 0,
        },
        baseline: BakeSignals {
            requests: 1200,
            errors: 6,
            response_time_ms: 9,
            restarts: 0,
        },
        limits: crate::spec::CanarySection::default(),
        verdict: BakeVerdict::Watching,
        reason: String::new(),
    };
    f.store.record_bake("d-bake", bake).await.unwrap();
    let (cookie, _) = f.sign_in(&f.token("vic", Role::Viewer).await).await;
    let html = body(f.send(get("/deployments/d-bake", Some(&cookie))).await).await;
    assert!(
        html.contains("data-bake=\"1\" data-verdict=\"watching\""),
        "{html}"
    );
    for figure in [
        "0.5% (2 of 400)",
        "0.5% (6 of 1200)",
        "12 ms",
        "9 ms",
        "against 3 baseline hosts",
        "left",
    ] {
        assert!(html.contains(figure), "{figure} in {html}");
    }
    // The failure's first line in the cell, the container's log lines folded under it
    // and escaped.
    assert!(
        html.contains("h2: container web-2 was not ready</div>"),
        "{html}"
    );
    assert!(
        html.contains("<details class=\"logtail\"><summary>last 2 log lines</summary>"),
        "{html}"
    );
    assert!(html.contains("panic: &lt;no database&gt;"), "{html}");
    assert!(!html.contains("| listening"), "{html}");

    // The bake's end is carried the same way.
    let mut breached = f.store.bakes("d-bake").await.unwrap().remove(0);
    breached.verdict = BakeVerdict::Breached;
    breached.reason = "error rate 20.0% on canary h1".into();
    f.store.record_bake("d-bake", breached).await.unwrap();
    let html = body(f.send(get("/deployments/d-bake", Some(&cookie))).await).await;
    assert!(html.contains("data-verdict=\"breached\""), "{html}");
    assert!(html.contains("error rate 20.0% on canary h1"), "{html}");
    assert!(
        !html.contains("data-left"),
        "no time left once it ended: {html}"
    );
}

#[tokio::test]
async fn an_ended_deployment_says_once_why_no_action_applies() {
    let f = fixture().await;
    seed(&f.store, "d-end", crate::state::DeploymentState::Succeeded).await;
    seed(&f.store, "d-run", crate::state::DeploymentState::Rolling).await;
    let (cookie, _) = f.sign_in(&f.token("dee", Role::Deployer).await).await;
    let html = body(f.send(get("/deployments/d-end", Some(&cookie))).await).await;
    assert_eq!(html.matches("data-reason").count(), 1, "{html}");
    assert_eq!(
        html.matches("the deployment has ended (succeeded)</span>")
            .count(),
        1
    );
    for c in gate::Control::ALL {
        let button = format!("data-action=\"{}\" disabled", c.as_str());
        assert!(html.contains(&button), "{button} in {html}");
    }
    assert!(html.contains("id=\"live\" data-ended"), "{html}");
    // A running one: the allowed controls are buttons, each refused one says why.
    let html = body(f.send(get("/deployments/d-run", Some(&cookie))).await).await;
    assert!(
        html.contains("<button type=\"submit\" data-action=\"abort\">"),
        "{html}"
    );
    assert!(
        html.contains("<span data-reason>not paused</span>"),
        "{html}"
    );
    assert!(!html.contains("data-ended"), "{html}");
}
