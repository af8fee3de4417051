//! The agent's configuration: command-line flags, an optional TOML file with the same
//! keys, and the validated [`AgentConfig`] the daemon runs with.
//!
//! Flags override the file; labels from both are merged (a flag wins per key). Everything
//! is checked here, at start, so a bad value stops the agent with a message naming it and
//! exit code 64 ([`EXIT_CONFIG`]) instead of surfacing later as a confusing failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use drover_shared::labels::parse_label;
use drover_shared::telemetry::LogFormat;
use serde::Deserialize;

/// Exit code for a configuration the agent refuses (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Where the agent looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/drover/agent.toml";

/// The Docker socket used when neither `--docker-host` nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How many stopped containers per service are kept for rollback by default.
pub const DEFAULT_KEEP_PREVIOUS: u32 = 3;

/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

/// How long in-flight commands may run after SIGTERM before the agent exits anyway.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Command-line flags. Every flag can also be set in the config file under the same name.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "drover-agent",
    version = drover_shared::VERSION,
    about = "Drover's per-host daemon: dials out to the controller and swaps containers on the local Docker engine.",
    long_about = "Drover's per-host daemon. It dials OUT to the controller (no inbound port), keeps one \
gRPC stream open, and runs the commands it receives (prepare, swap, rollback, inspect) against the \
local Docker engine. Its state lives in Docker container labels, so a restart adopts what runs. \
Stopping the agent never stops application containers.\n\n\
Every flag may also be given in the TOML config file under the same key (e.g. docker-host = \"...\", \
[labels] role = \"web\"); flags win over the file. A bad configuration exits with code 64."
)]
pub struct Cli {
    /// Controller URL to dial out to, e.g. http://controller.internal:7070 (required, flag or file).
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,

    /// This host's name in Drover: letters, digits, '.', '-', '_' (required, flag or file).
    /// Containers the agent manages carry it in the drover.agent label.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A host label used by deploy selectors, e.g. --label role=web (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Address the load balancer reaches this host's services on, e.g. 10.0.0.5.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,

    /// TOML config file [default: /etc/drover/agent.toml, skipped when absent].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Docker engine to drive, e.g. unix:///var/run/docker.sock or tcp://127.0.0.1:2375
    /// [default: $DOCKER_HOST, else unix:///var/run/docker.sock].
    #[arg(long, value_name = "URL")]
    pub docker_host: Option<String>,

    /// Stopped containers kept per service for rollback, when a swap does not say [default: 3].
    #[arg(long, value_name = "N")]
    pub keep_previous: Option<u32>,

    /// How often to send a heartbeat to the controller, e.g. 2s or 500ms [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub heartbeat_interval: Option<String>,

    /// Log format on stderr: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Validate the configuration (flags and file), print it, and exit: 0 when valid,
    /// 64 when not. Contacts neither the controller nor Docker.
    #[arg(long)]
    pub check: bool,
}

/// The config file: the same keys as the flags (kebab-case; snake_case also accepted).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// See [`Cli::controller`].
    pub controller: Option<String>,
    /// See [`Cli::name`].
    pub name: Option<String>,
    /// Host labels as a table: `[labels]` then `role = "web"`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// See [`Cli::advertise`].
    pub advertise: Option<String>,
    /// See [`Cli::docker_host`].
    #[serde(alias = "docker_host")]
    pub docker_host: Option<String>,
    /// See [`Cli::keep_previous`].
    #[serde(alias = "keep_previous")]
    pub keep_previous: Option<u32>,
    /// See [`Cli::heartbeat_interval`].
    #[serde(alias = "heartbeat_interval")]
    pub heartbeat_interval: Option<String>,
    /// See [`Cli::log_format`].
    #[serde(alias = "log_format")]
    pub log_format: Option<String>,
}

/// A configuration the agent refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a key the agent does not know.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the key or line.
        message: String,
    },
    /// A required setting is absent from both flags and file.
    #[error("{key} is required: pass --{key} or set {key} in the config file")]
    Missing {
        /// The setting's name.
        key: &'static str,
    },
    /// A setting has a value the agent cannot use.
    #[error("invalid {key} {value:?}: {reason}")]
    Invalid {
        /// The setting's name.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Controller URL (http://; TLS is not built yet).
    pub controller: String,
    /// This host's name; the value of the drover.agent label on its containers.
    pub name: String,
    /// Host labels sent in the hello, for selectors.
    pub labels: BTreeMap<String, String>,
    /// Address the load balancer reaches this host on; empty when not configured.
    pub advertise: String,
    /// Docker engine URL.
    pub docker_host: String,
    /// Default number of stopped containers kept per service.
    pub keep_previous: u32,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// How long in-flight commands may finish after a shutdown signal.
    pub shutdown_grace: Duration,
}

impl AgentConfig {
    /// Loads the file named by `--config` (or the default path when it exists), merges the
    /// flags over it and validates the result.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        Self::merge(cli, file, std::env::var("DOCKER_HOST").ok())
    }

    /// Merges flags over the file (and `DOCKER_HOST` under both) and validates. Pure.
    pub fn merge(
        cli: &Cli,
        file: FileConfig,
        docker_host_env: Option<String>,
    ) -> Result<Self, ConfigError> {
        let controller = cli
            .controller
            .clone()
            .or(file.controller)
            .ok_or(ConfigError::Missing { key: "controller" })?;
        let name = cli
            .name
            .clone()
            .or(file.name)
            .ok_or(ConfigError::Missing { key: "name" })?;
        let mut labels = BTreeMap::new();
        for (k, v) in file.labels {
            let (k, v) =
                parse_label(&format!("{k}={v}")).map_err(|reason| invalid("label", &k, reason))?;
            labels.insert(k, v);
        }
        for raw in &cli.labels {
            let (k, v) = parse_label(raw).map_err(|reason| invalid("label", raw, reason))?;
            labels.insert(k, v);
        }
        let advertise = cli.advertise.clone().or(file.advertise).unwrap_or_default();
        let docker_host = cli
            .docker_host
            .clone()
            .or(file.docker_host)
            .or(docker_host_env.filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_DOCKER_HOST.to_string());
        let keep_previous = cli
            .keep_previous
            .or(file.keep_previous)
            .unwrap_or(DEFAULT_KEEP_PREVIOUS);
        let heartbeat_interval = match cli.heartbeat_interval.clone().or(file.heartbeat_interval) {
            Some(raw) => humantime::parse_duration(&raw).map_err(|e| {
                invalid(
                    "heartbeat-interval",
                    &raw,
                    format!("{e}; write e.g. 2s or 500ms"),
                )
            })?,
            None => DEFAULT_HEARTBEAT,
        };
        let log_format = match cli.log_format.clone().or(file.log_format) {
            Some(raw) => raw
                .parse::<LogFormat>()
                .map_err(|reason| invalid("log-format", &raw, reason))?,
            None => LogFormat::Text,
        };
        let config = Self {
            controller,
            name,
            labels,
            advertise,
            docker_host,
            keep_previous,
            heartbeat_interval,
            log_format,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.controller;
        if c.starts_with("https://") {
            return Err(invalid(
                "controller",
                c,
                "this build has no TLS to the controller yet: use http:// on a trusted network",
            ));
        }
        if !c.starts_with("http://") {
            return Err(invalid(
                "controller",
                c,
                "use an http:// URL, e.g. http://controller:7070",
            ));
        }
        if let Err(e) = tonic::transport::Endpoint::from_shared(c.clone()) {
            return Err(invalid("controller", c, format!("not a valid URL: {e}")));
        }
        if let Err(reason) = check_token(&self.name, 128) {
            return Err(invalid("name", &self.name, reason));
        }
        if !self.advertise.is_empty() && !valid_address(&self.advertise) {
            return Err(invalid(
                "advertise",
                &self.advertise,
                "use an IP address or a host name, without port",
            ));
        }
        let d = &self.docker_host;
        let scheme_ok = ["unix://", "tcp://", "http://"]
            .iter()
            .any(|p| d.starts_with(p));
        if !scheme_ok || d.ends_with("://") {
            return Err(invalid(
                "docker-host",
                d,
                "use unix:///path/to/docker.sock, tcp://host:port or http://host:port",
            ));
        }
        if self.keep_previous > 100 {
            return Err(invalid(
                "keep-previous",
                &self.keep_previous.to_string(),
                "keep at most 100 stopped containers per service",
            ));
        }
        let hb = self.heartbeat_interval;
        if hb < Duration::from_millis(100) || hb > Duration::from_secs(60) {
            return Err(invalid(
                "heartbeat-interval",
                &humantime::format_duration(hb).to_string(),
                "must be between 100ms and 60s",
            ));
        }
        Ok(())
    }
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses config file text; unknown keys are refused by name.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim().to_string(),
    })
}

/// A host-name-like token: starts and ends with a letter or digit, may contain '.', '-',
/// '_' inside, at most `max` characters. Used for agent and service names.
pub fn check_token(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("it is empty".into());
    }
    if value.len() > max {
        return Err(format!("it is longer than {max} characters"));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err("use only letters, digits, '.', '-' and '_'".into());
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !value.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err("it must start and end with a letter or digit".into());
    }
    Ok(())
}

fn valid_address(a: &str) -> bool {
    a.parse::<std::net::IpAddr>().is_ok() || check_token(a, 253).is_ok() && !a.contains('_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut full = vec!["drover-agent"];
        full.extend_from_slice(args);
        Cli::try_parse_from(full).unwrap()
    }

    fn file(text: &str) -> FileConfig {
        parse_file(Path::new("agent.toml"), text).unwrap()
    }

    #[test]
    fn flags_override_file_and_labels_merge() {
        let f = file(
            r#"
            controller = "http://file:7070"
            name = "from-file"
            keep-previous = 5
            heartbeat_interval = "500ms"
            [labels]
            role = "db"
            zone = "a"
            "#,
        );
        let c = cli(&[
            "--name",
            "web-1",
            "--label",
            "role=web",
            "--keep-previous",
            "1",
        ]);
        let cfg = AgentConfig::merge(&c, f, None).unwrap();
        assert_eq!(cfg.controller, "http://file:7070");
        assert_eq!(cfg.name, "web-1");
        assert_eq!(cfg.keep_previous, 1);
        assert_eq!(cfg.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(cfg.labels.get("role").map(String::as_str), Some("web"));
        assert_eq!(cfg.labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(cfg.docker_host, DEFAULT_DOCKER_HOST);
    }

    #[test]
    fn defaults_and_docker_host_env() {
        let c = cli(&["--controller", "http://127.0.0.1:7070", "--name", "h1"]);
        let cfg = AgentConfig::merge(
            &c,
            FileConfig::default(),
            Some("tcp://127.0.0.1:2375".into()),
        )
        .unwrap();
        assert_eq!(cfg.docker_host, "tcp://127.0.0.1:2375");
        assert_eq!(cfg.keep_previous, DEFAULT_KEEP_PREVIOUS);
        assert_eq!(cfg.heartbeat_interval, DEFAULT_HEARTBEAT);
        assert_eq!(cfg.log_format, LogFormat::Text);
        let c = cli(&[
            "--controller",
            "http://c:1",
            "--name",
            "h1",
            "--docker-host",
            "unix:///x.sock",
        ]);
        let cfg =
            AgentConfig::merge(&c, FileConfig::default(), Some("tcp://ignored:1".into())).unwrap();
        assert_eq!(cfg.docker_host, "unix:///x.sock");
    }

    #[test]
    fn the_documented_example_config_is_valid() {
        let text = include_str!("../../deploy/agent.example.toml");
        let f = parse_file(Path::new("deploy/agent.example.toml"), text).unwrap();
        let cfg = AgentConfig::merge(&Cli::default(), f, None).unwrap();
        assert_eq!(cfg.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_file_key_is_named() {
        let e = parse_file(Path::new("agent.toml"), "controler = \"http://x\"").unwrap_err();
        assert!(e.to_string().contains("controler"), "{e}");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let c = cli(&["--config", "/nonexistent/drover/agent.toml"]);
        let e = AgentConfig::load(&c).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/drover/agent.toml"));
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&["--name", "h1"], "controller is required"),
            (&["--controller", "http://c:1"], "name is required"),
            (
                &["--controller", "ftp://c", "--name", "h1"],
                "invalid controller",
            ),
            (
                &["--controller", "http://c:1", "--name", "bad name"],
                "invalid name \"bad name\"",
            ),
            (&["--controller", "http://c:1", "--name=-x"], "invalid name"),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--label",
                    "novalue",
                ],
                "novalue",
            ),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--heartbeat-interval",
                    "fast",
                ],
                "\"fast\"",
            ),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--heartbeat-interval",
                    "10ms",
                ],
                "between",
            ),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--log-format",
                    "xml",
                ],
                "xml",
            ),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--docker-host",
                    "/var/run/docker.sock",
                ],
                "docker-host",
            ),
            (
                &[
                    "--controller",
                    "http://c:1",
                    "--name",
                    "h",
                    "--advertise",
                    "10.0.0.1:80",
                ],
                "advertise",
            ),
        ];
        for (args, needle) in cases {
            let e = AgentConfig::merge(&cli(args), FileConfig::default(), None).unwrap_err();
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn tokens() {
        assert!(check_token("web-1.example_a", 63).is_ok());
        assert!(check_token("", 63).is_err());
        assert!(check_token("a/b", 63).is_err());
        assert!(check_token("x.", 63).is_err());
        assert!(check_token(&"a".repeat(64), 63).is_err());
    }
}
