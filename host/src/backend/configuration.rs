//! The storage traits for what a tenant configures rather than runs:
//! capability grants under the operator's ceiling, config values and
//! secrets, concurrency limits, and the operator's waitpoint signing keys. Like the others in `traits.rs`, each
//! is implemented in the module of the same name in both backends.

use async_trait::async_trait;

use crate::error::Result;
use chrono::{DateTime, Utc};

use crate::model::{
    CapabilityCeiling, ComponentGrant, ConcurrencyLimit, ConcurrencyScope, SealedBytes,
    SealedConfig, StoredGrant, StoredWaitpointKey, TenantId,
};

/// Capability ceilings (the operator's, per tenant) and grants (the
/// tenant's, per component kind). Validation is the engine's; storage keeps
/// the documents whole.
#[async_trait]
pub trait Grants: Send + Sync {
    /// Replace the tenant's ceiling (`NotFound` for an unknown tenant).
    async fn set_ceiling(&self, tenant: TenantId, ceiling: &CapabilityCeiling) -> Result<()>;

    /// The tenant's ceiling; the empty one (nothing) when none was set.
    async fn ceiling(&self, tenant: TenantId) -> Result<CapabilityCeiling>;

    /// Create or replace the grant of `kind`.
    async fn put_grant(
        &self,
        tenant: TenantId,
        kind: &str,
        grant: &ComponentGrant,
    ) -> Result<StoredGrant>;

    async fn grant(&self, tenant: TenantId, kind: &str) -> Result<Option<StoredGrant>>;

    async fn list_grants(&self, tenant: TenantId) -> Result<Vec<StoredGrant>>;

    /// Whether there was a grant to delete.
    async fn delete_grant(&self, tenant: TenantId, kind: &str) -> Result<bool>;

    /// What one attempt of `kind` runs under, in one read: the ceiling and
    /// the grant (each empty when unset).
    async fn capabilities(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<(CapabilityCeiling, ComponentGrant)>;
}

/// Tenant config values and secrets, sealed by the engine.
#[async_trait]
pub trait ConfigValues: Send + Sync {
    /// Create or replace a value. A new name past `max_values` for the
    /// tenant is refused (`LimitExceeded`), in the same transaction.
    async fn put_config(
        &self,
        tenant: TenantId,
        value: &SealedConfig,
        max_values: u32,
    ) -> Result<()>;

    /// Every value of the tenant, by name.
    async fn list_config(&self, tenant: TenantId) -> Result<Vec<SealedConfig>>;

    /// The values among `names` that exist.
    async fn config_values(&self, tenant: TenantId, names: &[String]) -> Result<Vec<SealedConfig>>;

    /// Whether there was a value to delete.
    async fn delete_config(&self, tenant: TenantId, name: &str) -> Result<bool>;

    /// Up to `limit` values sealed under a key other than `key_id`, for
    /// re-sealing after a key rotation.
    async fn config_sealed_by_other_keys(
        &self,
        key_id: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, SealedConfig)>>;

    /// Replace a value's sealing, if it is still sealed under `old_key_id`
    /// (a value set meanwhile is left alone). Whether it was replaced.
    async fn reseal_config(
        &self,
        tenant: TenantId,
        old_key_id: &str,
        value: &SealedConfig,
    ) -> Result<bool>;
}

/// Concurrency limits: at most so many running (and started per window) of
/// each concurrency key, per kind or lane of a tenant. The claim enforces
/// them (see `postgres/claim.rs` and `sqlite/leases.rs`).
#[async_trait]
pub trait ConcurrencyLimits: Send + Sync {
    /// Create or replace the tenant's limit for the scope and name. A new
    /// one past `max_limits` for the tenant is refused (`LimitExceeded`), in
    /// the same transaction. What the old limit held back is made claimable,
    /// for the next claim to judge under the new one.
    async fn set_concurrency_limit(
        &self,
        tenant: TenantId,
        limit: &ConcurrencyLimit,
        max_limits: u32,
    ) -> Result<()>;

    /// The tenant's limits, by scope and name.
    async fn list_concurrency_limits(&self, tenant: TenantId) -> Result<Vec<ConcurrencyLimit>>;

    /// Whether there was a limit to delete. What it held back is made
    /// claimable.
    async fn delete_concurrency_limit(
        &self,
        tenant: TenantId,
        scope: ConcurrencyScope,
        name: &str,
    ) -> Result<bool>;

    /// Scanner: make claimable up to `limit` executions a key's limit held
    /// back although the key has room now (its start window rolled over, or
    /// its freed slot was handed to one that then went away). Returns how
    /// many.
    async fn release_held_keys(&self, limit: u32) -> Result<u64>;
}

/// The keys that sign waitpoint tokens, shared by every host. The engine
/// seals the secrets and decides the times; storage keeps the rows.
#[async_trait]
pub trait WaitpointKeys: Send + Sync {
    /// Every stored key, oldest first.
    async fn waitpoint_keys(&self) -> Result<Vec<StoredWaitpointKey>>;

    /// Store `key` unless its kid is taken (then nothing changes: `false`).
    /// In the same transaction, every other key that would verify past
    /// `retire_others_at` retires then, and keys retired before
    /// `prune_retired_before` are deleted.
    async fn add_waitpoint_key(
        &self,
        key: &StoredWaitpointKey,
        retire_others_at: Option<DateTime<Utc>>,
        prune_retired_before: DateTime<Utc>,
    ) -> Result<bool>;

    /// Replace a key's sealing if it is still sealed under `old_key_id`.
    /// Whether it was replaced.
    async fn reseal_waitpoint_key(
        &self,
        kid: &str,
        old_key_id: &str,
        secret: &SealedBytes,
    ) -> Result<bool>;
}
