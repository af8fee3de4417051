//! The transport refuses what is not mutual TLS with the fleet CA: a plaintext client, a
//! client certificate from another CA, an expired one; and an agent refuses a "controller"
//! that presents an agent's certificate.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use drover_shared::tls::{CertificateAuthority, Identity, Role, SwappableCert};
use drover_tests::logs::wait_line;
use drover_tests::pki::{TestCa, client_config, operator_client};
use drover_tests::process::{ChildGuard, bin_path};
use drover_tests::tmpfs::TmpfsDir;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Speaks HTTP/2 in cleartext to `addr` (the client preface and an empty SETTINGS frame)
/// and returns the local address used and what came back until the server closed.
async fn plaintext_http2(addr: SocketAddr) -> (SocketAddr, Vec<u8>) {
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let local = tcp.local_addr().expect("local address");
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let _ = tcp.write_all(&hello).await;
    let mut answer = vec![];
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    (local, answer)
}

/// A TLS connection to `addr` with `config`: returns the local address used and how the
/// server answered a first HTTP/2 preface (`Err` with the reason when it refused).
async fn tls_attempt(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> (SocketAddr, Result<usize, String>) {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let local = tcp.local_addr().expect("local address");
    let name =
        rustls_pki_types::ServerName::try_from(tls::CONTROLLER_SERVER_NAME).expect("server name");
    let connector = tokio_rustls::TlsConnector::from(config);
    let outcome = async {
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        // TLS 1.3: the server checks the client's certificate after the client is done;
        // its verdict arrives with the first read.
        stream
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        match stream.read(&mut buf).await {
            Ok(0) => Err("closed by the server".to_string()),
            Ok(n) => Ok(n),
            Err(e) => Err(format!("read: {e}")),
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(10), outcome)
        .await
        .unwrap_or_else(|_| Err("no answer within 10s".to_string()));
    (local, result)
}

/// The controller's log line about a handshake from `local`, once written.
async fn handshake_refusal(fleet: &Fleet, local: SocketAddr) -> String {
    wait_line(
        LOG_TIMEOUT,
        "the controller's refusal of the handshake",
        || fleet.controller_logs(),
        &[&local.to_string(), "handshake"],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_is_refused_and_the_controller_logs_why() {
    let fleet = small_fleet(1).await;
    let addr = fleet.controller_addr();

    // Raw HTTP/2 in cleartext: no HTTP/2 answer, at most a TLS alert, then closed.
    let (local, answer) = plaintext_http2(addr).await;
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "the TLS port answered cleartext HTTP/2 with {answer:?}"
    );
    let line = handshake_refusal(&fleet, local).await;
    assert!(
        line.to_lowercase().contains("corrupt") || line.contains("InvalidContentType"),
        "the log does not say the client spoke no TLS: {line}"
    );

    // A real gRPC client in plaintext.
    let url = format!("http://{addr}");
    let plain = async {
        let channel = tls::insecure_channel(&url, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        drover_proto::v1::operator_client::OperatorClient::new(channel)
            .list_hosts(drover_proto::v1::ListHostsRequest::default())
            .await
            .map_err(|s| s.to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(20), plain).await;
    assert!(
        !matches!(result, Ok(Ok(_))),
        "a plaintext ListHosts succeeded"
    );

    // The real CLI in --insecure-dev against the TLS controller.
    let mut cmd = fleet.cli_as(&As::Anonymous, &["hosts"]);
    cmd.env("DROVER_CONTROLLER", &url)
        .env("DROVER_INSECURE_DEV", "1");
    let run = fleet.run_command(cmd, &["hosts"], None).await;
    assert_refused(&run, "the CLI in plaintext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused_at_the_handshake() {
    let fleet = small_fleet(1).await;
    let (rogue, _) =
        CertificateAuthority::generate("rogue CA", Duration::from_secs(3600)).expect("a second CA");
    let admin = Identity::Operator {
        name: "admin".into(),
        role: Role::Admin,
    };
    let pair = rogue
        .issue(&admin, Duration::from_secs(3600))
        .expect("issue");
    let ca_pem = fleet.pki().ca_pem();

    let config = client_config(&ca_pem, Some((&pair.cert_pem, &pair.key_pem))).expect("config");
    let (local, outcome) = tls_attempt(fleet.controller_addr(), config).await;
    assert!(
        outcome.is_err(),
        "a certificate from another CA was accepted"
    );
    let line = handshake_refusal(&fleet, local).await;
    assert!(
        line.to_lowercase().contains("issuer") || line.to_lowercase().contains("unknown ca"),
        "the log does not name the unknown issuer: {line}"
    );

    // Drover's own client and CLI with that certificate.
    let client = operator_client(
        &fleet.controller_url(),
        &ca_pem,
        Some((&pair.cert_pem, &pair.key_pem)),
    )
    .await;
    if let Ok(mut client) = client {
        let r = client
            .list_hosts(drover_proto::v1::ListHostsRequest::default())
            .await;
        assert!(r.is_err(), "ListHosts with a rogue certificate: {r:?}");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let who = cert_files(dir.path(), "rogue", &pair.cert_pem, &pair.key_pem);
    let run = fleet.drover_as(&who, &["hosts"]).await;
    assert_refused(&run, "the CLI with a certificate from another CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_is_refused() {
    let fleet = small_fleet(1).await;
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let expired = fleet
        .pki()
        .authority()
        .issue_valid_between(
            &Identity::Operator {
                name: "late".into(),
                role: Role::Admin,
            },
            now - 2 * hour,
            now - hour,
        )
        .expect("issue an expired certificate");
    let config = client_config(
        &fleet.pki().ca_pem(),
        Some((&expired.cert_pem, &expired.key_pem)),
    )
    .expect("config");
    let (local, outcome) = tls_attempt(fleet.controller_addr(), config).await;
    assert!(outcome.is_err(), "an expired certificate was accepted");
    let line = handshake_refusal(&fleet, local).await;
    assert!(
        line.to_lowercase().contains("expired"),
        "the log does not say the certificate expired: {line}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let who = cert_files(dir.path(), "late", &expired.cert_pem, &expired.key_pem);
    let run = fleet.drover_as(&who, &["hosts"]).await;
    assert_refused(&run, "the CLI with an expired certificate");
}

/// Serves TLS on loopback with `cert`/`key` as the server certificate, trusting `ca_pem`
/// for client certificates; counts the handshakes that completed (none should).
struct FakeController {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeController {
    async fn start(ca_pem: &str, cert: &str, key: &str) -> Self {
        let server = tls::server_config(
            ca_pem,
            SwappableCert::from_pem(cert, key).expect("the fake controller's certificate"),
        )
        .expect("server config");
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let handshakes = Arc::new(AtomicUsize::new(0));
        let counted = handshakes.clone();
        let task = tokio::spawn(async move {
            let mut incoming = std::pin::pin!(tls::incoming(listener, server));
            while let Some(conn) = incoming.next().await {
                if conn.is_ok() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        Self {
            addr,
            handshakes,
            task,
        }
    }
}

impl Drop for FakeController {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real agent, enrolled (a certificate from `ca` in its state directory), dialling
/// `addr`.
fn agent_dialling(ca: &TestCa, addr: SocketAddr, state: &Path, secrets: &Path) -> ChildGuard {
    let name = drover_tests::unique_name("victim");
    ca.enroll_agent_files(&name, state);
    ChildGuard::spawn(
        &format!("agent {name}"),
        &bin_path("drover-agent"),
        [
            "--controller".to_string(),
            format!("https://{addr}"),
            "--name".into(),
            name,
            "--ca-cert".into(),
            ca.ca_cert().to_string_lossy().into_owned(),
            "--state-dir".into(),
            state.to_string_lossy().into_owned(),
            "--secrets-dir".into(),
            secrets.to_string_lossy().into_owned(),
            "--heartbeat-interval".into(),
            drover_tests::agent::TEST_HEARTBEAT.into(),
        ],
        &[("RUST_LOG", "info,drover_agent=debug")],
    )
}

/// A certificate signed by `ca` for the agent identity `urn:drover:agent:NAME`, yet made
/// for serving (server-auth usage, the controller's DNS name): only the identity in it
/// tells it is no controller.
fn agent_identity_with_server_usage(ca: &TestCa, name: &str) -> (String, String) {
    let ca_key = std::fs::read_to_string(ca.dir().join(tls::CA_KEY_FILE)).expect("ca.key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca.ca_pem(),
        rcgen::KeyPair::from_pem(&ca_key).expect("CA key"),
    )
    .expect("CA issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![tls::CONTROLLER_SERVER_NAME.to_string()])
        .expect("params");
    let uri = Identity::Agent { name: name.into() }.to_uri();
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(uri.try_into().expect("URI")));
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

/// A "controller" that presents an agent's certificate, signed by the right CA: the agent
/// must refuse it. First an agent's certificate as the CA issues it (made for clients
/// only), then one also made for serving, which only the identity check catches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_refuses_a_controller_presenting_an_agent_certificate() {
    let ca = TestCa::new();
    let secrets = TmpfsDir::new();
    let state = tempfile::tempdir().expect("state dir");

    let (cert, key) = ca.issue(
        &Identity::Agent {
            name: "impostor".into(),
        },
        Duration::from_secs(3600),
    );
    let fake = FakeController::start(ca.ca_pem(), &cert, &key).await;
    let agent = agent_dialling(&ca, fake.addr, &state.path().join("a"), secrets.path());
    wait_line(
        LOG_TIMEOUT,
        "the agent's refusal of an agent certificate",
        || agent.logs(),
        &["invalid peer certificate", &fake.addr.to_string()],
    )
    .await;
    assert_eq!(
        fake.handshakes.load(Ordering::SeqCst),
        0,
        "the agent finished a handshake with an agent certificate"
    );
    drop(agent);
    drop(fake);

    let (cert, key) = agent_identity_with_server_usage(&ca, "impostor");
    let fake = FakeController::start(ca.ca_pem(), &cert, &key).await;
    let agent = agent_dialling(&ca, fake.addr, &state.path().join("b"), secrets.path());
    let line = wait_line(
        LOG_TIMEOUT,
        "the agent's refusal of a serving certificate with an agent identity",
        || agent.logs(),
        &["not the controller", &fake.addr.to_string()],
    )
    .await;
    assert!(line.contains("impostor"), "names who it saw: {line}");
    assert_eq!(
        fake.handshakes.load(Ordering::SeqCst),
        0,
        "the agent finished a handshake with an agent identity"
    );
}
