use std::collections::BTreeMap;
use std::time::Duration;

use super::stages::Promotion;
use super::*;

const MINIMAL: &str = r#"
[service]
name = "web"
image = "127.0.0.1:5000/demo"
port = 8080

[targets]
selector = "role=web"
"#;

#[test]
fn minimal_spec_gets_defaults() {
    let s = ServiceSpec::from_toml(MINIMAL).unwrap();
    assert_eq!(s.rollout.batch_size, BatchSize::Count(1));
    assert_eq!(s.rollout.on_failure, OnFailure::Rollback);
    assert_eq!(
        s.readiness.kind,
        ReadinessKind::Http {
            path: "/ready".into(),
            status: None
        }
    );
    assert_eq!(s.service.restart, RestartPolicy::UnlessStopped);
    assert_eq!(s.rollout.staging, None);
    let c = s.container("127.0.0.1:5000/demo@sha256:x", "v2", "10.0.0.5");
    assert_eq!(c.ports[0].host_ip, "0.0.0.0");
    assert_eq!(c.ports[0].host_port, 8080);
}

#[test]
fn full_spec_round_trips() {
    let text = format!(
        "{MINIMAL}\n{}",
        r#"
[readiness]
kind = "http"
path = "/healthz"
status = 204
interval = "100ms"
timeout = "1s"
success_threshold = 2
deadline = "20s"

[rollout]
batch_size = "25%"
stop_timeout = "5s"
drain_timeout = "15s"
on_failure = "pause"

[load_balancer]
runtime = ["unix:/run/haproxy/admin.sock", "127.0.0.1:9999"]
backend = "web"
server_name = "web-{host}"
"#
    );
    let s = ServiceSpec::from_toml(&text).unwrap();
    assert_eq!(s.rollout.batch_size, BatchSize::Percent(25));
    assert_eq!(s.rollout.on_failure, OnFailure::Pause);
    assert_eq!(s.readiness.interval, Duration::from_millis(100));
    assert_eq!(s.load_balancer.as_ref().unwrap().server_for("h1"), "web-h1");
    let again = ServiceSpec::from_toml(&s.to_toml()).unwrap();
    assert_eq!(again, s);
}

#[test]
fn unknown_key_is_named() {
    let text = MINIMAL.replace("port = 8080", "port = 8080\nprot = 1");
    let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
    assert!(e.contains("prot"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            "port = 8080",
            "port = 8080\n[rollout]\nstop_timeout = \"10 parsecs\"",
            "10 parsecs",
        ),
        (
            "port = 8080",
            "port = 8080\n[rollout]\nbatch_size = \"0%\"",
            "0%",
        ),
        (
            "port = 8080",
            "port = 8080\n[rollout]\nbatch_size = 0",
            "batch size",
        ),
        ("name = \"web\"", "name = \"Web App\"", "Web App"),
        (
            "image = \"127.0.0.1:5000/demo\"",
            "image = \"127.0.0.1:5000/demo:v1\"",
            "--version",
        ),
        ("selector = \"role=web\"", "selector = \"=web\"", "=web"),
        (
            "port = 8080",
            "port = 8080\nhost_ip = \"somewhere\"",
            "somewhere",
        ),
        (
            "port = 8080",
            "port = 8080\nlabels = { \"drover.x\" = \"1\" }",
            "drover.x",
        ),
    ];
    for (from, to, needle) in cases {
        let e = ServiceSpec::from_toml(&MINIMAL.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{to}: {e}");
    }
}

#[test]
fn batch_math() {
    assert_eq!(BatchSize::Percent(25).hosts_per_batch(10), 3);
    assert_eq!(BatchSize::Percent(25).hosts_per_batch(4), 1);
    assert_eq!(BatchSize::Percent(100).hosts_per_batch(7), 7);
    assert_eq!(BatchSize::Percent(1).hosts_per_batch(3), 1);
    assert_eq!(BatchSize::Count(5).hosts_per_batch(3), 3);
    assert_eq!(BatchSize::Count(2).hosts_per_batch(0), 1);
}

#[test]
fn init_runs_dockers_init_and_round_trips() {
    let plain = ServiceSpec::from_toml(MINIMAL).unwrap();
    assert!(!plain.service.init && !plain.container("i", "v", "a").init);
    assert!(
        !plain.to_toml().contains("init"),
        "unset stays out of the stored spec"
    );
    let s = ServiceSpec::from_toml(&MINIMAL.replace("port = 8080", "port = 8080\ninit = true"))
        .unwrap();
    assert!(s.service.init && s.container("i", "v", "a").init);
    assert!(ServiceSpec::from_toml(&s.to_toml()).unwrap().service.init);
}

#[test]
fn start_first_takes_two_host_ports_and_round_trips() {
    let text = MINIMAL.replace("port = 8080", "port = 8080\nhost_ports = [8080, 8081]")
        + "\n[rollout]\norder = \"start-first\"\n";
    let s = ServiceSpec::from_toml(&text).unwrap();
    assert_eq!(s.rollout.order, Order::StartFirst);
    assert_eq!(s.service.host_ports, Some([8080, 8081]));
    // The first port until the agent picks the free one.
    assert_eq!(s.container("i", "v", "a").ports[0].host_port, 8080);
    assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
    let plain = ServiceSpec::from_toml(MINIMAL).unwrap();
    assert_eq!(plain.rollout.order, Order::StopFirst);
    assert!(!plain.to_toml().contains("order"), "the default stays out");
}

#[test]
fn start_first_where_it_cannot_work_is_refused_naming_the_key() {
    let start_first = |service_extra: &str| {
        MINIMAL.replace("port = 8080", &format!("port = 8080\n{service_extra}"))
            + "\n[rollout]\norder = \"start-first\"\n"
    };
    let cases = [
        (start_first(""), "rollout.order", "service.host_ports"),
        (
            start_first("host_port = 9000"),
            "rollout.order",
            "host_ports",
        ),
        (
            start_first("host_ports = [8080, 8081]\nnetwork = \"host\""),
            "service.network",
            "host networking",
        ),
        (
            start_first("host_ports = [8080]"),
            "service.host_ports",
            "two different",
        ),
        (
            start_first("host_ports = [8080, 8080]"),
            "service.host_ports",
            "two different",
        ),
        (
            start_first("host_ports = [8080, 8081]\nhost_port = 8080"),
            "service.host_ports",
            "not both",
        ),
        (
            MINIMAL.replace("port = 8080", "port = 8080\nhost_ports = [8080, 8081]"),
            "service.host_ports",
            "start-first",
        ),
        (
            MINIMAL.to_string() + "\n[rollout]\norder = \"sideways\"\n",
            "rollout.order",
            "sideways",
        ),
        (
            start_first("host_ports = [8080, 8081]") + "\n[load_balancer]\nkind = \"none\"\n",
            "rollout.order",
            "kind = \"none\"",
        ),
    ];
    for (text, key, words) in cases {
        let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(words), "{e}\n{text}");
    }
}

#[test]
fn kind_none_has_no_load_balancer_and_round_trips() {
    let text = format!("{MINIMAL}\n[load_balancer]\nkind = \"none\"\n");
    let s = ServiceSpec::from_toml(&text).unwrap();
    assert_eq!(s.load_balancer, None);
    // The same spec as one without the section: it rolls without drain.
    assert_eq!(s, ServiceSpec::from_toml(MINIMAL).unwrap());
    let stored = s.to_toml();
    assert!(!stored.contains("load_balancer"), "{stored}");
    assert_eq!(ServiceSpec::from_toml(&stored).unwrap(), s);
}

#[test]
fn kind_none_refuses_the_keys_of_a_load_balancer_naming_them() {
    for (extra, key) in [
        ("runtime = [\"127.0.0.1:9999\"]", "load_balancer.runtime"),
        ("runtime = []", "load_balancer.runtime"),
        ("backend = \"web\"", "load_balancer.backend"),
        ("server_name = \"web-{host}\"", "load_balancer.server_name"),
    ] {
        let text = format!("{MINIMAL}\n[load_balancer]\nkind = \"none\"\n{extra}\n");
        let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{key}`"))
                && e.contains("not used with kind = \"none\" (no load balancer): remove it"),
            "{extra}: {e}"
        );
    }
    let text = format!("{MINIMAL}\n[load_balancer]\nkind = \"nginx\"\n");
    let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
    assert!(
        e.contains("`load_balancer.kind`")
            && e.contains("\"nginx\": only \"haproxy\" and \"none\" are supported"),
        "{e}"
    );
    // HAProxy still needs its keys, named as before.
    let text = format!("{MINIMAL}\n[load_balancer]\nruntime = [\"127.0.0.1:9999\"]\n");
    let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
    assert!(e.contains("`load_balancer.backend`"), "{e}");
    let text = format!("{MINIMAL}\n[load_balancer]\nkind = \"haproxy\"\nbackend = \"web\"\n");
    let e = ServiceSpec::from_toml(&text).unwrap_err().to_string();
    assert!(e.contains("`load_balancer.runtime`"), "{e}");
}

#[test]
fn advertise_host_ip_uses_each_agent_address() {
    let s = ServiceSpec::from_toml(
        &MINIMAL.replace("port = 8080", "port = 8080\nhost_ip = \"advertise\""),
    )
    .unwrap();
    assert_eq!(
        s.container("i", "v", "127.0.0.7").ports[0].host_ip,
        "127.0.0.7"
    );
}

#[test]
fn the_documented_example_parses() {
    let text = include_str!("../../../deploy/drover.example.toml");
    let file = SpecFile::parse(text).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["production", "staging"]);
    let production = file.environment(Some("production")).unwrap();
    assert_eq!(production.gates.requires.as_deref(), Some("staging"));
    assert!(production.gates.approval && production.gates.slo.is_some());
    let s = file.base().clone();
    let stages = s.rollout.staging.as_ref().unwrap();
    assert_eq!(stages.stages().len(), 3);
    assert_eq!(stages.spread_by(), Some("zone"));
    assert_eq!(s.schedule.windows.to_specs().len(), 1);
    assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
    assert_eq!(s.canary.interval, Duration::from_secs(5));
    assert!(s.registry.is_some() && s.load_balancer.is_some());
}

#[test]
fn bad_stages_and_windows_are_named() {
    let cases = [
        (
            "[targets]",
            "[rollout]\nstages = [\"1\", \"50%\"]\n[targets]",
            "100%",
        ),
        (
            "[targets]",
            "[[schedule.windows]]\nstart = \"25:00\"\nend = \"02:00\"\n[targets]",
            "25:00",
        ),
        (
            "[targets]",
            "[[schedule.windows]]\nstart = \"01:00\"\nend = \"02:00\"\ntime_zone = \"Mars/Olympus\"\n[targets]",
            "Mars/Olympus",
        ),
        (
            "[targets]",
            "[canary]\nmax_error_rate = 2.0\n[targets]",
            "canary",
        ),
    ];
    for (from, to, needle) in cases {
        let e = ServiceSpec::from_toml(&MINIMAL.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(e.contains(needle), "{to}: {e}");
    }
}

#[test]
fn secrets_default_to_files_under_run_secrets() {
    let s = ServiceSpec::from_toml(&format!(
        "{MINIMAL}\n[secrets]\nnames = [\"DB_PASSWORD\", \"API_KEY\"]\n"
    ))
    .unwrap();
    assert_eq!(s.secrets.names, ["DB_PASSWORD", "API_KEY"]);
    assert_eq!(s.secrets.delivery, SecretDelivery::Files);
    assert_eq!(
        s.secrets_delivery(),
        (proto::SecretDelivery::Files, "/run/secrets".to_string())
    );
    assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
    // No [secrets]: nothing written back, nothing delivered.
    let plain = ServiceSpec::from_toml(MINIMAL).unwrap();
    assert!(plain.secrets.names.is_empty());
    assert!(!plain.to_toml().contains("secrets"));
}

#[test]
fn secrets_as_environment() {
    let s = ServiceSpec::from_toml(&format!(
        "{MINIMAL}\n[secrets]\nnames = [\"TOKEN\"]\ndelivery = \"env\"\nmount = \"/ignored\"\n"
    ))
    .unwrap();
    assert_eq!(
        s.secrets_delivery(),
        (proto::SecretDelivery::Env, String::new())
    );
    assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
}

#[test]
fn bad_secrets_sections_are_refused_with_the_key() {
    for (section, key, words) in [
        ("names = [\"DB-PASSWORD\"]", "secrets.names", "DB-PASSWORD"),
        ("names = [\"1X\"]", "secrets.names", "1X"),
        ("names = [\"A\", \"A\"]", "secrets.names", "twice"),
        (
            "names = [\"A\"]\nmount = \"relative\"",
            "secrets.mount",
            "absolute",
        ),
        (
            "names = [\"A\"]\nmount = \"/\"",
            "secrets.mount",
            "absolute",
        ),
        (
            "names = [\"A\"]\nmount = \"/data\"",
            "secrets.mount",
            "service.mounts",
        ),
    ] {
        let text = MINIMAL.replace(
            "port = 8080",
            "port = 8080\nmounts = [\"/srv/data:/data\"]\nenv = { A_ENV = \"1\" }",
        );
        let err = ServiceSpec::from_toml(&format!("{text}\n[secrets]\n{section}\n")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(key) && msg.contains(words), "{section}: {msg}");
    }
    let env = MINIMAL.replace("port = 8080", "port = 8080\nenv = { TOKEN = \"x\" }");
    let err = ServiceSpec::from_toml(&format!(
        "{env}\n[secrets]\nnames = [\"TOKEN\"]\ndelivery = \"env\"\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("service.env"), "{err}");
    let err = ServiceSpec::from_toml(&format!("{MINIMAL}\n[secrets]\ndelivery = \"vault\"\n"))
        .unwrap_err();
    assert!(err.to_string().contains("vault"), "{err}");
}

/// A spec touching every typed key, in forms other than the canonical one.
const EVERYTHING: &str = r#"
[service]
name = "web"
image = "127.0.0.1:5000/demo"
port = 8080
host_port = 18080
host_ip = "::1"
restart = "always"
mounts = ["/srv/config:/config:ro", "/srv/data:/data:rw", "/srv/cache:/cache"]
env = { LISTEN = "0.0.0.0:8080" }
labels = { team = "storefront" }
command = ["/app", "--serve"]

[targets]
selector = " role=web, zone!=b ,canary"

[readiness]
kind = "http"
path = "/healthz"
status = 204

[rollout]
batch_size = 2
spread_by = "zone"

[[rollout.stage]]
hosts = 1
bake = "5m"
promotion = "manual"
spread_by = "zone"

[[rollout.stage]]
hosts = "100%"

[load_balancer]
runtime = ["unix:/run/haproxy/admin.sock"]
backend = "web"

[schedule]
missed = "skip"
missed_grace = "1m"

[[schedule.windows]]
days = ["fri-mon", "wednesday"]
start = "22:00"
end = "2:00"
time_zone = " Europe/Berlin "

[secrets]
names = ["TOKEN"]
delivery = "env"

[registry]
username = "ci"
password_env = "REGISTRY_PASSWORD"
"#;

#[test]
fn the_canonical_form_round_trips_every_typed_key() {
    let s = ServiceSpec::from_toml(EVERYTHING).unwrap();
    let stored = s.to_toml();
    let again = ServiceSpec::from_toml(&stored).unwrap();
    assert_eq!(again, s, "{stored}");
    assert_eq!(
        again.to_toml(),
        stored,
        "the canonical form is a fixed point"
    );
    // What was written in another form is stored in the canonical one.
    for canonical in [
        r#"restart = "always""#,
        r#""/srv/data:/data""#,
        r#"selector = "role=web,zone!=b,canary""#,
        r#"host_ip = "::1""#,
        r#"days = ["mon", "wed", "fri", "sat", "sun"]"#,
        r#"end = "02:00""#,
        r#"time_zone = "Europe/Berlin""#,
        r#"hosts = "1""#,
        r#"promotion = "manual""#,
        r#"kind = "haproxy""#,
    ] {
        assert!(stored.contains(canonical), "{canonical} in {stored}");
    }
    assert_eq!(stored.matches("spread_by").count(), 1, "{stored}");
}

#[test]
fn typed_keys_are_parsed_once() {
    let s = ServiceSpec::from_toml(EVERYTHING).unwrap();
    assert_eq!(s.service.restart, RestartPolicy::Always);
    assert_eq!(s.service.host_ip, HostIp::Ip("::1".parse().unwrap()));
    assert_eq!(
        s.service.mounts[1],
        Mount {
            source: "/srv/data".into(),
            target: "/data".into(),
            read_only: false
        }
    );
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let selector = &s.targets.selector;
    assert!(selector.matches(&labels(&[("role", "web"), ("canary", ""), ("zone", "a")])));
    assert!(!selector.matches(&labels(&[("role", "web"), ("canary", ""), ("zone", "b")])));
    let stages = s.rollout.staging.as_ref().unwrap();
    assert_eq!(stages.spread_by(), Some("zone"));
    assert_eq!(stages.stages()[0].promotion, Promotion::Manual);
    assert_eq!(s.rollout.stages(), *stages);
    assert_eq!(s.schedule.missed.missed, crate::schedule::Missed::Skip);
    assert!(!s.schedule.windows.is_empty());
    assert_eq!(
        s.load_balancer.as_ref().unwrap().kind,
        LoadBalancerKind::Haproxy
    );
}

#[test]
fn typed_keys_reach_the_wire() {
    let s = ServiceSpec::from_toml(EVERYTHING).unwrap();
    let c = s.container("img@sha256:x", "v2", "127.0.0.9");
    assert_eq!(c.restart_policy, proto::RestartPolicy::Always as i32);
    assert_eq!(c.ports[0].host_ip, "::1");
    assert_eq!(c.ports[0].host_port, 18080);
    let mounts: Vec<(&str, &str, bool)> = c
        .mounts
        .iter()
        .map(|m| (m.source.as_str(), m.target.as_str(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/srv/config", "/config", true),
            ("/srv/data", "/data", false),
            ("/srv/cache", "/cache", false)
        ]
    );
    assert!(
        c.mounts
            .iter()
            .all(|m| m.kind == proto::MountKind::Bind as i32)
    );
    let http = s.probe();
    assert_eq!(
        http.kind,
        Some(proto::readiness_probe::Kind::Http(proto::HttpProbe {
            path: "/healthz".into(),
            expected_status: 204,
            port: 8080
        }))
    );
    for (kind, probe) in [
        (
            "tcp",
            proto::readiness_probe::Kind::Tcp(proto::TcpProbe { port: 8080 }),
        ),
        (
            "docker",
            proto::readiness_probe::Kind::DockerHealth(proto::DockerHealthProbe {}),
        ),
    ] {
        let text = format!("{MINIMAL}\n[readiness]\nkind = \"{kind}\"\npath = \"/ignored\"\n");
        let s = ServiceSpec::from_toml(&text).unwrap();
        assert_eq!(s.probe().kind, Some(probe), "{kind}");
        let stored = s.to_toml();
        assert!(!stored.contains("/ignored"), "{stored}");
        assert_eq!(ServiceSpec::from_toml(&stored).unwrap(), s);
    }
    // The default restart policy is sent as itself, never as "unspecified".
    let plain = ServiceSpec::from_toml(MINIMAL).unwrap();
    assert_eq!(
        plain.container("i", "v", "a").restart_policy,
        proto::RestartPolicy::UnlessStopped as i32
    );
}

#[test]
fn bad_typed_values_name_the_key_and_the_value() {
    let service = |extra: &str| MINIMAL.replace("port = 8080", &format!("port = 8080\n{extra}"));
    let section = |text: &str| format!("{MINIMAL}\n{text}\n");
    for (text, key, value) in [
        (
            service("restart = \"sometimes\""),
            "service.restart",
            "sometimes",
        ),
        (
            service("mounts = [\"/a:/b\", \"data:/data\"]"),
            "service.mounts[1]",
            "data:/data",
        ),
        (
            service("mounts = [\"/a:/b:rx\"]"),
            "service.mounts[0]",
            "/a:/b:rx",
        ),
        (MINIMAL.replace("8080", "0"), "service.port", "1 to 65535"),
        (
            section("[readiness]\nkind = \"grpc\""),
            "readiness.kind",
            "grpc",
        ),
        (
            section("[readiness]\npath = \"ready\""),
            "readiness.path",
            "ready",
        ),
        (
            section("[readiness]\nstatus = 700"),
            "readiness.status",
            "700",
        ),
        (
            section(
                "[load_balancer]\nkind = \"nginx\"\nruntime = [\"127.0.0.1:9999\"]\nbackend = \"web\"",
            ),
            "load_balancer.kind",
            "nginx",
        ),
        (
            section("[load_balancer]\nruntime = []\nbackend = \"web\""),
            "load_balancer.runtime",
            "at least one",
        ),
        (
            MINIMAL.replace("role=web", "role=web,bad key"),
            "targets.selector",
            "bad key",
        ),
    ] {
        let err = ServiceSpec::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains(value),
            "{text}: {err}"
        );
    }
}

#[test]
fn a_stored_spec_with_every_default_written_parses() {
    // The shape `to_toml` has always written: every default spelled out, including a
    // path and a status for a tcp probe.
    let stored = r#"
[service]
name = "web"
image = "127.0.0.1:5000/demo"
port = 8080
host_ip = "0.0.0.0"
command = []
restart = "unless-stopped"
network = ""
mounts = []

[service.env]

[service.labels]

[targets]
selector = "role=web"

[readiness]
kind = "tcp"
path = "/ready"
status = 0
interval = "200ms"
timeout = "2s"
success_threshold = 1
deadline = "1m"

[rollout]
batch_size = "1"
stop_timeout = "10s"
drain_timeout = "30s"
up_timeout = "1m"
pull_timeout = "5m"
on_failure = "rollback"
keep_previous = 3
stages = ["1", "100%"]

[canary]
interval = "5s"
max_error_rate = 0.01
max_error_ratio = 2.0
max_response_time_ratio = 3.0
min_response_time_ms = 50
min_requests = 20
max_restarts = 0

[schedule]
missed = "run"
missed_grace = "15m"
"#;
    let s = ServiceSpec::from_toml(stored).unwrap();
    assert_eq!(s.readiness.kind, ReadinessKind::Tcp);
    assert_eq!(
        s.rollout.stages().stages().len(),
        2,
        "the short form is staged"
    );
    assert_eq!(ServiceSpec::from_toml(&s.to_toml()).unwrap(), s);
}
