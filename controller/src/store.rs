//! The controller's durable state: deployments, their hosts, their event log,
//! the deploy lock of each (service, environment), releases (in [`release_rows`]), and (in
//! [`security`] and [`secret_rows`]) join tokens, issued certificates, enrolled hosts, API
//! tokens and sealed secrets; [`hook_rows`] keeps deploy hooks' runs and markers;
//! [`bake_rows`] each stage's bake (canary against baseline, limits, verdict);
//! [`dora_rows`] reads the history the delivery metrics need.
//! Every rollout state change is written here before it
//! is acted on, so a restarted controller knows exactly where each deployment stood.
//!
//! Two backends speak through one thin SQL layer ([`sql`]), each operation written
//! once in SQL both accept: SQLite (a file, one controller; [`Store::open`]) and
//! PostgreSQL (shared by HA replicas; [`Store::open_postgres`]). Both drivers are
//! synchronous: every call runs on the blocking pool, one connection behind a mutex
//! (SQLite serialises writers anyway; a replica serialises its own). Hosts of one
//! batch change together and are written in one transaction.
//!
//! Both schemas are versioned. SQLite keeps its version in `PRAGMA user_version`
//! ([`SCHEMA_VERSION`]): tables are created `IF NOT EXISTS` and the columns of version
//! 3 are added once, by [`MIGRATE_3`]. PostgreSQL starts at version 3's schema as its
//! migration 1 and records each applied migration in `drover_schema` ([`pg_schema`]);
//! a database newer than the build is refused rather than written by code that does
//! not know its columns.
//!
//! On PostgreSQL, writes are fenced ([`Fence`]): each writing call first checks, in its
//! own transaction, that `drover_leader` still names this replica at its epoch, and
//! fails with [`StoreError::NotLeader`] otherwise. A lost connection is re-established
//! and the call retried for [`PgOptions::retry_for`].

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sql::{Backend, Connection, Dialect, OptionalExtension, Row, Value, params};

use crate::rollout::machine::{LockEffect, Transition};
use crate::state::{Control, DeploymentKind, DeploymentState, HostPhase};

mod bake_rows;
mod dora_rows;
mod fence;
mod hook_rows;
mod many;
mod pg;
#[cfg(any(test, feature = "pg-cluster"))]
pub mod pg_cluster;
mod pg_schema;
mod pg_tls;
mod release_rows;
mod secret_rows;
mod security;
mod slo_rows;
pub mod sql;
mod step_rows;

pub use bake_rows::{Bake, BakeSignals, BakeVerdict};
pub use fence::Fence;
pub use hook_rows::{HookMarker, HookOutcome, HookRun, MarkerKey};
pub use pg::PgOptions;
pub use pg_tls::{Connector, PgTls, over_tcp};
pub use release_rows::{Release, ReleaseDeployment};
pub use secret_rows::{SealedRow, SecretMeta};
pub use security::{ApiToken, HostRemoval, IssuedCertificate, JoinRefusal, JoinToken};
pub use slo_rows::SloCounted;
pub use step_rows::{HostStep, StepKind};

/// The schema version this build writes (`PRAGMA user_version`): 1 = deployments only,
/// 2 = plus the security tables, 3 = environments (a deployment's environment, release
/// and gate note; one deploy lock per service and environment) and releases. Tables are
/// created with `CREATE ... IF NOT EXISTS`; the columns of 3 are added once, by version,
/// so an older database is brought up to date on open.
const SCHEMA_VERSION: i64 = 3;

/// What version 3 adds to a database of version 1 or 2.
const MIGRATE_3: &str = r#"
ALTER TABLE deployments ADD COLUMN environment TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN release_id TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN gate_note TEXT;
CREATE INDEX IF NOT EXISTS deployments_environment ON deployments(service, environment, created_ms);
CREATE TABLE IF NOT EXISTS deploy_locks (
    service TEXT NOT NULL,
    environment TEXT NOT NULL,
    deployment_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (service, environment)
);
CREATE TABLE IF NOT EXISTS service_locks (
    service TEXT PRIMARY KEY,
    deployment_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    since_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO deploy_locks (service, environment, deployment_id, holder, since_ms)
    SELECT service, '', deployment_id, holder, since_ms FROM service_locks;
DROP TABLE service_locks;
"#;

impl Retry {
    /// Runs `once` until it does not fail for a lost connection, within the window.
    fn run<T>(&self, once: impl Fn() -> Result<T, StoreError>) -> Result<T, StoreError> {
        let started = Instant::now();
        let epoch = self.fence.epoch();
        let mut backoff = Duration::from_millis(100);
        loop {
            match once() {
                Err(e) if e.connection_lost() => {
                    if !self.outage.swap(true, Ordering::SeqCst) {
                        tracing::warn!(error = %e, "lost the database connection; retrying");
                    }
                    let now = self.fence.epoch();
                    if now != epoch {
                        return Err(StoreError::NotLeader { epoch });
                    }
                    if started.elapsed() + backoff > self.options.retry_for {
                        return Err(e);
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                other => {
                    if self.outage.swap(false, Ordering::SeqCst) {
                        tracing::info!("the database connection is back");
                    }
                    return other;
                }
            }
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused an operation, or its connection failed past the retry window.
    #[error("database error: {}", error_chain(.0))]
    Postgres(#[from] postgres::Error),
    /// The PostgreSQL database could not be reached or migrated on open.
    #[error("cannot open the state database {url}: {source}")]
    OpenPostgres {
        /// The database URL, without its password.
        url: String,
        /// Why.
        #[source]
        source: Box<StoreError>,
    },
    /// The database's schema is newer than this build: another replica runs a newer
    /// drover. Nothing was written.
    #[error(
        "the state database is at schema version {found}, newer than this build knows ({known}): run the newer drover, or point this one at its own database"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The highest version this build knows.
        known: i64,
    },
    /// This replica's write was fenced off: `drover_leader` names another holder or a
    /// later epoch (or the replica was not leading). Nothing was written.
    #[error(
        "this controller is not the leader{}: the write was refused; the leader carries on",
        .epoch.map(|e| format!(" (epoch {e} was superseded)")).unwrap_or_default()
    )]
    NotLeader {
        /// The epoch this replica believed it held, if any.
        epoch: Option<u64>,
    },
    /// A query expected a row and found none.
    #[error("database error: the query returned no row")]
    NoRow,
    /// A column did not hold what the store reads from it (a row edited by hand, or a
    /// newer schema).
    #[error("database error: column {index}: {message}")]
    Column {
        /// The column, from 0.
        index: usize,
        /// What was wrong.
        message: String,
    },
    /// A value could not be bound as a parameter.
    #[error("database error: {0}")]
    Bind(String),
    /// TLS to PostgreSQL cannot be set up as asked (see [`PgTls`]).
    #[error("TLS to the database: {0}")]
    PgTls(String),
    /// The database file could not be opened or migrated.
    #[error("cannot open the state database {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// Another deployment of the service, in the same environment, holds its lock.
    #[error(
        "service {service:?}{} is locked by deployment {deployment} (started by {holder} at {since}); wait for it, follow it with `drover status {deployment}`, or stop it with `drover abort {deployment}`",
        in_environment(.environment)
    )]
    Locked {
        /// The service.
        service: String,
        /// The environment (`""`: the implicit one).
        environment: String,
        /// The deployment holding the lock.
        deployment: String,
        /// Who started it.
        holder: String,
        /// When, RFC 3339.
        since: String,
    },
    /// No deployment with that id.
    #[error("no deployment {0:?}; list them with `drover history`")]
    NotFound(String),
    /// A transition computed from a state the deployment is no longer in (an operator
    /// request racing the rollout task, or a second writer): refused, nothing written.
    #[error(
        "deployment {id} is {actual}, not {expected}: the change to {wanted} was refused; see `drover status {id}`"
    )]
    Stale {
        /// The deployment.
        id: String,
        /// The state the transition was computed from.
        expected: DeploymentState,
        /// The state it would have written.
        wanted: DeploymentState,
        /// The state the row is in.
        actual: DeploymentState,
    },
    /// The state machine does not allow that event in the deployment's state: a
    /// rollout step out of order. Nothing was written.
    #[error("{0}; nothing was written")]
    Refused(#[from] crate::rollout::machine::Refused),
    /// No release with that id.
    #[error("no release {0:?}; list them with `drover releases SERVICE`")]
    NoRelease(String),
    /// A blocking task panicked or was cancelled.
    #[error("database task failed: {0}")]
    Task(String),
}

/// A deployment row.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Unique id (`d-` + 12 hex digits).
    pub id: String,
    /// The service.
    pub service: String,
    /// The environment it deploys to (`""`: the implicit one of a spec without any).
    pub environment: String,
    /// The release it deploys (`r-...`); empty for a rollback or an older deployment.
    pub release_id: String,
    /// What the environment's gates said (an approval, an override and its reason).
    pub gate_note: Option<String>,
    /// Deploy or rollback.
    pub kind: DeploymentKind,
    /// The version (tag) being rolled out.
    pub version: String,
    /// The image reference as requested.
    pub image: String,
    /// The pinned reference (`repo@sha256:...`) once resolved; empty before.
    pub pinned: String,
    /// The spec, as TOML, without secrets.
    pub spec: String,
    /// Where it stands.
    pub state: DeploymentState,
    /// Fencing epoch: bumped whenever a new controller takes the deployment over.
    pub epoch: u64,
    /// Who asked for it.
    pub requested_by: String,
    /// Unix ms.
    pub created_ms: u64,
    /// Unix ms, once terminal.
    pub finished_ms: Option<u64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Index of the stage in progress (staged rollouts), from 0.
    pub stage: u32,
    /// When a scheduled deployment is due (Unix ms).
    pub scheduled_ms: Option<u64>,
    /// Why it is waiting, if it is (window closed, gate, paused by whom).
    pub hold: Option<String>,
    /// An operator's standing request (pause, abort).
    pub control: Control,
    /// Highest stage index an operator promoted past (-1: none).
    pub promoted: i64,
}

/// One host's row in a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentHost {
    /// Agent name.
    pub host: String,
    /// Batch index, from 0, across the whole deployment.
    pub batch: u32,
    /// Stage index, from 0 (0 for unstaged rollouts).
    pub stage: u32,
    /// Where this host stands.
    pub phase: HostPhase,
    /// Version the host ran before (empty on a first deploy).
    pub from_version: String,
    /// Version after (what it runs when `Done`).
    pub to_version: String,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Unix ms when its swap started.
    pub started_ms: Option<u64>,
    /// Unix ms when it reached a final phase.
    pub finished_ms: Option<u64>,
}

/// One line of a deployment's event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Order within the deployment, from 1.
    pub seq: u64,
    /// Unix ms.
    pub at_ms: u64,
    /// The host it concerns (empty for the whole deployment).
    pub host: String,
    /// What happened.
    pub message: String,
    /// The host's phase after the event, when it changed one.
    pub phase: Option<HostPhase>,
    /// The deployment's state after the event, when it changed it.
    pub state: Option<DeploymentState>,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The one connection; its mutex serialises this process's calls.
    conn: Arc<Mutex<Connection>>,
    /// PostgreSQL only: how calls retry a lost connection.
    retry: Option<Arc<Retry>>,
}

/// How a PostgreSQL store's calls outlive a lost connection.
struct Retry {
    /// Calls stop retrying when its epoch changes.
    fence: Arc<Fence>,
    /// The window and backoff settings.
    options: PgOptions,
    /// A call is retrying now (one warning per outage, one notice when back).
    outage: AtomicBool,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    image TEXT NOT NULL,
    pinned TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    requested_by TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    error TEXT,
    stage INTEGER NOT NULL DEFAULT 0,
    scheduled_ms INTEGER,
    hold TEXT,
    control TEXT NOT NULL DEFAULT '',
    promoted INTEGER NOT NULL DEFAULT -1
);
CREATE INDEX IF NOT EXISTS deployments_service ON deployments(service, created_ms);
CREATE TABLE IF NOT EXISTS deployment_hosts (
    deployment_id TEXT NOT NULL REFERENCES deployments(id),
    host TEXT NOT NULL,
    batch INTEGER NOT NULL,
    stage INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL,
    from_version TEXT NOT NULL DEFAULT '',
    to_version TEXT NOT NULL DEFAULT '',
    error TEXT,
    started_ms INTEGER,
    finished_ms INTEGER,
    PRIMARY KEY (deployment_id, host)
);
CREATE TABLE IF NOT EXISTS events (
    deployment_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    host TEXT NOT NULL,
    message TEXT NOT NULL,
    phase TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (deployment_id, seq)
);
"#;

/// The environment's name as shown: `(default)` for the implicit one of a spec without
/// environments.
pub fn environment_name(environment: &str) -> &str {
    if environment.is_empty() {
        "(default)"
    } else {
        environment
    }
}

/// ` in environment "E"`, or nothing for the implicit environment.
pub fn in_environment(environment: &str) -> String {
    if environment.is_empty() {
        String::new()
    } else {
        format!(" in environment {environment:?}")
    }
}

/// `e` and its sources, `: `-separated (a TLS handshake's reason is a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Unix time in ms.
/// [`StoreError::Locked`] when a deployment holds the lock of `service` in `environment`.
fn refuse_if_locked(c: &Connection, service: &str, environment: &str) -> Result<(), StoreError> {
    let held: Option<(String, String, u64)> = c
        .query_row(
            "SELECT deployment_id, holder, since_ms FROM deploy_locks WHERE service = ?1 AND environment = ?2",
            params![service, environment],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match held {
        Some((deployment, holder, since)) => Err(StoreError::Locked {
            service: service.to_string(),
            environment: environment.to_string(),
            deployment,
            holder,
            since: rfc3339(since),
        }),
        None => Ok(()),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn insert_event(
    c: &Connection,
    id: &str,
    host: &str,
    message: &str,
    phase: Option<HostPhase>,
    state: Option<DeploymentState>,
) -> Result<Event, StoreError> {
    let at_ms = now_ms();
    let seq: u64 = c.prepare_cached(
        "INSERT INTO events (deployment_id, seq, at_ms, host, message, phase, state)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE deployment_id = ?1), ?2, ?3, ?4, ?5, ?6)
         RETURNING seq",
    )?
    .query_row(
        params![
            id,
            at_ms,
            host,
            message,
            phase.map_or("", HostPhase::as_str),
            state.map_or("", DeploymentState::as_str)
        ],
        |r| r.get(0),
    )?;
    Ok(Event {
        seq,
        at_ms,
        host: host.to_string(),
        message: message.to_string(),
        phase,
        state,
    })
}

/// Appends `rows` (host, message, the phase a host reached) to deployment `id`'s event
/// log, in order, in a few statements (see [`many`]).
fn insert_events(
    c: &Connection,
    id: &str,
    rows: &[(&str, &str, Option<HostPhase>)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let at_ms = now_ms();
    let last: u64 = c.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM events WHERE deployment_id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let first = i64::try_from(last).unwrap_or(i64::MAX);
    let at = i64::try_from(at_ms).unwrap_or(i64::MAX);
    let values: Vec<Vec<Value>> = rows
        .iter()
        .zip(1..)
        .map(|((host, message, phase), i)| {
            vec![
                Value::Integer(first + i),
                Value::Integer(at),
                Value::Text((*host).to_owned()),
                Value::Text((*message).to_owned()),
                Value::Text(phase.map_or("", HostPhase::as_str).to_owned()),
                Value::Text(String::new()),
            ]
        })
        .collect();
    many::write(c, &[Value::Text(id.to_owned())], &values, |n| {
        format!(
            "INSERT INTO events (deployment_id, seq, at_ms, host, message, phase, state) VALUES {}",
            many::tuples(1, 6, n)
        )
    })
}

#[cfg(test)]
impl Deployment {
    /// A pending deploy of `reg/demo:v2` for tests, asked by `ops@box` now; tests change
    /// what they need with struct update syntax.
    pub(crate) fn example(id: &str, service: &str) -> Self {
        Self {
            id: id.into(),
            service: service.into(),
            environment: String::new(),
            release_id: String::new(),
            gate_note: None,
            kind: DeploymentKind::Deploy,
            version: "v2".into(),
            image: "reg/demo:v2".into(),
            pinned: String::new(),
            spec: "[service]".into(),
            state: DeploymentState::Pending,
            epoch: 1,
            requested_by: "ops@box".into(),
            created_ms: now_ms(),
            finished_ms: None,
            error: None,
            stage: 0,
            scheduled_ms: None,
            hold: None,
            control: Control::None,
            promoted: -1,
        }
    }
}

#[cfg(test)]
impl DeploymentHost {
    /// A pending host of batch `batch` for tests, from v1 to v2.
    pub(crate) fn example(host: &str, batch: u32) -> Self {
        Self {
            host: host.into(),
            batch,
            stage: 0,
            phase: HostPhase::Pending,
            from_version: "v1".into(),
            to_version: "v2".into(),
            error: None,
            started_ms: None,
            finished_ms: None,
        }
    }
}

/// An `events` row selected as `seq, at_ms, host, message, phase, state`.
fn event_row(r: &Row<'_>) -> Result<Event, StoreError> {
    Ok(Event {
        seq: r.get(0)?,
        at_ms: r.get(1)?,
        host: r.get(2)?,
        message: r.get(3)?,
        phase: Some(r.get::<_, String>(4)?)
            .filter(|p| !p.is_empty())
            .map(|p| HostPhase::parse(&p)),
        state: Some(r.get::<_, String>(5)?)
            .filter(|p| !p.is_empty())
            .map(|p| DeploymentState::parse(&p)),
    })
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

/// One host's move to a phase, with its error (kept when `None`) and the event that
/// says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChange {
    /// The host.
    pub host: String,
    /// Its new phase.
    pub phase: HostPhase,
    /// Its error, if this change sets one.
    pub error: Option<String>,
    /// The event's message.
    pub message: String,
}

impl HostChange {
    /// A change of `host` to `phase`.
    pub fn new(host: &str, phase: HostPhase, error: Option<String>, message: &str) -> Self {
        Self {
            host: host.to_string(),
            phase,
            error,
            message: message.to_string(),
        }
    }
}

impl Store {
    /// Opens (creating and migrating) the database at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || {
            let open_err = |source| StoreError::Open {
                path: path.display().to_string(),
                source,
            };
            let mut conn = rusqlite::Connection::open(&path).map_err(open_err)?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(open_err)?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(open_err)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))
                .map_err(open_err)?;
            // Room for every statement the controller repeats (rusqlite keeps 16).
            conn.set_prepared_statement_cache_capacity(128);
            // The schema and its version in one write transaction, taken at once: two
            // processes opening a new or older database together (the controller and
            // a tool, say) migrate it once; the second waits (busy timeout), then
            // finds it current.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(open_err)?;
            for schema in [
                SCHEMA,
                security::SCHEMA,
                secret_rows::SCHEMA,
                slo_rows::SCHEMA,
                release_rows::SCHEMA,
                hook_rows::SCHEMA,
                step_rows::SCHEMA,
                bake_rows::SCHEMA,
            ] {
                tx.execute_batch(schema).map_err(open_err)?;
            }
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(open_err)?;
            if version < 3 {
                tx.execute_batch(MIGRATE_3).map_err(open_err)?;
            }
            tx.execute_batch(release_rows::INDEXES).map_err(open_err)?;
            tx.execute_batch(dora_rows::SCHEMA).map_err(open_err)?;
            if version < SCHEMA_VERSION {
                tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                    .map_err(open_err)?;
            }
            tx.commit().map_err(open_err)?;
            Ok::<_, StoreError>(conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(Connection(Backend::Sqlite(conn)))),
            retry: None,
        })
    }

    /// Opens (migrating) the PostgreSQL database at `url` (a `postgres://` URL or
    /// key-value string), fencing its writes with `fence`; calls retry a lost
    /// connection for 30 s.
    pub async fn open_postgres(url: &str, fence: Arc<Fence>) -> Result<Self, StoreError> {
        Self::open_postgres_with(url, fence, PgOptions::default()).await
    }

    /// As [`Store::open_postgres`], with `options`.
    pub async fn open_postgres_with(
        url: &str,
        fence: Arc<Fence>,
        options: PgOptions,
    ) -> Result<Self, StoreError> {
        let url = url.to_owned();
        let f = fence.clone();
        let tls = options.tls.clone();
        let session = tokio::task::spawn_blocking(move || {
            let open_err = |e: StoreError| StoreError::OpenPostgres {
                url: pg::redact(&url),
                source: Box::new(e),
            };
            let mut session = pg::PgSession::connect(&url, f, tls).map_err(open_err)?;
            session.migrate().map_err(|e| match e {
                e @ StoreError::SchemaTooNew { .. } => e,
                e => open_err(e),
            })?;
            Ok::<_, StoreError>(session)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(Connection(Backend::Postgres(Box::new(
                std::cell::RefCell::new(session),
            ))))),
            retry: Some(Arc::new(Retry {
                fence,
                options,
                outage: AtomicBool::new(false),
            })),
        })
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        if self.retry.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Runs `f` on the connection, on the blocking pool. On PostgreSQL, `f` runs in
    /// the call's transaction (committed when it returns Ok), and runs again on a new
    /// connection when the old one was lost, until the retry window ends or this
    /// replica's epoch changes: so `f` must be repeatable.
    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let retry = self.retry.clone();
        tokio::task::spawn_blocking(move || {
            let once = || {
                let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
                let result = f(&guard);
                match &guard.0 {
                    Backend::Sqlite(_) => result,
                    Backend::Postgres(s) => s.borrow_mut().finish(result),
                }
            };
            match retry {
                None => once(),
                Some(retry) => retry.run(once),
            }
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Records a new deployment and its hosts, taking the lock of its service and
    /// environment in the same transaction. Fails with [`StoreError::Locked`] when
    /// another deployment holds it.
    pub async fn create(
        &self,
        d: Deployment,
        hosts: Vec<DeploymentHost>,
    ) -> Result<(), StoreError> {
        self.create_with_release(d, hosts, None).await
    }

    /// As [`Store::create`], recording `release` (a new release the deployment rolls
    /// out) in the same transaction: a refused deployment leaves no release behind.
    pub async fn create_with_release(
        &self,
        d: Deployment,
        hosts: Vec<DeploymentHost>,
        release: Option<Release>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            let tx = c.transaction()?;
            refuse_if_locked(&tx, &d.service, &d.environment)?;
            if let Some(r) = &release {
                release_rows::insert(&tx, r)?;
            }
            tx.execute(
                "INSERT INTO deploy_locks (service, environment, deployment_id, holder, since_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.service, d.environment, d.id, d.requested_by, d.created_ms],
            )?;
            tx.execute(
                "INSERT INTO deployments (id, service, kind, version, image, pinned, spec, state, epoch, requested_by, created_ms, scheduled_ms, environment, release_id, gate_note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    d.id, d.service, d.kind.as_str(), d.version, d.image, d.pinned, d.spec,
                    d.state.as_str(), d.epoch, d.requested_by, d.created_ms, d.scheduled_ms,
                    d.environment, d.release_id, d.gate_note
                ],
            )?;
            let rows: Vec<Vec<Value>> = hosts
                .iter()
                .map(|h| {
                    vec![
                        Value::Text(h.host.clone()),
                        Value::Integer(i64::from(h.batch)),
                        Value::Integer(i64::from(h.stage)),
                        Value::Text(h.phase.as_str().to_owned()),
                        Value::Text(h.from_version.clone()),
                        Value::Text(h.to_version.clone()),
                    ]
                })
                .collect();
            many::write(&tx, &[Value::Text(d.id.clone())], &rows, |n| {
                format!(
                    "INSERT INTO deployment_hosts (deployment_id, host, batch, stage, phase, from_version, to_version) VALUES {}",
                    many::tuples(1, 6, n)
                )
            })?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Refuses with [`StoreError::Locked`] when a deployment holds the lock of `service`
    /// in `environment`, as [`Store::create`] would; reads only (a plan checks this and
    /// takes nothing).
    pub async fn check_unlocked(&self, service: &str, environment: &str) -> Result<(), StoreError> {
        let (service, environment) = (service.to_string(), environment.to_string());
        self.with(move |c| refuse_if_locked(c, &service, &environment))
            .await
    }

    /// Writes a checked transition as a compare-and-set: only if the deployment is still
    /// in the state the transition was computed from. Releases the service lock in the
    /// same write when the transition says so. A stale transition is refused with
    /// [`StoreError::Stale`] and nothing is written.
    pub async fn transition(
        &self,
        id: &str,
        t: Transition,
        error: Option<String>,
        message: &str,
    ) -> Result<(), StoreError> {
        let (id, message) = (id.to_string(), message.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            let finished = t.to().is_terminal().then(now_ms);
            let n = tx.execute(
                "UPDATE deployments SET state = ?2, error = COALESCE(?3, error), finished_ms = ?4 WHERE id = ?1 AND state = ?5",
                params![id, t.to().as_str(), error, finished, t.from().as_str()],
            )?;
            if n == 0 {
                let actual: Option<String> = tx
                    .query_row("SELECT state FROM deployments WHERE id = ?1", params![id], |r| r.get(0))
                    .optional()?;
                return Err(match actual {
                    None => StoreError::NotFound(id.clone()),
                    Some(actual) => StoreError::Stale {
                        id: id.clone(),
                        expected: t.from(),
                        wanted: t.to(),
                        actual: DeploymentState::parse(&actual),
                    },
                });
            }
            if t.lock() == LockEffect::Release {
                tx.execute("DELETE FROM deploy_locks WHERE deployment_id = ?1", params![id])?;
            }
            insert_event(&tx, &id, "", &message, None, Some(t.to()))?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records the digest-pinned image once resolved.
    pub async fn set_pinned(&self, id: &str, pinned: &str) -> Result<(), StoreError> {
        let (id, pinned) = (id.to_string(), pinned.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE deployments SET pinned = ?2 WHERE id = ?1",
                params![id, pinned],
            )?;
            Ok(())
        })
        .await
    }

    /// Bumps the fencing epoch (a controller taking a deployment over); returns the new one.
    pub async fn bump_epoch(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                "UPDATE deployments SET epoch = epoch + 1 WHERE id = ?1 RETURNING epoch",
                params![id],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Moves several hosts of one deployment to `phase` in one transaction.
    pub async fn set_hosts(
        &self,
        id: &str,
        hosts: &[String],
        phase: HostPhase,
        error: Option<String>,
        message: &str,
    ) -> Result<(), StoreError> {
        let changes = hosts
            .iter()
            .map(|h| HostChange::new(h, phase, error.clone(), message))
            .collect();
        self.change_hosts(id, changes).await
    }

    /// Applies several host changes of one deployment (each its own phase, error and
    /// event message) in one transaction.
    pub async fn change_hosts(&self, id: &str, changes: Vec<HostChange>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
            // Hosts moving to the same phase with the same error (a batch, mostly) are
            // one statement.
            let mut groups: Vec<(HostPhase, Option<&str>, many::Rows)> = vec![];
            for ch in &changes {
                let host = vec![Value::Text(ch.host.clone())];
                match groups
                    .iter_mut()
                    .find(|(p, e, _)| *p == ch.phase && *e == ch.error.as_deref())
                {
                    Some((_, _, hosts)) => hosts.push(host),
                    None => groups.push((ch.phase, ch.error.as_deref(), vec![host])),
                }
            }
            for (phase, error, hosts) in &groups {
                let lead = [
                    Value::Text(id.clone()),
                    Value::Text(phase.as_str().to_owned()),
                    error.map_or(Value::Null, |e| Value::Text(e.to_owned())),
                    Value::Integer(i64::from(phase.is_started())),
                    Value::Integer(now),
                    Value::Integer(i64::from(phase.is_final())),
                ];
                many::write(&tx, &lead, hosts, |n| {
                    format!(
                        "UPDATE deployment_hosts SET phase = ?2, error = COALESCE(?3, error),
                            started_ms = CASE WHEN ?4 AND started_ms IS NULL THEN ?5 ELSE started_ms END,
                            finished_ms = CASE WHEN ?6 THEN ?5 ELSE finished_ms END
                         WHERE deployment_id = ?1 AND host IN ({})",
                        many::list(6, n)
                    )
                })?;
            }
            let events: Vec<_> = changes
                .iter()
                .map(|ch| (ch.host.as_str(), ch.message.as_str(), Some(ch.phase)))
                .collect();
            insert_events(&tx, &id, &events)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Records what a host ran before this deployment touched it.
    pub async fn set_from_version(
        &self,
        id: &str,
        host: &str,
        version: &str,
    ) -> Result<(), StoreError> {
        let (id, host, version) = (id.to_string(), host.to_string(), version.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE deployment_hosts SET from_version = ?3 WHERE deployment_id = ?1 AND host = ?2",
                params![id, host, version],
            )?;
            Ok(())
        })
        .await
    }

    /// Appends an informational line to the deployment's event log.
    pub async fn event(&self, id: &str, host: &str, message: &str) -> Result<Event, StoreError> {
        let (id, host, message) = (id.to_string(), host.to_string(), message.to_string());
        self.with(move |c| insert_event(c, &id, &host, &message, None, None))
            .await
    }

    /// Appends several informational lines, `(host, message)`, in one transaction.
    pub async fn add_events(
        &self,
        id: &str,
        lines: Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let rows: Vec<_> = lines
                .iter()
                .map(|(host, message)| (host.as_str(), message.as_str(), None))
                .collect();
            insert_events(&tx, &id, &rows)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Sequence number of the deployment's newest event (0: none).
    pub async fn last_seq(&self, id: &str) -> Result<u64, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM events WHERE deployment_id = ?1",
                params![id],
                |r| r.get(0),
            )
        })
        .await
    }

    /// Events of a deployment after `after_seq`.
    pub async fn events(&self, id: &str, after_seq: u64) -> Result<Vec<Event>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at_ms, host, message, phase, state FROM events WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![id, after_seq], event_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// The newest `limit` events of a deployment, oldest first: what a page shows of a
    /// long log, read through the primary key without touching the older rows.
    pub async fn recent_events(&self, id: &str, limit: usize) -> Result<Vec<Event>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, at_ms, host, message, phase, state FROM events WHERE deployment_id = ?1 ORDER BY seq DESC LIMIT ?2",
            )?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let mut rows = stmt
                .query_map(params![id, limit], event_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// A deployment's own row, without its hosts: what the rollout's checkpoints and
    /// Watch streams read to learn its state, one indexed row however large the fleet.
    pub async fn deployment(&self, id: &str) -> Result<Deployment, StoreError> {
        let id = id.to_string();
        self.with(move |c| deployment_by_id(c, &id)).await
    }

    /// A deployment and its hosts.
    pub async fn get(&self, id: &str) -> Result<(Deployment, Vec<DeploymentHost>), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            let d = deployment_by_id(c, &id)?;
            let mut stmt = c.prepare_cached(
                "SELECT host, batch, phase, from_version, to_version, error, started_ms, finished_ms, stage
                 FROM deployment_hosts WHERE deployment_id = ?1 ORDER BY batch, host",
            )?;
            let hosts = stmt
                .query_map(params![id], |r| {
                    Ok(DeploymentHost {
                        host: r.get(0)?,
                        batch: r.get(1)?,
                        phase: HostPhase::parse(&r.get::<_, String>(2)?),
                        from_version: r.get(3)?,
                        to_version: r.get(4)?,
                        error: r.get(5)?,
                        started_ms: r.get(6)?,
                        finished_ms: r.get(7)?,
                        stage: r.get(8)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((d, hosts))
        })
        .await
    }

    /// The host rows and newest event sequence number of each of `ids`, in that order,
    /// in two queries whatever their number (a history listing reads no row twice).
    pub async fn hosts_and_seqs(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(Vec<DeploymentHost>, u64)>, StoreError> {
        self.with(move |c| {
            let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
            let mut hosts: std::collections::HashMap<String, Vec<DeploymentHost>> =
                std::collections::HashMap::new();
            let ids_in = id_list(c);
            let mut stmt = c.prepare_cached(&format!(
                "SELECT deployment_id, host, batch, phase, from_version, to_version, error, started_ms, finished_ms, stage
                 FROM deployment_hosts WHERE deployment_id IN ({ids_in})
                 ORDER BY deployment_id, batch, host"
            ))?;
            let rows = stmt.query_map(params![list], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    DeploymentHost {
                        host: r.get(1)?,
                        batch: r.get(2)?,
                        phase: HostPhase::parse(&r.get::<_, String>(3)?),
                        from_version: r.get(4)?,
                        to_version: r.get(5)?,
                        error: r.get(6)?,
                        started_ms: r.get(7)?,
                        finished_ms: r.get(8)?,
                        stage: r.get(9)?,
                    },
                ))
            })?;
            for row in rows {
                let (id, h) = row?;
                hosts.entry(id).or_default().push(h);
            }
            let mut seqs: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
            let mut stmt = c.prepare_cached(&format!(
                "SELECT deployment_id, MAX(seq) FROM events
                 WHERE deployment_id IN ({ids_in}) GROUP BY deployment_id"
            ))?;
            for row in stmt.query_map(params![list], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
                let (id, seq) = row?;
                seqs.insert(id, seq);
            }
            Ok(ids
                .iter()
                .map(|id| (hosts.remove(id).unwrap_or_default(), seqs.get(id).copied().unwrap_or(0)))
                .collect())
        })
        .await
    }

    /// Records the stage in progress.
    pub async fn set_stage(&self, id: &str, stage: u32) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE deployments SET stage = ?2 WHERE id = ?1",
                params![id, stage],
            )?;
            Ok(())
        })
        .await
    }

    /// Adds `note` to what history keeps about the deployment's gates.
    pub async fn add_gate_note(&self, id: &str, note: &str) -> Result<(), StoreError> {
        let (id, note) = (id.to_string(), note.to_string());
        self.with(move |c| {
            c.execute(
                "UPDATE deployments SET gate_note = CASE WHEN gate_note IS NULL OR gate_note = '' THEN ?2 ELSE gate_note || '; ' || ?2 END WHERE id = ?1",
                params![id, note],
            )?;
            Ok(())
        })
        .await
    }

    /// Records why the deployment waits (None: it does not).
    pub async fn set_hold(&self, id: &str, hold: Option<String>) -> Result<(), StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE deployments SET hold = ?2 WHERE id = ?1",
                params![id, hold],
            )?;
            Ok(())
        })
        .await
    }

    /// Records an operator's request and who made it, in the event log.
    /// `promote_stage` raises the promoted stage; `control` replaces the standing request.
    pub async fn request(
        &self,
        id: &str,
        control: Option<Control>,
        promote_stage: Option<u32>,
        message: &str,
    ) -> Result<(), StoreError> {
        let (id, message) = (id.to_string(), message.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            if let Some(ctl) = control {
                // A standing request carries its reason (who asked) as the hold.
                let hold = (ctl != Control::None).then_some(message.as_str());
                tx.execute(
                    "UPDATE deployments SET control = ?2, hold = ?3 WHERE id = ?1",
                    params![id, ctl.as_str(), hold],
                )?;
            }
            if let Some(stage) = promote_stage {
                tx.execute(
                    "UPDATE deployments SET promoted = CASE WHEN promoted > ?2 THEN promoted ELSE ?2 END WHERE id = ?1",
                    params![id, stage],
                )?;
            }
            insert_event(&tx, &id, "", &message, None, None)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    /// Newest deployments first, optionally of one service (and one environment).
    pub async fn list(
        &self,
        service: Option<String>,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.list_in(service, None, limit).await
    }

    /// Newest deployments first, optionally of one service and of one environment.
    pub async fn list_in(
        &self,
        service: Option<String>,
        environment: Option<String>,
        limit: u32,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_DEPLOYMENT} WHERE (CAST(?1 AS TEXT) IS NULL OR service = ?1) AND (CAST(?3 AS TEXT) IS NULL OR environment = ?3) ORDER BY created_ms DESC, id DESC LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![service, limit, environment], deployment_row)?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Deployments not in a terminal state (to resume after a restart).
    pub async fn unfinished(&self) -> Result<Vec<Deployment>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&format!(
                "{SELECT_DEPLOYMENT} WHERE finished_ms IS NULL ORDER BY created_ms"
            ))?;
            let rows = stmt.query_map(params![], deployment_row)?;
            Ok(rows
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .filter(|d| !d.state.is_terminal())
                .collect())
        })
        .await
    }
}

/// The ids of a JSON array of strings bound as `?1`, as a subquery: the one list
/// parameter the store has, for which the two dialects share no form.
fn id_list(c: &Connection) -> &'static str {
    match c.dialect() {
        Dialect::Sqlite => "SELECT value FROM json_each(?1)",
        Dialect::Postgres => "SELECT value FROM json_array_elements_text(CAST(?1 AS TEXT)::json)",
    }
}

const SELECT_DEPLOYMENT: &str = "SELECT id, service, kind, version, image, pinned, spec, state, epoch, requested_by, created_ms, finished_ms, error, stage, scheduled_ms, hold, control, promoted, environment, release_id, gate_note FROM deployments";

fn deployment_by_id(c: &Connection, id: &str) -> Result<Deployment, StoreError> {
    c.prepare_cached(&format!("{SELECT_DEPLOYMENT} WHERE id = ?1"))?
        .query_row(params![id], deployment_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

fn deployment_row(r: &Row<'_>) -> Result<Deployment, StoreError> {
    Ok(Deployment {
        id: r.get(0)?,
        service: r.get(1)?,
        kind: DeploymentKind::parse(&r.get::<_, String>(2)?),
        version: r.get(3)?,
        image: r.get(4)?,
        pinned: r.get(5)?,
        spec: r.get(6)?,
        state: DeploymentState::parse(&r.get::<_, String>(7)?),
        epoch: r.get(8)?,
        requested_by: r.get(9)?,
        created_ms: r.get(10)?,
        finished_ms: r.get(11)?,
        error: r.get(12)?,
        stage: r.get(13)?,
        scheduled_ms: r.get(14)?,
        hold: r.get(15)?,
        control: Control::parse(&r.get::<_, String>(16)?),
        promoted: r.get(17)?,
        environment: r.get(18)?,
        release_id: r.get(19)?,
        gate_note: r.get(20)?,
    })
}

#[cfg(test)]
mod pg_tests;
#[cfg(test)]
mod test_db;
#[cfg(test)]
mod tests;
