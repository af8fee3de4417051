//! Self-test of the HAProxy harness and of the controller's load balancer driver against
//! a real HAProxy: drain, wait for sessions to end, enable, wait for UP, under HTTP load
//! (keep-alive and not) that must see zero failed requests; and the errors an operator
//! gets for a wrong backend or server name.
//!
//! Everything runs on loopback; every guard (HAProxy, backends, load, sampler) cleans up
//! on drop, also when an assertion fails.

use std::time::Duration;

use drover_controller::lb::{AdminState, LbError, LoadBalancer, OpStatus};
use drover_tests::haproxy::{Haproxy, HaproxyOptions};
use drover_tests::load::{Load, LoadOptions, VersionServer};
use drover_tests::{loopback_host, wait_until};

const UP_TIMEOUT: Duration = Duration::from_secs(10);
const CMD_TIMEOUT: Duration = Duration::from_secs(2);

/// Two backends (`host-1` answers v1, `host-2` v2) behind a real HAProxy, both UP.
async fn two_hosts(opts: HaproxyOptions) -> (Haproxy, VersionServer, VersionServer) {
    let h1 = VersionServer::start(loopback_host(), "v1").await.unwrap();
    let h2 = VersionServer::start(loopback_host(), "v2").await.unwrap();
    let servers = [("host-1", h1.addr()), ("host-2", h2.addr())];
    let proxy = Haproxy::start("web", &servers, opts).await;
    proxy.wait_all_up(UP_TIMEOUT).await;
    (proxy, h1, h2)
}

fn load(proxy: &Haproxy, keep_alive: bool) -> Load {
    let opts = LoadOptions {
        keep_alive,
        concurrency: 3,
        max_requests: 50_000,
        max_duration: Duration::from_secs(60),
        request_timeout: Duration::from_secs(5),
    };
    Load::start(proxy.frontend_addr(), opts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_enable_under_load_lose_no_request() {
    let (proxy, h1, _h2) = two_hosts(HaproxyOptions {
        tcp_runtime: true,
        ..Default::default()
    })
    .await;
    // The same HAProxy through both runtime addresses: the driver acts on each.
    let tcp = proxy.tcp_runtime_addr().expect("tcp runtime");
    let lb = LoadBalancer::new(
        vec![
            proxy.runtime_addr(),
            drover_controller::lb::RuntimeAddr::Tcp(tcp),
        ],
        "web".into(),
        CMD_TIMEOUT,
    );
    lb.validate(&["host-1".into(), "host-2".into()])
        .await
        .unwrap();

    let sampler = proxy.sample_states(Duration::from_millis(10));
    let keep_alive = load(&proxy, true);
    let close = load(&proxy, false);
    wait_until(UP_TIMEOUT, "load flowing to host-1", || async {
        h1.served() >= 20
    })
    .await;

    // Hold sessions open on host-1 so the drain has something to wait for.
    h1.set_delay(Duration::from_millis(50));
    lb.drain("host-1").await.unwrap();
    let outcome = lb
        .wait_drained("host-1", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!outcome.timed_out, "{outcome:?}");
    wait_until(UP_TIMEOUT, "the sampler seeing host-1 DRAIN", || async {
        sampler.last("host-1") == Some((OpStatus::Drain, AdminState::Drain))
    })
    .await;
    for s in lb.status("host-1").await.unwrap() {
        assert_eq!(
            (s.status, s.admin, s.current_sessions),
            (OpStatus::Drain, AdminState::Drain, 0)
        );
    }

    // Drained: host-1 gets no new request while the load goes on (keep-alive included).
    let served = h1.served();
    let done = keep_alive.completed() + close.completed();
    wait_until(UP_TIMEOUT, "200 more requests through HAProxy", || async {
        keep_alive.completed() + close.completed() >= done + 200
    })
    .await;
    assert_eq!(h1.served(), served, "a drained server got new requests");

    h1.set_delay(Duration::ZERO);
    lb.enable("host-1").await.unwrap();
    lb.wait_up("host-1", UP_TIMEOUT).await.unwrap();
    wait_until(UP_TIMEOUT, "host-1 back in rotation", || async {
        h1.served() > served
    })
    .await;
    wait_until(UP_TIMEOUT, "the sampler seeing host-1 UP again", || async {
        sampler.last("host-1") == Some((OpStatus::Up, AdminState::Ready))
    })
    .await;

    let (ka, cl) = (keep_alive.stop().await, close.stop().await);
    let samples = sampler.stop().await;
    eprintln!(
        "keep-alive load: {}\nclose load: {}",
        ka.summary(),
        cl.summary()
    );
    eprintln!(
        "host-1 states: {:?}; {} samples",
        samples.history("host-1"),
        samples.samples.len()
    );
    assert_eq!(ka.failed, 0, "keep-alive load: {}", ka.summary());
    assert_eq!(cl.failed, 0, "close load: {}", cl.summary());
    assert!(
        ka.ok > 100 && cl.ok > 100,
        "{} / {}",
        ka.summary(),
        cl.summary()
    );
    assert_eq!(ka.versions.keys().collect::<Vec<_>>(), ["v1", "v2"]);
    assert!(samples.errors.is_empty(), "{:?}", samples.errors);
    assert_eq!(
        samples.max_out_of_rotation(),
        1,
        "{:?}",
        samples.history("host-1")
    );
    assert!(
        samples.saw_in_order(
            "host-1",
            &[
                |s, a| *s == OpStatus::Up && a == AdminState::Ready,
                |s, a| *s == OpStatus::Drain && a == AdminState::Drain,
                |s, a| *s == OpStatus::Up && a == AdminState::Ready,
            ]
        ),
        "host-1 went through {:?}",
        samples.history("host-1")
    );
    assert_eq!(
        samples.history("host-2").len(),
        1,
        "host-2 never left rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_lets_in_flight_requests_finish() {
    let (proxy, h1, h2) = two_hosts(HaproxyOptions::default()).await;
    let lb = proxy.load_balancer();
    h1.set_delay(Duration::from_secs(2));
    h2.set_delay(Duration::from_secs(2));
    let slow = Load::start(
        proxy.frontend_addr(),
        LoadOptions {
            concurrency: 2,
            max_requests: 2,
            ..Default::default()
        },
    );
    wait_until(UP_TIMEOUT, "a session on host-1", || async {
        lb.status("host-1").await.unwrap()[0].current_sessions > 0
    })
    .await;
    lb.drain("host-1").await.unwrap();
    let outcome = lb
        .wait_drained("host-1", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        outcome.timed_out && outcome.sessions_left >= 1,
        "{outcome:?}"
    );

    // Drain does not cut sessions: the slow requests still succeed.
    let report = slow.finish().await;
    assert_eq!((report.ok, report.failed), (2, 0), "{}", report.summary());
    let outcome = lb
        .wait_drained("host-1", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((outcome.timed_out, outcome.sessions_left), (false, 0));
    lb.enable("host-1").await.unwrap();
    lb.wait_up("host-1", UP_TIMEOUT).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_names_and_unhealthy_servers_give_errors_that_name_them() {
    let (proxy, _h1, h2) = two_hosts(HaproxyOptions::default()).await;
    let sock = proxy.admin_socket().display().to_string();

    let lb = LoadBalancer::new(vec![proxy.runtime_addr()], "nope".into(), CMD_TIMEOUT);
    let err = lb.validate(&["host-1".into()]).await.unwrap_err();
    assert!(matches!(err, LbError::NoSuchBackend { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no backend nope") && err.to_string().contains(&sock),
        "{err}"
    );
    let err = lb.drain("host-1").await.unwrap_err();
    assert!(matches!(err, LbError::NoSuchBackend { .. }), "{err:?}");

    let lb = proxy.load_balancer();
    let err = lb
        .validate(&["host-1".into(), "host-9".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("server web/host-9"), "{err}");
    for err in [
        lb.drain("host-9").await.unwrap_err(),
        lb.enable("host-9").await.unwrap_err(),
        lb.status("host-9").await.map(drop).unwrap_err(),
    ] {
        assert!(
            matches!(&err, LbError::NoSuchServer { server, .. } if server == "host-9"),
            "{err:?}"
        );
        assert!(err.to_string().contains(&sock), "{err}");
    }
    let err = lb.drain("host-1; shutdown sessions").await.unwrap_err();
    assert!(matches!(err, LbError::InvalidName { .. }), "{err:?}");

    // An app that fails its health check goes DOWN; wait_up says where and why.
    h2.set_ready(false);
    wait_until(UP_TIMEOUT, "host-2 DOWN", || async {
        lb.status("host-2").await.unwrap()[0].status == OpStatus::Down
    })
    .await;
    let err = lb
        .wait_up("host-2", Duration::from_millis(300))
        .await
        .unwrap_err();
    let LbError::NotUp(not_up) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (not_up.haproxy.as_str(), &not_up.status),
        (sock.as_str(), &OpStatus::Down)
    );
    assert!(not_up.check.contains("L7STS"), "{err}");
    h2.set_ready(true);
    lb.wait_up("host-2", UP_TIMEOUT).await.unwrap();
}

/// With `inter 1s` (the fleet's checks), a server whose checks are held at health 0
/// while "its container changes" comes UP `rise` × `fastinter` after the re-enable;
/// without the hold the first fresh check may be a whole `inter` away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_checks_bring_a_reenabled_server_up_after_rise_fast_checks() {
    let (proxy, h1, _h2) = two_hosts(drover_tests::fleet::haproxy_options()).await;
    let lb = proxy.load_balancer();
    let step = Duration::from_millis(300);
    let mut took = vec![];
    for held in [false, true, false, true] {
        lb.drain("host-1").await.unwrap();
        // The swap, as HAProxy's checks see it: the old container still answers, is
        // stopped, the new one starts and answers before the agent reports it ready.
        let swap = async {
            tokio::time::sleep(step).await;
            h1.set_ready(false);
            tokio::time::sleep(step).await;
            h1.set_ready(true);
            tokio::time::sleep(step * 2).await;
        };
        if held {
            tokio::select! {
                () = swap => {}
                e = lb.hold_checks("host-1") => panic!("hold ended: {e}"),
            }
        } else {
            swap.await;
        }
        let start = tokio::time::Instant::now();
        lb.expect_fresh_checks("host-1").await.unwrap();
        lb.enable("host-1").await.unwrap();
        lb.wait_up("host-1", UP_TIMEOUT).await.unwrap();
        took.push((held, start.elapsed()));
    }
    eprintln!("enable→UP (held, took): {took:?}");
    // rise 2 × fastinter 100 ms, plus a 50 ms poll and a loaded machine's slack; well
    // under the 1 s `inter` the unheld server may wait first.
    for (_, t) in took.iter().filter(|(held, _)| *held) {
        assert!(*t < Duration::from_millis(450), "{took:?}");
    }
}
