//! Error budgets against real parts: the demo app answering 500 to exactly one `/`
//! request in ten, behind a real HAProxy that is reloaded (`-sf`) in the middle, so its
//! counters start again from zero. The budget the controller computes from HAProxy's
//! counters must match the requests this test sent, exactly.
//!
//! Everything runs on loopback; every process is stopped by its guard, also when an
//! assertion fails.

use std::sync::Arc;
use std::time::Duration;

use drover_controller::metrics::Metrics;
use drover_controller::slo::{Budget, SloMonitor, SloSettings, SloSpec, SloTarget};
use drover_controller::store::Store;
use drover_tests::haproxy::{Haproxy, HaproxyOptions};
use drover_tests::http;
use drover_tests::process::bin_path;
use drover_tests::solo::SoloController;
use drover_tests::{ChildGuard, free_port, loopback_host, wait_for, wait_until};

const UP_TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLED_TIMEOUT: Duration = Duration::from_secs(20);

/// The demo app on loopback, failing every tenth `/` request with a 500, behind a
/// real HAProxy (backend `web`) with the app UP.
async fn app_behind_haproxy() -> (ChildGuard, Haproxy) {
    let ip = loopback_host();
    let port = free_port(ip).to_string();
    let addr = std::net::SocketAddr::from((ip, port.parse::<u16>().unwrap()));
    let ip_text = ip.to_string();
    let app = ChildGuard::spawn(
        &format!("demo-app {addr}"),
        &bin_path("demo-app"),
        std::iter::empty::<&str>(),
        &[
            ("DEMO_ADDR", &ip_text),
            ("DEMO_PORT", &port),
            ("DEMO_VERSION", "v1"),
            ("DEMO_MODE", "error-rate:10"),
        ],
    );
    let proxy = Haproxy::start("web", &[("app-1", addr)], HaproxyOptions::default()).await;
    proxy.wait_all_up(UP_TIMEOUT).await;
    (app, proxy)
}

/// Sends `n` GET / through HAProxy, one after another; returns how many were 500.
async fn send(proxy: &Haproxy, n: usize) -> u64 {
    let mut errors = 0;
    for _ in 0..n {
        let r = http::get(proxy.frontend_addr(), "/")
            .await
            .unwrap_or_else(|e| panic!("GET / through HAProxy: {e}\n{}", proxy.logs()));
        match r.status {
            200 => {}
            500 => errors += 1,
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    errors
}

fn target(proxy: &Haproxy, availability: &str) -> SloTarget {
    SloTarget {
        service: "web".into(),
        environment: "production".into(),
        runtime: vec![proxy.runtime_addr()],
        backend: "web".into(),
        spec: SloSpec::parse(availability, "1h").unwrap(),
    }
}

/// Samples until the budget has counted `requests` (HAProxy counts a request when it
/// ends, which the client may see a moment before), and returns it.
async fn sampled(monitor: &SloMonitor, requests: u64) -> Budget {
    wait_for(
        SAMPLED_TIMEOUT,
        &format!("{requests} requests counted"),
        || async {
            let round = monitor.sample_once().await.map_err(|e| e.to_string())?;
            if !round.failures.is_empty() {
                return Err(format!("{:?}", round.failures));
            }
            let b = monitor
                .budget("web", "production")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("not watched")?;
            if b.counted.requests == requests {
                Ok(b)
            } else {
                Err(format!("{:?}", b.counted))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_counts_exactly_what_was_sent_across_haproxy_reloads() {
    let (_app, mut proxy) = app_behind_haproxy().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("drover.db")).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let monitor = SloMonitor::new(store, metrics.clone(), SloSettings::default());
    monitor.watch(target(&proxy, "99.5%")).await.unwrap();
    assert!(monitor.sample_once().await.unwrap().failures.is_empty());

    // 20 requests: the app fails the 10th and the 20th.
    let mut errors = send(&proxy, 20).await;
    assert_eq!(errors, 2);
    let b = sampled(&monitor, 20).await;
    assert_eq!((b.counted.requests, b.counted.errors), (20, 2));

    // A reload: the new process counts from zero, and reaches 60 before it is sampled,
    // more than the old process's 20. Only the generation tells it is a reset.
    proxy.reload().await;
    proxy.wait_all_up(UP_TIMEOUT).await;
    errors += send(&proxy, 60).await;
    assert_eq!(errors, 8, "requests 30, 40, ..., 80 failed");
    let b = sampled(&monitor, 80).await;
    assert_eq!((b.counted.requests, b.counted.errors), (80, 8));

    // Another reload, sampled after fewer requests than before: the counter went down.
    proxy.reload().await;
    proxy.wait_all_up(UP_TIMEOUT).await;
    errors += send(&proxy, 15).await;
    let b = sampled(&monitor, 95).await;
    assert_eq!((b.counted.requests, b.counted.errors), (95, errors));
    assert_eq!(errors, 9);

    // 9 errors against 95 * 0.5% = 0.475 allowed: spent, and said so.
    assert!(b.spent);
    assert_eq!(b.availability, Some(1.0 - 9.0 / 95.0));
    assert_eq!(
        b.describe(),
        "error budget of web in production is spent: 9 errors of 0.5 allowed (99.5% over 1h, 95 requests); deploys are held until it recovers; a rollback still goes through; an admin may override with --override --reason"
    );
    let mut reg = prometheus_client::registry::Registry::default();
    metrics.slo.register(&mut reg);
    let mut gauges = String::new();
    prometheus_client::encoding::text::encode(&mut gauges, &reg).unwrap();
    let remaining = (0.475 - 9.0) / 0.475;
    let series =
        "drover_slo_error_budget_remaining_ratio{service=\"web\",environment=\"production\"} ";
    let shown: f64 = gauges
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from\n{gauges}"));
    assert!((shown - remaining).abs() < 1e-9, "{shown} vs {remaining}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drover_serve_samples_a_watched_target_and_drover_slo_shows_it() {
    let (_app, proxy) = app_behind_haproxy().await;
    let controller = SoloController::start_with(&["--slo-interval", "100ms"]).await;
    // What the deploy path records when an environment with an `slo` is deployed to:
    // the running controller picks the target up from its database.
    let store = Store::open(&controller.database()).await.unwrap();
    store
        .put_slo_target(target(&proxy, "80%"))
        .await
        .expect("watch");
    // A first sample before any request: the baseline.
    let json = |run: &drover_tests::fleet::CliRun| run.json().into_iter().next();
    wait_until(SAMPLED_TIMEOUT, "a first sample", || async {
        let run = controller
            .admin(&["slo", "web", "--env", "production", "--json"])
            .await;
        json(&run).is_some_and(|j| j["measured_since_ms"].is_u64())
    })
    .await;

    let errors = send(&proxy, 30).await;
    assert_eq!(errors, 3);
    let j = wait_for(SAMPLED_TIMEOUT, "30 requests in drover slo", || async {
        let run = controller
            .admin(&["slo", "web", "--env", "production", "--json"])
            .await;
        match json(&run) {
            Some(j) if j["requests"] == 30 => Ok(j),
            _ => Err(format!("{run:?}")),
        }
    })
    .await;
    assert_eq!(j["errors"], 3);
    assert_eq!(j["availability"], "80%");
    assert_eq!(j["window"], "1h");
    assert_eq!(j["allowed_errors"], 6.0);
    assert_eq!(j["remaining_errors"], 3.0);
    assert_eq!(j["remaining_ratio"], 0.5);
    assert_eq!(j["achieved"], 0.9);
    assert_eq!(j["spent"], false);

    let run = controller.admin(&["slo", "web"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains(
            "error budget of web in production: 50% left, 3 errors of 6 allowed (80% over 1h, 30 requests)"
        ),
        "{run:?}"
    );
    let line = run.stdout.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("production"), "{run:?}");
    assert!(line.contains("90.000%"), "{run:?}");

    let run = controller.admin(&["slo", "web", "--env", "qa"]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .contains("no error budget is watched for web in qa"),
        "{run:?}"
    );
    drop(store);
}
