//! [`Backend`] on Postgres.
//!
//! Layout: `tenancy` (tenants, limits, API keys), `ingress` (create, read,
//! operator ops), `lease` (claim, renew and
//! the fenced worker ops), `output` (fenced frames and progress), `components`
//! (versions and wasm bytes), `flows` (graph changes, snapshots, flow
//! cancel), `suspension` (waitpoints, suspend, signals,
//! resume), `scan` (the scanner passes), `notify` (LISTEN
//! wake-ups and revocations), `bench` (scratch databases and the raw-SQL
//! baseline). All SQL of the crate lives below this module.
//!
//! Design rules, each an improvement on the upstream Postgres backend:
//! * **One claim statement.** A `FOR UPDATE SKIP LOCKED` probe per (tenant, lane)
//!   in a `LATERAL` join, ranked round-robin across tenants, then one `UPDATE` and
//!   one `INSERT` in the same statement: no partition walk and no per-tenant
//!   starvation. Each probe is an ordered scan of `executions_claim_idx`.
//! * **One lock point.** The live lease is mirrored on the execution row; every
//!   fenced write starts by updating that row with the fence in its `WHERE`
//!   clause, then touches the attempt and the outbox. Everything that changes an
//!   execution locks it first, so lease ops, operator ops and scanners never
//!   deadlock on lock order.
//! * **Tenant-first indexes.** Scanners walk tenants laterally too, so one tenant's
//!   backlog of expiries cannot delay another's.

pub mod bench;
mod budgets;
mod children;
mod claim;
mod components;
mod flow_cancel;
mod flows;
mod ingress;
mod lease;
mod notify;
mod outbox;
mod output;
mod rows;
mod scan;
mod suspension;
mod tenancy;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};

use super::Backend;
use crate::error::{EngineError, Result};
use crate::model::{
    ApiKey, Budget, BudgetId, ChildrenOutcome, ClaimRequest, ClaimedExecution, CompletionEvent,
    ComponentVersion, Created, EventBatch, EventCursor, Execution, ExecutionFilter, ExecutionId,
    ExecutionState, ExecutionUpdate, FailOutcome, Failure, FlowCancelPolicy, FlowId, FlowSnapshot,
    FlowSummary, Frame, GraphApplied, GraphChange, LeaseEvent, LeaseHandle, NewBudget,
    NewExecution, NewFlow, NewSignal, Signal, SignalEvent, SignalOutcome, SpawnedChild,
    StoredApiKey, StreamMode, StreamSummary, SuspendOutcome, Suspension, Tenant, TenantId,
    TenantLimits, TimeoutBehavior, UsageOutcome, Waitpoint,
};
use crate::model::{ChildKey, SpawnLimits};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Channel that carries "new work may be claimable" (empty payload, coalesced).
const WORK_CHANNEL: &str = "flowfabric_work";
/// Channel that carries the id of an execution whose lease was revoked.
const REVOKED_CHANNEL: &str = "flowfabric_revoked";
/// Channel that carries `<tenant>:<execution>` when a frame is appended.
const UPDATES_CHANNEL: &str = "flowfabric_updates";
/// Channel that says the completion outbox has new events (the payload, the
/// newest event id, is informational: the dispatcher reads by cursor).
const COMPLETION_CHANNEL: &str = "flowfabric_completion";
/// Channel that carries `<stream>:<tenant>` when the lease or signal outbox of
/// a tenant has new events.
const EVENTS_CHANNEL: &str = "flowfabric_events";

/// How long a pooled connection may sit idle and still be used without a
/// ping first (see [`PgBackend::pool_options`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub struct PgBackend {
    pool: PgPool,
    notifications: notify::Notifications,
}

impl PgBackend {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = Self::pool_options(max_connections)
            .connect_with(Self::connect_options(url)?)
            .await
            .map_err(EngineError::storage("connect"))?;
        Ok(Self::from_pool(pool))
    }

    /// The engine's connection pool; for callers that build their own pool
    /// for [`PgBackend::from_pool`].
    ///
    /// sqlx pings a connection (one round trip) when it goes back to the
    /// pool, and by default again when it is taken out. The second ping
    /// doubled the round trips of every statement, as many again as the
    /// statements themselves, for a connection that answered a moment ago.
    /// So a connection is pinged on the way out only after it has been idle
    /// for [`PING_IF_IDLE_FOR`]: long enough for a server restart or a
    /// dropped link to go unnoticed. One that fails the ping is closed, and
    /// the pool opens a new one in its place.
    pub fn pool_options(max_connections: u32) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }

    /// How the engine connects to `url`; for callers that build their own pool
    /// for [`PgBackend::from_pool`].
    ///
    /// JIT compilation is off. Its thresholds are planner costs, and the claim's
    /// estimates run high whatever its real work (a `LIMIT` taken from a lateral
    /// row is estimated at a tenth of the backlog), so with JIT on every claim
    /// spent about two seconds compiling LLVM code for a query that runs in a
    /// fraction of a millisecond. No statement here is long enough to win it back.
    pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
        let mut options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| EngineError::invalid("database url", e.to_string()))?;
        // Named in `pg_stat_activity`, unless the URL already names it.
        if options.get_application_name().is_none() {
            options = options.application_name("flowfabric");
        }
        Ok(options.options([("jit", "off")]))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            notifications: notify::Notifications::new(pool.clone()),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The query plan of the claim statement for `request` (nothing is claimed).
    pub async fn explain_claim(&self, request: &ClaimRequest) -> Result<String> {
        claim::explain_claim(&self.pool, request).await
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| EngineError::Storage {
                op: "migrate",
                cause: e.into(),
            })
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        tenancy::create_tenant(&self.pool, name).await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        tenancy::list_tenants(&self.pool).await
    }

    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant> {
        tenancy::get_tenant(&self.pool, tenant).await
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(EngineError::storage("read migrations"))?;
        Ok(crate::backend::pending(&MIGRATOR, &applied))
    }

    async fn stored_bytes(&self, tenant: TenantId) -> Result<u64> {
        tenancy::stored_bytes(&self.pool, tenant).await
    }

    async fn set_tenant_limits(&self, tenant: TenantId, limits: &TenantLimits) -> Result<Tenant> {
        tenancy::set_tenant_limits(&self.pool, tenant, limits).await
    }

    async fn admission(
        &self,
        tenant: TenantId,
        kinds: &[&str],
    ) -> Result<(TenantLimits, Vec<String>)> {
        tenancy::admission(&self.pool, tenant, kinds).await
    }

    async fn create_api_key(
        &self,
        tenant: TenantId,
        key_id: uuid::Uuid,
        name: &str,
        secret_sha256: &[u8],
    ) -> Result<ApiKey> {
        tenancy::create_api_key(&self.pool, tenant, key_id, name, secret_sha256).await
    }

    async fn find_api_key(&self, key_id: uuid::Uuid) -> Result<Option<StoredApiKey>> {
        tenancy::find_api_key(&self.pool, key_id).await
    }

    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        tenancy::list_api_keys(&self.pool, tenant).await
    }

    async fn revoke_api_key(&self, tenant: TenantId, key_id: uuid::Uuid) -> Result<ApiKey> {
        tenancy::revoke_api_key(&self.pool, tenant, key_id).await
    }

    async fn create_executions(
        &self,
        tenant: TenantId,
        executions: &[NewExecution],
        max_queued: Option<u32>,
    ) -> Result<Vec<Created>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(EngineError::storage("create executions"))?;
        let executions: Vec<&NewExecution> = executions.iter().collect();
        ingress::create_executions(&mut conn, tenant, &executions, max_queued, None).await
    }

    async fn get_execution(&self, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
        ingress::get_execution(&self.pool, tenant, id).await
    }

    async fn execution_state(&self, tenant: TenantId, id: ExecutionId) -> Result<ExecutionState> {
        ingress::execution_state(&self.pool, tenant, id).await
    }

    async fn list_executions(
        &self,
        tenant: TenantId,
        filter: &ExecutionFilter,
    ) -> Result<Vec<Execution>> {
        ingress::list_executions(&self.pool, tenant, filter).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>> {
        claim::claim(&self.pool, request).await
    }

    async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
        lease::renew(&self.pool, lease, ttl).await
    }

    async fn complete(&self, lease: &LeaseHandle, result: &[u8]) -> Result<()> {
        lease::complete(&self.pool, lease, result).await
    }

    async fn complete_many(&self, completions: &[(LeaseHandle, &[u8])]) -> Result<Vec<Result<()>>> {
        lease::complete_many(&self.pool, completions).await
    }

    async fn fail(&self, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome> {
        lease::fail(&self.pool, lease, failure).await
    }

    async fn cancel_by_worker(&self, lease: &LeaseHandle, reason: &str) -> Result<()> {
        lease::cancel_by_worker(&self.pool, lease, reason).await
    }

    async fn cancel(&self, tenant: TenantId, id: ExecutionId, reason: &str) -> Result<bool> {
        ingress::cancel(&self.pool, tenant, id, reason).await
    }

    async fn replay(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        ingress::replay(&self.pool, tenant, id).await
    }

    async fn delay(&self, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
        lease::delay(&self.pool, lease, until).await
    }

    async fn revoke_lease(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        ingress::revoke_lease(&self.pool, tenant, id).await
    }

    async fn change_priority(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        priority: i32,
    ) -> Result<()> {
        ingress::change_priority(&self.pool, tenant, id, priority).await
    }

    async fn completion_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<CompletionEvent>> {
        outbox::COMPLETIONS
            .read(&self.pool, tenant, after, limit)
            .await
    }

    async fn lease_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<LeaseEvent>> {
        outbox::LEASES.read(&self.pool, tenant, after, limit).await
    }

    async fn signal_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<SignalEvent>> {
        outbox::SIGNALS.read(&self.pool, tenant, after, limit).await
    }

    async fn put_component(
        &self,
        tenant: TenantId,
        kind: &str,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(ComponentVersion, bool)> {
        components::put(&self.pool, tenant, kind, digest, wasm).await
    }

    async fn latest_component(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>> {
        components::latest(&self.pool, tenant, kind).await
    }

    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        components::wasm(&self.pool, tenant, digest).await
    }

    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        components::list(&self.pool, tenant).await
    }

    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        components::get(&self.pool, tenant, kind, version).await
    }

    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        components::deprecate(&self.pool, tenant, kind, version).await
    }

    async fn append_frame(
        &self,
        lease: &LeaseHandle,
        frame_type: &str,
        mode: StreamMode,
        payload: &[u8],
        max_attempt_bytes: u64,
    ) -> Result<i64> {
        output::append_frame(
            &self.pool,
            lease,
            frame_type,
            mode,
            payload,
            max_attempt_bytes,
        )
        .await
    }

    async fn read_frames(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Frame>> {
        output::read_frames(&self.pool, tenant, id, attempt_index, after, limit).await
    }

    async fn read_summary(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
    ) -> Result<Option<StreamSummary>> {
        output::read_summary(&self.pool, tenant, id, attempt_index).await
    }

    async fn set_progress(&self, lease: &LeaseHandle, percent: u8, message: &str) -> Result<()> {
        output::set_progress(&self.pool, lease, percent, message).await
    }

    async fn create_waitpoint(
        &self,
        lease: &LeaseHandle,
        key: &str,
        expires_in: Option<Duration>,
        max_waitpoints: u32,
    ) -> Result<Waitpoint> {
        suspension::create_waitpoint(&self.pool, lease, key, expires_in, max_waitpoints).await
    }

    async fn suspend(
        &self,
        lease: &LeaseHandle,
        suspension: &Suspension,
        timeout: Option<Duration>,
        max_waitpoints: u32,
    ) -> Result<SuspendOutcome> {
        suspension::suspend(&self.pool, lease, suspension, timeout, max_waitpoints).await
    }

    async fn create_budget(&self, tenant: TenantId, budget: &NewBudget) -> Result<Budget> {
        budgets::create_budget(&self.pool, tenant, budget).await
    }

    async fn get_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        budgets::get_budget(&self.pool, tenant, id).await
    }

    async fn list_budgets(&self, tenant: TenantId) -> Result<Vec<Budget>> {
        budgets::list_budgets(&self.pool, tenant).await
    }

    async fn reset_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        budgets::reset_budget(&self.pool, tenant, id).await
    }

    async fn report_usage(
        &self,
        lease: &LeaseHandle,
        dimension: &str,
        delta: u64,
        dedup_key: Option<&str>,
    ) -> Result<UsageOutcome> {
        budgets::report_usage(&self.pool, lease, dimension, delta, dedup_key).await
    }

    async fn spawn_child(
        &self,
        lease: &LeaseHandle,
        child: &NewExecution,
        key: ChildKey<'_>,
        limits: SpawnLimits,
    ) -> Result<SpawnedChild> {
        children::spawn_child(&self.pool, lease, child, key, limits).await
    }

    async fn wait_children(
        &self,
        lease: &LeaseHandle,
        timeout: Option<Duration>,
        on_timeout: TimeoutBehavior,
    ) -> Result<ChildrenOutcome> {
        children::wait_children(&self.pool, lease, timeout, on_timeout).await
    }

    async fn deliver_signal(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        waitpoint_id: uuid::Uuid,
        signal: &NewSignal,
    ) -> Result<SignalOutcome> {
        suspension::deliver_signal(&self.pool, tenant, id, waitpoint_id, signal).await
    }

    async fn resume(&self, tenant: TenantId, id: ExecutionId) -> Result<()> {
        suspension::resume_by_operator(&self.pool, tenant, id).await
    }

    async fn resume_signals(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        seq: i32,
    ) -> Result<Vec<Signal>> {
        suspension::resume_signals(&self.pool, tenant, id, seq).await
    }

    async fn list_waitpoints(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<Waitpoint>> {
        suspension::list_waitpoints(&self.pool, tenant, id, after, limit).await
    }

    async fn create_flow(
        &self,
        tenant: TenantId,
        flow: &NewFlow,
        change: &GraphChange,
        max_queued: Option<u32>,
    ) -> Result<GraphApplied> {
        flows::create_flow(&self.pool, tenant, flow, change, max_queued).await
    }

    async fn extend_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        change: &GraphChange,
        max_queued: Option<u32>,
    ) -> Result<GraphApplied> {
        flows::extend_flow(&self.pool, tenant, flow, change, max_queued).await
    }

    async fn get_flow(&self, tenant: TenantId, flow: FlowId) -> Result<FlowSnapshot> {
        flows::get_flow(&self.pool, tenant, flow).await
    }

    async fn list_flows(
        &self,
        tenant: TenantId,
        after: Option<FlowId>,
        limit: u32,
    ) -> Result<Vec<FlowSummary>> {
        flows::list_flows(&self.pool, tenant, after, limit).await
    }

    async fn cancel_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        policy: FlowCancelPolicy,
        reason: &str,
    ) -> Result<u64> {
        flow_cancel::cancel_flow(&self.pool, tenant, flow, policy, reason).await
    }

    async fn work_signal(&self) -> Result<watch::Receiver<u64>> {
        self.notifications.work().await
    }

    async fn revocations(&self) -> Result<broadcast::Receiver<ExecutionId>> {
        self.notifications.revoked().await
    }

    async fn updates(&self) -> Result<broadcast::Receiver<ExecutionUpdate>> {
        self.notifications.updates().await
    }

    async fn event_wakeups(&self) -> Result<broadcast::Receiver<TenantId>> {
        self.notifications.events().await
    }

    async fn reclaim_expired_leases(&self, limit: u32) -> Result<u64> {
        scan::reclaim_expired_leases(&self.pool, limit).await
    }

    async fn promote_delayed(&self, limit: u32) -> Result<u64> {
        scan::promote_delayed(&self.pool, limit).await
    }

    async fn fail_timed_out_attempts(&self, limit: u32) -> Result<u64> {
        scan::fail_timed_out_attempts(&self.pool, limit).await
    }

    async fn expire_past_deadline(&self, limit: u32) -> Result<u64> {
        scan::expire_past_deadline(&self.pool, limit).await
    }

    async fn time_out_suspensions(&self, limit: u32) -> Result<u64> {
        suspension::time_out_suspensions(&self.pool, limit).await
    }

    async fn cancel_pending_siblings(&self, limit: u32) -> Result<u64> {
        flow_cancel::cancel_pending_siblings(&self.pool, limit).await
    }

    async fn wake_waiting_parents(&self, limit: u32) -> Result<u64> {
        children::wake_waiting_parents(&self.pool, limit).await
    }

    async fn reset_due_budgets(&self, limit: u32) -> Result<u64> {
        budgets::reset_due_budgets(&self.pool, limit).await
    }

    async fn prune_events(&self, retention: Duration, limit: u32) -> Result<u64> {
        let ms = lease::millis(retention);
        Ok(outbox::COMPLETIONS.prune(&self.pool, ms, limit).await?
            + outbox::LEASES.prune(&self.pool, ms, limit).await?
            + outbox::SIGNALS.prune(&self.pool, ms, limit).await?)
    }
}
