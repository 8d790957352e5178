//! The storage traits, one per concept.
//!
//! Each trait is implemented in the module of the same name in both backends
//! (`postgres/tenancy.rs` and `sqlite/tenancy.rs` implement [`Tenancy`], and
//! so on), so the two trees line up file for file and a new operation is
//! declared here once and written once per backend. [`super::Backend`] is
//! all of them together, which is what the engine holds. What a tenant
//! configures (grants, config values, concurrency limits) is declared in
//! `configuration.rs`, the read-back of attempts and overviews in
//! `insights.rs`, and what runs in the background (wake-ups, scanner passes)
//! in `background.rs`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::params::{
    ChildSpawn, EdgeFilter, FlowCancel, GraphWrite, NewApiKey, NewComponent, NewFrame,
    NewWaitpoint, PauseChange, ScheduleCreate, SleepRequest, StepRecord, SuspendRequest,
    UsageAdjust,
};
use crate::error::Result;
use crate::model::{
    ApiKey, ApiKeyId, AttemptRef, Budget, BudgetAdjustment, BudgetId, ChildrenOutcome,
    ClaimRequest, ClaimedExecution, CompletionEvent, ComponentVersion, Created, EventBatch,
    EventCursor, Execution, ExecutionFilter, ExecutionId, ExecutionOrigin, ExecutionState,
    FailOutcome, Failure, FlowEdgeDetail, FlowId, FlowSnapshot, FlowSummary, Frame, GraphApplied,
    JournalEntry, LaneCounts, LeaseEvent, LeaseHandle, NewBudget, NewExecution, NewFlow, NewSignal,
    Page, Replay, ReplayOutcome, Schedule, ScheduleId, Signal, SignalEvent, SignalOutcome,
    SpawnedChild, StoredApiKey, StreamSummary, SuspendOutcome, Tenant, TenantId, TenantLimits,
    TimeoutBehavior, UsageEntry, UsageOutcome, Waitpoint, WaitpointId, WaitpointRef,
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

/// Claiming work, and the fenced writes that end or release an attempt.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Lease up to `request.limit` runnable executions, fairly across tenants.
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>>;

    /// Extend a held lease; returns the new expiry. Never bumps the epoch.
    async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>>;

    /// Finish successfully. Idempotent for the handle that completed it.
    async fn complete(&self, lease: &LeaseHandle, result: &[u8]) -> Result<()>;

    /// Complete several executions, each under its own lease; the result for
    /// each is what [`Backend::complete`] would return for it. Workers gather
    /// the completions that arrive while a write is in flight into one call, so
    /// the per-statement cost is paid once per batch. An `Err` means nothing was
    /// written. The default completes them one at a time.
    async fn complete_many(&self, completions: &[(LeaseHandle, &[u8])]) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(completions.len());
        for (lease, result) in completions {
            results.push(self.complete(lease, result).await);
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

/// What a running attempt writes besides its result: frames and progress.
#[async_trait]
pub trait Output: Send + Sync {
    /// Append a frame to the lease's attempt; returns its sequence number (1, 2, …).
    /// Refused with `limit_exceeded` when the attempt's frame payloads would
    /// pass `max_attempt_bytes` in all.
    async fn append_frame(&self, lease: &LeaseHandle, frame: NewFrame<'_>) -> Result<i64>;

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
}

/// Waitpoints, suspending, signals and resuming.
#[async_trait]
pub trait Suspensions: Send + Sync {
    /// Create a waitpoint of the lease's execution, or return the open one
    /// with this key. Pending waitpoints buffer signals until a suspension.
    /// A new one is refused (`limit_exceeded`) once the execution has
    /// `max_waitpoints`.
    async fn create_waitpoint(
        &self,
        lease: &LeaseHandle,
        new: NewWaitpoint<'_>,
    ) -> Result<Waitpoint>;

    /// Suspend the lease's execution (releasing the lease), unless signals
    /// already buffered satisfy the condition, which are then consumed.
    /// The condition's waitpoints are created as needed, within
    /// `max_waitpoints` for the execution (`limit_exceeded` past it).
    async fn suspend(
        &self,
        lease: &LeaseHandle,
        request: SuspendRequest<'_>,
    ) -> Result<SuspendOutcome>;

    /// Deliver a signal to a waitpoint; resumes the execution when it completes
    /// the condition. Idempotent by the signal's key.
    async fn deliver_signal(
        &self,
        tenant: TenantId,
        to: WaitpointRef,
        signal: &NewSignal,
    ) -> Result<SignalOutcome>;

    /// An operator resumes a suspended execution.
    async fn resume(&self, tenant: TenantId, id: ExecutionId) -> Result<()>;

    /// The signals the resume numbered `seq` consumed.
    async fn resume_signals(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        seq: i32,
    ) -> Result<Vec<Signal>>;

    /// A page of the execution's waitpoints, in id order (ids are
    /// time-ordered, so creation order).
    async fn list_waitpoints(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        page: Page<Option<WaitpointId>>,
    ) -> Result<Vec<Waitpoint>>;
}

/// Durable steps: each execution's journal of what its runs already did
/// (see [`crate::model::JournalEntry`]).
#[async_trait]
pub trait Steps: Send + Sync {
    /// A page of the execution's journal, in position order.
    async fn journal(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        page: Page<Option<u32>>,
    ) -> Result<Vec<JournalEntry>>;

    /// Record a step of the lease's execution and append `frame` (a durable
    /// `step` frame announcing it) to the attempt, in one transaction fenced
    /// by the lease. Past `limits` nothing is written (`limit_exceeded`). A
    /// position already recorded is refused (`conflict`), unless this lease
    /// recorded the same step there (a replayed call: `Ok`).
    async fn record_step(&self, lease: &LeaseHandle, record: StepRecord<'_>) -> Result<()>;

    /// Suspend the lease's execution until `wake_at`, releasing the lease,
    /// in one transaction with recording `step` (a new sleep, with its
    /// frame) when given; an existing sleep woken early passes `None`.
    async fn sleep(&self, lease: &LeaseHandle, request: SleepRequest<'_>) -> Result<()>;
}

/// Schedules: recurring executions (see [`crate::model::Schedule`]).
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

/// Budgets: limits, usage reports and resets.
#[async_trait]
pub trait Budgets: Send + Sync {
    async fn create_budget(&self, tenant: TenantId, budget: &NewBudget) -> Result<Budget>;

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
    async fn adjust_usage(
        &self,
        tenant: TenantId,
        id: BudgetId,
        adjust: UsageAdjust<'_>,
    ) -> Result<Budget>;

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
}

/// Children an execution spawns and waits for.
#[async_trait]
pub trait Children: Send + Sync {
    /// Create a child of the lease's execution in its flow (creating a flow
    /// with the parent as member `root` if it has none), or return the child
    /// it already spawned under `key`.
    async fn spawn_child(&self, lease: &LeaseHandle, spawn: ChildSpawn<'_>)
        -> Result<SpawnedChild>;

    /// The lease's children if all have ended; otherwise suspend the execution
    /// (releasing the lease) until the last one does.
    async fn wait_children(
        &self,
        lease: &LeaseHandle,
        timeout: Option<Duration>,
        on_timeout: TimeoutBehavior,
    ) -> Result<ChildrenOutcome>;
}

/// Flows: graph changes, snapshots and cancellation.
#[async_trait]
pub trait Flows: Send + Sync {
    /// Create a flow and its first members and edges, in one transaction.
    async fn create_flow(
        &self,
        tenant: TenantId,
        flow: &NewFlow,
        write: GraphWrite<'_>,
    ) -> Result<GraphApplied>;

    /// Add members and edges to a flow, in one transaction: refused whole if an
    /// edge would close a cycle, point at a member that no longer waits, or
    /// the flow moved past `change.expected_revision`.
    async fn extend_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        write: GraphWrite<'_>,
    ) -> Result<GraphApplied>;

    async fn get_flow(&self, tenant: TenantId, flow: FlowId) -> Result<FlowSnapshot>;

    /// The flow's edges in (from, to) key order: only those out of the
    /// member keyed `from`, and into the member keyed `to`, when given.
    /// `not_found` when the tenant has no such flow.
    async fn flow_edges(
        &self,
        tenant: TenantId,
        flow: FlowId,
        filter: EdgeFilter<'_>,
    ) -> Result<Vec<FlowEdgeDetail>>;

    /// A page of the tenant's flows, in id (creation) order.
    async fn list_flows(
        &self,
        tenant: TenantId,
        page: Page<Option<FlowId>>,
    ) -> Result<Vec<FlowSummary>>;

    /// Close a flow to new members and cancel the members `policy` names;
    /// returns how many were cancelled. Idempotent.
    async fn cancel_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        cancel: FlowCancel<'_>,
    ) -> Result<u64>;
}
