//! The operator API's security RPCs: removing hosts, join and API tokens, secrets.
//! Role checks happened before (see `crate::auth`); these validate input, act, and log
//! who did what, never a token or a secret value.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_proto::v1 as proto;
use drover_shared::tls::{Role, valid_name};
use tonic::{Response, Status};
use tracing::info;
use zeroize::Zeroize;

use super::{OperatorService, store_status};
use crate::auth::Principal;
use crate::secrets::SecretsError;
use crate::spec::valid_service_name;
use crate::store::{ApiToken, JoinToken, now_ms};
use crate::tokens::{self, TokenKind};

/// Lifetime of a join token created without `--ttl`.
pub const DEFAULT_JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The longest a join token may live: it is a bearer credential for a fleet seat.
pub const MAX_JOIN_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The status for a secrets failure: the message names the secret, never its value.
pub(crate) fn secrets_status(e: SecretsError) -> Status {
    match e {
        SecretsError::InvalidName(_) | SecretsError::InvalidValue { .. } => {
            Status::invalid_argument(e.to_string())
        }
        SecretsError::Missing { .. } | SecretsError::Undecryptable { .. } => {
            Status::failed_precondition(e.to_string())
        }
        SecretsError::Store(s) => store_status(s),
        other => {
            tracing::error!(error = %other, "secrets failure");
            Status::internal("the controller could not store the secret; see the controller's log")
        }
    }
}

fn check_service(service: &str) -> Result<(), Status> {
    if valid_service_name(service) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "invalid service name {service:?}: lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"
        )))
    }
}

fn expiry_ms(ttl: Duration) -> u64 {
    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl OperatorService {
    pub(super) async fn remove_host_as(
        &self,
        who: &Principal,
        r: proto::RemoveHostRequest,
    ) -> Result<Response<proto::RemoveHostResponse>, Status> {
        let host = r.name.trim();
        if host.is_empty() {
            return Err(Status::invalid_argument("no host name given"));
        }
        // Revoke first: from here on a reconnect is refused.
        let removal = self
            .deployer
            .store()
            .remove_host(host)
            .await
            .map_err(store_status)?;
        let known = self.hub.host(host).is_some();
        let was_connected = self.hub.remove(host);
        self.deployer.forget_host(host);
        if !known && !removal.was_enrolled {
            return Err(Status::not_found(format!(
                "no host {host:?}: it is neither enrolled nor connected (see `drover hosts`)"
            )));
        }
        info!(host = %host, by = %who.name, revoked_certificates = removal.revoked, was_connected, "host removed from the fleet");
        Ok(Response::new(proto::RemoveHostResponse {
            revoked_certificates: removal.revoked,
            was_connected,
        }))
    }

    pub(super) async fn create_join_token_as(
        &self,
        who: &Principal,
        r: proto::CreateJoinTokenRequest,
    ) -> Result<Response<proto::CreateJoinTokenResponse>, Status> {
        let ttl = match r.ttl_ms {
            0 => DEFAULT_JOIN_TOKEN_TTL,
            ms => Duration::from_millis(ms),
        };
        if ttl > MAX_JOIN_TOKEN_TTL {
            return Err(Status::invalid_argument(format!(
                "a join token may live at most {}; asked for {}",
                humantime::format_duration(MAX_JOIN_TOKEN_TTL),
                humantime::format_duration(ttl)
            )));
        }
        let mut labels = BTreeMap::new();
        for (k, v) in r.labels {
            let (k, v) = drover_shared::labels::parse_label(&format!("{k}={v}"))
                .map_err(Status::invalid_argument)?;
            labels.insert(k, v);
        }
        let new = tokens::generate(TokenKind::Join);
        let expires_ms = expiry_ms(ttl);
        self.deployer
            .store()
            .create_join_token(JoinToken {
                id: new.id.clone(),
                secret_hash: new.secret_hash.clone(),
                labels: labels.clone(),
                created_by: who.name.clone(),
                expires_ms,
            })
            .await
            .map_err(store_status)?;
        info!(token = %new.id, by = %who.name, expires = %rfc3339(expires_ms), ?labels, "created a join token");
        Ok(Response::new(proto::CreateJoinTokenResponse {
            token: new.token.to_string(),
            expires_at_ms: expires_ms,
        }))
    }

    pub(super) async fn create_api_token_as(
        &self,
        who: &Principal,
        r: proto::CreateApiTokenRequest,
    ) -> Result<Response<proto::CreateApiTokenResponse>, Status> {
        let name = r.name.trim();
        if !valid_name(name) {
            return Err(Status::invalid_argument(format!(
                "invalid token name {name:?}: 1 to 128 letters, digits, '.', '-', '_' or '@', starting with a letter or digit"
            )));
        }
        let role: Role = r.role.trim().parse().map_err(Status::invalid_argument)?;
        let expires_ms = (r.ttl_ms > 0).then(|| expiry_ms(Duration::from_millis(r.ttl_ms)));
        let new = tokens::generate(TokenKind::Api);
        self.deployer
            .store()
            .create_api_token(ApiToken {
                id: new.id.clone(),
                name: name.to_owned(),
                role,
                secret_hash: new.secret_hash.clone(),
                created_by: who.name.clone(),
                expires_ms,
                revoked_ms: None,
            })
            .await
            .map_err(store_status)?;
        info!(token = %new.id, name = %name, %role, by = %who.name, expires = %expires_ms.map_or_else(|| "never".to_owned(), rfc3339), "created an API token");
        Ok(Response::new(proto::CreateApiTokenResponse {
            token: new.token.to_string(),
            expires_at_ms: expires_ms.unwrap_or(0),
        }))
    }

    pub(super) async fn list_api_tokens_inner(
        &self,
    ) -> Result<Response<proto::ListApiTokensResponse>, Status> {
        let tokens = self
            .deployer
            .store()
            .api_tokens()
            .await
            .map_err(store_status)?
            .into_iter()
            .map(|(t, created_ms)| proto::ApiTokenInfo {
                id: t.id,
                name: t.name,
                role: t.role.as_str().to_owned(),
                created_by: t.created_by,
                created_at_ms: created_ms,
                expires_at_ms: t.expires_ms.unwrap_or(0),
                revoked_at_ms: t.revoked_ms.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(proto::ListApiTokensResponse { tokens }))
    }

    pub(super) async fn revoke_api_token_as(
        &self,
        who: &Principal,
        r: proto::RevokeApiTokenRequest,
    ) -> Result<Response<proto::RevokeApiTokenResponse>, Status> {
        let key = r.id_or_name.trim();
        if key.is_empty() {
            return Err(Status::invalid_argument(
                "name the token to revoke: its id (see `drover api-token list`) or its name",
            ));
        }
        let revoked = self
            .deployer
            .store()
            .revoke_api_tokens(key)
            .await
            .map_err(store_status)?;
        if revoked == 0 {
            return Err(Status::not_found(format!(
                "no unrevoked API token has the id or name {key:?}; see `drover api-token list`"
            )));
        }
        info!(token = %key, revoked, by = %who.name, "revoked API tokens");
        Ok(Response::new(proto::RevokeApiTokenResponse { revoked }))
    }

    pub(super) async fn set_secret_as(
        &self,
        who: &Principal,
        mut r: proto::SetSecretRequest,
    ) -> Result<Response<proto::SetSecretResponse>, Status> {
        let result = async {
            check_service(&r.service)?;
            check_environment(&r.environment)?;
            self.vault
                .set(&r.service, &r.environment, &r.name, &r.value, &who.name)
                .await
                .map_err(secrets_status)
        }
        .await;
        r.value.zeroize();
        let replaced = result?;
        info!(service = %r.service, environment = %r.environment, secret = %r.name, by = %who.name, replaced, "secret set");
        Ok(Response::new(proto::SetSecretResponse { replaced }))
    }

    pub(super) async fn list_secrets_of(
        &self,
        r: proto::ListSecretsRequest,
    ) -> Result<Response<proto::ListSecretsResponse>, Status> {
        check_service(&r.service)?;
        check_environment(&r.environment)?;
        let secrets = self
            .vault
            .list(&r.service, &r.environment)
            .await
            .map_err(secrets_status)?
            .into_iter()
            .map(|(m, environment)| proto::SecretInfo {
                name: m.name,
                updated_at_ms: m.updated_ms,
                updated_by: m.updated_by,
                environment,
            })
            .collect();
        Ok(Response::new(proto::ListSecretsResponse { secrets }))
    }
}

/// Refuses an environment name no spec could define (empty: every environment).
fn check_environment(environment: &str) -> Result<(), Status> {
    if environment.is_empty() || crate::spec::valid_service_name(environment) {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "{environment:?} is not an environment name: use the name of an [env.NAME] section of the spec"
    )))
}
