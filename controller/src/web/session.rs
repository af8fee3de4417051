//! Web sessions: an API token pasted once at sign-in is exchanged for a random session
//! id, kept here in memory with its expiry; the browser holds only the id, in an
//! HttpOnly, Secure, SameSite=Strict cookie. The token itself is never kept.
//!
//! The cookie is `<token id>.<expires ms>.<random id>.<mac>`, sealed with a key that
//! lives in the state directory (`web-session.key`), or, for replicas on PostgreSQL, is
//! derived from the secrets key they all hold, so that a controller restart or a
//! failover does not sign every browser out: a cookie that is not in memory but whose
//! MAC holds is taken back after the token's record is checked again (revoked, expired
//! or removed tokens are refused). Sessions signed out before a restart are remembered only in
//! memory; their cookie was deleted by the browser, and they expire at the latest
//! [`SESSION_TTL`] after sign-in.
//!
//! Each session has a CSRF token, derived from its id with the same key; every POST
//! must carry it and it is compared in constant time.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::auth::Principal;

/// How long a session lasts after sign-in, whatever happens.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a session lasts without a request.
pub const IDLE_TTL: Duration = Duration::from_secs(30 * 60);
/// The cookie's name.
pub const COOKIE: &str = "drover_session";

/// The key file's name, next to the database.
pub const KEY_FILE: &str = "web-session.key";

/// Why the session key could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot load or create the web session key {path}: {source}; check the database directory's permissions"
)]
pub struct SessionKeyError {
    /// The key file.
    path: String,
    /// Why.
    #[source]
    source: std::io::Error,
}

/// The key that seals session cookies and derives CSRF tokens. Its `Debug` hides it.
#[derive(Clone)]
pub struct SessionKey(Arc<Zeroizing<[u8; 32]>>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// A fresh random key (tests, and the first start).
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        Self(Arc::new(k))
    }

    /// The key replicas on one database share: derived from the secrets key, which
    /// every replica holds (the same PKI directory), so a cookie sealed by one is taken
    /// back by the next leader after a failover.
    pub fn from_secrets(secrets: &crate::secrets::SecretsKey) -> Self {
        Self(Arc::new(secrets.derive("drover web session key v1")))
    }

    /// Reads `path`, or writes a new key there (mode 0600) when it does not exist.
    /// Blocking: call from `spawn_blocking`.
    pub fn load_or_create(path: &Path) -> Result<Self, SessionKeyError> {
        let err = |source| SessionKeyError {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&bytes);
                Ok(Self(Arc::new(k)))
            }
            Ok(_) => Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not 32 bytes; delete it to sign every browser out and make a new one",
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let key = Self::generate();
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                f.write_all(&key.0[..]).map_err(err)?;
                Ok(key)
            }
            Err(e) => Err(err(e)),
        }
    }

    fn mac(&self, parts: &[&str]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0[..]).expect("any key length");
        for p in parts {
            mac.update(p.as_bytes());
            mac.update(b"|");
        }
        mac
    }

    fn tag(&self, parts: &[&str]) -> String {
        hex::encode(self.mac(parts).finalize().into_bytes())
    }
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in (the token's name and role).
    pub principal: Principal,
    /// The API token's public id, to check it again (revocation).
    pub token_id: String,
    /// The random part of the cookie; the CSRF token is derived from it.
    pub id: String,
    /// The CSRF token forms must carry.
    pub csrf: String,
    /// Unix ms after which the session is over.
    pub expires_ms: u64,
    /// Unix ms of the last request.
    last_seen_ms: u64,
    /// Unix ms the token's record was last checked.
    pub checked_ms: u64,
}

/// A cookie, parsed and its MAC checked; not yet known to be signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The API token's public id.
    pub token_id: String,
    /// When the session ends.
    pub expires_ms: u64,
    /// The random session id.
    pub id: String,
}

/// What a cookie says, against the sessions in memory.
#[derive(Debug)]
pub enum Lookup {
    /// A live session.
    Live(Session),
    /// A sealed cookie this process does not know (it restarted): check the token, then
    /// [`Sessions::readmit`].
    Unknown(Sealed),
    /// No session: no cookie, a forged one, an expired or signed-out one.
    None,
}

/// The sessions of this controller. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Sessions {
    key: SessionKey,
    inner: Arc<Mutex<Table>>,
}

#[derive(Debug, Default)]
struct Table {
    live: HashMap<String, Session>,
    /// Signed-out ids, until they would have expired.
    signed_out: HashMap<String, u64>,
}

impl Sessions {
    /// No sessions yet; cookies sealed with `key`.
    pub fn new(key: SessionKey) -> Self {
        Self {
            key,
            inner: Arc::new(Mutex::new(Table::default())),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session for `principal` (signed in with token `token_id`) at `now_ms`;
    /// returns it and the cookie value.
    pub fn start(&self, principal: Principal, token_id: &str, now_ms: u64) -> (Session, String) {
        let mut raw = [0u8; 16];
        rand::rng().fill_bytes(&mut raw);
        let sealed = Sealed {
            token_id: token_id.to_owned(),
            expires_ms: now_ms + SESSION_TTL.as_millis() as u64,
            id: hex::encode(raw),
        };
        let cookie = self.seal(&sealed);
        let session = self.admit(principal, sealed, now_ms);
        (session, cookie)
    }

    /// Takes back a session this process forgot (a restart), once its token is known
    /// to still be good.
    pub fn readmit(&self, principal: Principal, sealed: Sealed, now_ms: u64) -> Session {
        self.admit(principal, sealed, now_ms)
    }

    fn admit(&self, principal: Principal, sealed: Sealed, now_ms: u64) -> Session {
        let session = Session {
            principal,
            csrf: self.key.tag(&["csrf", &sealed.id]),
            token_id: sealed.token_id,
            id: sealed.id,
            expires_ms: sealed.expires_ms,
            last_seen_ms: now_ms,
            checked_ms: now_ms,
        };
        let mut t = self.table();
        t.live.retain(|_, s| s.expires_ms > now_ms);
        t.signed_out.retain(|_, exp| *exp > now_ms);
        t.live.insert(session.id.clone(), session.clone());
        session
    }

    fn seal(&self, s: &Sealed) -> String {
        let expires = s.expires_ms.to_string();
        let tag = self.key.tag(&["session", &s.token_id, &expires, &s.id]);
        format!("{}.{expires}.{}.{tag}", s.token_id, s.id)
    }

    /// Parses `cookie` and checks its MAC (in constant time) and expiry.
    pub fn unseal(&self, cookie: &str, now_ms: u64) -> Option<Sealed> {
        let mut parts = cookie.rsplitn(4, '.');
        let (tag, id, expires, token_id) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let tag = hex::decode(tag).ok()?;
        self.key
            .mac(&["session", token_id, expires, id])
            .verify_slice(&tag)
            .ok()?;
        let expires_ms: u64 = expires.parse().ok()?;
        (expires_ms > now_ms).then(|| Sealed {
            token_id: token_id.to_owned(),
            expires_ms,
            id: id.to_owned(),
        })
    }

    /// The session of `cookie` at `now_ms`, touching its idle timer.
    pub fn lookup(&self, cookie: Option<&str>, now_ms: u64) -> Lookup {
        let Some(sealed) = cookie.and_then(|c| self.unseal(c, now_ms)) else {
            return Lookup::None;
        };
        let mut t = self.table();
        if t.signed_out.contains_key(&sealed.id) {
            return Lookup::None;
        }
        match t.live.get_mut(&sealed.id) {
            Some(s) if now_ms.saturating_sub(s.last_seen_ms) > IDLE_TTL.as_millis() as u64 => {
                let id = sealed.id.clone();
                t.live.remove(&id);
                t.signed_out.insert(id, sealed.expires_ms);
                Lookup::None
            }
            Some(s) => {
                s.last_seen_ms = now_ms;
                Lookup::Live(s.clone())
            }
            None => Lookup::Unknown(sealed),
        }
    }

    /// The token of session `id` was checked again at `now_ms`.
    pub fn checked(&self, id: &str, now_ms: u64) {
        if let Some(s) = self.table().live.get_mut(id) {
            s.checked_ms = now_ms;
        }
    }

    /// Ends session `id` (sign-out, or its token no longer holds).
    pub fn end(&self, id: &str, expires_ms: u64) {
        let mut t = self.table();
        t.live.remove(id);
        t.signed_out.insert(id.to_owned(), expires_ms);
    }

    /// Sessions in memory (for tests and logs).
    pub fn live(&self) -> usize {
        self.table().live.len()
    }
}

/// Whether `presented` is the session's CSRF token, compared in constant time.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    !presented.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_shared::tls::Role;

    fn alice() -> Principal {
        Principal {
            name: "alice".into(),
            role: Role::Deployer,
            method: crate::auth::AuthMethod::Token,
        }
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn replicas_holding_one_secrets_key_take_each_others_cookies_back() {
        let secrets = crate::secrets::SecretsKey::generate();
        let leader = Sessions::new(SessionKey::from_secrets(&secrets));
        let (_, cookie) = leader.start(alice(), "tok1", T0);
        // The next leader (a process of its own, the same secrets key): unknown in its
        // memory, its MAC holds, so it is readmitted once the token is checked.
        let next = Sessions::new(SessionKey::from_secrets(&secrets));
        assert!(matches!(
            next.lookup(Some(&cookie), T0 + 1000),
            Lookup::Unknown(s) if s.token_id == "tok1"
        ));
        // Another secrets key derives another session key: the cookie is nothing there.
        let other = Sessions::new(SessionKey::from_secrets(
            &crate::secrets::SecretsKey::generate(),
        ));
        assert!(matches!(
            other.lookup(Some(&cookie), T0 + 1000),
            Lookup::None
        ));
    }

    #[test]
    fn a_started_session_is_found_by_its_cookie_and_only_by_it() {
        let s = Sessions::new(SessionKey::generate());
        let (session, cookie) = s.start(alice(), "tok1", T0);
        match s.lookup(Some(&cookie), T0 + 1000) {
            Lookup::Live(found) => assert_eq!(found.id, session.id),
            other => panic!("{other:?}"),
        }
        let forged = cookie.replace("tok1", "tok2");
        assert!(matches!(s.lookup(Some(&forged), T0), Lookup::None));
        let mut flipped = cookie.clone();
        let last = flipped.pop().unwrap();
        flipped.push(if last == '0' { '1' } else { '0' });
        assert!(matches!(s.lookup(Some(&flipped), T0), Lookup::None));
        assert!(matches!(s.lookup(Some("garbage"), T0), Lookup::None));
        assert!(matches!(s.lookup(None, T0), Lookup::None));
    }

    #[test]
    fn a_session_expires_after_its_ttl_and_when_idle() {
        let s = Sessions::new(SessionKey::generate());
        let (_, cookie) = s.start(alice(), "tok1", T0);
        let ttl = SESSION_TTL.as_millis() as u64;
        let idle = IDLE_TTL.as_millis() as u64;
        // Kept alive by requests within the idle time...
        let mut now = T0;
        while now + idle < T0 + ttl {
            now += idle - 1;
            if now >= T0 + ttl {
                break;
            }
            assert!(matches!(s.lookup(Some(&cookie), now), Lookup::Live(_)));
        }
        // ...but never past the TTL.
        assert!(matches!(s.lookup(Some(&cookie), T0 + ttl), Lookup::None));
        let (_, idle_cookie) = s.start(alice(), "tok1", T0);
        assert!(matches!(
            s.lookup(Some(&idle_cookie), T0 + idle + 1),
            Lookup::None
        ));
        // Idle expiry is final, even for the same cookie later.
        assert!(matches!(s.lookup(Some(&idle_cookie), T0 + 2), Lookup::None));
    }

    #[test]
    fn a_restart_forgets_sessions_but_the_sealed_cookie_can_be_readmitted() {
        let key = SessionKey::generate();
        let before = Sessions::new(key.clone());
        let (session, cookie) = before.start(alice(), "tok1", T0);
        let after = Sessions::new(key);
        let Lookup::Unknown(sealed) = after.lookup(Some(&cookie), T0 + 5) else {
            panic!("a sealed cookie of another process is unknown, not refused");
        };
        assert_eq!(sealed.token_id, "tok1");
        let again = after.readmit(alice(), sealed, T0 + 5);
        assert_eq!(
            again.csrf, session.csrf,
            "the CSRF token survives a restart"
        );
        let other_key = Sessions::new(SessionKey::generate());
        assert!(matches!(other_key.lookup(Some(&cookie), T0), Lookup::None));
    }

    #[test]
    fn a_signed_out_session_stays_out() {
        let s = Sessions::new(SessionKey::generate());
        let (session, cookie) = s.start(alice(), "tok1", T0);
        s.end(&session.id, session.expires_ms);
        assert!(matches!(s.lookup(Some(&cookie), T0 + 1), Lookup::None));
        assert_eq!(s.live(), 0);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_must_match_exactly() {
        let s = Sessions::new(SessionKey::generate());
        let (a, _) = s.start(alice(), "tok1", T0);
        let (b, _) = s.start(alice(), "tok1", T0);
        assert_ne!(a.csrf, b.csrf);
        assert!(csrf_matches(&a, &a.csrf));
        assert!(!csrf_matches(&a, &b.csrf));
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &a.csrf[..10]));
    }

    #[test]
    fn the_key_file_is_made_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = SessionKey::load_or_create(&path).unwrap();
        let b = SessionKey::load_or_create(&path).unwrap();
        assert_eq!(a.0[..], b.0[..]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(format!("{a:?}"), "SessionKey(..)");
    }
}
