//! Who may talk to the controller, durably: join tokens, the agent certificates issued
//! (and revoked), the labels each enrolled host got from its token, and API tokens.
//! Only hashes of token secrets are stored.
//!
//! Consuming a join token is one guarded `UPDATE ... WHERE used_ms IS NULL AND
//! expires_ms > now`, inside the transaction that records the new certificate, so two
//! agents racing with one token cannot both enroll.

use std::collections::BTreeMap;

use super::sql::{Connection, OptionalExtension, params};
use drover_shared::tls::Role;

use super::{Store, StoreError, now_ms, rfc3339};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_ms INTEGER,
    used_by_host TEXT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE INDEX IF NOT EXISTS certificates_host ON certificates(host);
CREATE TABLE IF NOT EXISTS enrolled_hosts (
    name TEXT PRIMARY KEY,
    labels TEXT NOT NULL DEFAULT '{}',
    enrolled_ms INTEGER NOT NULL,
    join_token TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER
);
"#;

/// A join token as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinToken {
    /// The token's id (its public half).
    pub id: String,
    /// SHA-256 of the secret half, hex.
    pub secret_hash: String,
    /// Labels the enrolled host gets; they override the agent's own.
    pub labels: BTreeMap<String, String>,
    /// Who created it.
    pub created_by: String,
    /// Unix ms after which it cannot be used.
    pub expires_ms: u64,
}

/// Why a join token (or the name it is used for) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefusal {
    /// No token with that id, or its secret does not match.
    #[error("join token unknown")]
    Unknown,
    /// Consumed already, by an earlier enrollment.
    #[error("join token already used (by host {host} at {at})")]
    AlreadyUsed {
        /// The host that used it.
        host: String,
        /// When, RFC 3339.
        at: String,
    },
    /// Past its TTL.
    #[error("join token expired at {at}")]
    Expired {
        /// When it expired, RFC 3339.
        at: String,
    },
    /// The host already holds a valid certificate.
    #[error("host name {host} is taken: it holds a valid certificate")]
    NameTaken {
        /// The host name asked for.
        host: String,
    },
}

/// A certificate the controller issued to an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedCertificate {
    /// Serial number, lowercase hex (as `PeerCertificate::serial`).
    pub serial: String,
    /// The host it is bound to.
    pub host: String,
    /// Unix ms when it stops being valid.
    pub not_after_ms: u64,
    /// Unix ms when it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// An API token as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// The token's id (its public half).
    pub id: String,
    /// Who uses it: the name history shows.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the secret half, hex.
    pub secret_hash: String,
    /// Who created it.
    pub created_by: String,
    /// Unix ms after which it is refused; `None`: never.
    pub expires_ms: Option<u64>,
    /// Unix ms when it was revoked, if it was.
    pub revoked_ms: Option<u64>,
}

/// What removing a host did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRemoval {
    /// Certificates revoked now (already revoked ones are not counted).
    pub revoked: u32,
    /// Whether the host was enrolled (had a record) at all.
    pub was_enrolled: bool,
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_owned())
}

fn labels_from_json(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

/// Why `token` cannot be used now, if it cannot; reads only.
fn join_refusal(
    c: &Connection,
    id: &str,
    secret_hash: &str,
    now: u64,
) -> Result<Option<JoinRefusal>, StoreError> {
    let row: Option<(String, u64, Option<u64>, Option<String>)> = c
        .query_row(
            "SELECT secret_hash, expires_ms, used_ms, used_by_host FROM join_tokens WHERE id = ?1",
            params![id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((stored, expires_ms, used_ms, used_by)) = row else {
        return Ok(Some(JoinRefusal::Unknown));
    };
    // Both sides are hashes; compare in constant time anyway.
    let equal = crate::tokens::constant_time_eq(stored.as_bytes(), secret_hash.as_bytes());
    if !equal {
        return Ok(Some(JoinRefusal::Unknown));
    }
    if let Some(used) = used_ms {
        return Ok(Some(JoinRefusal::AlreadyUsed {
            host: used_by.unwrap_or_default(),
            at: rfc3339(used),
        }));
    }
    if expires_ms <= now {
        return Ok(Some(JoinRefusal::Expired {
            at: rfc3339(expires_ms),
        }));
    }
    Ok(None)
}

impl Store {
    /// Records a new join token.
    pub async fn create_join_token(&self, t: JoinToken) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO join_tokens (id, secret_hash, labels, created_ms, created_by, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, t.secret_hash, labels_json(&t.labels), now_ms(), t.created_by, t.expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Whether the join token `id` with secret hash `secret_hash` could enroll a host
    /// now (reads only; [`Store::enroll`] decides for good).
    pub async fn check_join_token(
        &self,
        id: &str,
        secret_hash: &str,
    ) -> Result<Result<(), JoinRefusal>, StoreError> {
        let (id, hash) = (id.to_owned(), secret_hash.to_owned());
        self.with(move |c| Ok(join_refusal(c, &id, &hash, now_ms())?.map_or(Ok(()), Err)))
            .await
    }

    /// Enrolls `cert.host` with the join token `id`: in one transaction, checks the token
    /// and that the name holds no valid certificate, consumes the token (atomically:
    /// only an unused, unexpired token is consumed), records the certificate and the
    /// host's labels from the token. Returns those labels.
    pub async fn enroll(
        &self,
        id: &str,
        secret_hash: &str,
        cert: IssuedCertificate,
    ) -> Result<Result<BTreeMap<String, String>, JoinRefusal>, StoreError> {
        let (id, hash) = (id.to_owned(), secret_hash.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let now = now_ms();
            if let Some(refusal) = join_refusal(&tx, &id, &hash, now)? {
                return Ok(Err(refusal));
            }
            if host_has_valid_certificate(&tx, &cert.host, now)? {
                return Ok(Err(JoinRefusal::NameTaken {
                    host: cert.host.clone(),
                }));
            }
            let consumed: Option<String> = tx
                .query_row(
                    "UPDATE join_tokens SET used_ms = ?2, used_by_host = ?3
                     WHERE id = ?1 AND used_ms IS NULL AND expires_ms > ?2
                     RETURNING labels",
                    params![id, now, cert.host],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(labels) = consumed else {
                // Lost a race with another enrollment (or the clock moved past expiry).
                let refusal = join_refusal(&tx, &id, &hash, now)?.unwrap_or(JoinRefusal::Unknown);
                return Ok(Err(refusal));
            };
            tx.execute(
                "INSERT INTO certificates (serial, host, issued_ms, not_after_ms) VALUES (?1, ?2, ?3, ?4)",
                params![cert.serial, cert.host, now, cert.not_after_ms],
            )?;
            tx.execute(
                "INSERT INTO enrolled_hosts (name, labels, enrolled_ms, join_token) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET labels = excluded.labels, enrolled_ms = excluded.enrolled_ms, join_token = excluded.join_token",
                params![cert.host, labels, now, id],
            )?;
            tx.commit()?;
            Ok(Ok(labels_from_json(&labels)))
        })
        .await
    }

    /// Records a certificate issued by renewal.
    pub async fn record_certificate(&self, cert: IssuedCertificate) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO certificates (serial, host, issued_ms, not_after_ms, revoked_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![cert.serial, cert.host, now_ms(), cert.not_after_ms, cert.revoked_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// The issued certificate with `serial`, if this controller issued it.
    pub async fn certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>, StoreError> {
        let serial = serial.to_ascii_lowercase();
        self.with(move |c| {
            c.query_row(
                "SELECT serial, host, not_after_ms, revoked_ms FROM certificates WHERE serial = ?1",
                params![serial],
                |r| {
                    Ok(IssuedCertificate {
                        serial: r.get(0)?,
                        host: r.get(1)?,
                        not_after_ms: r.get(2)?,
                        revoked_ms: r.get(3)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// The labels an enrolled host got from its join token (`None`: not enrolled).
    pub async fn enrolled_labels(
        &self,
        host: &str,
    ) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let host = host.to_owned();
        self.with(move |c| {
            let labels: Option<String> = c
                .query_row(
                    "SELECT labels FROM enrolled_hosts WHERE name = ?1",
                    params![host],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(labels.as_deref().map(labels_from_json))
        })
        .await
    }

    /// Revokes every certificate of `host` and forgets its enrollment.
    pub async fn remove_host(&self, host: &str) -> Result<HostRemoval, StoreError> {
        let host = host.to_owned();
        self.with(move |c| {
            let tx = c.transaction()?;
            let revoked = tx.execute(
                "UPDATE certificates SET revoked_ms = ?2 WHERE host = ?1 AND revoked_ms IS NULL",
                params![host, now_ms()],
            )?;
            let was_enrolled =
                tx.execute("DELETE FROM enrolled_hosts WHERE name = ?1", params![host])? > 0
                    || tx.query_row(
                        "SELECT EXISTS (SELECT 1 FROM certificates WHERE host = ?1)",
                        params![host],
                        |r| r.get::<_, bool>(0),
                    )?;
            tx.commit()?;
            Ok(HostRemoval {
                revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
                was_enrolled,
            })
        })
        .await
    }

    /// Records a new API token.
    pub async fn create_api_token(&self, t: ApiToken) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO api_tokens (id, name, role, secret_hash, created_ms, created_by, expires_ms, revoked_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![t.id, t.name, t.role.as_str(), t.secret_hash, now_ms(), t.created_by, t.expires_ms, t.revoked_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// The API token with `id`, if there is one.
    pub async fn api_token(&self, id: &str) -> Result<Option<ApiToken>, StoreError> {
        let id = id.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT id, name, role, secret_hash, created_by, expires_ms, revoked_ms FROM api_tokens WHERE id = ?1",
                params![id],
                |r| {
                    // An unknown role (edited by hand) grants the least.
                    let role = r.get::<_, String>(2)?.parse().unwrap_or(Role::Viewer);
                    Ok(ApiToken {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        role,
                        secret_hash: r.get(3)?,
                        created_by: r.get(4)?,
                        expires_ms: r.get(5)?,
                        revoked_ms: r.get(6)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Every API token, oldest first, with when it was created.
    pub async fn api_tokens(&self) -> Result<Vec<(ApiToken, u64)>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(
                "SELECT id, name, role, secret_hash, created_by, expires_ms, revoked_ms, created_ms
                 FROM api_tokens ORDER BY created_ms, id",
            )?;
            let rows = stmt.query_map(params![], |r| {
                let role = r.get::<_, String>(2)?.parse().unwrap_or(Role::Viewer);
                Ok((
                    ApiToken {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        role,
                        secret_hash: r.get(3)?,
                        created_by: r.get(4)?,
                        expires_ms: r.get(5)?,
                        revoked_ms: r.get(6)?,
                    },
                    r.get(7)?,
                ))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// Revokes the API token with id `id_or_name`, or else every token named so;
    /// returns how many were newly revoked.
    pub async fn revoke_api_tokens(&self, id_or_name: &str) -> Result<u32, StoreError> {
        let key = id_or_name.to_owned();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE api_tokens SET revoked_ms = ?2
                 WHERE revoked_ms IS NULL AND (id = ?1 OR (name = ?1 AND NOT EXISTS (SELECT 1 FROM api_tokens WHERE id = ?1)))",
                params![key, now_ms()],
            )?;
            Ok(u32::try_from(n).unwrap_or(u32::MAX))
        })
        .await
    }
}

fn host_has_valid_certificate(c: &Connection, host: &str, now: u64) -> Result<bool, StoreError> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM certificates WHERE host = ?1 AND revoked_ms IS NULL AND not_after_ms > ?2)",
        params![host, now],
        |r| r.get(0),
    )
}
