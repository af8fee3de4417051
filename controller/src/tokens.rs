//! Bearer tokens the controller hands out: one-time join tokens (`drj1.<id>.<secret>`)
//! and operator API tokens (`dra1.<id>.<secret>`).
//!
//! A token is shown once, when it is created. The controller keeps the id (to find the
//! record) and the SHA-256 of the secret part (to check a presented token), never the
//! token itself; the secret never reaches a log, an error message or a `Debug` output.

use std::fmt;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Which kind of token, by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `drj1`: enrolls one agent, once.
    Join,
    /// `dra1`: authenticates an operator or CI job with a role.
    Api,
}

impl TokenKind {
    /// The prefix that starts every token of this kind.
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Join => "drj1",
            TokenKind::Api => "dra1",
        }
    }

    fn what(self) -> &'static str {
        match self {
            TokenKind::Join => "join token",
            TokenKind::Api => "API token",
        }
    }
}

/// Hex digits in a token id (8 random bytes).
const ID_HEX: usize = 16;
/// Hex digits in a token secret (16 random bytes).
const SECRET_HEX: usize = 32;

/// A freshly made token: the text to show once, and what the controller stores.
pub struct NewToken {
    /// The record's key; not secret (it appears in logs).
    pub id: String,
    /// SHA-256 of the secret part, hex: all the controller keeps.
    pub secret_hash: String,
    /// The whole token, shown to the operator once.
    pub token: Zeroizing<String>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Makes a new random token of `kind`.
pub fn generate(kind: TokenKind) -> NewToken {
    let id = hex::encode(rand::random::<[u8; ID_HEX / 2]>());
    let secret = Zeroizing::new(hex::encode(rand::random::<[u8; SECRET_HEX / 2]>()));
    NewToken {
        secret_hash: hash_secret(&secret),
        token: Zeroizing::new(format!("{}.{id}.{}", kind.prefix(), secret.as_str())),
        id,
    }
}

/// A token as presented by a client, split into its parts.
pub struct PresentedToken {
    /// The record's key.
    pub id: String,
    secret: Zeroizing<String>,
}

impl fmt::Debug for PresentedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresentedToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl PresentedToken {
    /// SHA-256 of the secret part, hex, as stored.
    pub fn secret_hash(&self) -> String {
        hash_secret(&self.secret)
    }

    /// Whether the secret part hashes to `stored_hash`; compares in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        constant_time_eq(self.secret_hash().as_bytes(), stored_hash.as_bytes())
    }
}

/// Why a presented token was not even looked up. The message never repeats the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {what} is malformed: expected {prefix}.<{ID_HEX} hex digits>.<{SECRET_HEX} hex digits>"
)]
pub struct MalformedToken {
    what: &'static str,
    prefix: &'static str,
}

/// Splits `text` (surrounding whitespace ignored) into a token of `kind`.
pub fn parse(kind: TokenKind, text: &str) -> Result<PresentedToken, MalformedToken> {
    let malformed = MalformedToken {
        what: kind.what(),
        prefix: kind.prefix(),
    };
    let mut parts = text.trim().split('.');
    let (Some(prefix), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed);
    };
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if prefix != kind.prefix() || !hex(id, ID_HEX) || !hex(secret, SECRET_HEX) {
        return Err(malformed);
    }
    Ok(PresentedToken {
        id: id.to_ascii_lowercase(),
        secret: Zeroizing::new(secret.to_ascii_lowercase()),
    })
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Byte equality whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_matches_only_its_hash() {
        let t = generate(TokenKind::Api);
        assert!(t.token.starts_with("dra1."));
        let p = parse(TokenKind::Api, &format!("  {}\n", t.token.as_str())).unwrap();
        assert_eq!(p.id, t.id);
        assert!(p.matches(&t.secret_hash));
        let other = generate(TokenKind::Api);
        assert!(!p.matches(&other.secret_hash));
        // The stored hash is not the secret, and Debug shows neither.
        assert!(!t.token.contains(&t.secret_hash));
        let secret = t.token.rsplit('.').next().unwrap().to_owned();
        for text in [format!("{t:?}"), format!("{p:?}")] {
            assert!(!text.contains(&secret), "{text}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused_without_echoing_them() {
        let join = generate(TokenKind::Join);
        let api = generate(TokenKind::Api);
        for bad in [
            "",
            "dra1",
            "dra1.abc.def",
            &format!("{}.extra", api.token.as_str()),
            &api.token.replace("dra1", "dra2"),
            &api.token.replace('.', ":"),
            join.token.as_str(),
        ] {
            let e = parse(TokenKind::Api, bad).unwrap_err().to_string();
            assert!(e.contains("API token is malformed"), "{e}");
            // Nothing secret-sized from the input is echoed.
            if bad.len() > 16 {
                assert!(!e.contains(&bad[bad.len() - 16..]), "{e}");
            }
        }
        assert!(parse(TokenKind::Join, &join.token).is_ok());
    }
}
