//! The controller's security over real mTLS on loopback: operators authenticated by
//! certificate or API token and checked by role, agents enrolled with one-time join
//! tokens, removed agents refused, secrets delivered only inside the swap. The agents are
//! in-process gRPC clients (as in `rollout_engine.rs`); the real agent binary and Docker
//! are covered in `tests/`.
//!
//! Everything the controller logs during these tests is captured and searched for the
//! secret values and tokens the tests used.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use drover_controller::hub::HubSettings;
use drover_controller::server::{Security, ServeSettings, TlsSettings, run};
use drover_proto::v1 as proto;
use drover_proto::v1::agent_channel_client::AgentChannelClient;
use drover_proto::v1::enrollment_client::EnrollmentClient;
use drover_proto::v1::operator_client::OperatorClient;
use drover_proto::v1::{agent_message, command, controller_message};
use drover_shared::tls::{
    self, CertificateAuthority, Identity, KeyAndCert, Role, SwappableCert, key_and_csr,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

// ----- captured logs ----------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test binary, at every level.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        captured
    })
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ----- a controller with its PKI ----------------------------------------------------

struct Controller {
    url: String,
    ca: CertificateAuthority,
    ca_pem: String,
    admin: KeyAndCert,
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

impl Controller {
    /// A new CA in a PKI directory (as `drover ca init` leaves it) and a controller on it.
    async fn start() -> Self {
        Self::start_with(Duration::from_secs(3600), HubSettings::default()).await
    }

    /// As [`Controller::start`], issuing agent certificates valid for `agent_ttl`.
    async fn start_with(agent_ttl: Duration, hub: HubSettings) -> Self {
        logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        let (ca, pair) =
            CertificateAuthority::generate("test fleet", Duration::from_secs(3600)).unwrap();
        tls::write_public(&pki.join(tls::CA_CERT_FILE), pair.cert_pem.as_bytes()).unwrap();
        tls::write_private(&pki.join(tls::CA_KEY_FILE), pair.key_pem.as_bytes()).unwrap();
        drover_controller::secrets::SecretsKey::generate()
            .write(&pki.join("secrets.key"))
            .unwrap();
        let admin = ca
            .issue(
                &Identity::Operator {
                    name: "admin".into(),
                    role: Role::Admin,
                },
                Duration::from_secs(3600),
            )
            .unwrap();
        let security = TlsSettings::load(&pki, vec![], agent_ttl).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        let settings = ServeSettings {
            hub,
            deployer: Default::default(),
            database: drover_controller::server::Database::Sqlite(dir.path().join("drover.db")),
            shutdown_grace: Duration::from_secs(1),
            metrics: None,
            clock: drover_controller::schedule::SystemClock::shared(),
            security: Security::Tls(security),
            slo: Default::default(),
            web: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = run(listener, settings, async move {
                let _ = stopped.await;
            })
            .await;
        });
        Self {
            url,
            ca,
            ca_pem: pair.cert_pem,
            admin,
            dir,
            stop: Some(stop),
        }
    }

    async fn channel(&self, cert: Option<&KeyAndCert>) -> Result<Channel, String> {
        let cert = cert.map(|c| SwappableCert::from_pem(&c.cert_pem, &c.key_pem).unwrap());
        let config = tls::client_config(&self.ca_pem, cert).unwrap();
        tls::channel(&self.url, config, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
    }

    /// An operator client presenting `cert` and/or `token`.
    async fn operator(&self, cert: Option<&KeyAndCert>, token: Option<&str>) -> Operator {
        let channel = self.channel(cert).await.unwrap();
        OperatorClient::with_interceptor(channel, Bearer(token.map(str::to_owned)))
    }

    async fn admin(&self) -> Operator {
        self.operator(Some(&self.admin), None).await
    }

    async fn api_token(&self, name: &str, role: &str) -> String {
        self.admin()
            .await
            .create_api_token(proto::CreateApiTokenRequest {
                name: name.into(),
                role: role.into(),
                ttl_ms: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    async fn join_token(&self, labels: &[(&str, &str)]) -> String {
        self.admin()
            .await
            .create_join_token(proto::CreateJoinTokenRequest {
                ttl_ms: 0,
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }

    /// Enrolls `name` with `token` the way an agent does: key made here, CSR sent.
    async fn enroll(&self, token: &str, name: &str) -> Result<KeyAndCert, tonic::Status> {
        let (key_pem, csr_pem) = key_and_csr(&Identity::Agent { name: name.into() }).unwrap();
        let mut client = EnrollmentClient::new(self.channel(None).await.unwrap());
        let r = client
            .enroll(proto::EnrollRequest {
                token: token.into(),
                name: name.into(),
                csr_pem,
            })
            .await?
            .into_inner();
        assert_eq!(r.ca_pem, self.ca_pem);
        Ok(KeyAndCert {
            cert_pem: r.cert_pem,
            key_pem,
        })
    }

    /// Enrolls `name` with a fresh `role=web` token and connects it as the only agent;
    /// returns once the controller lists it as connected.
    async fn join(&self, name: &str, received: &Received) -> (KeyAndCert, FakeAgent) {
        let token = self.join_token(&[("role", "web")]).await;
        let cert = self.enroll(&token, name).await.unwrap();
        let agent = connect_agent(self, &cert, name, &[], received.clone())
            .await
            .unwrap();
        self.wait_hosts(1).await;
        (cert, agent)
    }

    async fn wait_hosts(&self, connected: usize) -> Vec<proto::HostInfo> {
        let mut client = self.admin().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let hosts = client
                .list_hosts(proto::ListHostsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .hosts;
            if hosts.iter().filter(|h| h.connected).count() == connected {
                return hosts;
            }
            assert!(tokio::time::Instant::now() < deadline, "hosts: {hosts:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type Operator = OperatorClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` when there is a token.
#[derive(Clone)]
struct Bearer(Option<String>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {t}").parse().unwrap();
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

// ----- a fake agent over mTLS ------------------------------------------------------

/// The secrets each swap carried, by host.
type Received = Arc<Mutex<Vec<(String, Option<proto::Secrets>)>>>;

#[derive(Debug)]
struct FakeAgent {
    /// Ends with the controller's status when the stream closes.
    closed: tokio::sync::oneshot::Receiver<Option<tonic::Status>>,
}

/// Connects as `hello_name` with `cert`; answers prepares and swaps with success.
async fn connect_agent(
    c: &Controller,
    cert: &KeyAndCert,
    hello_name: &str,
    labels: &[(&str, &str)],
    received: Received,
) -> Result<FakeAgent, tonic::Status> {
    let channel = c
        .channel(Some(cert))
        .await
        .map_err(tonic::Status::unavailable)?;
    let mut client = AgentChannelClient::new(channel);
    let (tx, rx) = mpsc::channel(16);
    tx.send(proto::AgentMessage {
        body: Some(agent_message::Body::Hello(proto::Hello {
            name: hello_name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            advertise_address: "127.0.0.1".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = client.connect(ReceiverStream::new(rx)).await?.into_inner();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let name = hello_name.to_owned();
    tokio::spawn(async move {
        let end = loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break None,
                Err(status) => break Some(status),
            };
            let Some(controller_message::Body::Command(cmd)) = msg.body else {
                continue;
            };
            let mut result = proto::CommandResult {
                command_id: cmd.command_id.clone(),
                ..Default::default()
            };
            match cmd.kind {
                Some(command::Kind::Prepare(p)) => {
                    result.output = Some(proto::command_result::Output::Prepare(
                        proto::PrepareResult {
                            pinned: p.image.replace(':', "@sha256:"),
                            image: p.image,
                            digest: "sha256:abc".into(),
                            pulled: true,
                        },
                    ));
                }
                Some(command::Kind::Swap(s)) => {
                    let version = s
                        .spec
                        .as_ref()
                        .map(|c| c.version.clone())
                        .unwrap_or_default();
                    received.lock().unwrap().push((name.clone(), s.secrets));
                    result.output = Some(proto::command_result::Output::Swap(proto::SwapResult {
                        current: Some(proto::ServiceState {
                            service: "web".into(),
                            version,
                            state: proto::ContainerState::Running as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }));
                }
                _ => {}
            }
            let reply = proto::AgentMessage {
                body: Some(agent_message::Body::Result(result)),
            };
            if tx.send(reply).await.is_err() {
                break None;
            }
        };
        let _ = closed_tx.send(end);
    });
    Ok(FakeAgent { closed })
}

fn assert_refused<T: std::fmt::Debug>(r: Result<T, tonic::Status>, code: Code, words: &str) {
    let status = r.expect_err("refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(words), "{status:?}");
}

const SPEC: &str = "[service]\nname = \"web\"\nimage = \"reg/web\"\nport = 8080\n[targets]\nselector = \"role=web\"\n";

// ----- the tests --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_are_authenticated_and_held_to_their_role() {
    let c = Controller::start().await;
    let me = c
        .admin()
        .await
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.method.as_str()),
        ("admin", "admin", "certificate")
    );

    // Neither certificate nor token.
    let mut anonymous = c.operator(None, None).await;
    assert_refused(
        anonymous
            .list_hosts(proto::ListHostsRequest::default())
            .await,
        Code::Unauthenticated,
        "no client certificate or API token",
    );

    // A viewer token reads, and may not deploy.
    let viewer = c.api_token("alice", "viewer").await;
    let mut alice = c.operator(None, Some(&viewer)).await;
    alice
        .list_hosts(proto::ListHostsRequest::default())
        .await
        .unwrap();
    let me = alice
        .who_am_i(proto::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.method.as_str()),
        ("alice", "viewer", "token")
    );
    assert_refused(
        alice
            .deploy(proto::DeployRequest {
                spec_toml: SPEC.into(),
                version: "v2".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "viewer alice may not deploy: needs deployer",
    );
    assert_refused(
        alice
            .create_join_token(proto::CreateJoinTokenRequest::default())
            .await,
        Code::PermissionDenied,
        "needs admin",
    );

    // A deployer passes the role check (and fails on the empty fleet), but sets no secret.
    let deployer = c.api_token("ci", "deployer").await;
    let mut ci = c.operator(None, Some(&deployer)).await;
    assert_refused(
        ci.deploy(proto::DeployRequest {
            spec_toml: SPEC.into(),
            version: "v2".into(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "matches no connected host",
    );
    assert_refused(
        ci.set_secret(proto::SetSecretRequest {
            service: "web".into(),
            name: "X".into(),
            value: b"v".to_vec(),
            ..Default::default()
        })
        .await,
        Code::PermissionDenied,
        "deployer ci may not set secrets: needs admin",
    );

    // Bad tokens: malformed, unknown.
    let mut bad = c.operator(None, Some("dra1.nope")).await;
    assert_refused(
        bad.list_hosts(proto::ListHostsRequest::default()).await,
        Code::Unauthenticated,
        "malformed",
    );
    let forged = format!("{}{}", &viewer[..viewer.len() - 4], "0000");
    let mut forged_client = c.operator(None, Some(&forged)).await;
    assert_refused(
        forged_client
            .list_hosts(proto::ListHostsRequest::default())
            .await,
        Code::Unauthenticated,
        "unknown API token",
    );

    // An agent certificate is no operator certificate.
    let agent =
        c.ca.issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            Duration::from_secs(600),
        )
        .unwrap();
    let mut as_agent = c.operator(Some(&agent), None).await;
    assert_refused(
        as_agent
            .list_hosts(proto::ListHostsRequest::default())
            .await,
        Code::PermissionDenied,
        "agent web-1",
    );

    // A certificate from another CA does not get past the handshake.
    let (other, _) = CertificateAuthority::generate("other", Duration::from_secs(3600)).unwrap();
    let stranger = other
        .issue(
            &Identity::Operator {
                name: "admin".into(),
                role: Role::Admin,
            },
            Duration::from_secs(600),
        )
        .unwrap();
    let refused = match c.channel(Some(&stranger)).await {
        Err(_) => true,
        Ok(ch) => OperatorClient::new(ch)
            .list_hosts(proto::ListHostsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a certificate from another CA was accepted");

    // Refusals are logged with their reason; tokens never are.
    let logged = log_text();
    assert!(logged.contains("viewer alice may not deploy: needs deployer"));
    assert!(logged.contains("refused an operator request"));
    for token in [&viewer, &deployer, &forged] {
        let secret = token.rsplit('.').next().unwrap();
        assert!(!logged.contains(secret), "a token's secret was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_enroll_once_and_removed_agents_stay_out() {
    let c = Controller::start().await;
    let token = c.join_token(&[("role", "web")]).await;
    let cert = c.enroll(&token, "web-1").await.unwrap();

    // One token, one agent.
    assert_refused(
        c.enroll(&token, "web-2").await,
        Code::Unauthenticated,
        "already used",
    );
    assert_refused(
        c.enroll(
            "drj1.0123456789abcdef.0123456789abcdef0123456789abcdef",
            "web-2",
        )
        .await,
        Code::Unauthenticated,
        "not valid",
    );
    // One valid certificate per name.
    let second = c.join_token(&[]).await;
    assert_refused(
        c.enroll(&second, "web-1").await,
        Code::AlreadyExists,
        "host web-1 is already enrolled; `drover hosts remove web-1` first",
    );

    // The agent connects under its certificate's name; the token's labels win.
    let received = Received::default();
    assert_refused(
        connect_agent(&c, &cert, "web-9", &[], received.clone()).await,
        Code::PermissionDenied,
        "the certificate is for agent web-1",
    );
    let agent = connect_agent(
        &c,
        &cert,
        "web-1",
        &[("role", "db"), ("zone", "a")],
        received.clone(),
    )
    .await
    .unwrap();
    let hosts = c.wait_hosts(1).await;
    assert_eq!(hosts[0].labels.get("role").map(String::as_str), Some("web"));
    assert_eq!(hosts[0].labels.get("zone").map(String::as_str), Some("a"));

    // A CA-signed agent certificate this controller never issued is refused.
    let minted =
        c.ca.issue(
            &Identity::Agent {
                name: "web-3".into(),
            },
            Duration::from_secs(600),
        )
        .unwrap();
    assert_refused(
        connect_agent(&c, &minted, "web-3", &[], received.clone()).await,
        Code::PermissionDenied,
        "not issued by this controller",
    );

    // Renewal with the current certificate.
    let (key_pem, csr_pem) = key_and_csr(&Identity::Agent {
        name: "web-1".into(),
    })
    .unwrap();
    let mut enroll = EnrollmentClient::new(c.channel(Some(&cert)).await.unwrap());
    let renewed = enroll
        .renew(proto::RenewRequest {
            csr_pem: csr_pem.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let renewed = KeyAndCert {
        cert_pem: renewed.cert_pem,
        key_pem,
    };

    // Removal: certificates revoked, stream closed with the reason, no way back in.
    let removed = c
        .admin()
        .await
        .remove_host(proto::RemoveHostRequest {
            name: "web-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(removed.revoked_certificates, 2);
    assert!(removed.was_connected);
    let closed = tokio::time::timeout(Duration::from_secs(5), agent.closed)
        .await
        .expect("the removed agent's stream closes")
        .unwrap()
        .expect("with a status");
    assert_eq!(closed.code(), Code::PermissionDenied);
    let removed_msg =
        "agent web-1 was removed from the fleet; enroll it again with a new join token";
    assert_eq!(closed.message(), removed_msg);
    for cert in [&cert, &renewed] {
        assert_refused(
            connect_agent(&c, cert, "web-1", &[], received.clone()).await,
            Code::PermissionDenied,
            removed_msg,
        );
    }
    assert_refused(
        enroll.renew(proto::RenewRequest { csr_pem }).await,
        Code::PermissionDenied,
        removed_msg,
    );
    assert!(c.wait_hosts(0).await.is_empty());
    assert_refused(
        c.admin()
            .await
            .remove_host(proto::RemoveHostRequest {
                name: "web-7".into(),
            })
            .await,
        Code::NotFound,
        "web-7",
    );
    // Enrolled again with a new token, it is back.
    let again = c.join_token(&[("role", "web")]).await;
    let cert = c.enroll(&again, "web-1").await.unwrap();
    let _agent = connect_agent(&c, &cert, "web-1", &[], received)
        .await
        .unwrap();
    c.wait_hosts(1).await;

    let logged = log_text();
    for words in [
        "enrolled an agent",
        "refused an enrollment",
        "join token already used (by host web-1",
        "refused an agent stream",
        "renewed an agent certificate",
        "host removed from the fleet",
        removed_msg,
    ] {
        assert!(logged.contains(words), "no log line with {words:?}");
    }
    for t in [&token, &second, &again] {
        assert!(
            !logged.contains(t.rsplit('.').next().unwrap()),
            "a join token was logged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stream_ends_when_its_certificate_expires() {
    // Heartbeats are not what ends this stream: the fake agent sends none, and the
    // controller would wait a minute before declaring it lost.
    let hub = HubSettings {
        lost_after: Duration::from_secs(60),
        ..HubSettings::default()
    };
    let c = Controller::start_with(Duration::from_secs(3), hub).await;
    let received = Received::default();
    let (cert, agent) = c.join("web-exp", &received).await;

    // Issued for 3 s: the stream must not outlive it by more than scheduling slack.
    tokio::time::timeout(Duration::from_secs(8), agent.closed)
        .await
        .expect("the stream closes when the certificate expires")
        .unwrap();
    assert!(c.wait_hosts(0).await.iter().all(|h| !h.connected));
    let logged = log_text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("web-exp") && l.contains("the agent's certificate expired")),
        "no log line names the host and the expiry"
    );
    // And the expired certificate does not open a new one.
    connect_agent(&c, &cert, "web-exp", &[], received)
        .await
        .expect_err("an expired certificate is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_travel_only_inside_the_swap() {
    const DB_PASSWORD: &str = "s3cr3t-db-password-41c9";
    const API_KEY: &str = "s3cr3t-api-key-77e0";
    let c = Controller::start().await;
    let mut admin = c.admin().await;
    let set = admin
        .set_secret(proto::SetSecretRequest {
            service: "web".into(),
            name: "DB_PASSWORD".into(),
            value: DB_PASSWORD.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!set.replaced);
    assert_refused(
        admin
            .set_secret(proto::SetSecretRequest {
                service: "web".into(),
                name: "BAD-NAME".into(),
                value: API_KEY.as_bytes().to_vec(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "BAD-NAME",
    );

    let received = Received::default();
    let (_, _agent) = c.join("web-1", &received).await;

    let deployer = c.api_token("ci", "deployer").await;
    let mut ci = c.operator(None, Some(&deployer)).await;
    let spec =
        format!("{SPEC}[secrets]\nnames = [\"DB_PASSWORD\", \"API_KEY\"]\ndelivery = \"env\"\n");
    let request = proto::DeployRequest {
        spec_toml: spec,
        version: "v2".into(),
        requested_by: "mallory@laptop".into(),
        ..Default::default()
    };
    assert_refused(
        ci.deploy(request.clone()).await,
        Code::FailedPrecondition,
        "`drover secret set web API_KEY`",
    );
    admin
        .set_secret(proto::SetSecretRequest {
            service: "web".into(),
            name: "API_KEY".into(),
            value: API_KEY.as_bytes().to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let listed = ci
        .list_secrets(proto::ListSecretsRequest {
            service: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secrets;
    assert_eq!(
        listed
            .iter()
            .map(|s| (s.name.as_str(), s.updated_by.as_str()))
            .collect::<Vec<_>>(),
        [("API_KEY", "admin"), ("DB_PASSWORD", "admin")]
    );

    let d = ci
        .deploy(request)
        .await
        .unwrap()
        .into_inner()
        .deployment
        .unwrap();
    assert_eq!(
        d.requested_by, "ci",
        "history names the token, not what the client claims"
    );
    let mut watch = ci
        .watch(proto::WatchRequest {
            id: d.id.clone(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(e) = watch.message().await.unwrap() {
            events.push_str(&format!("{e:?}\n"));
        }
    })
    .await
    .expect("the deployment finishes");
    let done = ci
        .get_deployment(proto::GetDeploymentRequest { id: d.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.state,
        proto::DeploymentState::Succeeded as i32,
        "{done:?}"
    );

    // The stage that creates the container (before the drain) and the swap that starts
    // it (creating it again if the agent lost it): both to the one host, nothing else.
    let swaps = received.lock().unwrap().clone();
    assert_eq!(swaps.len(), 2, "{swaps:?}");
    assert_eq!(swaps[0], swaps[1]);
    let secrets = swaps[0].1.clone().expect("the swap carries the secrets");
    assert_eq!(secrets.delivery, proto::SecretDelivery::Env as i32);
    let values: Vec<(String, Vec<u8>)> = secrets
        .values
        .into_iter()
        .map(|v| (v.name, v.value))
        .collect();
    assert_eq!(
        values,
        [
            ("DB_PASSWORD".to_string(), DB_PASSWORD.as_bytes().to_vec()),
            ("API_KEY".to_string(), API_KEY.as_bytes().to_vec()),
        ]
    );

    // Nowhere else: not in events, history, logs, or any file the controller wrote.
    let history = format!(
        "{:?}",
        ci.list_deployments(proto::ListDeploymentsRequest::default())
            .await
            .unwrap()
            .into_inner()
    );
    let logged = log_text();
    for value in [DB_PASSWORD, API_KEY] {
        assert!(!events.contains(value), "a secret in the events");
        assert!(!history.contains(value), "a secret in the history");
        assert!(!logged.contains(value), "a secret in the logs");
        for entry in walk(c.dir.path()) {
            let bytes = std::fs::read(&entry).unwrap();
            assert!(
                !bytes.windows(value.len()).any(|w| w == value.as_bytes()),
                "a secret in {}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
