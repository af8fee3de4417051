//! Service secrets: sealed at rest with ChaCha20-Poly1305 under the controller's secrets
//! key, opened only at swap time to travel to the agent inside the mTLS stream.
//!
//! - Each write gets a fresh random 12-byte nonce; the associated data is
//!   `"<service>/<name>"`, so a sealed value moved to another row does not open.
//! - The key is 32 random bytes in `<pki-dir>/secrets.key` (0600), written by
//!   `drover ca init`; an `--insecure-dev` controller keeps one next to its database.
//! - Values live in [`Zeroizing`] buffers here and are never formatted: no `Debug`, no
//!   error message, no log line ever holds one.

use std::fmt;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use drover_proto::v1 as proto;
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::store::{SealedRow, SecretMeta, Store, StoreError};

/// The secrets key's file name, in the PKI directory (or next to an insecure-dev database).
pub const SECRETS_KEY_FILE: &str = "secrets.key";
/// The largest value a secret may have.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Bytes in a secrets key.
const KEY_BYTES: usize = 32;
/// Bytes in a ChaCha20-Poly1305 nonce.
const NONCE_BYTES: usize = 12;

/// Why a secret could not be stored or read. No variant carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or written.
    #[error("secrets key {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold a key.
    #[error(
        "secrets key {path} holds {len} bytes, not {KEY_BYTES}: it must be exactly {KEY_BYTES} random bytes"
    )]
    KeyLength {
        /// The file.
        path: String,
        /// What it holds.
        len: usize,
    },
    /// A name that may not name a secret.
    #[error(
        "invalid secret name {0:?}: use letters, digits and '_', not starting with a digit (like DB_PASSWORD)"
    )]
    InvalidName(String),
    /// An empty or oversized value.
    #[error("invalid value for secret {name}: {reason}")]
    InvalidValue {
        /// The secret.
        name: String,
        /// What is wrong with it (never the value).
        reason: String,
    },
    /// A secret a deployment needs is not set.
    #[error(
        "secret {name} of service {service} is not set; set it with `drover secret set {service} {name}` (the value is read from stdin)"
    )]
    Missing {
        /// The service.
        service: String,
        /// The secret.
        name: String,
    },
    /// The stored value does not open under this key (another key, or altered).
    #[error(
        "secret {name} of service {service} cannot be decrypted with this controller's secrets key (it was sealed under another key, or the database was altered); set it again with `drover secret set {service} {name}`"
    )]
    Undecryptable {
        /// The service.
        service: String,
        /// The secret.
        name: String,
    },
    /// Sealing failed (cannot happen with a valid key; reported, not panicked on).
    #[error("sealing secret {name} failed")]
    Seal {
        /// The secret.
        name: String,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `name` may name a secret: `[A-Za-z_][A-Za-z0-9_]*`, at most 128 characters
/// (it becomes an environment variable or a file name).
pub fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The key that seals secrets at rest.
#[derive(Clone)]
pub struct SecretsKey(Zeroizing<[u8; KEY_BYTES]>);

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self(Zeroizing::new(rand::random()))
    }

    /// Reads the key at `path`: exactly 32 bytes.
    pub fn load(path: &Path) -> Result<Self, SecretsError> {
        let bytes =
            Zeroizing::new(std::fs::read(path).map_err(|source| SecretsError::KeyFile {
                path: path.display().to_string(),
                source,
            })?);
        let key: [u8; KEY_BYTES] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SecretsError::KeyLength {
                    path: path.display().to_string(),
                    len: bytes.len(),
                })?;
        warn_if_readable_by_others(path);
        Ok(Self(Zeroizing::new(key)))
    }

    /// Reads the key at `path`, or creates it (0600) when there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretsError> {
        if path.exists() {
            return Self::load(path);
        }
        let key = Self::generate();
        key.write(path)?;
        info!(path = %path.display(), "created a new secrets key");
        Ok(key)
    }

    /// A 32-byte key for another purpose, named by `label`, derived from this one
    /// (HMAC-SHA256 keyed with it, as HKDF's expand step): every holder of the secrets
    /// key derives the same, and the derived key tells nothing of this one.
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.0.as_slice())
            .expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        Zeroizing::new(mac.finalize().into_bytes().into())
    }

    /// Writes the key to `path` with mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), SecretsError> {
        drover_shared::tls::write_private(path, self.0.as_slice()).map_err(|e| {
            SecretsError::KeyFile {
                path: path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            }
        })
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.as_slice()))
    }

    /// Seals `value` as secret `name` of `service`, under a fresh random nonce.
    pub fn seal(&self, service: &str, name: &str, value: &[u8]) -> Result<SealedRow, SecretsError> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let aad = associated_data(service, name);
        let ciphertext = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Seal {
                name: name.to_owned(),
            })?;
        Ok(SealedRow {
            name: name.to_owned(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed secret of `service`; fails when the key, the row's place or the
    /// ciphertext do not match.
    pub fn open(&self, service: &str, row: &SealedRow) -> Result<Zeroizing<Vec<u8>>, SecretsError> {
        let undecryptable = || SecretsError::Undecryptable {
            service: service.to_owned(),
            name: row.name.clone(),
        };
        if row.nonce.len() != NONCE_BYTES {
            return Err(undecryptable());
        }
        let aad = associated_data(service, &row.name);
        self.cipher()
            .decrypt(
                Nonce::from_slice(&row.nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| undecryptable())
    }
}

fn associated_data(service: &str, name: &str) -> String {
    format!("{service}/{name}")
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "the secrets key is readable by other users; make it 0600");
    }
}

/// Where an `--insecure-dev` controller keeps its secrets key: in its state directory
/// (next to a SQLite database).
pub fn insecure_dev_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SECRETS_KEY_FILE)
}

/// The secrets of every service: the store and the key together. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    store: Store,
    key: SecretsKey,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(<redacted>)")
    }
}

impl Vault {
    /// Secrets in `store`, sealed under `key`.
    pub fn new(store: Store, key: SecretsKey) -> Self {
        Self { store, key }
    }

    /// Validates and stores `value` as secret `name` of `service`, for every
    /// environment (`environment` empty) or for one only; returns whether an existing
    /// value was replaced.
    pub async fn set(
        &self,
        service: &str,
        environment: &str,
        name: &str,
        value: &[u8],
        by: &str,
    ) -> Result<bool, SecretsError> {
        if !valid_secret_name(name) {
            return Err(SecretsError::InvalidName(name.to_owned()));
        }
        let reason = if value.is_empty() {
            Some("it is empty".to_owned())
        } else if value.len() > MAX_SECRET_BYTES {
            Some(format!(
                "it is {} bytes; the limit is {MAX_SECRET_BYTES}",
                value.len()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(SecretsError::InvalidValue {
                name: name.to_owned(),
                reason,
            });
        }
        let scope = scope(service, environment);
        let row = self.key.seal(&scope, name, value)?;
        Ok(self.store.put_secret(&scope, row, by).await?)
    }

    /// Names and metadata of the secrets `service` gets in `environment`: those set for
    /// that environment, and those set for every environment that it does not override
    /// (each with the environment it is set for, empty for every one).
    pub async fn list(
        &self,
        service: &str,
        environment: &str,
    ) -> Result<Vec<(SecretMeta, String)>, SecretsError> {
        let mut out: Vec<(SecretMeta, String)> = Vec::new();
        if !environment.is_empty() {
            for m in self
                .store
                .secret_metas(&scope(service, environment))
                .await?
            {
                out.push((m, environment.to_owned()));
            }
        }
        for m in self.store.secret_metas(service).await? {
            if !out.iter().any(|(o, _)| o.name == m.name) {
                out.push((m, String::new()));
            }
        }
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(out)
    }

    /// Which of `names` are set neither for `service` in `environment` nor for every
    /// environment, in the order given.
    pub async fn missing(
        &self,
        service: &str,
        environment: &str,
        names: &[String],
    ) -> Result<Vec<String>, SecretsError> {
        let set: std::collections::BTreeSet<String> = self
            .list(service, environment)
            .await?
            .into_iter()
            .map(|(m, _)| m.name)
            .collect();
        Ok(names
            .iter()
            .filter(|n| !set.contains(*n))
            .cloned()
            .collect())
    }

    /// Opens the secrets `names` of `service` in `environment`, in that order, for one
    /// swap: a value set for the environment wins over one set for every environment,
    /// and a value set for another environment is never read. Fails (naming the
    /// secret, never a value) when one is missing or does not open.
    pub async fn open_all(
        &self,
        service: &str,
        environment: &str,
        names: &[String],
    ) -> Result<Vec<proto::SecretValue>, SecretsError> {
        let scoped = scope(service, environment);
        let mut rows = Vec::new();
        if scoped != service {
            for r in self.store.sealed_secrets(&scoped, names).await? {
                rows.push((scoped.clone(), r));
            }
        }
        for r in self.store.sealed_secrets(service, names).await? {
            rows.push((service.to_owned(), r));
        }
        let mut values = Vec::with_capacity(names.len());
        for name in names {
            let (scope, row) = rows.iter().find(|(_, r)| &r.name == name).ok_or_else(|| {
                SecretsError::Missing {
                    service: service.to_owned(),
                    name: name.clone(),
                }
            })?;
            let value = self.key.open(scope, row)?;
            values.push(proto::SecretValue {
                name: name.clone(),
                value: value.to_vec(),
            });
        }
        Ok(values)
    }
}

/// Where secrets of `service` for `environment` are kept: the service's own name for
/// every environment, `service@environment` for one (never a service name: `@` is not
/// allowed in one). The scope is also the associated data the value is sealed with, so
/// a value moved to another scope does not open.
fn scope(service: &str, environment: &str) -> String {
    if environment.is_empty() {
        service.to_owned()
    } else {
        format!("{service}@{environment}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &[u8] = b"correct-horse-battery-staple-7f3a";

    #[test]
    fn names_follow_the_environment_variable_rule() {
        for ok in ["DB_PASSWORD", "_x", "a1", "API_KEY_2"] {
            assert!(valid_secret_name(ok), "{ok}");
        }
        for bad in ["", "1X", "DB-PASS", "a b", "x.y", "../etc", "É"] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
    }

    #[test]
    fn sealed_values_open_only_in_their_place_and_unaltered() {
        let key = SecretsKey::generate();
        let row = key.seal("web", "DB_PASSWORD", VALUE).unwrap();
        assert_eq!(key.open("web", &row).unwrap().as_slice(), VALUE);
        assert!(
            !row.ciphertext.windows(VALUE.len()).any(|w| w == VALUE),
            "the ciphertext holds the plaintext"
        );
        // A fresh nonce per write: the same value seals differently.
        let again = key.seal("web", "DB_PASSWORD", VALUE).unwrap();
        assert_ne!(again.nonce, row.nonce);
        assert_ne!(again.ciphertext, row.ciphertext);
        // Another service, another name, another key, a flipped bit: all refused.
        assert!(key.open("api", &row).is_err());
        let renamed = SealedRow {
            name: "API_KEY".into(),
            ..row.clone()
        };
        assert!(key.open("web", &renamed).is_err());
        assert!(SecretsKey::generate().open("web", &row).is_err());
        let mut tampered = row.clone();
        tampered.ciphertext[0] ^= 1;
        let err = key.open("web", &tampered).unwrap_err().to_string();
        assert!(err.contains("DB_PASSWORD") && err.contains("cannot be decrypted"));
        assert!(!format!("{row:?}{key:?}").contains("correct-horse"));
    }

    #[test]
    fn the_key_file_is_created_0600_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = insecure_dev_key_path(dir.path());
        assert_eq!(path, dir.path().join(SECRETS_KEY_FILE));
        let key = SecretsKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let row = key.seal("web", "X", VALUE).unwrap();
        let reread = SecretsKey::load_or_create(&path).unwrap();
        assert_eq!(reread.open("web", &row).unwrap().as_slice(), VALUE);
        std::fs::write(&path, b"short").unwrap();
        let err = SecretsKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("5 bytes"), "{err}");
    }

    #[tokio::test]
    async fn the_database_never_holds_the_plaintext() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("drover.db");
        let store = Store::open(&db).await.unwrap();
        let vault = Vault::new(store.clone(), SecretsKey::generate());
        assert!(
            !vault
                .set("web", "", "DB_PASSWORD", VALUE, "alice")
                .await
                .unwrap()
        );
        assert!(
            vault
                .set("web", "", "DB_PASSWORD", VALUE, "bob")
                .await
                .unwrap()
        );
        vault.set("web", "", "API_KEY", b"k", "bob").await.unwrap();
        let listed = vault.list("web", "").await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|(m, _)| m.name.as_str())
                .collect::<Vec<_>>(),
            ["API_KEY", "DB_PASSWORD"]
        );
        assert_eq!(listed[1].0.updated_by, "bob");
        let names = vec!["DB_PASSWORD".to_string(), "TLS_KEY".to_string()];
        assert_eq!(vault.missing("web", "", &names).await.unwrap(), ["TLS_KEY"]);
        let err = vault
            .open_all("web", "", &names)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TLS_KEY") && err.contains("drover secret set web TLS_KEY"));
        let opened = vault.open_all("web", "", &names[..1]).await.unwrap();
        assert_eq!(opened[0].value, VALUE);
        // Invalid input is refused without echoing the value.
        assert!(vault.set("web", "", "BAD-NAME", VALUE, "a").await.is_err());
        let empty = vault.set("web", "", "E", b"", "a").await.unwrap_err();
        assert!(empty.to_string().contains("empty"));
        let big = vec![b'x'; MAX_SECRET_BYTES + 1];
        assert!(vault.set("web", "", "BIG", &big, "a").await.is_err());
        drop((vault, store));
        // Every file SQLite wrote (database, WAL) is free of the plaintext.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(VALUE.len()).any(|w| w == VALUE),
                "plaintext found on disk"
            );
        }
    }

    #[tokio::test]
    async fn a_secret_of_one_environment_is_never_opened_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("drover.db")).await.unwrap();
        let vault = Vault::new(store, SecretsKey::generate());
        let names = vec!["DB_PASSWORD".to_string()];
        vault
            .set("web", "production", "DB_PASSWORD", b"prod-value", "alice")
            .await
            .unwrap();
        // Production gets its own value; staging has none, and is told so.
        let prod = vault.open_all("web", "production", &names).await.unwrap();
        assert_eq!(prod[0].value, b"prod-value");
        assert_eq!(
            vault.missing("web", "staging", &names).await.unwrap(),
            names
        );
        assert!(vault.open_all("web", "staging", &names).await.is_err());
        assert!(vault.open_all("web", "", &names).await.is_err());
        // A value for every environment reaches staging; production keeps its own.
        vault
            .set("web", "", "DB_PASSWORD", b"shared-value", "alice")
            .await
            .unwrap();
        let staging = vault.open_all("web", "staging", &names).await.unwrap();
        assert_eq!(staging[0].value, b"shared-value");
        let prod = vault.open_all("web", "production", &names).await.unwrap();
        assert_eq!(prod[0].value, b"prod-value");
        let listed = vault.list("web", "production").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1, "production");
    }
}
