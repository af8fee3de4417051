//! Service secrets as stored: sealed (nonce + ciphertext, see `crate::secrets`), with
//! who set them and when. Nothing here sees a plaintext value.

use super::sql::params;

use super::{Store, StoreError, now_ms};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS secrets (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (service, name)
);
"#;

/// One sealed secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// The secret's name (`DB_PASSWORD`).
    pub name: String,
    /// The AEAD nonce used for this value.
    pub nonce: Vec<u8>,
    /// The encrypted value with its tag.
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRow")
            .field("name", &self.name)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

/// What may be shown about a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    /// The secret's name.
    pub name: String,
    /// Unix ms of the last write.
    pub updated_ms: u64,
    /// Who wrote it last.
    pub updated_by: String,
}

impl Store {
    /// Stores (or replaces) a sealed secret of `service`; returns whether one was replaced.
    pub async fn put_secret(
        &self,
        service: &str,
        row: SealedRow,
        updated_by: &str,
    ) -> Result<bool, StoreError> {
        let (service, by) = (service.to_owned(), updated_by.to_owned());
        self.with(move |c| {
            let tx = c.transaction()?;
            let replaced: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM secrets WHERE service = ?1 AND name = ?2)",
                params![service, row.name],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO secrets (service, name, nonce, ciphertext, updated_ms, updated_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(service, name) DO UPDATE SET nonce = excluded.nonce,
                    ciphertext = excluded.ciphertext, updated_ms = excluded.updated_ms,
                    updated_by = excluded.updated_by",
                params![service, row.name, row.nonce, row.ciphertext, now_ms(), by],
            )?;
            tx.commit()?;
            Ok(replaced)
        })
        .await
    }

    /// Names and metadata of `service`'s secrets, by name.
    pub async fn secret_metas(&self, service: &str) -> Result<Vec<SecretMeta>, StoreError> {
        let service = service.to_owned();
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, updated_ms, updated_by FROM secrets WHERE service = ?1 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![service], |r| {
                Ok(SecretMeta {
                    name: r.get(0)?,
                    updated_ms: r.get(1)?,
                    updated_by: r.get(2)?,
                })
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })
        .await
    }

    /// The sealed secrets of `service` named in `names` (missing ones are left out).
    pub async fn sealed_secrets(
        &self,
        service: &str,
        names: &[String],
    ) -> Result<Vec<SealedRow>, StoreError> {
        let (service, names) = (service.to_owned(), names.to_vec());
        self.with(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT name, nonce, ciphertext FROM secrets WHERE service = ?1 AND name = ?2",
            )?;
            let mut rows = Vec::with_capacity(names.len());
            for name in &names {
                let mut found = stmt.query_map(params![service, name], |r| {
                    Ok(SealedRow {
                        name: r.get(0)?,
                        nonce: r.get(1)?,
                        ciphertext: r.get(2)?,
                    })
                })?;
                if let Some(row) = found.next() {
                    rows.push(row?);
                }
            }
            Ok(rows)
        })
        .await
    }

    /// How many secrets are stored, over every service.
    pub async fn secret_count(&self) -> Result<u64, StoreError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM secrets", params![], |r| r.get(0)))
            .await
    }
}
