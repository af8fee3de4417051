//! Leadership among `drover serve` replicas sharing one PostgreSQL database.
//!
//! One row (`drover_leader`) holds the lease: who holds it, the address agents and
//! clients should use, a fencing epoch, and when it expires, all by the DATABASE's clock.
//! A standby takes an expired lease with one compare-and-set that bumps the epoch
//! (`UPDATE ... SET epoch = epoch + 1 ... RETURNING epoch`); the leader renews it every
//! third of its length. The leader measures its lease on its own monotonic clock from the
//! moment it SENT the last successful renewal, so its view never outlives the database's,
//! and it stops acting (the [`Fence`] cleared: every write and agent command refused) a
//! third of a lease before the lease could expire. A replica that was frozen past its
//! lease (SIGSTOP, a stalled VM) wakes with its deadline gone and steps down before it
//! touches anything; were it to write first, the store's epoch check refuses the write.
//!
//! Not `pg_advisory_lock`: a session lock is released silently when its connection
//! drops, while the old holder may still believe it leads.
//!
//! With SQLite there is one controller and no lease: [`Leadership::single`].

pub mod gate;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::Socket;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::store::{Connector, Fence, PgTls, over_tcp};

/// What this controller is among its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The only controller (SQLite): it always acts.
    Single,
    /// Waiting for the lease; `leader` is the advertised address of the replica that
    /// holds it, when one does.
    Standby {
        /// The leader's address, if the lease is held.
        leader: Option<String>,
    },
    /// Holds the lease under `epoch` and acts (deployments resumed).
    Leader {
        /// The fencing epoch.
        epoch: u64,
    },
}

impl Role {
    /// `single`, `standby` or `leader`: the word in logs, metrics and `drover whoami`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Single => "single",
            Role::Standby { .. } => "standby",
            Role::Leader { .. } => "leader",
        }
    }
}

/// A cheap, cloneable view of this controller's role.
#[derive(Clone, Debug)]
pub struct Leadership {
    /// The current role, published by the campaign.
    role: watch::Receiver<Role>,
}

impl Leadership {
    /// The one controller of an embedded (SQLite) database: always acts.
    pub fn single() -> Self {
        let (_, role) = watch::channel(Role::Single);
        Self { role }
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    /// Whether this controller serves operators and agents itself (single or leader).
    pub fn acts(&self) -> bool {
        matches!(*self.role.borrow(), Role::Single | Role::Leader { .. })
    }

    /// The leader's address, when this is a standby that knows it.
    pub fn leader(&self) -> Option<String> {
        match &*self.role.borrow() {
            Role::Standby { leader } => leader.clone(),
            _ => None,
        }
    }

    /// The epoch it leads under (0 unless leader).
    pub fn epoch(&self) -> u64 {
        match &*self.role.borrow() {
            Role::Leader { epoch } => *epoch,
            _ => 0,
        }
    }
}

/// How a replica campaigns.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The lease's length; renewed every third of it, given up a third of it early.
    pub ttl: Duration,
    /// The address agents and clients are sent to while this replica leads
    /// (`https://host:port`).
    pub address: String,
}

/// Why a leader stopped leading.
#[derive(Debug, thiserror::Error)]
pub enum LeaseLost {
    /// Another replica holds the lease now.
    #[error(
        "lost the leader lease: epoch {epoch} was superseded (the lease is held by {holder:?}, epoch {now}); stepping down"
    )]
    Taken {
        /// The epoch this replica led under.
        epoch: u64,
        /// Who holds it now.
        holder: String,
        /// Under which epoch.
        now: u64,
    },
    /// No renewal succeeded in time (database unreachable, or this process was frozen).
    #[error(
        "lost the leader lease: no renewal of epoch {epoch} succeeded for {} (the database is unreachable or this process was stalled); stepping down before the lease can expire",
        drover_shared::duration::human(*.silent)
    )]
    Expired {
        /// The epoch this replica led under.
        epoch: u64,
        /// Since the last renewal that succeeded was sent.
        silent: Duration,
    },
}

/// A replica's campaign for the lease, on its own database connection (never queued
/// behind the store's writes).
pub struct Campaign {
    /// The database URL.
    url: String,
    /// Lease length and advertised address.
    settings: LeaseSettings,
    /// This replica's holder name and epoch, shared with the store and the hub.
    fence: Arc<Fence>,
    /// Publishes the role.
    role: Arc<watch::Sender<Role>>,
    /// TLS to the database, or none.
    tls: PgTls,
    /// The lease connection, opened on demand and again after a failure.
    client: Option<tokio_postgres::Client>,
    /// When the acquisition that took the lease was sent: the lease is counted from it.
    acquired: Instant,
}

/// Announces that the leader acts (its deployments resumed); see [`Campaign::herald`].
#[derive(Clone)]
pub struct Herald(Arc<watch::Sender<Role>>);

impl Herald {
    /// Publishes this replica as the leader under `epoch`.
    pub fn lead(&self, epoch: u64) {
        self.0.send_replace(Role::Leader { epoch });
    }
}

/// Opens the lease connection with `tls` within `timeout`; its connection task runs
/// until it ends, saying why.
async fn connect<T>(
    config: &tokio_postgres::Config,
    tls: T,
    timeout: Duration,
) -> Result<tokio_postgres::Client, String>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, connection) = tokio::time::timeout(timeout, config.connect(tls))
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "the lease connection to the database ended");
        }
    });
    Ok(client)
}

/// Statement timeout and connect timeout of the lease connection: a third of the lease,
/// at most 2 s.
fn io_timeout(ttl: Duration) -> Duration {
    (ttl / 3).min(Duration::from_secs(2))
}

impl Campaign {
    /// A campaign for `fence`'s holder on the database at `url`, starting as a standby.
    pub fn new(
        url: &str,
        settings: LeaseSettings,
        fence: Arc<Fence>,
        tls: PgTls,
    ) -> (Self, Leadership) {
        let (role, rx) = watch::channel(Role::Standby { leader: None });
        (
            Self {
                url: url.to_owned(),
                settings,
                fence,
                role: Arc::new(role),
                tls,
                client: None,
                acquired: Instant::now(),
            },
            Leadership { role: rx },
        )
    }

    /// The lease connection, (re)opened when needed.
    async fn client(&mut self) -> Result<&tokio_postgres::Client, String> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut config: tokio_postgres::Config =
                self.url.parse().map_err(|e| format!("{e}"))?;
            config.connect_timeout(io_timeout(self.settings.ttl));
            config.application_name("drover-lease");
            let tcp = over_tcp(config.get_hosts());
            let connector = self
                .tls
                .connector(config.get_ssl_mode(), tcp)
                .map_err(|e| e.to_string())?;
            let timeout = io_timeout(self.settings.ttl);
            let client = match connector {
                Connector::Plain => connect(&config, tokio_postgres::NoTls, timeout).await?,
                Connector::Tls(tls) => connect(&config, tls, timeout).await?,
            };
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| "no connection".to_owned())
    }

    /// Runs `sql` with `params` on the lease connection within the I/O timeout; the
    /// rows, or why not (the connection is dropped on failure).
    async fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        let timeout = io_timeout(self.settings.ttl);
        let client = self.client().await?;
        let result = tokio::time::timeout(timeout, client.query(sql, params)).await;
        match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => {
                self.client = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.client = None;
                Err(format!(
                    "no answer within {}",
                    drover_shared::duration::human(timeout)
                ))
            }
        }
    }

    /// Waits as a standby until this replica takes the lease (or `stop`), publishing
    /// who leads meanwhile. Returns the new epoch; the fence leads under it from then
    /// on, but the role says leader only after [`Campaign::lead`].
    pub async fn acquire(&mut self, stop: &CancellationToken) -> Option<u64> {
        let poll =
            (self.settings.ttl / 12).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let ttl = self.settings.ttl.as_secs_f64();
        let mut outage = false;
        loop {
            let holder = self.fence.holder().to_owned();
            let address = self.settings.address.clone();
            let sent = Instant::now();
            let taken = self
                .query(
                    "UPDATE drover_leader SET holder = $1, address = $2, epoch = epoch + 1, \
                     expires_at = clock_timestamp() + make_interval(secs => $3) \
                     WHERE id = 1 AND (holder = '' OR expires_at < clock_timestamp()) RETURNING epoch",
                    &[&holder, &address, &ttl],
                )
                .await;
            match taken {
                Ok(rows) if !rows.is_empty() => {
                    let epoch: i64 = rows[0].get(0);
                    let epoch = u64::try_from(epoch).unwrap_or(0);
                    self.fence.set(epoch);
                    self.fence.hold_until(self.safe_until(sent).into_std());
                    self.acquired = sent;
                    info!(epoch, holder = %holder, address = %address, role = "leader", "took the leader lease");
                    return Some(epoch);
                }
                Ok(_) => {
                    outage = false;
                    let rows = self
                        .query(
                            "SELECT address, holder FROM drover_leader WHERE id = 1 AND holder <> '' AND expires_at >= clock_timestamp()",
                            &[],
                        )
                        .await
                        .unwrap_or_default();
                    let leader = rows.first().map(|r| r.get::<_, String>(0));
                    let standby = Role::Standby { leader };
                    self.role.send_if_modified(|r| {
                        if *r == standby {
                            false
                        } else {
                            if let Role::Standby { leader: Some(l) } = &standby {
                                info!(leader = %l, role = "standby", "standing by: another replica leads");
                            }
                            *r = standby.clone();
                            true
                        }
                    });
                }
                Err(e) => {
                    if !outage {
                        warn!(error = %e, role = "standby", "cannot reach the database to campaign for the lease; retrying");
                        outage = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.cancelled() => return None,
            }
        }
    }

    /// What announces the leader once it acts (used while [`Campaign::hold`] runs).
    pub fn herald(&self) -> Herald {
        Herald(self.role.clone())
    }

    /// Holds the lease taken under `epoch`, renewing it, until it is lost (the error
    /// says why; the fence is cleared first) or `stop` (the lease is released, so a
    /// standby takes over at once).
    pub async fn hold(&mut self, epoch: u64, stop: &CancellationToken) -> Result<(), LeaseLost> {
        let ttl = self.settings.ttl;
        let every = ttl / 3;
        // Counted from when the acquisition was sent; the first renewal follows at once.
        let mut last_ok = self.acquired;
        let mut next = Instant::now();
        let holder = self.fence.holder().to_owned();
        let (secs, epoch_sql) = (ttl.as_secs_f64(), i64::try_from(epoch).unwrap_or(i64::MAX));
        loop {
            let valid_until = self.safe_until(last_ok);
            tokio::select! {
                _ = tokio::time::sleep_until(next.min(valid_until)) => {}
                _ = stop.cancelled() => {
                    self.fence.clear();
                    let released = self.query(
                        "UPDATE drover_leader SET holder = '', address = '', expires_at = 'epoch' WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING epoch",
                        &[&holder, &epoch_sql],
                    ).await;
                    match released {
                        Ok(rows) if !rows.is_empty() => info!(epoch, "released the leader lease"),
                        Ok(_) => {}
                        Err(e) => warn!(error = %e, "could not release the leader lease; a standby takes it when it expires"),
                    }
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= valid_until {
                return Err(self.lost(LeaseLost::Expired {
                    epoch,
                    silent: now - last_ok,
                }));
            }
            let sent = Instant::now();
            let renewed = tokio::time::timeout(
                valid_until - sent,
                self.query(
                    "UPDATE drover_leader SET expires_at = clock_timestamp() + make_interval(secs => $3) \
                     WHERE id = 1 AND holder = $1 AND epoch = $2 RETURNING epoch",
                    &[&holder, &epoch_sql, &secs],
                ),
            )
            .await;
            match renewed {
                Ok(Ok(rows)) if !rows.is_empty() => {
                    last_ok = sent;
                    self.fence.hold_until(self.safe_until(sent).into_std());
                    next = sent + every;
                }
                Ok(Ok(_)) => {
                    let rows = self
                        .query("SELECT holder, epoch FROM drover_leader WHERE id = 1", &[])
                        .await
                        .unwrap_or_default();
                    let (holder, now) = rows
                        .first()
                        .map(|r| {
                            (
                                r.get::<_, String>(0),
                                u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                            )
                        })
                        .unwrap_or_default();
                    return Err(self.lost(LeaseLost::Taken { epoch, holder, now }));
                }
                Ok(Err(e)) => {
                    warn!(epoch, error = %e, "could not renew the leader lease; retrying");
                    next = Instant::now() + Duration::from_millis(200);
                }
                Err(_) => {
                    let now = Instant::now();
                    return Err(self.lost(LeaseLost::Expired {
                        epoch,
                        silent: now - last_ok,
                    }));
                }
            }
        }
    }

    /// Until when a lease whose acquisition or renewal was sent at `sent` may be acted
    /// on: a third of the lease before it could expire, so that a replica stops before
    /// a standby may take it, whatever the two clocks' drift and the renewal's round
    /// trip.
    fn safe_until(&self, sent: Instant) -> Instant {
        sent + self.settings.ttl - self.settings.ttl / 3
    }

    /// Stops acting at once (the fence refuses every write and command from here on)
    /// and says so.
    fn lost(&self, why: LeaseLost) -> LeaseLost {
        self.fence.clear();
        self.role.send_replace(Role::Standby { leader: None });
        error!(error = %why, role = "standby", "stepping down");
        why
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_as_words_and_only_single_and_leader_act() {
        let single = Leadership::single();
        assert!(single.acts());
        assert_eq!(single.role().as_str(), "single");
        let (tx, rx) = watch::channel(Role::Standby {
            leader: Some("https://b:7070".into()),
        });
        let l = Leadership { role: rx };
        assert!(!l.acts());
        assert_eq!(l.leader().as_deref(), Some("https://b:7070"));
        tx.send_replace(Role::Leader { epoch: 4 });
        assert!(l.acts());
        assert_eq!((l.epoch(), l.role().as_str()), (4, "leader"));
    }
}
