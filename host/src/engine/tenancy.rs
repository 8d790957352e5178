//! Tenants, their limits and API keys: issuing, checking and revoking keys.
//!
//! A key is `ffk_<key id>_<secret>`: the key id (a uuid, in the clear) finds the
//! stored row with one primary-key probe, and the secret (256 random bits) is
//! checked against its stored sha256 in constant time. The secret is shown once,
//! at creation, and never stored.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::Engine;
use crate::backend::NewApiKey;
use crate::error::{EngineError, Result};
use crate::model::ApiKeyId;
use crate::model::{ApiKey, Tenant, TenantId, TenantLimits};

const KEY_PREFIX: &str = "ffk_";

/// A newly issued key: the secret `token` is only ever available here.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IssuedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    pub token: String,
}

impl Engine {
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        self.check_name("tenant name", name)?;
        self.backend.create_tenant(name).await
    }

    pub async fn set_tenant_limits(
        &self,
        tenant: TenantId,
        limits: TenantLimits,
    ) -> Result<Tenant> {
        self.check_limits(&limits)?;
        let updated = self.backend.set_tenant_limits(tenant, &limits).await?;
        self.limits_cache.put(tenant, updated.limits);
        Ok(updated)
    }

    /// Every limit given must be a positive number that storage can hold.
    pub fn check_limits(&self, limits: &TenantLimits) -> Result<()> {
        let positive = [
            ("max_running", limits.max_running.map(u64::from)),
            ("max_queued", limits.max_queued.map(u64::from)),
            ("max_input_bytes", limits.max_input_bytes.map(u64::from)),
            (
                "max_component_bytes",
                limits.max_component_bytes.map(u64::from),
            ),
            ("max_task_timeout_ms", limits.max_task_timeout_ms),
            ("max_memory_mib", limits.max_memory_mib.map(u64::from)),
            (
                "max_starts_per_window",
                limits.max_starts_per_window.map(u64::from),
            ),
            ("start_window_ms", limits.start_window_ms),
            ("max_result_bytes", limits.max_result_bytes.map(u64::from)),
            (
                "max_frame_bytes_per_attempt",
                limits.max_frame_bytes_per_attempt,
            ),
            (
                "max_children_per_execution",
                limits.max_children_per_execution.map(u64::from),
            ),
            ("max_flow_members", limits.max_flow_members.map(u64::from)),
            (
                "max_waitpoints_per_execution",
                limits.max_waitpoints_per_execution.map(u64::from),
            ),
        ];
        if limits
            .max_stored_bytes
            .is_some_and(|v| v == 0 || v > i64::MAX as u64)
        {
            return Err(EngineError::invalid(
                "limits.max_stored_bytes",
                format!("must be between 1 and {}", i64::MAX),
            ));
        }
        for (field, value) in positive {
            if let Some(v) = value {
                if v == 0 || v > i32::MAX as u64 {
                    return Err(EngineError::invalid(
                        format!("limits.{field}"),
                        format!("must be between 1 and {}", i32::MAX),
                    ));
                }
            }
        }
        if limits.start_window_ms.is_some() && limits.max_starts_per_window.is_none() {
            return Err(EngineError::invalid(
                "limits.start_window_ms",
                "a start window needs max_starts_per_window",
            ));
        }
        Ok(())
    }

    /// Issue a key for `tenant`. The returned token is the only copy.
    pub async fn issue_api_key(&self, tenant: TenantId, name: &str) -> Result<IssuedKey> {
        self.check_name("key name", name)?;
        let key_id = ApiKeyId::new();
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let secret = hex::encode(secret);
        let secret_sha256 = Sha256::digest(secret.as_bytes());
        let new_key = NewApiKey {
            id: key_id,
            name,
            secret_sha256: &secret_sha256,
        };
        let key = self.backend.create_api_key(tenant, new_key).await?;
        Ok(IssuedKey {
            key,
            token: format!("{KEY_PREFIX}{}_{secret}", key_id.simple()),
        })
    }

    pub async fn revoke_api_key(&self, tenant: TenantId, key_id: ApiKeyId) -> Result<ApiKey> {
        self.backend.revoke_api_key(tenant, key_id).await
    }

    /// The tenant a presented token belongs to. Every failure is the same
    /// `Unauthenticated` answer, so a caller learns nothing about which keys exist.
    pub async fn authenticate(&self, token: &str) -> Result<TenantId> {
        Ok(self.authenticate_key(token).await?.0)
    }

    /// [`Engine::authenticate`], with the id of the key presented.
    pub async fn authenticate_key(&self, token: &str) -> Result<(TenantId, ApiKeyId)> {
        let denied = EngineError::Unauthenticated("invalid or revoked API key");
        let Some((key_id, secret)) = parse_token(token) else {
            return Err(denied);
        };
        let Some(stored) = self.backend.find_api_key(key_id).await? else {
            return Err(denied);
        };
        if !secret_matches(secret, &stored.secret_sha256) || stored.key.revoked_at.is_some() {
            return Err(denied);
        }
        Ok((stored.key.tenant_id, key_id))
    }

    /// The tenant of a key that exists and is not revoked (a dashboard
    /// session re-checks its key this way on every request).
    pub async fn api_key_tenant(&self, key_id: ApiKeyId) -> Result<Option<TenantId>> {
        Ok(self
            .backend
            .find_api_key(key_id)
            .await?
            .filter(|stored| stored.key.revoked_at.is_none())
            .map(|stored| stored.key.tenant_id))
    }
}

/// Whether `secret` hashes to `sha256`, compared in constant time (for API
/// keys and the admin token alike).
pub fn secret_matches(secret: &str, sha256: &[u8]) -> bool {
    Sha256::digest(secret.as_bytes())
        .as_slice()
        .ct_eq(sha256)
        .into()
}

fn parse_token(token: &str) -> Option<(ApiKeyId, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 32 || secret.len() != 64 {
        return None;
    }
    Some((ApiKeyId(Uuid::try_parse(id).ok()?), secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let id = ApiKeyId::new();
        let secret = "ab".repeat(32);
        let token = format!("ffk_{}_{secret}", id.simple());
        assert_eq!(parse_token(&token), Some((id, secret.as_str())));
        for bad in [
            "",
            "ffk_",
            &token[4..],
            &format!("ffk_{}_{}", id.simple(), "ab"),
            &format!("ffk_{}_{secret}", id.as_uuid().hyphenated()),
            &format!("Bearer {token}"),
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }
}
