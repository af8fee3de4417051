//! The web interface in a real browser: headless Chromium (Debian's, through
//! chromedriver) against the real `drover serve --web-listen` of a real fleet (agents,
//! Docker, registry with htpasswd auth, HAProxy), under HTTP load through HAProxy:
//!
//! - a deployer signs in, deploys v2 from the Releases page, and watches every host's
//!   cell reach `done` through live updates, the page never reloaded; no request fails;
//!   the history row names the token; the latency from each controller event to the
//!   DOM change is measured in the page (printed, not asserted);
//! - a staged deploy waiting at a manual gate is promoted from its page; another is
//!   aborted from its page and the canary is rolled back;
//! - a viewer sees no action buttons, and a POST with the viewer's session (and its
//!   CSRF token) is refused, as is a deployer's POST without its CSRF token, while the
//!   same POST with the token is accepted; a signed-out browser is sent to sign-in;
//! - the page shows a lost connection when `drover serve` is killed, and live again
//!   once it is back.
//!
//! Each run saves a screenshot of every page under `target/screenshots/`. Every test
//! builds its own fleet and browser, removed when dropped, also on failure; waits have
//! deadlines and no sleep synchronises anything.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::v1::HostPhase;
use drover_tests::DemoImage;
use drover_tests::browser::{Browser, WAIT};
use drover_tests::fleet::{CLI_TIMEOUT, Fleet, FleetOptions, field};
use serde_json::json;
use tokio::time::Instant;

/// How long a deployment may take to reach a given state.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// The event-to-DOM latency the interface aims at (reported, not asserted).
const LATENCY_TARGET_MS: f64 = 500.0;

/// A fleet of `hosts` on v1 serving the web interface, with v2 pushed.
async fn web_fleet(hosts: usize) -> Fleet {
    Fleet::start(FleetOptions {
        hosts,
        images: &[DemoImage::V1, DemoImage::V2],
        web: true,
        ..Default::default()
    })
    .await
}

/// The fleet's spec with a manual gate after a one-host canary.
fn gated_spec(fleet: &Fleet) -> String {
    let gated = fleet.spec_toml("1")
        + "\n[[rollout.stage]]\nhosts = \"1\"\npromotion = \"manual\"\n\n[[rollout.stage]]\nhosts = \"100%\"\n";
    fleet
        .write_spec("gated.toml", &gated)
        .to_string_lossy()
        .into_owned()
}

/// Starts `drover deploy` of `version` with the gated spec and waits until it waits at
/// the gate; returns the following CLI and the deployment id.
async fn deploy_to_the_gate(
    fleet: &Fleet,
    spec: &str,
    version: &str,
) -> (drover_tests::fleet::RunningCli, String) {
    let mut deploy = fleet.spawn_drover(&["deploy", "-f", spec, "--version", version, "--json"]);
    let first = deploy
        .wait_json(STEP_TIMEOUT, "the first snapshot", |v| {
            v["type"] == "deployment"
        })
        .await;
    let id = field(&first, "id").to_string();
    fleet
        .wait_state(&id, "awaiting_promotion", STEP_TIMEOUT)
        .await;
    (deploy, id)
}

/// Clicks `button[data-action=ACTION]` on the deployment page `id` shown and waits
/// until `#deployment` shows one of `states`; returns how long that took from the
/// click. Actions are safe to repeat: when Chromium aborted the POST on a network change
/// (Docker changing interfaces), the page is loaded again and, if the state did not
/// move, the button clicked again.
async fn act(browser: &Browser, id: &str, action: &str, states: &[&str]) -> Duration {
    let button = format!("button[data-action={action}]");
    let t = Instant::now();
    for _ in 0..3 {
        browser
            .wait_js(
                &format!("{button} enabled"),
                WAIT,
                "const b = document.querySelector(arguments[0]); return !!b && !b.disabled",
                vec![json!(button)],
            )
            .await;
        browser.click(&button).await;
        let shown = browser
            .wait_js(
                &format!("#deployment in one of {states:?} after {action}"),
                STEP_TIMEOUT,
                "if (document.body && document.body.classList.contains('neterror')) return 'neterror'; const d = document.querySelector('#deployment'); return !!d && arguments[0].includes(d.getAttribute('data-state')) && 'shown'",
                vec![json!(states)],
            )
            .await;
        if shown == "shown" {
            return t.elapsed();
        }
        eprintln!("{action}: the POST was interrupted by a network change: again");
        browser.goto(&format!("/deployments/{id}")).await;
        let now = browser.attr("#deployment", "data-state").await;
        if now.as_deref().is_some_and(|s| states.contains(&s)) {
            return t.elapsed();
        }
    }
    panic!("{action} on {id}: interrupted three times");
}

/// What the browser shows after a form was sent.
enum Landed {
    /// The deployment page of this id.
    Deployment(String),
    /// Chromium's network error page: the POST was aborted, maybe after it arrived.
    NetworkError,
}

/// Waits for the deployment page (`/deployments/{id}`) or a network error page.
async fn landed(browser: &Browser) -> Landed {
    let v = browser
        .wait_js(
            "the deployment page",
            WAIT,
            "if (document.body && document.body.classList.contains('neterror')) return 'neterror'; return location.pathname.startsWith('/deployments/') && !!document.querySelector('main[data-page=deployment]') && location.pathname",
            vec![],
        )
        .await;
    match v.as_str() {
        Some("neterror") => Landed::NetworkError,
        Some(p) => Landed::Deployment(
            p.strip_prefix("/deployments/")
                .unwrap_or_default()
                .to_string(),
        ),
        None => unreachable!("wait_js returns a truthy value"),
    }
}

/// The visible text of the first element of the page's main content that mentions
/// `needle` and is a row (a table row, list item, or element marked with
/// `data-deployment`).
async fn row_mentioning(browser: &Browser, needle: &str) -> String {
    let v = browser
        .wait_js(
            &format!("a row mentioning {needle}"),
            WAIT,
            "const rows = [...document.querySelectorAll('main tr, main li, main [data-deployment]')]; const r = rows.find(e => e.innerText.includes(arguments[0])); return r ? r.innerText : null",
            vec![json!(needle)],
        )
        .await;
    v.as_str().unwrap_or_default().to_string()
}

// ----- 1. deploy from the Releases page, live to the end -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_deploys_v2_from_the_releases_page_and_watches_every_host_reach_done_live() {
    let fleet = web_fleet(4).await;
    let spec = fleet.spec_path().to_string_lossy().into_owned();
    let made = fleet
        .drover(&["release", "create", "-f", &spec, "--version", "v2"])
        .await;
    assert_eq!(made.code, Some(0), "{}", made.describe());
    let release = made.stdout.trim().to_string();
    // The web deploys with the spec of the service's newest deployment: one host at a
    // time, as the fleet's spec says (its first deploy went everywhere at once).
    let baseline = fleet.deploy("v1").await;
    assert_eq!(baseline.code, Some(0), "{}", baseline.describe());
    let baseline = field(&baseline.final_snapshot(), "id").to_string();
    let token = fleet.api_token("bob", "deployer").await;
    let browser = fleet.browser().await;
    browser.sign_in(&token).await;
    let load = fleet.load(true);

    browser.goto("/releases?service=web").await;
    let form = format!("form[data-deploy][action$=\"/releases/{release}/deploy\"]");
    browser.wait_for(&form, WAIT).await;
    browser.screenshot("releases").await;
    browser.submit(&form).await;
    let id = match landed(&browser).await {
        Landed::Deployment(id) => id,
        Landed::NetworkError => {
            // Chromium aborted the POST on a network change: did it arrive?
            let newest = fleet.history_json().await;
            let newest = field(&newest[0], "id").to_string();
            if newest != baseline {
                browser.goto(&format!("/deployments/{newest}")).await;
                newest
            } else {
                browser.goto("/releases?service=web").await;
                browser.submit(&form).await;
                match landed(&browser).await {
                    Landed::Deployment(id) => id,
                    Landed::NetworkError => panic!("the deploy's POST was interrupted twice"),
                }
            }
        }
    };
    assert!(
        id.starts_with("d-"),
        "landed on the deployment page: {id:?}"
    );
    browser.record_changes("[data-host]", "data-phase").await;
    let mut first_seen = BTreeMap::new();
    for h in fleet.hosts() {
        let cell = format!("[data-host=\"{}\"]", h.name);
        browser.wait_for(&cell, WAIT).await;
        first_seen.insert(h.name.clone(), browser.attr(&cell, "data-phase").await);
    }
    browser.screenshot("deployment-live").await;
    for h in fleet.hosts() {
        let cell = format!("[data-host=\"{}\"]", h.name);
        browser
            .wait_attr(&cell, "data-phase", "done", STEP_TIMEOUT)
            .await;
    }
    browser
        .wait_attr("#deployment", "data-state", "succeeded", STEP_TIMEOUT)
        .await;
    // Nothing more will change: the banner says so rather than "live" or "lost".
    browser
        .wait_attr("#conn", "data-state", "ended", WAIT)
        .await;
    browser.screenshot("deployment-done").await;
    let seen = load.stop().await;

    assert!(
        browser.still_recording().await,
        "the deployment page was reloaded or left while the deploy ran"
    );
    assert!(
        first_seen.values().any(|p| p.as_deref() != Some("done")),
        "the page showed the deploy already done when it opened, so no live update was seen: {first_seen:?}"
    );
    let changes = browser.changes().await;
    let mut done_at: BTreeMap<String, f64> = BTreeMap::new();
    for (host, phase, at) in &changes {
        if phase == "done" {
            done_at.entry(host.clone()).or_insert(*at);
        }
    }
    for h in fleet.hosts() {
        if first_seen[&h.name].as_deref() != Some("done") {
            assert!(
                done_at.contains_key(&h.name),
                "{}'s cell never turned done in place (live update): {changes:?}",
                h.name
            );
        }
    }
    assert_eq!(seen.failed, 0, "{}", seen.summary());
    fleet.assert_serves("v2").await;

    // Event to DOM: each host's `done` event as the controller recorded it, against the
    // moment its cell changed in the page.
    let events = fleet.events(&id).await;
    let mut latencies: Vec<f64> = vec![];
    for (host, at) in &done_at {
        if let Some(e) = events
            .iter()
            .find(|e| &e.host == host && e.phase == HostPhase::Done as i32)
        {
            latencies.push(at - e.at_ms as f64);
        }
    }
    let median = drover_tests::bench::median(&latencies);
    let max = latencies.iter().copied().fold(f64::NAN, f64::max);
    eprintln!(
        "event to DOM (host cell to done), {} hosts: median {median:.0} ms, max {max:.0} ms (target under {LATENCY_TARGET_MS} ms): {latencies:?}",
        latencies.len()
    );

    // The history row names the token, in the page and in the CLI's history.
    let history = fleet.history_json().await;
    let row = history
        .iter()
        .find(|d| field(d, "id") == id)
        .unwrap_or_else(|| panic!("{id} in the history: {history:?}"));
    assert!(
        field(row, "requested_by").contains("bob"),
        "the history names the token: {row}"
    );
    browser.goto("/history?service=web").await;
    let shown = row_mentioning(&browser, &id).await;
    assert!(
        shown.contains("bob"),
        "the history row of {id} names the token bob: {shown:?}"
    );
    browser.screenshot("history").await;
    browser
        .goto(&format!("/history/diff?a={baseline}&b={id}"))
        .await;
    browser.wait_for("main[data-page]", WAIT).await;
    browser.screenshot("history-diff").await;

    // Every other page, for a person to look at.
    for (path, page) in [
        ("/", "overview"),
        ("/hosts", "hosts"),
        ("/schedules", "schedules"),
        ("/delivery", "delivery"),
    ] {
        browser.goto(path).await;
        browser
            .wait_for(&format!("main[data-page={page}]"), WAIT)
            .await;
        browser.screenshot(page).await;
    }
    browser.sign_out().await;
    browser.screenshot("sign-in").await;
    browser.close().await;
}

// ----- 2. a manual gate: promote and abort from the page -----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_at_a_manual_gate_is_promoted_from_its_page_and_another_aborted_there() {
    let fleet = web_fleet(3).await;
    let spec = gated_spec(&fleet);
    let token = fleet.api_token("carol", "deployer").await;
    let browser = fleet.browser().await;
    browser.sign_in(&token).await;
    let load = fleet.load(true);

    // Promote at the gate.
    let (deploy, id) = deploy_to_the_gate(&fleet, &spec, "v2").await;
    browser.goto(&format!("/deployments/{id}")).await;
    browser
        .wait_attr("#deployment", "data-state", "awaiting_promotion", WAIT)
        .await;
    browser.screenshot("deployment-gate").await;
    let took = act(
        &browser,
        &id,
        "promote",
        &["rolling", "baking", "succeeded"],
    )
    .await;
    eprintln!("promote: click to the new state shown in {took:?}");
    let run = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(run.code, Some(0), "{}", run.describe());
    browser
        .wait_attr("#deployment", "data-state", "succeeded", STEP_TIMEOUT)
        .await;
    let events = fleet.events(&id).await;
    assert!(
        events
            .iter()
            .any(|e| e.message.contains("promoted by") && e.message.contains("carol")),
        "the deployment's events name the token that promoted: {events:?}"
    );
    fleet.assert_serves("v2").await;

    // Abort at the gate: the canary goes back.
    let (deploy, id) = deploy_to_the_gate(&fleet, &spec, "v1").await;
    let at_gate = fleet.status(&id).await;
    let canary = drover_tests::fleet::phases(&at_gate)
        .into_iter()
        .find(|(_, p)| p == "done")
        .map(|(h, _)| h)
        .unwrap_or_else(|| panic!("a canary done at the gate: {at_gate}"));
    browser.goto(&format!("/deployments/{id}")).await;
    browser
        .wait_attr("#deployment", "data-state", "awaiting_promotion", WAIT)
        .await;
    let took = act(&browser, &id, "abort", &["rolling_back", "rolled_back"]).await;
    eprintln!("abort: click to the new state shown in {took:?}");
    let run = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    browser
        .wait_attr("#deployment", "data-state", "rolled_back", STEP_TIMEOUT)
        .await;
    browser
        .wait_attr(
            &format!("[data-host=\"{canary}\"]"),
            "data-phase",
            "rolled_back",
            WAIT,
        )
        .await;
    // One reason for every control an ended deployment refuses, not one per button.
    browser
        .wait_attr("#conn", "data-state", "ended", WAIT)
        .await;
    let reasons = browser
        .wait_js(
            "the refused controls' reasons",
            WAIT,
            "return [...document.querySelectorAll('[data-reason]')].map(e => e.textContent)",
            vec![],
        )
        .await;
    assert_eq!(
        reasons,
        json!(["the deployment has ended (rolled_back)"]),
        "{reasons}"
    );
    browser.screenshot("deployment-aborted").await;
    let snapshot = fleet.status(&id).await;
    assert_eq!(field(&snapshot, "state"), "rolled_back", "{snapshot}");
    assert!(
        field(&snapshot, "error").contains("carol"),
        "the deployment names who aborted: {snapshot}"
    );
    let seen = load.stop().await;
    assert_eq!(seen.failed, 0, "{}", seen.summary());
    fleet.assert_serves("v2").await;
    browser.close().await;
}

// ----- 3. roles and CSRF --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_sees_no_buttons_and_posts_without_the_right_role_or_csrf_token_are_refused() {
    let fleet = web_fleet(2).await;
    let spec = gated_spec(&fleet);
    let viewer = fleet.api_token("vera", "viewer").await;
    let deployer = fleet.api_token("dave", "deployer").await;
    let (deploy, id) = deploy_to_the_gate(&fleet, &spec, "v2").await;
    let page = format!("/deployments/{id}");
    let abort = format!("/deployments/{id}/abort");
    let client = fleet.web_client();

    // The viewer's browser: the deployment and releases pages show no action.
    let browser = fleet.browser().await;
    browser.sign_in(&viewer).await;
    browser.goto(&page).await;
    browser
        .wait_attr("#deployment", "data-state", "awaiting_promotion", WAIT)
        .await;
    assert_eq!(
        browser.attrs("button[data-action]", "data-action").await,
        Vec::<String>::new(),
        "a viewer sees no action buttons on the deployment page"
    );
    browser.screenshot("deployment-viewer").await;
    browser.goto("/releases?service=web").await;
    browser.wait_for("main[data-page=releases]", WAIT).await;
    assert_eq!(
        browser
            .count("button[data-action], form[data-deploy]")
            .await,
        0,
        "a viewer sees no deploy form or button on the releases page"
    );

    // A forged POST with the viewer's own session and CSRF token.
    let cookie = browser.cookie_header().await;
    let csrf = browser.csrf().await;
    let forged = client
        .post_form(&abort, Some(&cookie), &[("csrf", &csrf)])
        .await
        .expect("POST as the viewer");
    assert_eq!(forged.status, 403, "{}", forged.describe());

    // A deployer's session: refused without the CSRF token and with a wrong one...
    let dave = client.sign_in(&deployer).await.expect("sign in as dave");
    let bare = client
        .post_form(&abort, Some(&dave.cookie), &[])
        .await
        .expect("POST without CSRF");
    assert_eq!(bare.status, 403, "{}", bare.describe());
    let wrong = client
        .post_form(&abort, Some(&dave.cookie), &[("csrf", &csrf)])
        .await
        .expect("POST with the viewer's CSRF token");
    assert_eq!(wrong.status, 403, "{}", wrong.describe());
    let still = fleet.status(&id).await;
    assert_eq!(
        field(&still, "state"),
        "awaiting_promotion",
        "no refused POST changed the deployment: {still}"
    );
    // ... and accepted with it: the refusals above were the role's and the token's.
    let accepted = client
        .post_form(&abort, Some(&dave.cookie), &[("csrf", &dave.csrf)])
        .await
        .expect("POST with the CSRF token");
    assert_eq!(accepted.status, 303, "{}", accepted.describe());
    assert!(
        accepted
            .header("location")
            .is_some_and(|l| l.ends_with(&page)),
        "{}",
        accepted.describe()
    );
    let run = deploy.finish(CLI_TIMEOUT).await;
    assert_eq!(run.code, Some(1), "{}", run.describe());
    let ended = fleet.status(&id).await;
    assert!(
        field(&ended, "error").contains("dave"),
        "the abort is recorded with the token's name: {ended}"
    );

    // Signed out: every page sends the browser to sign-in.
    browser.sign_out().await;
    browser.goto(&page).await;
    browser.wait_for("form#sign-in", WAIT).await;
    assert_eq!(browser.path().await.split('?').next(), Some("/sign-in"));
    let anonymous = client.get(&page, None).await.expect("GET signed out");
    assert_eq!(anonymous.status, 303, "{}", anonymous.describe());
    assert!(
        anonymous
            .header("location")
            .is_some_and(|l| l.starts_with("/sign-in")),
        "{}",
        anonymous.describe()
    );
    browser.close().await;
}

// ----- 4. the connection banner --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_lost_connection_and_recovers_when_drover_serve_restarts() {
    let mut fleet = Fleet::start(FleetOptions {
        hosts: 2,
        images: &[DemoImage::V1],
        web: true,
        ..Default::default()
    })
    .await;
    let token = fleet.api_token("olga", "viewer").await;
    let browser = fleet.browser().await;
    browser.sign_in(&token).await;
    browser.goto("/").await;
    browser.wait_attr("#conn", "data-state", "live", WAIT).await;
    browser.record_changes("#conn", "data-state").await;

    fleet.kill_controller();
    browser.wait_attr("#conn", "data-state", "lost", WAIT).await;
    let banner = browser.text("#conn").await;
    assert!(
        banner.to_lowercase().contains("lost"),
        "the banner says the connection is lost: {banner:?}"
    );
    browser.screenshot("connection-lost").await;
    fleet.start_controller().await;
    browser.wait_attr("#conn", "data-state", "live", WAIT).await;
    assert!(
        browser.still_recording().await,
        "the page recovered by itself, without a reload"
    );
    let states = || async {
        browser
            .changes()
            .await
            .into_iter()
            .map(|(_, v, _)| v)
            .collect::<Vec<String>>()
    };
    let changes = states().await;
    assert_eq!(
        changes.first().map(String::as_str),
        Some("lost"),
        "{changes:?}"
    );
    // A stream the restarting controller drops once more is reopened too: the page
    // settles on live by itself.
    drover_tests::wait_until(WAIT, "the banner settled on live", || async {
        states().await.last().map(String::as_str) == Some("live")
            && browser.attr("#conn", "data-state").await.as_deref() == Some("live")
    })
    .await;
    browser.close().await;
}
