//! The TLS rules at the handshake, with the real rustls configurations on loopback:
//! who is refused before any gRPC is spoken.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use drover_shared::tls::{
    self, CertificateAuthority, Identity, KeyAndCert, PeerCertificate, Role, SwappableCert,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

fn new_ca() -> (CertificateAuthority, String) {
    let (ca, pair) = CertificateAuthority::generate("test fleet", 24 * HOUR).unwrap();
    (ca, pair.cert_pem)
}

fn swappable(k: &KeyAndCert) -> SwappableCert {
    SwappableCert::from_pem(&k.cert_pem, &k.key_pem).unwrap()
}

/// Serves one TLS handshake with `server`'s certificate; returns what the server saw of
/// the client (Ok(peer) or the handshake error).
async fn serve_once(
    ca_pem: &str,
    server: &KeyAndCert,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<Option<PeerCertificate>, String>>,
) {
    let config = tls::server_config(ca_pem, swappable(server)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        match acceptor.accept(tcp).await {
            Ok(mut s) => {
                let peer = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| PeerCertificate::parse(c).unwrap());
                let _ = s.write_all(b"ok").await;
                let _ = s.shutdown().await;
                Ok(peer)
            }
            Err(e) => Err(e.to_string()),
        }
    });
    (addr, task)
}

async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    client: Option<&KeyAndCert>,
) -> Result<(), String> {
    let config = tls::client_config(ca_pem, client.map(swappable)).unwrap();
    connect_with(addr, config).await.map(drop)
}

/// Connects with `config` and reads until the server closes; Ok when it said "ok".
async fn connect_with(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(tls::CONTROLLER_SERVER_NAME).unwrap();
    let mut s = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3 client certificates are checked after the client's handshake finishes:
    // reading shows whether the server accepted us.
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    if buf == b"ok" {
        Ok(s)
    } else {
        Err(format!("server said {buf:?}"))
    }
}

#[tokio::test]
async fn agent_with_ca_signed_cert_is_identified_by_name() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let agent = ca
        .issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            HOUR,
        )
        .unwrap();
    let (addr, seen) = serve_once(&ca_pem, &server).await;
    connect(addr, &ca_pem, Some(&agent)).await.unwrap();
    let peer = seen.await.unwrap().unwrap().unwrap();
    assert_eq!(
        peer.identity,
        Some(Identity::Agent {
            name: "web-1".into()
        })
    );
}

#[tokio::test]
async fn client_without_certificate_completes_handshake_anonymously() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let (addr, seen) = serve_once(&ca_pem, &server).await;
    connect(addr, &ca_pem, None).await.unwrap();
    assert_eq!(seen.await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn agent_certificate_posing_as_controller_is_refused_by_the_client() {
    let (ca, ca_pem) = new_ca();
    // Signed by the right CA, but an agent's identity.
    let impostor = ca
        .issue(
            &Identity::Agent {
                name: "web-2".into(),
            },
            HOUR,
        )
        .unwrap();
    let agent = ca
        .issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            HOUR,
        )
        .unwrap();
    let (addr, _seen) = serve_once(&ca_pem, &impostor).await;
    let err = connect(addr, &ca_pem, Some(&agent)).await.unwrap_err();
    assert!(
        err.contains("not the controller") || err.contains("extended key usage"),
        "{err}"
    );
}

#[tokio::test]
async fn controller_from_another_ca_is_refused_by_the_client() {
    let (_, ca_pem) = new_ca();
    let (other, _) = new_ca();
    let server = other.issue_controller(&[], HOUR).unwrap();
    let (addr, _seen) = serve_once(&ca_pem, &server).await;
    let err = connect(addr, &ca_pem, None).await.unwrap_err();
    // Both CAs carry the same name, as two `drover ca init` runs would.
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused_by_the_server() {
    let (ca, ca_pem) = new_ca();
    let (other, _) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let foreign = other
        .issue(
            &Identity::Operator {
                name: "mallory".into(),
                role: Role::Admin,
            },
            HOUR,
        )
        .unwrap();
    let (addr, seen) = serve_once(&ca_pem, &server).await;
    assert!(connect(addr, &ca_pem, Some(&foreign)).await.is_err());
    let err = seen.await.unwrap().unwrap_err();
    assert!(
        err.contains("BadSignature") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[tokio::test]
async fn expired_client_certificate_is_refused_by_the_server() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let now = SystemTime::now();
    let expired = ca
        .issue_valid_between(
            &Identity::Agent { name: "old".into() },
            now - 2 * HOUR,
            now - HOUR,
        )
        .unwrap();
    let (addr, seen) = serve_once(&ca_pem, &server).await;
    assert!(connect(addr, &ca_pem, Some(&expired)).await.is_err());
    let err = seen.await.unwrap().unwrap_err();
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test]
async fn plaintext_client_is_refused() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let (addr, seen) = serve_once(&ca_pem, &server).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // An HTTP/2 prior-knowledge preface, as a plaintext gRPC client sends.
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!buf.windows(2).any(|w| w == b"ok"));
    assert!(seen.await.unwrap().is_err());
}

#[tokio::test]
async fn a_swapped_certificate_is_used_from_the_next_handshake() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let first = ca
        .issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            HOUR,
        )
        .unwrap();
    let second = ca
        .issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            2 * HOUR,
        )
        .unwrap();
    let cert = swappable(&first);
    let config = tls::client_config(&ca_pem, Some(cert.clone())).unwrap();
    let serial_of = |k: &KeyAndCert| {
        use rustls::pki_types::pem::PemObject;
        PeerCertificate::parse(
            &rustls::pki_types::CertificateDer::from_pem_slice(k.cert_pem.as_bytes()).unwrap(),
        )
        .unwrap()
        .serial
    };
    for (expected, next) in [
        (serial_of(&first), Some(&second)),
        (serial_of(&second), None),
    ] {
        let (addr, seen) = serve_once(&ca_pem, &server).await;
        connect_with(addr, Arc::clone(&config)).await.unwrap();
        assert_eq!(seen.await.unwrap().unwrap().unwrap().serial, expected);
        if let Some(k) = next {
            cert.replace(tls::certified_key(&k.cert_pem, &k.key_pem).unwrap());
        }
    }
}

#[tokio::test]
async fn sessions_are_never_resumed_so_a_renewed_certificate_is_seen_at_once() {
    let (ca, ca_pem) = new_ca();
    let server = ca.issue_controller(&[], HOUR).unwrap();
    let agent = |ttl| {
        ca.issue(
            &Identity::Agent {
                name: "web-1".into(),
            },
            ttl,
        )
        .unwrap()
    };
    let (first, second) = (agent(HOUR), agent(2 * HOUR));
    let cert = swappable(&first);
    // One server and one client configuration for both connections, as in production:
    // with resumption, the second connection would carry the first one's certificate.
    let server_config = tls::server_config(&ca_pem, swappable(&server)).unwrap();
    let client_config = tls::client_config(&ca_pem, Some(cert.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = tokio_rustls::TlsAcceptor::from(Arc::clone(&server_config))
                .accept(tcp)
                .await
                .unwrap();
            let conn = s.get_ref().1;
            let peer = PeerCertificate::parse(&conn.peer_certificates().unwrap()[0]).unwrap();
            seen.push((conn.handshake_kind(), peer.not_after_unix));
            s.write_all(b"ok").await.unwrap();
            s.shutdown().await.unwrap();
        }
        seen
    });
    for next in [Some(&second), None] {
        let s = connect_with(addr, Arc::clone(&client_config))
            .await
            .unwrap();
        assert_eq!(
            s.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        if let Some(k) = next {
            cert.replace(tls::certified_key(&k.cert_pem, &k.key_pem).unwrap());
        }
    }
    let seen = accepting.await.unwrap();
    assert!(
        seen.iter()
            .all(|(kind, _)| *kind == Some(rustls::HandshakeKind::Full)),
        "{seen:?}"
    );
    assert!(
        seen[1].1 > seen[0].1,
        "the second connection presented the renewed certificate: {seen:?}"
    );
}
