use std::time::Duration;

use super::*;
use crate::spec::BatchSize;

const SPEC: &str = r#"
[service]
name = "web"
image = "127.0.0.1:5000/demo"
port = 8080
env = { LOG = "info", REGION = "eu" }

[targets]
selector = "role=web"

[rollout]
batch_size = 2
drain_timeout = "15s"

[load_balancer]
runtime = ["127.0.0.1:9999"]
backend = "web"

[env.staging]
targets = { selector = "role=web,env=staging" }
load_balancer = { backend = "web-staging" }
env = { LOG = "debug" }

[env.production]
targets = { selector = "role=web,env=production" }
rollout = { batch_size = "25%" }
requires = "staging"
soak = "1h"
approval = "required"
slo = { availability = "99.5%", window = "30d" }
"#;

#[test]
fn overlays_override_what_they_name_and_keep_the_rest() {
    let file = SpecFile::parse(SPEC).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["production", "staging"]);
    let staging = file.environment(Some("staging")).unwrap();
    assert_eq!(
        staging.spec.targets.selector.to_string(),
        "role=web,env=staging"
    );
    let lb = staging.spec.load_balancer.as_ref().unwrap();
    assert_eq!(lb.backend, "web-staging");
    assert_eq!(lb.runtime, ["127.0.0.1:9999"]);
    assert_eq!(staging.spec.service.env["LOG"], "debug");
    assert_eq!(staging.spec.service.env["REGION"], "eu");
    assert_eq!(staging.spec.rollout.batch_size, BatchSize::Count(2));
    assert!(staging.gates.is_empty());

    let production = file.environment(Some("production")).unwrap();
    assert_eq!(production.spec.rollout.batch_size, BatchSize::Percent(25));
    assert_eq!(
        production.spec.rollout.drain_timeout,
        Duration::from_secs(15)
    );
    assert_eq!(production.spec.service.env["LOG"], "info");
    assert_eq!(production.gates.requires.as_deref(), Some("staging"));
    assert_eq!(production.gates.soak, Duration::from_secs(3600));
    assert!(production.gates.approval);
    let slo = production.gates.slo.unwrap();
    assert_eq!(slo.availability_ppm, 995_000);
    assert_eq!(slo.window, Duration::from_secs(30 * 86_400));
    assert_eq!(staging.gates.slo, None);
    // The resolved spec is an ordinary spec: it round-trips through its canonical form.
    let canonical = production.spec.to_toml();
    assert_eq!(ServiceSpec::from_toml(&canonical).unwrap(), production.spec);
}

#[test]
fn a_spec_without_environments_has_one_implicit_environment() {
    let text = SPEC.split("[env.staging]").next().unwrap();
    let file = SpecFile::parse(text).unwrap();
    assert!(!file.has_environments());
    let env = file.environment(None).unwrap();
    assert_eq!(env.name, IMPLICIT);
    assert_eq!(env.spec, ServiceSpec::from_toml(text).unwrap());
    let e = file.environment(Some("staging")).unwrap_err().to_string();
    assert!(
        e.contains("unknown environment \"staging\"") && e.contains("defines no environments"),
        "{e}"
    );
}

#[test]
fn environments_must_be_named_and_known() {
    let file = SpecFile::parse(SPEC).unwrap();
    let e = file.environment(None).unwrap_err().to_string();
    assert!(
        e.contains("defines environments (production, staging)") && e.contains("--env"),
        "{e}"
    );
    let e = file.environment(Some("prod")).unwrap_err().to_string();
    assert!(
        e.contains("unknown environment \"prod\"") && e.contains("production, staging"),
        "{e}"
    );
}

/// `SPEC` without its environments.
fn base() -> &'static str {
    SPEC.split("[env.staging]").next().unwrap()
}

/// Why `SPEC`'s base with `overlay` as `[env.production]` is refused.
fn refusal(overlay: &str) -> String {
    refusal_over(base(), overlay)
}

/// Why `base` with `overlay` as `[env.production]` is refused.
fn refusal_over(base: &str, overlay: &str) -> String {
    let text = format!("{base}\n[env.production]\n{overlay}\n");
    SpecFile::parse(&text).unwrap_err().to_string()
}

#[test]
fn bad_overlays_are_refused_naming_the_environment_and_the_key() {
    let e = refusal("colour = \"blue\"");
    assert!(
        e.starts_with("in [env.production]:")
            && e.contains("`colour`")
            && e.contains("unknown key"),
        "{e}"
    );
    let e = refusal("service = { port = 9090 }");
    assert!(
        e.contains("`service`") && e.contains("one definition for every environment"),
        "{e}"
    );
    let e = refusal("readiness = { path = \"/x\" }");
    assert!(e.contains("`readiness`"), "{e}");
    let e = refusal("rollout = { batch_size = \"200%\" }");
    assert!(
        e.starts_with("in [env.production]:") && e.contains("batch_size"),
        "{e}"
    );
    let e = refusal("targets = { selector = \"=web\" }");
    assert!(e.contains("targets.selector"), "{e}");
    let e = refusal("approval = \"maybe\"");
    assert!(e.contains("`approval`") && e.contains("required"), "{e}");
    let e = refusal("soak = \"1h\"");
    assert!(e.contains("`soak`") && e.contains("requires"), "{e}");
    let e = refusal("requires = \"staging\"\nsoak = \"soon\"");
    assert!(e.contains("`soak`") && e.contains("soon"), "{e}");
    let e = refusal("requires = \"staging\"");
    assert!(
        e.contains("`requires`") && e.contains("not an environment of this spec"),
        "{e}"
    );
    let e = refusal("requires = \"production\"");
    assert!(e.contains("this environment itself"), "{e}");
    let e = refusal("slo = { availability = \"150%\", window = \"30d\" }");
    assert!(
        e.starts_with("in [env.production]:") && e.contains("slo.availability"),
        "{e}"
    );
    let e = refusal("slo = { availability = \"99%\" }");
    assert!(e.contains("window"), "{e}");
    let e = refusal("rollout = { colour = 1 }");
    assert!(
        e.starts_with("in [env.production]:") && e.contains("colour"),
        "{e}"
    );
}

#[test]
fn a_bad_environment_name_is_refused() {
    let text = format!(
        "{}\n[env.Prod]\n",
        SPEC.split("[env.staging]").next().unwrap()
    );
    let e = SpecFile::parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("\"Prod\"") && e.contains("environment name"),
        "{e}"
    );
}

#[test]
fn an_overlay_of_kind_none_removes_the_load_balancer_there_only() {
    let overlays = r#"
[env.workers]
targets = { selector = "role=worker" }
load_balancer = { kind = "none" }

[env.web]
load_balancer = { backend = "web-2" }
"#;
    let file = SpecFile::parse(&format!("{}{overlays}", base())).unwrap();
    let workers = file.environment(Some("workers")).unwrap();
    assert_eq!(workers.spec.load_balancer, None);
    let stored = workers.spec.to_toml();
    assert_eq!(ServiceSpec::from_toml(&stored).unwrap(), workers.spec);
    let web = file.environment(Some("web")).unwrap();
    let lb = web.spec.load_balancer.as_ref().unwrap();
    assert_eq!(lb.backend, "web-2");
    assert_eq!(lb.runtime, ["127.0.0.1:9999"]);
    assert!(file.base().load_balancer.is_some());
}

#[test]
fn an_overlay_of_another_kind_replaces_a_base_of_kind_none() {
    let none = base().replace(
        "runtime = [\"127.0.0.1:9999\"]\nbackend = \"web\"",
        "kind = \"none\"",
    );
    let overlays = r#"
[env.production]
load_balancer = { kind = "haproxy", runtime = ["127.0.0.1:9998"], backend = "web" }

[env.staging]
"#;
    let file = SpecFile::parse(&format!("{none}{overlays}")).unwrap();
    assert_eq!(file.base().load_balancer, None);
    let staging = file.environment(Some("staging")).unwrap();
    assert_eq!(staging.spec.load_balancer, None);
    let production = file.environment(Some("production")).unwrap();
    let lb = production.spec.load_balancer.unwrap();
    assert_eq!(lb.runtime, ["127.0.0.1:9998"]);
    // Keys of a load balancer merged into a base without one name the key and the fix.
    let e = refusal_over(&none, "load_balancer = { backend = \"web\" }");
    assert!(
        e.starts_with("in [env.production]:")
            && e.contains("`load_balancer.backend`")
            && e.contains("set kind = \"haproxy\""),
        "{e}"
    );
}

#[test]
fn what_needs_a_load_balancer_is_refused_with_kind_none() {
    let none = "load_balancer = { kind = \"none\" }";
    let e = refusal(&format!(
        "{none}\nslo = {{ availability = \"99.5%\", window = \"30d\" }}"
    ));
    assert!(
        e.starts_with("in [env.production]:")
            && e.contains("`slo`")
            && e.contains("no load balancer"),
        "{e}"
    );
    let start_first = base()
        .replace("port = 8080", "port = 8080\nhost_ports = [8080, 8081]")
        .replace("[rollout]", "[rollout]\norder = \"start-first\"");
    let e = refusal_over(&start_first, none);
    assert!(
        e.starts_with("in [env.production]:")
            && e.contains("`rollout.order`")
            && e.contains("stop-first"),
        "{e}"
    );
}
