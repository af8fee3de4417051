//! Connecting a client command to the controller: which address and credentials to use
//! (flags and environment variables over the client profile over the fleet PKI
//! directory's defaults), the TLS channel, and errors that say what to fix first.

use std::path::{Path, PathBuf};

use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::tls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::profile::{self, Profile};
use super::{DEFAULT_CONTROLLER, DEFAULT_PKI_DIR, Refused};

/// How long the CLI waits for the controller's TCP and TLS handshake.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The operator API client every subcommand uses: a TLS channel plus the API token, if
/// any, on every request.
pub type Client = OperatorClient<InterceptedService<Channel, Credentials>>;

/// Adds `authorization: Bearer <token>` to each request when an API token is in use.
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = if self.bearer.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_struct("Credentials")
            .field("token", &token)
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(b) = &self.bearer {
            request.metadata_mut().insert("authorization", b.clone());
        }
        Ok(request)
    }
}

/// Options every client subcommand shares: where the controller is and how to prove who
/// you are. Each falls back to the client profile (`drover login`), then to the fleet
/// PKI directory. An API token comes from the `DROVER_TOKEN` environment variable or a
/// file (never a flag, so it stays out of shell history and `ps`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Controller address: https://HOST:PORT (http:// only with --insecure-dev); for
    /// replicas on PostgreSQL, every replica's, comma-separated: the CLI asks the leader
    /// [default: the profile's, else https://127.0.0.1:7070].
    #[arg(long, env = "DROVER_CONTROLLER", value_name = "URL")]
    pub controller: Option<String>,
    /// The client profile to use, from ~/.config/drover/config.toml (written by `drover
    /// login`) [default: the file's `default`, else the profile named default].
    #[arg(long, env = "DROVER_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
    /// The fleet CA certificate that the controller's certificate must chain to
    /// [default: the profile's, else ca.crt in the PKI directory].
    #[arg(long, env = "DROVER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Operator client certificate (PEM), e.g. admin.crt from `drover ca init` or one from
    /// `drover ca issue-operator`. Without a certificate or token (here or in the
    /// profile), the CLI uses admin.crt of the PKI directory when it can read it.
    #[arg(long, env = "DROVER_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key of --cert (PEM).
    #[arg(long, env = "DROVER_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// File holding an API token (from `drover api-token create`); or set DROVER_TOKEN.
    #[arg(long, env = "DROVER_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The fleet PKI directory of `drover ca init`, for its ca.crt and admin.crt.
    #[arg(long, env = "DROVER_PKI_DIR", value_name = "DIR", default_value = DEFAULT_PKI_DIR)]
    pub pki_dir: PathBuf,
    /// Talk plaintext to a controller started with --insecure-dev. Development only:
    /// nothing is authenticated or encrypted.
    #[arg(long, env = "DROVER_INSECURE_DEV", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_dev: bool,
}

/// What a command connects with, once flags, environment and profile are merged.
#[derive(Debug)]
pub struct Settings {
    /// Addresses to try, in order.
    pub controllers: Vec<String>,
    /// The fleet CA certificate.
    pub ca_cert: PathBuf,
    /// Operator certificate and key, and whether they were asked for (else the PKI
    /// directory's admin certificate, used only when readable).
    pub cert: Option<(PathBuf, PathBuf, bool)>,
    /// Where the API token is read from.
    pub token: Option<TokenSource>,
    /// Plaintext.
    pub insecure_dev: bool,
}

/// Where an API token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// The `DROVER_TOKEN` environment variable.
    Env,
    /// A file (flag, environment or profile).
    File(PathBuf),
    /// Read already (`drover login --token-stdin`), not saved yet.
    Value(String),
}

impl ClientArgs {
    /// Merges flags and environment over the selected profile.
    pub fn settings(&self) -> Result<Settings, Refused> {
        let p = profile::active(self.profile.as_deref())?.unwrap_or_default();
        Ok(self.merge(p))
    }

    fn merge(&self, p: Profile) -> Settings {
        let controllers = match &self.controller {
            Some(c) => c
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            None if !p.controllers.is_empty() => p.controllers.clone(),
            None => vec![DEFAULT_CONTROLLER.to_owned()],
        };
        let ca_cert = self
            .ca_cert
            .clone()
            .or(p.ca_cert.clone())
            .unwrap_or_else(|| self.pki_dir.join(tls::CA_CERT_FILE));
        let env_token = std::env::var("DROVER_TOKEN").is_ok_and(|t| !t.trim().is_empty());
        let flag_token = match &self.token_file {
            Some(f) => Some(TokenSource::File(f.clone())),
            None if env_token => Some(TokenSource::Env),
            None => None,
        };
        let flag_cert = self.cert.clone().zip(self.key.clone());
        let (cert, token) = match (flag_cert, flag_token) {
            (None, None) => {
                let cert = p.cert.clone().zip(p.key.clone()).map(|(c, k)| (c, k, true));
                let token = p.token_file.clone().map(TokenSource::File);
                let fallback = || {
                    (
                        self.pki_dir.join("admin.crt"),
                        self.pki_dir.join("admin.key"),
                        false,
                    )
                };
                match (cert, token) {
                    (None, None) => (Some(fallback()), None),
                    other => other,
                }
            }
            (c, t) => (c.map(|(c, k)| (c, k, true)), t),
        };
        Settings {
            controllers,
            ca_cert,
            cert,
            token,
            insecure_dev: self.insecure_dev || p.insecure_dev,
        }
    }

    /// Connects to the first controller that answers (mTLS unless --insecure-dev), with
    /// errors that say where it tried and what to fix.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.settings()?.client().await
    }
}

/// The settings of the last client made, for [`reconnect`].
static LAST: std::sync::Mutex<Option<Settings>> = std::sync::Mutex::new(None);

/// A new client to the controller replica that leads now, made with the settings of the
/// last one, when those name several replicas (`None` otherwise): a command following a
/// deployment carries on across a change of leader.
pub async fn reconnect() -> Option<anyhow::Result<Client>> {
    let settings = LAST
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|s| s.controllers.len() > 1)
        .map(Settings::copy)?;
    Some(settings.connect().await)
}

impl Settings {
    /// The same settings.
    fn copy(&self) -> Self {
        Self {
            controllers: self.controllers.clone(),
            ca_cert: self.ca_cert.clone(),
            cert: self.cert.clone(),
            token: self.token.clone(),
            insecure_dev: self.insecure_dev,
        }
    }

    /// See [`ClientArgs::client`].
    pub async fn client(&self) -> anyhow::Result<Client> {
        *LAST.lock().unwrap_or_else(|p| p.into_inner()) = Some(self.copy());
        self.connect().await
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        for url in &self.controllers {
            check_address(url, self.insecure_dev)?;
        }
        let (config, bearer) = if self.insecure_dev {
            (None, None)
        } else {
            let ca_pem = tls::read_pem_file(&self.ca_cert).map_err(|e| {
                Refused(format!(
                    "{e}: the CLI needs the fleet CA certificate (ca.crt from `drover ca init`); pass --ca-cert, set DROVER_CA_CERT or DROVER_PKI_DIR, or save it in a profile with `drover login`"
                ))
            })?;
            let token = self.token()?;
            let cert = self.certificate(token.is_some())?;
            let config = tls::client_config(&ca_pem, cert)
                .map_err(|e| Refused(format!("{}: {e}", self.ca_cert.display())))?;
            (Some(config), token.map(bearer).transpose()?)
        };
        let mut failures = vec![];
        let mut standbys = 0;
        let mut queue: std::collections::VecDeque<String> =
            self.controllers.iter().cloned().collect();
        let mut tried = std::collections::HashSet::new();
        while let Some(url) = queue.pop_front() {
            if !tried.insert(url.clone()) {
                continue;
            }
            let channel = match &config {
                None => tls::insecure_channel(&url, CONNECT_TIMEOUT).await,
                Some(c) => tls::channel(&url, c.clone(), CONNECT_TIMEOUT).await,
            };
            let channel = match channel {
                Ok(channel) => channel,
                Err(e) => {
                    failures.push(format!("{url}: {}", cause(&e)));
                    continue;
                }
            };
            let credentials = Credentials {
                bearer: bearer.clone(),
            };
            let mut client = OperatorClient::with_interceptor(channel, credentials);
            // With several replicas, ask the one that leads: a standby names it.
            if self.controllers.len() > 1 {
                match client
                    .who_am_i(drover_proto::v1::WhoAmIRequest {})
                    .await
                    .map(tonic::Response::into_inner)
                {
                    Ok(r) if r.controller_role == "standby" => {
                        standbys += 1;
                        if !r.leader.is_empty() {
                            check_address(&r.leader, self.insecure_dev)?;
                            queue.push_front(r.leader.clone());
                        }
                        failures.push(format!("{url}: a standby"));
                        continue;
                    }
                    Ok(_) => {}
                    Err(status) => {
                        failures.push(format!("{url}: {}", status.message()));
                        continue;
                    }
                }
            }
            return Ok(client);
        }
        if standbys > 0 {
            return Err(anyhow::anyhow!(
                "no controller replica leads at the moment ({}); a new leader is being chosen: retry in a few seconds",
                failures.join("; ")
            ));
        }
        Err(anyhow::anyhow!(
            "cannot reach the controller at {}; is `drover serve` running there? Pass --controller https://HOST:PORT (or set DROVER_CONTROLLER, or save it in a profile with `drover login`)",
            failures.join("; ")
        ))
    }

    /// The API token, if one is to be used.
    fn token(&self) -> Result<Option<String>, Refused> {
        match &self.token {
            None => Ok(None),
            Some(TokenSource::Env) => Ok(std::env::var("DROVER_TOKEN")
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())),
            Some(TokenSource::Value(t)) => Ok(Some(t.clone())),
            Some(TokenSource::File(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Refused(format!(
                        "cannot read the token file {}: {e}",
                        path.display()
                    ))
                })?;
                let t = text.trim().to_owned();
                if t.is_empty() {
                    return Err(Refused(format!(
                        "the token file {} is empty",
                        path.display()
                    )));
                }
                Ok(Some(t))
            }
        }
    }

    /// The client certificate to present: the one asked for, or the PKI directory's
    /// admin certificate when no token is in use and it is readable.
    fn certificate(&self, have_token: bool) -> Result<Option<tls::SwappableCert>, Refused> {
        let Some((cert, key, explicit)) = &self.cert else {
            return Ok(None);
        };
        if *explicit && have_token {
            return Err(Refused(
                "both a client certificate (--cert / DROVER_CERT or the profile's cert) and an API token (DROVER_TOKEN, --token-file or the profile's token_file) were given: use one".into(),
            ));
        }
        if !*explicit && (have_token || !cert.exists()) {
            return Ok(None);
        }
        let read = |p: &Path| {
            tls::read_pem_file(p).map_err(|e| {
                Refused(format!(
                    "{e}: pass a readable operator certificate and key with --cert/--key (DROVER_CERT/DROVER_KEY)"
                ))
            })
        };
        let (cert_pem, key_pem) = match (read(cert), read(key)) {
            (Ok(c), Ok(k)) => (c, k),
            // The default admin certificate is only a convenience: unreadable means unused.
            (Err(_), _) | (_, Err(_)) if !*explicit => return Ok(None),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let swappable = tls::SwappableCert::from_pem(&cert_pem, &key_pem)
            .map_err(|e| Refused(format!("{}: {e}", cert.display())))?;
        Ok(Some(swappable))
    }
}

fn bearer(token: String) -> Result<MetadataValue<Ascii>, Refused> {
    let mut value: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        Refused(
            "the API token has characters a token never has; copy it again from `drover api-token create`"
                .into(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Refuses an address the CLI cannot or must not dial, saying how to write it.
pub fn check_address(url: &str, insecure_dev: bool) -> Result<(), Refused> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(Refused(format!(
            "controller address {url:?} has no scheme: write https://{url} (or http://{url} for a controller started with --insecure-dev, with --insecure-dev here too)"
        )));
    };
    match scheme {
        "https" if insecure_dev => Err(Refused(format!(
            "--insecure-dev needs an http:// controller address, not {url}"
        ))),
        "https" => Ok(()),
        "http" if insecure_dev => Ok(()),
        "http" => Err(Refused(format!(
            "refusing to talk to {url} in plaintext: use https://{rest}, or pass --insecure-dev for a development controller started with --insecure-dev"
        ))),
        _ => Err(Refused(format!(
            "controller address {url:?}: unknown scheme {scheme:?}; write https://{rest}"
        ))),
    }
}

/// Why a connection failed, said once: the innermost error of the chain (a refused
/// connection, a timeout, a TLS refusal) in words, not every layer repeating it.
pub fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "connection refused (nothing listens on that address and port)".into()
                }
                std::io::ErrorKind::TimedOut => {
                    format!(
                        "no answer within {}",
                        humantime::format_duration(CONNECT_TIMEOUT)
                    )
                }
                _ => io.to_string(),
            };
        }
        let text = err.to_string();
        if !text.is_empty() {
            innermost = text;
        }
        source = err.source();
    }
    innermost
}

/// `message` with a part said again by the layer below removed: `transport error:
/// connection refused: Connection refused (os error 111)` reads `transport error:
/// connection refused`.
pub fn said_once(message: &str) -> String {
    let key = |part: &str| {
        let p = part.trim().to_lowercase();
        match p.find(" (os error") {
            Some(i) => p[..i].to_owned(),
            None => p,
        }
    };
    let mut kept: Vec<&str> = vec![];
    for part in message.split(": ") {
        let k = key(part);
        let repeats = kept.iter().any(|p| {
            let kp = key(p);
            kp.contains(&k) || k.contains(&kp)
        });
        if k.is_empty() || repeats {
            continue;
        }
        kept.push(part);
    }
    kept.join(": ")
}

#[cfg(test)]
#[path = "connect_tests.rs"]
mod tests;
