//! The storage traits, one per concept.
//!
//! Each trait is followed by its method list (`storage_methods!`), which
//! says how each method is implemented: by a statement written once for
//! both drivers (in `shared/`, under `read` or `write`), or by each backend
//! (`own`), in its module of the same name (`postgres/tenancy.rs` and
//! `sqlite/tenancy.rs` for [`Tenancy`], and so on), so the two trees line up
//! file for file. The list is the trait's impl for both backends. [`super::Backend`] is
//! all of them together, which is what the engine holds. What a tenant
//! configures (grants, config values, concurrency limits) is declared in
//! `configuration.rs`, the read-back of attempts and overviews in
//! `insights.rs`, and what runs in the background (wake-ups, scanner passes)
//! in `background.rs`.

use std::time::Duration;

use async_trait::async_trait;

use super::shared::storage_methods;
use chrono::{DateTime, Utc};

use super::params::{FrameBatch, NewApiKey, NewComponent, NewFrame};
use crate::error::Result;
use crate::model::{
    ApiKey, ApiKeyId, AttemptRef, ClaimRequest, ClaimedExecution, Completion, CompletionEvent,
    ComponentVersion, Created, EventBatch, EventCursor, Execution, ExecutionFilter, ExecutionId,
    ExecutionOrigin, ExecutionState, FailOutcome, Failure, Frame, LaneCounts, LeaseEvent,
    LeaseHandle, NewExecution, Page, Replay, ReplayOutcome, SignalEvent, StoredApiKey,
    StreamSummary, Tenant, TenantId, TenantLimits,
};

/// Tenants, their limits and usage, and their API keys.
#[async_trait]
pub trait Tenancy: Send + Sync {
    async fn create_tenant(&self, name: &str) -> Result<Tenant>;

    async fn list_tenants(&self) -> Result<Vec<Tenant>>;

    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant>;

    /// Bytes the tenant keeps stored: its executions' inputs and results and
    /// their frames' payloads. Reads every such row of the tenant: callers
    /// keep the answer for a while.
    async fn stored_bytes(&self, tenant: TenantId) -> Result<u64>;

    async fn set_tenant_limits(&self, tenant: TenantId, limits: &TenantLimits) -> Result<Tenant>;

    /// What creating executions needs to know, in one read: the tenant's
    /// limits, and which of `kinds` have no runnable component.
    async fn admission(
        &self,
        tenant: TenantId,
        kinds: &[&str],
    ) -> Result<(TenantLimits, Vec<String>)>;

    /// Store a key; only the hash of its secret is kept.
    async fn create_api_key(&self, tenant: TenantId, key: NewApiKey<'_>) -> Result<ApiKey>;

    /// The key with this id, revoked or not.
    async fn find_api_key(&self, key_id: ApiKeyId) -> Result<Option<StoredApiKey>>;

    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>>;

    async fn revoke_api_key(&self, tenant: TenantId, key_id: ApiKeyId) -> Result<ApiKey>;
}

// Tenants themselves are stored differently by each backend (see
// `shared/tenancy.rs`), so their methods are its own; API keys are shared.
storage_methods! { $ implement_tenancy: impl Tenancy in tenancy {
    read {
        "find api key" find_api_key(key_id: ApiKeyId) -> Option<StoredApiKey>;
        "list api keys" list_api_keys(tenant: TenantId) -> Vec<ApiKey>;
        "measure stored bytes" stored_bytes(tenant: TenantId) -> u64;
    }
    write {
        "create api key" create_api_key(tenant: TenantId, key: NewApiKey<'_>) -> ApiKey;
        "revoke api key" revoke_api_key(tenant: TenantId, key_id: ApiKeyId) -> ApiKey;
    }
    own {
        create_tenant(name: &str) -> Tenant;
        list_tenants() -> Vec<Tenant>;
        get_tenant(tenant: TenantId) -> Tenant;
        set_tenant_limits(tenant: TenantId, limits: &TenantLimits) -> Tenant;
        admission(tenant: TenantId, kinds: &[&str]) -> (TenantLimits, Vec<String>);
    }
} }

/// Creating and reading executions, and the operator's changes to them.
#[async_trait]
pub trait Executions: Send + Sync {
    /// Create executions in one transaction. Idempotency keys already mapped (within
    /// their dedup window) return the existing execution with `created: false`.
    /// With `max_queued`, the whole batch is refused (`QuotaExceeded`) if it would
    /// take the tenant's backlog over that many.
    async fn create_executions(
        &self,
        tenant: TenantId,
        executions: &[NewExecution],
        max_queued: Option<u32>,
    ) -> Result<Vec<Created>>;

    async fn get_execution(&self, tenant: TenantId, id: ExecutionId) -> Result<Execution>;

    /// State and attempt only: cheap enough to poll (no input or result bytes).
    async fn execution_state(&self, tenant: TenantId, id: ExecutionId) -> Result<ExecutionState>;

    async fn list_executions(
        &self,
        tenant: TenantId,
        filter: &ExecutionFilter,
    ) -> Result<Vec<Execution>>;

    /// A page of the tenant's lanes that have executions not yet ended, in
    /// lane order after the page's lane, each with how many of them are
    /// queued, running and suspended. At most [`crate::model::MAX_LANE_PAGE`].
    async fn lane_counts(
        &self,
        tenant: TenantId,
        page: Page<Option<&str>>,
    ) -> Result<Vec<LaneCounts>>;

    /// An operator cancels a non-terminal execution, revoking any live lease.
    /// Returns `false` if it was already cancelled.
    async fn cancel(&self, tenant: TenantId, id: ExecutionId, reason: &str) -> Result<bool>;

    /// An operator runs an ended execution again (a new `replay` attempt).
    /// Its journal of steps is deleted in the same transaction unless
    /// `keep_steps`; with `revive_dependents`, the flow members its failure
    /// skipped come back in the same transaction too (see
    /// [`crate::model::Replay`]). Refused for a member of a cancelled flow.
    async fn replay(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        replay: Replay,
    ) -> Result<ReplayOutcome>;

    /// Change the priority of a runnable execution.
    async fn change_priority(&self, tenant: TenantId, id: ExecutionId, priority: i32)
        -> Result<()>;
}

storage_methods! { $ implement_executions: impl Executions in executions {
    read {
        "get execution state" execution_state(tenant: TenantId, id: ExecutionId) -> ExecutionState;
        "count lanes" lane_counts(tenant: TenantId, page: Page<Option<&str>>) -> Vec<LaneCounts>;
    }
    write {}
    own {
        create_executions(tenant: TenantId, executions: &[NewExecution], max_queued: Option<u32>) -> Vec<Created>;
        get_execution(tenant: TenantId, id: ExecutionId) -> Execution;
        list_executions(tenant: TenantId, filter: &ExecutionFilter) -> Vec<Execution>;
        cancel(tenant: TenantId, id: ExecutionId, reason: &str) -> bool;
        replay(tenant: TenantId, id: ExecutionId, how: Replay) -> ReplayOutcome;
        change_priority(tenant: TenantId, id: ExecutionId, priority: i32) -> ();
    }
} }

/// Claiming work, and the fenced writes that end or release an attempt.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Lease up to `request.limit` runnable executions, fairly across tenants.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>>;

    /// Extend a held lease; returns the new expiry. Never bumps the epoch.
    async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>>;

    /// Finish successfully, writing the progress the completion carries
    /// in the same write. Idempotent for the handle that completed it.
    async fn complete(&self, completion: &Completion<'_>) -> Result<()>;

    /// Complete several executions, each under its own lease; the result for
    /// each is what [`Leases::complete`] would return for it. Workers gather
    /// the completions that arrive while a write is in flight into one call, so
    /// the per-statement cost is paid once per batch. An `Err` means nothing was
    /// written. The default completes them one at a time.
    async fn complete_many(&self, completions: &[Completion<'_>]) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(completions.len());
        for completion in completions {
            results.push(self.complete(completion).await);
        }
        Ok(results)
    }

    /// Record a failed attempt; the frozen retry policy decides between another
    /// attempt and terminal failure. Idempotent for the handle that failed it.
    async fn fail(&self, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome>;

    /// The worker gives up the execution for good.
    async fn cancel_by_worker(&self, lease: &LeaseHandle, reason: &str) -> Result<()>;

    /// Operator revoke: end an active execution's attempt and lease now and
    /// make it runnable again; returns the revoked attempt's index.
    async fn revoke_lease(&self, tenant: TenantId, id: ExecutionId) -> Result<i32>;

    /// Release the lease and make the execution runnable again at `until`.
    async fn delay(&self, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()>;
}

// Every method is the backend's own.
storage_methods! { $ implement_leases: impl Leases in leases {
    read {}
    write {}
    own {
        claim(request: &ClaimRequest) -> Vec<ClaimedExecution>;
        renew(lease: &LeaseHandle, ttl: std::time::Duration) -> DateTime<Utc>;
        complete(completion: &Completion<'_>) -> ();
        complete_many(completions: &[Completion<'_>]) -> Vec<crate::error::Result<()>>;
        fail(lease: &LeaseHandle, failure: &Failure) -> FailOutcome;
        cancel_by_worker(lease: &LeaseHandle, reason: &str) -> ();
        revoke_lease(tenant: TenantId, id: ExecutionId) -> i32;
        delay(lease: &LeaseHandle, until: DateTime<Utc>) -> ();
    }
} }

/// What a running attempt writes besides its result: frames and progress.
#[async_trait]
pub trait Output: Send + Sync {
    /// Append a frame to the lease's attempt; returns its sequence number (1, 2, …).
    /// Refused with `limit_exceeded` when the attempt's frame payloads would
    /// pass `max_attempt_bytes` in all.
    async fn append_frame(&self, lease: &LeaseHandle, frame: NewFrame<'_>) -> Result<i64>;

    /// Append durable frames of one type to the lease's attempt in one
    /// write, all or none, with consecutive sequence numbers; returns the
    /// last. Refused as `append_frame` is when all of them would pass the
    /// attempt's bytes.
    async fn append_frames(&self, lease: &LeaseHandle, batch: FrameBatch<'_>) -> Result<i64>;

    /// A page of one attempt's frames: those with `seq` past the page's
    /// cursor, in order.
    async fn read_frames(
        &self,
        tenant: TenantId,
        attempt: AttemptRef,
        page: Page<i64>,
    ) -> Result<Vec<Frame>>;

    /// The attempt's summary document, if a summary frame was ever appended.
    async fn read_summary(
        &self,
        tenant: TenantId,
        attempt: AttemptRef,
    ) -> Result<Option<StreamSummary>>;

    /// Record the latest progress of the lease's attempt.
    async fn set_progress(&self, lease: &LeaseHandle, percent: u8, message: &str) -> Result<()>;
}

// The fenced writes are the backend's own.
storage_methods! { $ implement_output: impl Output in output {
    read {
        "read frames" read_frames(tenant: TenantId, attempt: AttemptRef, page: Page<i64>)
            -> Vec<Frame>;
        "read summary" read_summary(tenant: TenantId, attempt: AttemptRef)
            -> Option<StreamSummary>;
    }
    write {}
    own {
        append_frame(lease: &LeaseHandle, frame: NewFrame<'_>) -> i64;
        append_frames(lease: &LeaseHandle, batch: FrameBatch<'_>) -> i64;
        set_progress(lease: &LeaseHandle, percent: u8, message: &str) -> ();
    }
} }

/// The per-tenant event streams, read by cursor.
#[async_trait]
pub trait Events: Send + Sync {
    /// Event streams: the tenant's events after the page's cursor, oldest first (see
    /// [`EventCursor`] for the order and [`EventBatch::pending`]).
    async fn completion_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<CompletionEvent>>;

    async fn lease_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<LeaseEvent>>;

    async fn signal_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<SignalEvent>>;

    /// The kind and lane of those of `ids` the tenant has (at most
    /// [`MAX_EVENT_PAGE`](crate::engine::MAX_EVENT_PAGE) ids; executions
    /// pruned since are left out), for event filters on them.
    async fn execution_origins(
        &self,
        tenant: TenantId,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionOrigin>>;
}

/// Component versions and their wasm bytes.
#[async_trait]
pub trait Components: Send + Sync {
    /// Store a component version for `kind`. Uploading the bytes the newest
    /// version already has returns that version (`created: false`) instead of a
    /// new one, so retried uploads are harmless.
    /// `imports` (what the runtime found the component imports) is stored
    /// with the version; a version stored without them gets them then.
    async fn put_component(
        &self,
        tenant: TenantId,
        component: NewComponent<'_>,
    ) -> Result<(ComponentVersion, bool)>;

    /// The newest non-deprecated version of `kind`.
    async fn latest_component(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>>;

    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>>;

    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>>;

    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion>;

    /// New attempts stop using this version; it stays stored. Idempotent.
    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion>;

    /// Remove a deprecated version that is not its kind's newest, and its
    /// bytes unless another of the tenant's versions has the same.
    /// `conflict` for a version still in use or the newest; `not_found`.
    async fn purge_component(&self, tenant: TenantId, kind: &str, version: i32) -> Result<()>;
}

storage_methods! { $ implement_components: impl Components in components {
    read {
        "latest component" latest_component(tenant: TenantId, kind: &str)
            -> Option<ComponentVersion>;
        "component wasm" component_wasm(tenant: TenantId, digest: &str) -> Vec<u8>;
        "list components" list_components(tenant: TenantId) -> Vec<ComponentVersion>;
        "get component" get_component(tenant: TenantId, kind: &str, n: i32) -> ComponentVersion;
    }
    write {
        "deprecate component" deprecate_component(tenant: TenantId, kind: &str, n: i32)
            -> ComponentVersion;
        "purge component" purge_component(tenant: TenantId, kind: &str, n: i32) -> ();
        "put component" put_component(tenant: TenantId, component: NewComponent<'_>)
            -> (ComponentVersion, bool);
    }
    own {}
} }
