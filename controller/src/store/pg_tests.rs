//! What only the PostgreSQL backend does: versioned migrations, fenced writes, and
//! calls that outlive a restart of the database.

use super::test_db::{Kind, TestDb, lead};
use super::*;

async fn admin(url: &str, sql: &'static str) {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(sql).unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn migrations_apply_once_and_a_newer_database_is_refused() {
    let db = TestDb::new(Kind::Postgres).await;
    let url = db.url.clone().unwrap();
    let s = db.open().await;
    assert_eq!(s.backend_name(), "postgres");
    s.create(Deployment::example("d-1", "web"), vec![])
        .await
        .unwrap();
    drop(s);
    // Opening again keeps the data and records no second migration.
    let s = db.open().await;
    assert_eq!(s.deployment("d-1").await.unwrap().service, "web");
    let versions: Vec<i64> = s
        .with(|c| {
            c.prepare("SELECT version FROM drover_schema ORDER BY version")?
                .query_map(params![], |r| r.get(0))?
                .collect()
        })
        .await
        .unwrap();
    assert_eq!(versions, [pg_schema::latest()]);
    drop(s);
    // A newer drover migrated it further: this one does not touch it.
    admin(
        &url,
        "INSERT INTO drover_schema (version, applied_ms) VALUES (99, 0)",
    )
    .await;
    let err = Store::open_postgres(&url, Fence::new("test".into()))
        .await
        .err()
        .expect("a newer schema is refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, known } if known == pg_schema::latest()),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("99") && msg.contains("(1)"), "{msg}");
}

#[tokio::test]
async fn two_replicas_opening_together_migrate_once() {
    let db = TestDb::new(Kind::Postgres).await;
    let (a, b) = tokio::join!(db.open(), db.open());
    drop((a, b));
    let s = db.open().await;
    let n: i64 = s
        .with(|c| {
            c.query_row("SELECT COUNT(*) FROM drover_schema", params![], |r| {
                r.get(0)
            })
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn a_superseded_leader_writes_nothing_and_still_reads() {
    let db = TestDb::new(Kind::Postgres).await;
    let url = db.url.clone().unwrap();
    drop(db.open().await);
    lead(&url, "a", 1).await;
    let fence = Fence::new("a".into());
    fence.set(1);
    let s = Store::open_postgres(&url, fence.clone()).await.unwrap();
    s.create(Deployment::example("d-1", "web"), vec![])
        .await
        .unwrap();
    // Replica b took the lease over; a has not noticed yet.
    admin(
        &url,
        "UPDATE drover_leader SET holder = 'b', epoch = 2 WHERE id = 1",
    )
    .await;
    let err = s
        .create(Deployment::example("d-2", "api"), vec![])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotLeader { epoch: Some(1) }),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 1 was superseded"), "{err}");
    assert!(matches!(
        s.deployment("d-2").await,
        Err(StoreError::NotFound(_))
    ));
    // Nothing of the refused call was written: not even its lock.
    assert!(s.check_unlocked("api", "").await.is_ok());
    let t = crate::rollout::machine::apply(
        DeploymentState::Pending,
        crate::rollout::machine::Event::Cancel,
    )
    .unwrap();
    assert!(matches!(
        s.transition("d-1", t, None, "cancel").await,
        Err(StoreError::NotLeader { .. })
    ));
    assert_eq!(
        s.deployment("d-1").await.unwrap().state,
        DeploymentState::Pending
    );
    // A replica that knows it does not lead does not even ask.
    fence.clear();
    assert!(matches!(
        s.event("d-1", "", "x").await,
        Err(StoreError::NotLeader { epoch: None })
    ));
    assert_eq!(s.last_seq("d-1").await.unwrap(), 0);
}

#[tokio::test]
async fn a_call_after_a_database_restart_reconnects() {
    if std::env::var_os("DROVER_TEST_POSTGRES").is_some() {
        // The shared server is not this test's to restart.
        return;
    }
    // A cluster of its own: the restart does not disturb the other tests.
    let (own, url) = tokio::task::spawn_blocking(|| {
        let own = pg_cluster::PgCluster::start().unwrap();
        let url = own.create_database().unwrap();
        (own, url)
    })
    .await
    .unwrap();
    let fence = Fence::new("test".into());
    fence.set(1);
    let s = Store::open_postgres(&url, fence).await.unwrap();
    lead(&url, "test", 1).await;
    s.create(Deployment::example("d-1", "web"), vec![])
        .await
        .unwrap();
    let own = tokio::task::spawn_blocking(move || {
        own.restart().unwrap();
        own
    })
    .await
    .unwrap();
    s.event("d-1", "", "after the restart").await.unwrap();
    assert_eq!(s.last_seq("d-1").await.unwrap(), 1);
    tokio::task::spawn_blocking(move || drop(own))
        .await
        .unwrap();
}

/// A throwaway cluster serving TLS on loopback with a certificate of a fresh CA; the
/// cluster, the database's URL on the socket and over TCP (`sslmode=require`), and the
/// CA (PEM).
fn tls_cluster() -> (String, pg_cluster::PgCluster, String, String) {
    use drover_shared::tls::CertificateAuthority;
    let day = std::time::Duration::from_secs(86_400);
    let (ca, ca_files) = CertificateAuthority::generate("test database CA", day).unwrap();
    let server = ca
        .issue_controller(&["127.0.0.1".into(), "localhost".into()], day)
        .unwrap();
    let cluster = pg_cluster::PgCluster::start().unwrap();
    let created = cluster.create_database().unwrap();
    let port = cluster
        .serve_tls(&server.cert_pem, &server.key_pem)
        .unwrap();
    let db = created
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dbname="))
        .unwrap()
        .to_owned();
    let url = format!("host=127.0.0.1 port={port} user=drover dbname={db} sslmode=require");
    (cluster.url(&db), cluster, url, ca_files.cert_pem)
}

#[tokio::test]
async fn over_tls_the_server_is_verified_against_the_given_ca_and_the_link_is_encrypted() {
    let (socket_url, cluster, url, ca_pem) =
        tokio::task::spawn_blocking(tls_cluster).await.unwrap();
    let fence = || {
        let f = Fence::new("a".into());
        f.set(1);
        f
    };
    let options = |tls| PgOptions {
        tls,
        ..PgOptions::default()
    };
    let tls = PgTls::verified(&ca_pem).unwrap();
    let s = Store::open_postgres_with(&url, fence(), options(tls.clone()))
        .await
        .expect("opens over TLS");
    // It leads (the lease row written over the socket, once the schema exists).
    lead(&socket_url, "a", 1).await;
    s.create(Deployment::example("d-1", "web"), vec![])
        .await
        .unwrap();
    assert_eq!(s.deployment("d-1").await.unwrap().service, "web");
    // The server sees this connection encrypted.
    let (u, t) = (url.clone(), tls.clone());
    let ssl: bool = tokio::task::spawn_blocking(move || {
        let config: postgres::Config = u.parse().unwrap();
        let Ok(Connector::Tls(tls)) = t.connector(config.get_ssl_mode(), true) else {
            panic!("no TLS connector with a CA");
        };
        let mut c = config.connect(tls).unwrap();
        c.query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
    })
    .await
    .unwrap();
    assert!(ssl, "the server reports a plaintext connection");
    // The leader lease's own connection goes over TLS too: a campaign takes the lease.
    let lease = crate::leader::LeaseSettings {
        ttl: std::time::Duration::from_secs(3),
        address: "https://b:7070".into(),
    };
    let (mut campaign, _) =
        crate::leader::Campaign::new(&url, lease, Fence::new("b".into()), tls.clone());
    let stop = tokio_util::sync::CancellationToken::new();
    let taken = tokio::time::timeout(std::time::Duration::from_secs(20), campaign.acquire(&stop))
        .await
        .expect("the lease is taken over TLS in time");
    assert_eq!(taken, Some(2));
    // A server whose certificate another CA signed is refused.
    let (other, _) = drover_shared::tls::CertificateAuthority::generate(
        "another CA",
        std::time::Duration::from_secs(86_400),
    )
    .unwrap();
    let other = PgTls::verified(other.cert_pem()).unwrap();
    let err = Store::open_postgres_with(&url, fence(), options(other))
        .await
        .err()
        .expect("a server certificate of an unknown CA is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("TLS handshake") && msg.contains("UnknownIssuer"),
        "{msg}"
    );
    // Without a CA, a URL asking for TLS is refused, naming the flag.
    let err = Store::open_postgres_with(&url, fence(), options(PgTls::default()))
        .await
        .err()
        .expect("sslmode=require without a CA is refused");
    assert!(err.to_string().contains("--database-ca"), "{err}");
    drop(s);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
}
