//! Enrollment, the mutually authenticated link and renewal against a fake controller that
//! is a real tonic server on loopback behind the real TLS configuration: the agent
//! enrolls with a join token (retrying while the controller is not up yet), connects
//! presenting its certificate, renews it at two thirds of its (short) lifetime and
//! reconnects with the new one; a refused token and a revoked certificate are handled as
//! the operator needs. The container runtime is the in-memory FAKE.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use drover_shared::proto::agent_channel_server::{AgentChannel, AgentChannelServer};
use drover_shared::proto::enrollment_server::{Enrollment, EnrollmentServer};
use drover_shared::proto::{
    AgentMessage, ControllerMessage, EnrollRequest, EnrollResponse, RenewRequest,
};
use drover_shared::tls::{self, CertificateAuthority, Identity, SwappableCert, TlsConnectInfo};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    SanType,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::config::{AgentConfig, Cli, EXIT_CONFIG, EXIT_ENROLL_REFUSED, EnvVars, FileConfig};
use crate::identity::{self, CertInfo};
use crate::renewal;
use crate::testing::FakeRuntime;

const TOKEN: &str = "drj1.0123456789abcdef.fedcba9876543210fedcba9876543210";
const WAIT: Duration = Duration::from_secs(15);

/// What the fake controller saw of one `Connect`.
#[derive(Debug, Clone)]
struct Seen {
    identity: Option<Identity>,
    serial: String,
}

/// The fleet CA and what the fake controller did with it.
struct Fake {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Lifetime of the certificates it signs.
    ttl: Mutex<Duration>,
    /// Tokens accepted once each.
    unused_tokens: Mutex<HashSet<String>>,
    /// Serials refused on Connect.
    revoked: Mutex<HashSet<String>>,
    renewals: Mutex<u32>,
    sessions: mpsc::UnboundedSender<Seen>,
    /// The tasks holding the open streams; aborting one ends its stream.
    open: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Fake {
    fn sign(&self, csr_pem: &str, name: &str) -> Result<EnrollResponse, Status> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut params = CertificateParams::default();
        let uri = Identity::Agent { name: name.into() }.to_uri();
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(1)).into();
        params.not_after = (now + *self.ttl.lock().unwrap()).into();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 8]>()));
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(EnrollResponse {
            cert_pem: cert.pem(),
            ca_pem: self.ca_pem.clone(),
            not_after_ms: 0,
        })
    }
}

fn peer<T>(request: &Request<T>) -> Option<tls::PeerCertificate> {
    request
        .extensions()
        .get::<TlsConnectInfo>()
        .and_then(|i| i.peer.clone())
}

/// The fake as a tonic service.
#[derive(Clone)]
struct Svc(Arc<Fake>);

impl std::ops::Deref for Svc {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.0
    }
}

#[tonic::async_trait]
impl Enrollment for Svc {
    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let r = request.into_inner();
        if !self.unused_tokens.lock().unwrap().remove(&r.token) {
            return Err(Status::unauthenticated(
                "join token unknown, expired or already used",
            ));
        }
        self.sign(&r.csr_pem, &r.name).map(Response::new)
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let Some(Identity::Agent { name }) = peer(&request).and_then(|p| p.identity) else {
            return Err(Status::unauthenticated(
                "renewal needs an agent certificate",
            ));
        };
        *self.renewals.lock().unwrap() += 1;
        self.sign(&request.into_inner().csr_pem, &name)
            .map(Response::new)
    }
}

#[tonic::async_trait]
impl AgentChannel for Svc {
    type ConnectStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let p = peer(&request);
        let seen = Seen {
            identity: p.as_ref().and_then(|p| p.identity.clone()),
            serial: p.map(|p| p.serial).unwrap_or_default(),
        };
        let _ = self.sessions.send(seen.clone());
        if self.revoked.lock().unwrap().contains(&seen.serial) {
            return Err(Status::permission_denied(
                "agent h1 was removed from the fleet; enroll it again with a new join token",
            ));
        }
        // Like the controller: the stream ends when the agent ends its side (or when the
        // test drops the open senders).
        let (tx, rx) = mpsc::channel(4);
        let mut inbound = request.into_inner();
        let task = tokio::spawn(async move {
            while let Ok(Some(_)) = inbound.message().await {}
            drop(tx);
        });
        self.open.lock().unwrap().push(task.abort_handle());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Controller {
    fake: Arc<Fake>,
    sessions: mpsc::UnboundedReceiver<Seen>,
    ca: CertificateAuthority,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Controller {
    fn new(ttl: Duration) -> Self {
        let (ca, pair) =
            CertificateAuthority::generate("test fleet", Duration::from_secs(3600)).unwrap();
        let issuer =
            Issuer::from_ca_cert_pem(&pair.cert_pem, KeyPair::from_pem(&pair.key_pem).unwrap())
                .unwrap();
        let (tx, sessions) = mpsc::unbounded_channel();
        let fake = Arc::new(Fake {
            ca_pem: pair.cert_pem,
            issuer,
            ttl: Mutex::new(ttl),
            unused_tokens: Mutex::new(HashSet::from([TOKEN.to_string()])),
            revoked: Mutex::default(),
            renewals: Mutex::new(0),
            sessions: tx,
            open: Mutex::default(),
        });
        Self {
            fake,
            sessions,
            ca,
            server: None,
        }
    }

    /// Serves on `addr` with the controller's TLS configuration.
    async fn serve(&mut self, addr: SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let own = self
            .ca
            .issue_controller(&[], Duration::from_secs(600))
            .unwrap();
        let cert = SwappableCert::from_pem(&own.cert_pem, &own.key_pem).unwrap();
        let config = tls::server_config(self.ca.cert_pem(), cert).unwrap();
        let fake = Svc(self.fake.clone());
        self.server = Some(tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(EnrollmentServer::new(fake.clone()))
                .add_service(AgentChannelServer::new(fake))
                .serve_with_incoming(tls::incoming(listener, config))
                .await;
        }));
    }

    async fn session(&mut self) -> Seen {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("no connection from the agent")
            .unwrap()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.abort();
        }
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn config(addr: SocketAddr, dir: &Path, ca_pem: &str, token: Option<&str>) -> AgentConfig {
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    let cli = Cli {
        controller: Some(format!("https://{addr}")),
        name: Some("h1".into()),
        heartbeat_interval: Some("100ms".into()),
        ca_cert: Some(ca),
        state_dir: Some(dir.join("state")),
        secrets_dir: Some(dir.join("secrets")),
        token: token.map(|t| t.parse().unwrap()),
        ..Default::default()
    };
    AgentConfig::merge(&cli, FileConfig::default(), EnvVars::default()).unwrap()
}

type AgentTask = tokio::task::JoinHandle<Result<(), crate::IdentityError>>;

fn start(config: AgentConfig) -> (AgentTask, oneshot::Sender<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(crate::run_with_runtime(
        config,
        Arc::new(FakeRuntime::new()),
        async {
            let _ = stopped.await;
        },
    ));
    (task, stop)
}

fn stored(dir: &Path) -> CertInfo {
    let pem = std::fs::read_to_string(dir.join("state").join(identity::CERT_FILE)).unwrap();
    CertInfo::parse(&pem).unwrap()
}

fn agent_h1() -> Option<Identity> {
    Some(Identity::Agent { name: "h1".into() })
}

#[tokio::test]
async fn enrolls_connects_with_its_certificate_renews_and_reconnects() {
    let dir = tempfile::tempdir().unwrap();
    // Certificates live 3 s: renewal is due 2 s after receipt.
    let mut controller = Controller::new(Duration::from_secs(3));
    let addr = free_addr();
    let (agent, stop) = start(config(
        addr,
        dir.path(),
        &controller.fake.ca_pem,
        Some(TOKEN),
    ));
    // The controller comes up after the agent: enrollment retries until it answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    controller.serve(addr).await;

    let first = controller.session().await;
    assert_eq!(first.identity, agent_h1());
    let on_disk = stored(dir.path());
    assert_eq!(on_disk.serial, first.serial);
    let key = PathBuf::from(dir.path())
        .join("state")
        .join(identity::KEY_FILE);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Renewed without a restart: the next stream presents a new certificate.
    let second = controller.session().await;
    assert_eq!(second.identity, agent_h1());
    assert_ne!(second.serial, first.serial);
    assert!(*controller.fake.renewals.lock().unwrap() >= 1);
    assert!(!agent.is_finished());

    // Once the agent holds a long-lived certificate, stop it and start it again: the
    // stored certificate is used, with no token.
    *controller.fake.ttl.lock().unwrap() = Duration::from_secs(600);
    let long_lived = tokio::time::timeout(WAIT, async {
        loop {
            let info = stored(dir.path());
            if renewal::Validity::new(&info, SystemTime::now()).lifetime() > Duration::from_secs(60)
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the agent kept renewing its certificate");
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    while controller.sessions.try_recv().is_ok() {}
    let renewals = *controller.fake.renewals.lock().unwrap();
    let (agent, stop) = start(config(addr, dir.path(), &controller.fake.ca_pem, None));
    let again = controller.session().await;
    assert_eq!(again.identity, agent_h1());
    assert_eq!(again.serial, long_lived.serial);
    assert_eq!(*controller.fake.renewals.lock().unwrap(), renewals);
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_refused_token_ends_the_agent_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::new(Duration::from_secs(600));
    controller.fake.unused_tokens.lock().unwrap().clear();
    let addr = free_addr();
    controller.serve(addr).await;
    let (agent, _stop) = start(config(
        addr,
        dir.path(),
        &controller.fake.ca_pem,
        Some(TOKEN),
    ));
    let e = tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.exit_code(), EXIT_ENROLL_REFUSED);
    let text = e.to_string();
    assert!(
        text.contains("already used") && text.contains("drover token create"),
        "{text}"
    );
    assert!(!text.contains("fedcba9876543210"), "{text}");
    assert!(!dir.path().join("state").join(identity::KEY_FILE).exists());
}

#[tokio::test]
async fn no_certificate_and_no_token_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::new(Duration::from_secs(600));
    let (agent, _stop) = start(config(
        free_addr(),
        dir.path(),
        &controller.fake.ca_pem,
        None,
    ));
    let e = tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(e.exit_code(), EXIT_CONFIG);
    assert!(e.to_string().contains("--token"), "{e}");
}

#[tokio::test]
async fn a_revoked_agent_keeps_running_and_retries_slowly() {
    let dir = tempfile::tempdir().unwrap();
    let mut controller = Controller::new(Duration::from_secs(600));
    let addr = free_addr();
    controller.serve(addr).await;
    let (agent, stop) = start(config(
        addr,
        dir.path(),
        &controller.fake.ca_pem,
        Some(TOKEN),
    ));
    let first = controller.session().await;
    controller
        .fake
        .revoked
        .lock()
        .unwrap()
        .insert(first.serial.clone());
    // End the open stream: the agent reconnects and is refused.
    for stream in controller.fake.open.lock().unwrap().drain(..) {
        stream.abort();
    }
    let refused = controller.session().await;
    assert_eq!(refused.serial, first.serial);
    // No tight loop: the next attempt waits at least REFUSED_RETRY / 10 (3 s).
    let next = tokio::time::timeout(Duration::from_secs(2), controller.sessions.recv()).await;
    assert!(next.is_err(), "retried too soon: {next:?}");
    assert!(!agent.is_finished());
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
