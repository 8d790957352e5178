//! The storage traits for what a tenant configures rather than runs:
//! capability grants under the operator's ceiling, config values and
//! secrets, concurrency limits, budgets, schedules, and the operator's
//! waitpoint signing keys. Like the others in `traits.rs`, each is followed
//! by its method list and implemented in the module of the same name in
//! both backends.

use async_trait::async_trait;

use super::shared::storage_methods;

use crate::error::Result;
use chrono::{DateTime, Utc};

use super::params::{PauseChange, ScheduleCreate, Sweep, UsageAdjust};
use crate::model::{
    Budget, BudgetAdjustment, BudgetId, CapabilityCeiling, ComponentGrant, ConcurrencyLimit,
    ConcurrencyScope, Created, LeaseHandle, NewBudget, Page, Schedule, ScheduleId, SealedBytes,
    SealedConfig, StoredGrant, StoredWaitpointKey, TenantId, UsageEntry, UsageOutcome,
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

// Every method is a shared statement.
storage_methods! { $ implement_grants: impl Grants in grants {
    read {
        "read capability ceiling" ceiling(tenant: TenantId) -> CapabilityCeiling;
        "read grant" grant(tenant: TenantId, kind: &str) -> Option<StoredGrant>;
        "list grants" list_grants(tenant: TenantId) -> Vec<StoredGrant>;
        "read capabilities" capabilities(tenant: TenantId, kind: &str)
            -> (CapabilityCeiling, ComponentGrant);
    }
    write {
        "set capability ceiling" set_ceiling(tenant: TenantId, ceiling: &CapabilityCeiling) -> ();
        "put grant" put_grant(tenant: TenantId, kind: &str, grant: &ComponentGrant) -> StoredGrant;
        "delete grant" delete_grant(tenant: TenantId, kind: &str) -> bool;
    }
    own {}
} }

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

storage_methods! { $ implement_config_values: impl ConfigValues in config_values {
    read {
        "list config values" list_config(tenant: TenantId) -> Vec<SealedConfig>;
        "read config values" config_values(tenant: TenantId, names: &[String])
            -> Vec<SealedConfig>;
        "find config values to reseal" config_sealed_by_other_keys(key_id: &str, limit: u32)
            -> Vec<(TenantId, SealedConfig)>;
    }
    write {
        "put config value" put_config(tenant: TenantId, value: &SealedConfig, max_values: u32)
            -> ();
        "delete config value" delete_config(tenant: TenantId, name: &str) -> bool;
        "reseal config value" reseal_config(tenant: TenantId, old: &str, value: &SealedConfig)
            -> bool;
    }
    own {}
} }

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
    async fn release_held_keys(&self, sweep: Sweep) -> Result<u64>;
}

// Every write (which may free held work) is the backend's own.
storage_methods! { $ implement_concurrency: impl ConcurrencyLimits in concurrency {
    read {
        "list concurrency limits" list_concurrency_limits(tenant: TenantId) -> Vec<ConcurrencyLimit>;
    }
    write {}
    own {
        set_concurrency_limit(tenant: TenantId, limit: &ConcurrencyLimit, max: u32) -> ();
        delete_concurrency_limit(tenant: TenantId, scope: ConcurrencyScope, name: &str) -> bool;
        release_held_keys(sweep: Sweep) -> u64;
    }
} }

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

// Every method is a shared statement.
storage_methods! { $ implement_waitpoint_keys: impl WaitpointKeys in waitpoint_keys {
    read {
        "read waitpoint keys" waitpoint_keys() -> Vec<StoredWaitpointKey>;
    }
    write {
        "add waitpoint key" add_waitpoint_key(
            key: &StoredWaitpointKey,
            retire_others_at: Option<DateTime<Utc>>,
            prune_retired_before: DateTime<Utc>
        ) -> bool;
        "reseal waitpoint key" reseal_waitpoint_key(kid: &str, old: &str, secret: &SealedBytes)
            -> bool;
    }
    own {}
} }

/// recurring executions (see [`crate::model::Schedule`]).
#[async_trait]
pub trait Schedules: Send + Sync {
    /// Create a schedule, first due at `next_fire_at`. Refused (`conflict`)
    /// when the tenant has one of that name, and (`limit_exceeded`) when it
    /// has `max_schedules` already, in the same transaction.
    async fn create_schedule(
        &self,
        tenant: TenantId,
        create: ScheduleCreate<'_>,
    ) -> Result<Schedule>;

    async fn get_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Schedule>;

    /// A page of the tenant's schedules, in id (creation) order.
    async fn list_schedules(
        &self,
        tenant: TenantId,
        page: Page<Option<ScheduleId>>,
    ) -> Result<Vec<Schedule>>;

    /// Pause it, or resume it due next at `next_fire_at`.
    async fn set_schedule_paused(
        &self,
        tenant: TenantId,
        id: ScheduleId,
        change: PauseChange,
    ) -> Result<Schedule>;

    /// Whether there was a schedule to delete. Its executions stay.
    async fn delete_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<bool>;

    /// Create the schedule's execution now, outside its cadence (its next
    /// fire time stays).
    async fn trigger_schedule(&self, tenant: TenantId, id: ScheduleId) -> Result<Created>;

    /// Scanner: fire due schedules, each in its own transaction that
    /// creates the executions its plan calls for and moves its next fire
    /// time on; up to `limit` schedules. Returns the executions created.
    async fn fire_due_schedules(&self, limit: u32) -> Result<u64>;
}

// Firing (which creates executions) is the backend's own.
storage_methods! { $ implement_schedules: impl Schedules in schedules {
    read {
        "get schedule" get_schedule(tenant: TenantId, id: ScheduleId) -> Schedule;
        "list schedules" list_schedules(tenant: TenantId, page: Page<Option<ScheduleId>>)
            -> Vec<Schedule>;
    }
    write {
        "create schedule" create_schedule(tenant: TenantId, create: ScheduleCreate<'_>) -> Schedule;
        "pause schedule" set_schedule_paused(tenant: TenantId, id: ScheduleId, change: PauseChange)
            -> Schedule;
        "delete schedule" delete_schedule(tenant: TenantId, id: ScheduleId) -> bool;
    }
    own {
        trigger_schedule(tenant: TenantId, id: ScheduleId) -> Created;
        fire_due_schedules(limit: u32) -> u64;
    }
} }

/// Budgets: limits, usage reports and resets.
#[async_trait]
pub trait Budgets: Send + Sync {
    /// Create a budget; `limit_exceeded` once the tenant has `max_budgets`.
    async fn create_budget(
        &self,
        tenant: TenantId,
        budget: &NewBudget,
        max_budgets: u32,
    ) -> Result<Budget>;

    /// Delete a budget, its dimensions and its audit trail; what it held is
    /// released as a reset releases it. `not_found` for an unknown budget.
    async fn delete_budget(&self, tenant: TenantId, id: BudgetId) -> Result<()>;

    async fn get_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget>;

    async fn list_budgets(&self, tenant: TenantId) -> Result<Vec<Budget>>;

    /// Usage back to zero; executions suspended on the budget resume.
    async fn reset_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget>;

    /// Add `adjustment.delta` to one dimension's usage without a lease
    /// (clamped to 0..=i64::MAX) and keep it in the budget's audit trail, in
    /// one transaction. At or past its hard limit the dimension is
    /// exhausted; back under it, it is not, and when that leaves none of
    /// the budget's dimensions exhausted, what the budget held is released
    /// as a reset releases it. `not_found` for an unknown budget or
    /// dimension; `limit_exceeded` once the budget kept `max_adjustments`.
    async fn adjust_usage(&self, tenant: TenantId, adjust: UsageAdjust<'_>) -> Result<Budget>;

    /// The budget's adjustments, newest first, at most `limit`.
    async fn list_adjustments(
        &self,
        tenant: TenantId,
        id: BudgetId,
        limit: u32,
    ) -> Result<Vec<BudgetAdjustment>>;

    /// Check a report (distinct dimensions, in name order) against every
    /// budget covering the lease's execution and apply it, in one
    /// transaction: all of it or none. A report that would cross a hard
    /// limit in any dimension is not applied, and ends the attempt as the
    /// first breached budget says.
    async fn report_usage(
        &self,
        lease: &LeaseHandle,
        report: &[UsageEntry],
        dedup_key: Option<&str>,
    ) -> Result<UsageOutcome>;

    /// Whether any budget of the tenant limits `dimension`, softly or
    /// hard, whatever its scope.
    async fn limits_dimension(&self, tenant: TenantId, dimension: &str) -> Result<bool>;
}

// Usage is charged under each backend's own locking, so every write is
// the backend's own; the reads are shared.
storage_methods! { $ implement_budgets: impl Budgets in budgets {
    read {
        "list adjustments" list_adjustments(tenant: TenantId, id: BudgetId, limit: u32) -> Vec<BudgetAdjustment>;
        "get budget" get_budget(tenant: TenantId, id: BudgetId) -> Budget;
        "list budgets" list_budgets(tenant: TenantId) -> Vec<Budget>;
        "limits dimension" limits_dimension(tenant: TenantId, dimension: &str) -> bool;
    }
    write {}
    own {
        create_budget(tenant: TenantId, budget: &NewBudget, max_budgets: u32) -> Budget;
        delete_budget(tenant: TenantId, id: BudgetId) -> ();
        reset_budget(tenant: TenantId, id: BudgetId) -> Budget;
        adjust_usage(tenant: TenantId, adjust: UsageAdjust<'_>) -> Budget;
        report_usage(lease: &LeaseHandle, report: &[UsageEntry], dedup: Option<&str>)
            -> UsageOutcome;
    }
} }
