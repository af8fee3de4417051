//! Commands as a controller sends them, and checks on their results, so each test reads
//! as "send this, expect that" without proto boilerplate.

use std::net::SocketAddr;
use std::time::Duration;

use drover_proto::v1::{
    Command, CommandError, CommandResult, ContainerSpec, ErrorKind, Fence, HttpProbe,
    InspectCommand, InspectResult, PortMapping, PrepareCommand, PrepareResult, ReadinessProbe,
    RegistryAuth, RollbackCommand, RollbackResult, SwapCommand, SwapResult, command,
    command_result, readiness_probe,
};

/// The port the demo app listens on inside its container.
pub const DEMO_PORT: u32 = 8080;
/// Grace period for stopping the old container in tests.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// A command with a fresh id, fenced by `(deployment, epoch)`.
pub fn command(kind: command::Kind, deployment: &str, epoch: u64) -> Command {
    Command {
        command_id: crate::unique_name("cmd"),
        fence: Some(Fence {
            deployment_id: deployment.to_string(),
            epoch,
        }),
        kind: Some(kind),
    }
}

/// Pull `image` with optional credentials.
pub fn prepare(image: &str, auth: Option<RegistryAuth>) -> command::Kind {
    command::Kind::Prepare(PrepareCommand {
        image: image.to_string(),
        auth,
        timeout_ms: 60_000,
    })
}

/// The demo app as service `service`, running `image` as `version`, published on `publish`.
pub fn demo_spec(service: &str, image: &str, version: &str, publish: SocketAddr) -> ContainerSpec {
    ContainerSpec {
        service: service.to_string(),
        image: image.to_string(),
        version: version.to_string(),
        ports: vec![PortMapping {
            container_port: DEMO_PORT,
            host_ip: publish.ip().to_string(),
            host_port: u32::from(publish.port()),
            protocol: "tcp".to_string(),
        }],
        ..ContainerSpec::default()
    }
}

/// HTTP readiness on `/ready`, checked every 100 ms, giving up after `deadline`.
pub fn http_ready(deadline: Duration) -> ReadinessProbe {
    ReadinessProbe {
        kind: Some(readiness_probe::Kind::Http(HttpProbe {
            path: "/ready".to_string(),
            expected_status: 0,
            port: 0,
        })),
        interval_ms: 100,
        timeout_ms: 1_000,
        success_threshold: 1,
        deadline_ms: deadline.as_millis() as u64,
    }
}

/// Swap to `spec`, waiting for `readiness`.
pub fn swap(spec: ContainerSpec, readiness: ReadinessProbe) -> command::Kind {
    command::Kind::Swap(SwapCommand {
        spec: Some(spec),
        readiness: Some(readiness),
        stop_timeout_ms: STOP_TIMEOUT.as_millis() as u64,
        keep_previous: 0,
        secrets: None,
        stage_for_command: String::new(),
        start_first: None,
    })
}

/// Roll `service` back to its most recent kept container.
pub fn rollback(service: &str, readiness: ReadinessProbe) -> command::Kind {
    command::Kind::Rollback(RollbackCommand {
        service: service.to_string(),
        readiness: Some(readiness),
        stop_timeout_ms: STOP_TIMEOUT.as_millis() as u64,
        to_version: String::new(),
        start_first: None,
    })
}

/// Inspect `service` (empty: every service).
pub fn inspect(service: &str) -> command::Kind {
    command::Kind::Inspect(InspectCommand {
        service: service.to_string(),
    })
}

fn describe(r: &CommandResult) -> String {
    match &r.error {
        Some(e) => format!(
            "error {:?}: {} (log tail: {:?})",
            ErrorKind::try_from(e.kind).unwrap_or(ErrorKind::Unspecified),
            e.message,
            e.log_tail
        ),
        None => format!("{:?}", r.output),
    }
}

/// The error of `r`, which must be of `kind`.
pub fn expect_error(r: &CommandResult, kind: ErrorKind) -> CommandError {
    let e = r
        .error
        .clone()
        .unwrap_or_else(|| panic!("expected error {kind:?}, got success: {}", describe(r)));
    assert_eq!(
        ErrorKind::try_from(e.kind).ok(),
        Some(kind),
        "wrong error kind: {}",
        describe(r)
    );
    e
}

macro_rules! expect_output {
    ($name:ident, $variant:ident, $ty:ty) => {
        #[doc = concat!("The ", stringify!($variant), " output of a successful result.")]
        pub fn $name(r: &CommandResult) -> $ty {
            match (&r.error, &r.output) {
                (None, Some(command_result::Output::$variant(o))) => o.clone(),
                _ => panic!(
                    concat!("expected a successful ", stringify!($variant), ", got {}"),
                    describe(r)
                ),
            }
        }
    };
}

expect_output!(expect_prepare, Prepare, PrepareResult);
expect_output!(expect_swap, Swap, SwapResult);
expect_output!(expect_rollback, Rollback, RollbackResult);
expect_output!(expect_inspect, Inspect, InspectResult);
