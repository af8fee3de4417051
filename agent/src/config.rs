//! The agent's configuration: command-line flags, an optional TOML file with the same
//! keys, the join token's sources, and the validated [`AgentConfig`] the daemon runs with.
//!
//! Flags override the file; labels from both are merged (a flag wins per key). Everything
//! is checked here, at start, so a bad value stops the agent with a message naming it and
//! exit code 64 ([`EXIT_CONFIG`]) instead of surfacing later as a confusing failure.
//!
//! The join token is a secret: it is held in a [`JoinToken`], whose `Debug` hides it, and
//! never appears in an error message, not even when it is malformed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use drover_shared::labels::parse_label;
use drover_shared::telemetry::LogFormat;
use serde::Deserialize;

use crate::targets::Targets;

/// Exit code for a configuration the agent refuses (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Exit code when the controller refuses to enroll this host (`EX_NOPERM`): the join token
/// is unknown, spent or expired, or the name is already enrolled. Restarting does not help;
/// a new token (and maybe `drover hosts remove NAME`) does.
pub const EXIT_ENROLL_REFUSED: i32 = 77;

/// Where the agent looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/drover/agent.toml";

/// The Docker socket used when neither `--docker-host` nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// The fleet CA certificate the controller must be signed by.
pub const DEFAULT_CA_CERT: &str = "/etc/drover/ca.crt";

/// Where the agent keeps its certificate and private key.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/drover-agent";

/// Where file-delivered secrets are written (must be on tmpfs).
pub const DEFAULT_SECRETS_DIR: &str = "/run/drover-agent/secrets";

/// The environment variable a join token may come from.
pub const TOKEN_ENV: &str = "DROVER_JOIN_TOKEN";

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
mutually authenticated TLS 1.3 gRPC stream open, and runs the commands it receives (prepare, swap, \
rollback, inspect) against the local Docker engine. Its state lives in Docker container labels, so a \
restart adopts what runs. Stopping the agent never stops application containers.\n\n\
On its first start the agent enrolls: it generates its private key in --state-dir, sends a \
certificate signing request with a one-time join token (`drover token create` on the controller), \
and keeps the certificate it gets. It renews that certificate at two thirds of its lifetime, without \
a restart.\n\n\
Every flag may also be given in the TOML config file under the same key (e.g. docker-host = \"...\", \
[labels] role = \"web\"); flags win over the file.\n\n\
Exit codes: 0 stopped by SIGTERM/SIGINT (or --check found nothing to fix); 64 bad configuration (including no \
certificate and no join token); 77 the controller refused enrollment (token unknown, spent or \
expired, or the name is already enrolled): create a new token with `drover token create`; 1 any \
other failure."
)]
pub struct Cli {
    /// Controller URL to dial out to, e.g. https://controller.internal:7070 (required, flag
    /// or file). http:// only with --insecure-dev.
    #[arg(long, value_name = "URL")]
    pub controller: Option<String>,

    /// This host's name in Drover: letters, digits, '.', '-', '_' (required, flag or file).
    /// Containers the agent manages carry it in the drover.agent label; the agent's
    /// certificate is bound to it.
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

    /// The fleet CA certificate (copy of the controller's /etc/drover/pki/ca.crt); the
    /// controller must present a certificate from it [default: /etc/drover/ca.crt].
    #[arg(long, value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,

    /// Directory holding this agent's certificate (agent.crt, 0644), private key
    /// (agent.key, 0600) and the ready records of its containers (ready/)
    /// [default: /var/lib/drover-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// One-time join token from `drover token create`, used only when there is no valid
    /// certificate in --state-dir yet. Visible in the process list: prefer --token-file or
    /// the DROVER_JOIN_TOKEN environment variable.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<JoinToken>,

    /// File holding the one-time join token (see --token).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Directory for secrets delivered as files; must be on tmpfs (or ramfs). Each container
    /// gets a read-only subdirectory, removed with the container
    /// [default: /run/drover-agent/secrets].
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,

    /// Talk to the controller in plaintext (http://), with no authentication of either side.
    /// For a development laptop only; logs a warning on every start.
    #[arg(long)]
    pub insecure_dev: bool,

    /// Validate the configuration (flags and file), print it with what the agent would do
    /// about its identity (certificate, join token, CA certificate) and its secrets
    /// directory, and exit: 0 when nothing needs fixing; 64 when the configuration is bad
    /// or the agent could not start (no CA certificate, no certificate and no join token);
    /// 1 when it would start but refuse work (a secrets directory not on tmpfs). Every
    /// problem is printed first. Contacts neither the controller nor Docker.
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
    /// See [`Cli::ca_cert`].
    #[serde(alias = "ca_cert")]
    pub ca_cert: Option<PathBuf>,
    /// See [`Cli::state_dir`].
    #[serde(alias = "state_dir")]
    pub state_dir: Option<PathBuf>,
    /// See [`Cli::token`].
    pub token: Option<JoinToken>,
    /// See [`Cli::token_file`].
    #[serde(alias = "token_file")]
    pub token_file: Option<PathBuf>,
    /// See [`Cli::secrets_dir`].
    #[serde(alias = "secrets_dir")]
    pub secrets_dir: Option<PathBuf>,
    /// See [`Cli::insecure_dev`].
    #[serde(alias = "insecure_dev")]
    pub insecure_dev: Option<bool>,
}

/// A one-time join token. `Debug` and `Display` never show it; only the enrollment request
/// reads it, through [`JoinToken::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct JoinToken(String);

impl JoinToken {
    /// Wraps a token (surrounding whitespace, e.g. a file's trailing newline, is dropped).
    pub fn new(token: &str) -> Self {
        Self(token.trim().to_string())
    }

    /// The token itself, for the one request that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Checks the shape `drj1.<id>.<secret>`; the reason never quotes the token.
    pub fn check(&self) -> Result<(), String> {
        let t = &self.0;
        if t.is_empty() {
            return Err("it is empty".into());
        }
        if t.starts_with("dra1.") {
            return Err(
                "it is an API token (dra1.), not a join token: create one with `drover token create`"
                    .into(),
            );
        }
        let parts: Vec<&str> = t.split('.').collect();
        let well_formed = parts.len() == 3
            && parts[0] == "drj1"
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()));
        if !well_formed {
            return Err(
                "it is not a join token of the form drj1.<id>.<secret> as printed by `drover token create`"
                    .into(),
            );
        }
        Ok(())
    }
}

impl std::str::FromStr for JoinToken {
    type Err = std::convert::Infallible;
    /// Never fails, so a parser error can never echo the token; [`JoinToken::check`]
    /// validates it later without quoting it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// Where the join token comes from (checked at start; a file is read when enrolling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// No token: the agent must already hold a valid certificate.
    None,
    /// A token given directly; `from` says where, for messages ("--token", "DROVER_JOIN_TOKEN").
    Given {
        /// The token.
        token: JoinToken,
        /// Where it came from.
        from: &'static str,
    },
    /// A file holding the token.
    File(PathBuf),
}

impl TokenSource {
    /// Where the token comes from, for messages; never the token itself.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::None => "none".into(),
            TokenSource::Given { from, .. } => format!("from {from}"),
            TokenSource::File(p) => format!("from file {}", p.display()),
        }
    }

    /// The token, reading the file when it comes from one.
    pub fn read(&self) -> Result<Option<JoinToken>, ConfigError> {
        let token = match self {
            TokenSource::None => return Ok(None),
            TokenSource::Given { token, .. } => token.clone(),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                JoinToken::new(&text)
            }
        };
        token.check().map_err(|reason| ConfigError::Token {
            from: self.describe(),
            reason,
        })?;
        Ok(Some(token))
    }
}

/// A configuration the agent refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file (or the token file) could not be read.
    #[error("cannot read {path}: {source}")]
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
        /// The parser's message with its line, naming the key (never quoting the line).
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
    /// Two settings that exclude each other are both given.
    #[error("{first} and {second} are both set: give only one")]
    Conflict {
        /// One setting.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
    /// The join token is malformed (the message never quotes it).
    #[error("invalid join token ({from}): {reason}")]
    Token {
        /// Where the token came from.
        from: String,
        /// What is wrong.
        reason: String,
    },
}

/// The environment variables the configuration reads, passed in so merging stays pure.
#[derive(Debug, Clone, Default)]
pub struct EnvVars {
    /// `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// `DROVER_JOIN_TOKEN`.
    pub join_token: Option<JoinToken>,
}

impl EnvVars {
    /// Reads them from the process environment.
    pub fn from_process() -> Self {
        Self {
            docker_host: std::env::var("DOCKER_HOST").ok(),
            join_token: std::env::var(TOKEN_ENV).ok().map(|t| JoinToken::new(&t)),
        }
    }
}

/// The validated configuration the agent runs with. `Debug` never shows the join token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Controller URL: https://, or http:// with `insecure_dev`; for replicas, every
    /// replica's, comma-separated (as given, for logs).
    pub controller: String,
    /// The same addresses, and which one is in use (shared by every clone).
    pub targets: Targets,
    /// This host's name; the value of the drover.agent label on its containers and the
    /// name its certificate is bound to.
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
    /// Plaintext and unauthenticated link to the controller (development only).
    pub insecure_dev: bool,
    /// The fleet CA certificate.
    pub ca_cert: PathBuf,
    /// Holds agent.crt and agent.key.
    pub state_dir: PathBuf,
    /// Where a join token comes from, if the agent has to enroll.
    pub join_token: TokenSource,
    /// Root of file-delivered secrets (absolute; must be on tmpfs).
    pub secrets_dir: PathBuf,
}

impl AgentConfig {
    /// Loads the file named by `--config` (or the default path when it exists), merges the
    /// flags and the environment over it and validates the result.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                read_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => FileConfig::default(),
        };
        Self::merge(cli, file, EnvVars::from_process())
    }

    /// Merges flags over the environment over the file and validates. Pure.
    pub fn merge(cli: &Cli, file: FileConfig, env: EnvVars) -> Result<Self, ConfigError> {
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
            .or(env.docker_host.filter(|h| !h.is_empty()))
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
        let join_token = token_source(cli, &file.token, &file.token_file, env.join_token)?;
        if let TokenSource::Given { token, from } = &join_token {
            token.check().map_err(|reason| ConfigError::Token {
                from: (*from).to_string(),
                reason,
            })?;
        }
        let config = Self {
            targets: Targets::new(&controller),
            controller,
            name,
            labels,
            advertise,
            docker_host,
            keep_previous,
            heartbeat_interval,
            log_format,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            insecure_dev: cli.insecure_dev || file.insecure_dev.unwrap_or(false),
            ca_cert: cli
                .ca_cert
                .clone()
                .or(file.ca_cert)
                .unwrap_or_else(|| DEFAULT_CA_CERT.into()),
            state_dir: cli
                .state_dir
                .clone()
                .or(file.state_dir)
                .unwrap_or_else(|| DEFAULT_STATE_DIR.into()),
            join_token,
            secrets_dir: cli
                .secrets_dir
                .clone()
                .or(file.secrets_dir)
                .unwrap_or_else(|| DEFAULT_SECRETS_DIR.into()),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the first bad one is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(invalid(
                "controller",
                &self.controller,
                "no address: write https://HOST:PORT (for replicas, every replica's, comma-separated)",
            ));
        }
        for c in self.targets.all() {
            check_controller(c, self.insecure_dev)?;
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
        for (key, path) in [
            ("ca-cert", &self.ca_cert),
            ("state-dir", &self.state_dir),
            ("secrets-dir", &self.secrets_dir),
        ] {
            if path.as_os_str().is_empty() {
                return Err(invalid(key, "", "it is empty"));
            }
        }
        if !self.secrets_dir.is_absolute() {
            return Err(invalid(
                "secrets-dir",
                &self.secrets_dir.display().to_string(),
                "use an absolute path: Docker bind-mounts secrets from it",
            ));
        }
        Ok(())
    }

    /// One line per setting, for `--check`; never the token itself.
    pub fn summary(&self) -> String {
        let transport = if self.insecure_dev {
            "plaintext (--insecure-dev)"
        } else {
            "mutual TLS"
        };
        format!(
            "name={} controller={} transport={transport} advertise={} labels={:?} docker-host={} \
             keep-previous={} heartbeat={:?} ca-cert={} state-dir={} secrets-dir={} join-token={}",
            self.name,
            self.controller,
            self.advertise,
            self.labels,
            self.docker_host,
            self.keep_previous,
            self.heartbeat_interval,
            self.ca_cert.display(),
            self.state_dir.display(),
            self.secrets_dir.display(),
            self.join_token.describe(),
        )
    }
}

/// The token's source: a flag wins over the environment, which wins over the file. Two
/// sources at the same level are refused rather than guessed between.
fn token_source(
    cli: &Cli,
    file_token: &Option<JoinToken>,
    file_token_file: &Option<PathBuf>,
    env: Option<JoinToken>,
) -> Result<TokenSource, ConfigError> {
    let conflict = |first, second| ConfigError::Conflict { first, second };
    match (&cli.token, &cli.token_file) {
        (Some(_), Some(_)) => return Err(conflict("--token", "--token-file")),
        (Some(t), None) => {
            return Ok(TokenSource::Given {
                token: t.clone(),
                from: "--token",
            });
        }
        (None, Some(p)) => return Ok(TokenSource::File(p.clone())),
        (None, None) => {}
    }
    if let Some(t) = env.filter(|t| !t.expose().is_empty()) {
        return Ok(TokenSource::Given {
            token: t,
            from: TOKEN_ENV,
        });
    }
    match (file_token, file_token_file) {
        (Some(_), Some(_)) => Err(conflict("token", "token-file")),
        (Some(t), None) => Ok(TokenSource::Given {
            token: t.clone(),
            from: "token in the config file",
        }),
        (None, Some(p)) => Ok(TokenSource::File(p.clone())),
        (None, None) => Ok(TokenSource::None),
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

/// Parses config file text; unknown keys are refused by name. The message names the line
/// but does not quote it: the line may hold the join token.
pub fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| line_number(&text.as_bytes()[..s.start.min(text.len())]));
        let message = e.message().trim().to_string();
        ConfigError::Parse {
            path: path.to_path_buf(),
            message: match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            },
        }
    })
}

/// The 1-based line number after `before`.
fn line_number(before: &[u8]) -> usize {
    before.iter().filter(|b| **b == b'\n').count() + 1
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

/// Checks one controller address: its scheme against `insecure_dev`, and that it is a
/// URL naming a host.
fn check_controller(c: &str, insecure_dev: bool) -> Result<(), ConfigError> {
    if insecure_dev {
        if !c.starts_with("http://") {
            return Err(invalid(
                "controller",
                c,
                "with --insecure-dev the link is plaintext: use an http:// URL, or drop --insecure-dev to use https://",
            ));
        }
    } else if c.starts_with("http://") {
        return Err(invalid(
            "controller",
            c,
            "plaintext http:// is refused: use https:// (mutual TLS with the fleet CA), or --insecure-dev on a development machine",
        ));
    } else if !c.starts_with("https://") {
        return Err(invalid(
            "controller",
            c,
            "use an https:// URL, e.g. https://controller:7070",
        ));
    }
    match tonic::transport::Endpoint::from_shared(c.to_owned()) {
        Err(e) => return Err(invalid("controller", c, format!("not a valid URL: {e}"))),
        Ok(e) if e.uri().host().is_none_or(str::is_empty) => {
            return Err(invalid("controller", c, "the URL names no host"));
        }
        Ok(_) => {}
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
