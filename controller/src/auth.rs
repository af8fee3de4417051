//! Who is calling the operator API, and whether they may.
//!
//! Every operator request is authenticated before it reaches a handler (see [`guard`]):
//! - an `authorization: Bearer dra1.<id>.<secret>` API token, looked up by id, its
//!   secret's SHA-256 compared, expiry and revocation checked; otherwise
//! - the operator certificate the client presented in the TLS handshake
//!   (`Identity::Operator { name, role }`, verified against the fleet CA by rustls).
//!
//! Then the caller's role must allow the method ([`requirement`]); methods not listed
//! need admin. The [`Principal`] is put in the request's extensions for handlers, which
//! record its name in history. Every refusal is logged at warn with the peer address and
//! the reason, never with a token.
//!
//! `--insecure-dev` turns all of this off: every caller is admin, and the name a client
//! sends in `requested_by` is what history records.

pub mod guard;

use std::fmt;
use std::net::SocketAddr;

use drover_shared::tls::{Identity, Role, TlsConnectInfo};
use tonic::{Code, Status};

use crate::store::{Store, StoreError, now_ms};
use crate::tokens::{self, TokenKind};

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// An operator certificate from the fleet CA.
    Certificate,
    /// An API token.
    Token,
    /// Nothing: the controller runs with `--insecure-dev`.
    InsecureDev,
}

impl AuthMethod {
    /// The form shown by `drover whoami`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Certificate => "certificate",
            AuthMethod::Token => "token",
            AuthMethod::InsecureDev => "insecure-dev",
        }
    }
}

/// An authenticated caller of the operator API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who: the certificate's operator name or the API token's name.
    pub name: String,
    /// What they may do.
    pub role: Role,
    /// How they authenticated.
    pub method: AuthMethod,
}

impl Principal {
    /// The caller of an `--insecure-dev` controller.
    pub fn insecure_dev() -> Self {
        Self {
            name: "anonymous".to_owned(),
            role: Role::Admin,
            method: AuthMethod::InsecureDev,
        }
    }

    /// The name history records for an action: the authenticated name; only on an
    /// `--insecure-dev` controller the name the client `claimed` (or "unknown").
    pub fn history_name(&self, claimed: &str) -> String {
        match self.method {
            AuthMethod::InsecureDev if !claimed.trim().is_empty() => claimed.trim().to_owned(),
            AuthMethod::InsecureDev => "unknown".to_owned(),
            AuthMethod::Certificate | AuthMethod::Token => self.name.clone(),
        }
    }

    /// Reads the principal [`guard`] attached to `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
        request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!("an operator request reached its handler unauthenticated");
                Status::internal("the request was not authenticated; see the controller's log")
            })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// What an operator method needs: the least role, and the action in words for refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    /// The least role allowed.
    pub role: Role,
    /// The action, completing "alice may not ...".
    pub action: &'static str,
}

/// The requirement of operator method `method` (the last segment of the gRPC path).
/// Anything not listed here needs admin: a new method is closed until it is listed.
pub fn requirement(method: &str) -> Requirement {
    let (role, action) = match method {
        "ListHosts" => (Role::Viewer, "list hosts"),
        "GetDeployment" => (Role::Viewer, "read deployments"),
        "ListDeployments" => (Role::Viewer, "read the deploy history"),
        "Watch" => (Role::Viewer, "watch deployments"),
        "Logs" => (Role::Viewer, "read container logs"),
        "ListSecrets" => (Role::Viewer, "list secret names"),
        "WhoAmI" => (Role::Viewer, "ask who they are"),
        "Plan" => (Role::Viewer, "plan deploys and rollbacks"),
        "GetSlo" => (Role::Viewer, "read error budgets"),
        "ListReleases" => (Role::Viewer, "list releases"),
        "GetDora" => (Role::Viewer, "read delivery metrics"),
        "Deploy" => (Role::Deployer, "deploy"),
        "Rollback" => (Role::Deployer, "roll back"),
        "CreateRelease" => (Role::Deployer, "create releases"),
        "Control" => (
            Role::Deployer,
            "promote, pause, resume, abort, cancel or approve deployments",
        ),
        "RemoveHost" => (Role::Admin, "remove hosts"),
        "CreateJoinToken" => (Role::Admin, "create join tokens"),
        "CreateApiToken" => (Role::Admin, "create API tokens"),
        "ListApiTokens" => (Role::Admin, "list API tokens"),
        "RevokeApiToken" => (Role::Admin, "revoke API tokens"),
        "SetSecret" => (Role::Admin, "set secrets"),
        _ => (Role::Admin, "call this method"),
    };
    Requirement { role, action }
}

/// A refused request: the gRPC code, and a message for the client that is also the
/// logged reason. Never holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// UNAUTHENTICATED (who are you?) or PERMISSION_DENIED (not you).
    pub code: Code,
    /// What failed and what to do about it.
    pub message: String,
}

impl Refusal {
    fn unauthenticated(message: impl Into<String>) -> Self {
        Self {
            code: Code::Unauthenticated,
            message: message.into(),
        }
    }

    fn denied(message: impl Into<String>) -> Self {
        Self {
            code: Code::PermissionDenied,
            message: message.into(),
        }
    }

    /// The status sent to the client.
    pub fn status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

/// Whether `principal` may do what `needed` describes.
pub fn authorize(principal: &Principal, needed: Requirement) -> Result<(), Refusal> {
    if principal.role.allows(needed.role) {
        return Ok(());
    }
    Err(Refusal::denied(format!(
        "{principal} may not {}: needs {}",
        needed.action, needed.role
    )))
}

/// What the connection and the request headers say about the caller.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The TLS connection, if the request came over one.
    pub tls: Option<TlsConnectInfo>,
    /// The `authorization` header, if any (the whole value; never logged).
    pub authorization: Option<String>,
}

impl Credentials {
    /// The peer address, for logs.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|t| t.remote_addr)
    }
}

/// Authenticates operator requests. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    /// `--insecure-dev`: everyone is admin.
    InsecureDev,
    /// Certificates and API tokens (looked up in the store).
    Verified(Store),
}

/// Why authentication could not be decided (the database failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot check the API token: {0}")]
pub struct AuthError(#[from] StoreError);

impl Authenticator {
    /// Everyone is admin (`--insecure-dev`).
    pub fn insecure_dev() -> Self {
        Self {
            mode: Mode::InsecureDev,
        }
    }

    /// Certificates and API tokens from `store`.
    pub fn verified(store: Store) -> Self {
        Self {
            mode: Mode::Verified(store),
        }
    }

    /// Who the caller is: an API token when one is sent, else the client certificate.
    pub async fn authenticate(
        &self,
        creds: &Credentials,
    ) -> Result<Result<Principal, Refusal>, AuthError> {
        let store = match &self.mode {
            Mode::InsecureDev => return Ok(Ok(Principal::insecure_dev())),
            Mode::Verified(store) => store,
        };
        if let Some(header) = &creds.authorization {
            return self::token(store, header).await;
        }
        Ok(certificate(creds.tls.as_ref()))
    }
}

impl Authenticator {
    /// The principal API token `token_id` names now, if it still holds (not revoked,
    /// expired or removed): a web session made from it is checked again with this.
    pub async fn recheck(&self, token_id: &str) -> Result<Result<Principal, Refusal>, AuthError> {
        let store = match &self.mode {
            Mode::InsecureDev => return Ok(Ok(Principal::insecure_dev())),
            Mode::Verified(store) => store,
        };
        Ok(match store.api_token(token_id).await? {
            None => Err(Refusal::unauthenticated(format!(
                "the API token (id {token_id}) no longer exists; sign in with another"
            ))),
            Some(record) => standing(&record, now_ms()),
        })
    }

    /// Whether every caller is admin (`--insecure-dev`).
    pub fn is_insecure_dev(&self) -> bool {
        matches!(self.mode, Mode::InsecureDev)
    }
}

/// The principal of a client certificate, or why there is none.
fn certificate(tls: Option<&TlsConnectInfo>) -> Result<Principal, Refusal> {
    let Some(peer) = tls.and_then(|t| t.peer.as_ref()) else {
        return Err(Refusal::unauthenticated(
            "no client certificate or API token: present an operator certificate (--cert/--key) or an API token (DROVER_TOKEN or --token-file)",
        ));
    };
    match &peer.identity {
        Some(Identity::Operator { name, role }) => Ok(Principal {
            name: name.clone(),
            role: *role,
            method: AuthMethod::Certificate,
        }),
        Some(other) => Err(Refusal::denied(format!(
            "the client certificate is for {other}, not an operator: it cannot be used on the operator API (serial {})",
            peer.serial
        ))),
        None => Err(Refusal::denied(format!(
            "the client certificate (serial {}) carries no Drover identity",
            peer.serial
        ))),
    }
}

/// The principal of an `authorization` header, or why there is none.
async fn token(store: &Store, header: &str) -> Result<Result<Principal, Refusal>, AuthError> {
    let Some(text) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Ok(Err(Refusal::unauthenticated(
            "the authorization header is not `Bearer <API token>`",
        )));
    };
    let presented = match tokens::parse(TokenKind::Api, text) {
        Ok(p) => p,
        Err(e) => return Ok(Err(Refusal::unauthenticated(e.to_string()))),
    };
    let record = store.api_token(&presented.id).await?;
    Ok(judge_token(&presented, record.as_ref(), now_ms()))
}

/// Whether a presented API token is good, given its stored record (pure, for tests).
fn judge_token(
    presented: &tokens::PresentedToken,
    record: Option<&crate::store::ApiToken>,
    now: u64,
) -> Result<Principal, Refusal> {
    let unknown = || {
        Refusal::unauthenticated(format!(
            "unknown API token (id {}): check DROVER_TOKEN or --token-file, or ask an admin for a new one (`drover api-token create`)",
            presented.id
        ))
    };
    let Some(record) = record else {
        return Err(unknown());
    };
    if !presented.matches(&record.secret_hash) {
        return Err(unknown());
    }
    standing(record, now)
}

/// The principal of a token record that is neither revoked nor expired at `now`.
fn standing(record: &crate::store::ApiToken, now: u64) -> Result<Principal, Refusal> {
    if record.revoked_ms.is_some() {
        return Err(Refusal::unauthenticated(format!(
            "the API token {:?} (id {}) was revoked; ask an admin for a new one",
            record.name, record.id
        )));
    }
    if let Some(expires) = record.expires_ms
        && expires <= now
    {
        return Err(Refusal::unauthenticated(format!(
            "the API token {:?} (id {}) expired at {}; ask an admin for a new one (`drover api-token create`)",
            record.name,
            record.id,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires)
            )
        )));
    }
    Ok(Principal {
        name: record.name.clone(),
        role: record.role,
        method: AuthMethod::Token,
    })
}

#[cfg(test)]
mod tests;
