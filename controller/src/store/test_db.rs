//! The store's tests run on both backends: [`on_both_backends!`] turns each
//! `async fn name(db: TestDb)` into `name::sqlite` and `name::postgres`. A test's
//! PostgreSQL database is fresh, in a throwaway cluster this process shares between
//! its tests (or in `DROVER_TEST_POSTGRES`'s server), and leads as holder `test` at
//! epoch 1 so the store's fenced writes go through.

use std::sync::{Arc, Mutex, Weak};

use super::pg_cluster::PgCluster;
use super::{Fence, Store};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sqlite,
    Postgres,
}

/// One test's database, on either backend; opened (again) with [`TestDb::open`].
pub(crate) struct TestDb {
    /// The SQLite file's directory (unused on PostgreSQL).
    dir: tempfile::TempDir,
    /// PostgreSQL: the database's URL.
    pub url: Option<String>,
    /// PostgreSQL: the cluster it lives in, kept running while the test runs.
    _cluster: Option<Arc<PgCluster>>,
}

/// The cluster the tests of this process share; it stops with the last of them.
static CLUSTER: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// The shared cluster, started when no test holds one.
pub(crate) fn cluster() -> Arc<PgCluster> {
    let mut shared = CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = shared.upgrade() {
        return c;
    }
    let c = Arc::new(PgCluster::start().expect("a throwaway PostgreSQL cluster"));
    *shared = Arc::downgrade(&c);
    c
}

/// Makes `fence`'s holder the leader of the database at `url`, at `epoch`.
pub(crate) async fn lead(url: &str, holder: &str, epoch: u64) {
    let (url, holder) = (url.to_owned(), holder.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute(
            "UPDATE drover_leader SET holder = $1, epoch = $2 WHERE id = 1",
            &[&holder, &(epoch as i64)],
        )
        .unwrap();
    })
    .await
    .unwrap();
}

impl TestDb {
    pub async fn new(kind: Kind) -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let (url, cluster) = match kind {
            Kind::Sqlite => (None, None),
            Kind::Postgres => {
                let (url, cluster) = tokio::task::spawn_blocking(|| {
                    let c = cluster();
                    (c.create_database().unwrap(), c)
                })
                .await
                .unwrap();
                (Some(url), Some(cluster))
            }
        };
        TestDb {
            dir,
            url,
            _cluster: cluster,
        }
    }

    /// Opens the store (a restarted controller opens it again).
    pub async fn open(&self) -> Store {
        match &self.url {
            None => Store::open(&self.dir.path().join("state.db"))
                .await
                .unwrap(),
            Some(url) => {
                let fence = Fence::new("test".into());
                fence.set(1);
                let store = Store::open_postgres(url, fence).await.unwrap();
                lead(url, "test", 1).await;
                store
            }
        }
    }
}

/// `name::sqlite` and `name::postgres` for each `async fn name(db: TestDb)`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::store::test_db::{Kind, TestDb};

            #[tokio::test]
            async fn sqlite() {
                super::$name(TestDb::new(Kind::Sqlite).await).await
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(TestDb::new(Kind::Postgres).await).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;
