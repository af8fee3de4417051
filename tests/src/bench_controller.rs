//! A real `drover serve` for benchmarks of many (simulated) agents: a PKI made by `drover
//! ca init`, the controller on a free loopback port over mTLS or plaintext
//! (`--insecure-dev`), an operator connection to it, and dialers that open a new
//! connection per call, as each agent does.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use drover_proto::v1::ListHostsRequest;
use drover_proto::v1::operator_client::OperatorClient;
use drover_shared::tls::{self, SwappableCert};
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::bench;
use crate::process::{ChildGuard, bin_path};

/// How long one dial (TCP, TLS, HTTP/2) or one RPC may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a controller is asked while waiting on it.
const POLL: Duration = Duration::from_millis(50);
/// How long a controller may take to start, and agents to be gone after their streams
/// close.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the controller and the agents talk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mode {
    /// mTLS: `drover serve --pki-dir`, agents with enrolled certificates.
    Mtls,
    /// `drover serve --insecure-dev`, agents without certificates.
    Plaintext,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Mtls => "mTLS",
            Mode::Plaintext => "plaintext",
        }
    }
}

/// A future as the dialers return it.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
/// Opens a NEW connection to a controller on each call: its own TCP connection and, for
/// mTLS, its own TLS session presenting its own certificate.
pub type Dial = Arc<dyn Fn() -> BoxFuture<Result<Channel, String>> + Send + Sync>;

/// A dialer over mTLS (TLS 1.3, the controller identity verified) presenting `cert`
/// (certificate and key, PEM) if given.
pub fn tls_dial(url: &str, ca_pem: &str, cert: Option<(&str, &str)>) -> Result<Dial, String> {
    let cert = cert
        .map(|(c, k)| SwappableCert::from_pem(c, k))
        .transpose()
        .map_err(|e| format!("cannot load a client certificate: {e}"))?;
    let config = tls::client_config(ca_pem, cert)
        .map_err(|e| format!("cannot build the TLS client configuration: {e}"))?;
    let url = url.to_string();
    Ok(Arc::new(move || {
        let (url, config) = (url.clone(), config.clone());
        Box::pin(async move {
            tls::channel(&url, config, CALL_TIMEOUT)
                .await
                .map_err(|e| source_chain(&e))
        })
    }))
}

/// A plaintext dialer (`--insecure-dev` controllers only).
pub fn plain_dial(url: &str) -> Dial {
    let url = url.to_string();
    Arc::new(move || {
        let url = url.clone();
        Box::pin(async move {
            tls::insecure_channel(&url, CALL_TIMEOUT)
                .await
                .map_err(|e| source_chain(&e))
        })
    })
}

/// `drover ca init --dir DIR`.
pub async fn ca_init(dir: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new(bin_path("drover"))
        .args(["ca", "init", "--dir"])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run drover ca init: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "drover ca init --dir {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// A `drover serve` process and an operator connection to it (the admin certificate
/// with mTLS).
pub struct Controller {
    pub mode: Mode,
    /// `https://` or `http://127.0.0.1:PORT`.
    pub url: String,
    /// For ListHosts and CreateJoinToken; one HTTP/2 connection.
    pub operator: OperatorClient<Channel>,
    /// The process (SIGKILLed on drop: its state is throw-away).
    pub process: ChildGuard,
}

impl Controller {
    /// Starts `drover serve` in `mode` with its database in `dir` (and, for mTLS, the PKI
    /// in `pki`) and waits until it answers ListHosts; retries on another port if the
    /// process exits (e.g. the port was taken in between).
    pub async fn start(mode: Mode, dir: &Path, pki: &Path) -> Result<Self, String> {
        Self::start_with(mode, dir, pki, &[]).await
    }

    /// [`Controller::start`] with more arguments for `drover serve`.
    pub async fn start_with(
        mode: Mode,
        dir: &Path,
        pki: &Path,
        extra: &[&str],
    ) -> Result<Self, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let addr =
                SocketAddr::from((Ipv4Addr::LOCALHOST, crate::free_port(Ipv4Addr::LOCALHOST)));
            let db = dir.join(format!("{}.db", mode.label()));
            let mut args: Vec<String> = vec![
                "serve".into(),
                "--listen".into(),
                addr.to_string(),
                "--database".into(),
                db.to_string_lossy().into_owned(),
                "--metrics-listen".into(),
                String::new(),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            let (url, dial) = match mode {
                Mode::Mtls => {
                    args.extend(["--pki-dir".into(), pki.to_string_lossy().into_owned()]);
                    let url = format!("https://{addr}");
                    let (cert, key) =
                        (read(&pki.join("admin.crt"))?, read(&pki.join("admin.key"))?);
                    let ca = read(&pki.join(tls::CA_CERT_FILE))?;
                    let dial = tls_dial(&url, &ca, Some((&cert, &key)))?;
                    (url, dial)
                }
                Mode::Plaintext => {
                    args.push("--insecure-dev".into());
                    let url = format!("http://{addr}");
                    let dial = plain_dial(&url);
                    (url, dial)
                }
            };
            let mut process = ChildGuard::spawn(
                &format!("controller ({}) {addr}", mode.label()),
                &bin_path("drover"),
                &args,
                &[("RUST_LOG", "info")],
            );
            bench::on_abort(|c| {
                let (out, _) = process.log_paths();
                c.dirs.extend(out.parent().map(Path::to_path_buf));
            });
            let deadline = Instant::now() + SETTLE_TIMEOUT;
            while Instant::now() < deadline {
                if process.try_exit_status().is_some() {
                    break;
                }
                if let Ok(channel) = dial().await {
                    let mut operator = OperatorClient::new(channel);
                    match operator.list_hosts(ListHostsRequest::default()).await {
                        Ok(_) => {
                            return Ok(Self {
                                mode,
                                url,
                                operator,
                                process,
                            });
                        }
                        Err(s) => last = format!("ListHosts: {}", s.message()),
                    }
                }
                tokio::time::sleep(POLL).await;
            }
            last = format!("{last}\n{}", process.logs());
        }
        Err(format!(
            "the {} controller did not start: {last}",
            mode.label()
        ))
    }

    /// Hosts labelled `role=<role>` that are connected in a session begun at or after
    /// `since_ms`; and those connected at all.
    pub async fn connected(&mut self, role: &str, since_ms: u64) -> Result<(usize, usize), String> {
        let mut request = tonic::Request::new(ListHostsRequest {
            selector: format!("role={role}"),
        });
        request.set_timeout(CALL_TIMEOUT);
        let hosts = self
            .operator
            .list_hosts(request)
            .await
            .map_err(|s| format!("ListHosts: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .hosts;
        let fresh = hosts
            .iter()
            .filter(|h| h.connected && h.since_ms >= since_ms)
            .count();
        Ok((fresh, hosts.iter().filter(|h| h.connected).count()))
    }

    /// Waits until no host labelled `role=<role>` is connected.
    pub async fn wait_all_gone(&mut self, role: &str) -> Result<(), String> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        loop {
            let (_, connected) = self.connected(role, 0).await?;
            if connected == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{connected} agents still connected to the {} controller {SETTLE_TIMEOUT:?} after their streams closed",
                    self.mode.label()
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Lines of its log so far containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        let (out, err) = self.process.log_paths();
        [out, err]
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains(needle))
                    .count()
            })
            .sum()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A graceful stop would wait for streams; nothing here needs it.
        if let Some(pid) = self.process.pid() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        self.process.stop(Duration::ZERO);
        if std::thread::panicking() {
            eprintln!("{}", self.process.logs());
        }
    }
}

pub fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A status's code, message and the transport error under it, if any.
pub fn status_chain(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    if let Some(source) = std::error::Error::source(s) {
        out.push_str(": ");
        out.push_str(&source_chain(source));
    }
    out
}

/// An error with its causes, e.g. "transport error: tcp connect error: Connection refused".
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
