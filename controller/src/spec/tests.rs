use std::time::Duration;

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
    let s = ServiceSpec::from_toml(text).unwrap();
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
