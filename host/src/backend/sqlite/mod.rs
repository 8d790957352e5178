//! [`Backend`] on SQLite: the embedded default, for a single host with no
//! database server.
//!
//! Layout: `record` (the execution row, its derived columns and lease
//! events), `catalog` (tenants, API keys, components), `ingress` (create,
//! read, operator ops), `lease` (claim and the fenced worker ops), `output`
//! (frames, progress, event streams), `suspension` (waitpoints, signals,
//! resume), `flows` (graph changes, snapshots, cancel), `resolve` (what
//! follows a member's end), `children` (spawn,
//! wait, wake), `budgets` (limits, usage reports, resets, claim admission),
//! `scan` (the scanner passes).
//!
//! Where Postgres needs care for concurrency, SQLite has none to give: it
//! allows one writer at a time. So every write runs in a transaction on one
//! dedicated connection, and reads use a pool of their own (WAL mode lets them
//! run alongside the writer). That serialisation is what makes the simple
//! read-change-write transitions here atomic and fenced: nothing else can
//! write between the fence check and the write. Wake-ups (new work, revoked
//! leases, execution updates, event streams) are in-process channels, fired
//! after the transaction commits.
//!
//! Every operation of the trait is supported; the differences from Postgres
//! are in the README's table.

mod budgets;
mod catalog;
mod children;
mod flows;
mod ingress;
mod lease;
mod output;
mod record;
mod resolve;
mod scan;
mod suspension;
mod time;

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers run alongside the writer; more than a few buys nothing on a file.
const READERS: u32 = 4;

pub struct SqliteBackend {
    /// One connection: every write transaction, in turn.
    writer: SqlitePool,
    reader: SqlitePool,
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: broadcast::Sender<ExecutionUpdate>,
    events: broadcast::Sender<TenantId>,
}

/// What a committed write tells the rest of the process.
#[derive(Default)]
pub(super) struct Effects {
    /// Work may be claimable.
    pub work: bool,
    pub revoked: Vec<ExecutionId>,
    pub updates: Vec<ExecutionUpdate>,
    /// Tenants whose lease or signal stream has new events.
    pub event_tenants: HashSet<TenantId>,
    /// Executions that ended in this transaction and what may wait on them,
    /// still to settle.
    pub finished: Vec<Finished>,
}

/// An execution that ended, as [`settle`] needs it: its outcome, and whether
/// a parent or flow edges may be waiting on it (known from the row that
/// ended, so settling reads nothing for executions nothing waits on).
pub(super) struct Finished {
    pub tenant: TenantId,
    pub id: ExecutionId,
    pub outcome: String,
    pub parent: Option<ExecutionId>,
    pub in_flow: bool,
}

impl Finished {
    fn of(row: &record::Exec, outcome: &str) -> Self {
        Self {
            tenant: row.tenant_id,
            id: row.execution_id,
            outcome: outcome.to_owned(),
            parent: row.parent_id,
            in_flow: row.flow_id.is_some(),
        }
    }
}

impl Effects {
    /// Take on what a savepoint that committed told.
    fn absorb(&mut self, other: Effects) {
        self.work |= other.work;
        self.revoked.extend(other.revoked);
        self.updates.extend(other.updates);
        self.event_tenants.extend(other.event_tenants);
        self.finished.extend(other.finished);
    }
}

impl SqliteBackend {
    /// Open (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::with_options(options).await
    }

    /// Open a `sqlite:` URL (`sqlite:///var/lib/flowfabric.db`, `sqlite:ff.db`).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url).map_err(EngineError::storage("open"))?;
        Self::with_options(options).await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self> {
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| EngineError::Storage {
                    op: "open",
                    cause: e.into(),
                })?;
            }
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL: a power loss may lose the last commits, never
            // corrupt the file; a process crash loses nothing.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(EngineError::storage("open"))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await
            .map_err(EngineError::storage("open"))?;
        Ok(Self {
            writer,
            reader,
            work: watch::channel(0).0,
            revoked: broadcast::channel(1024).0,
            updates: broadcast::channel(4096).0,
            events: broadcast::channel(1024).0,
        })
    }

    /// Run `body` as one write transaction; its effects are announced after
    /// it commits. An error rolls everything back.
    ///
    /// What the Postgres completion trigger does happens here ([`settle`]),
    /// before the commit, so no path that ends an execution can leave its
    /// dependants waiting.
    pub(super) async fn write<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut SqliteConnection, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        // IMMEDIATE takes the write lock up front: another process on the
        // same file then waits (busy timeout) instead of failing when its
        // read would have to become a write.
        let mut tx = self
            .writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(EngineError::storage(op))?;
        let mut effects = Effects::default();
        let outcome = match body(&mut tx, &mut effects).await {
            Ok(value) => settle(&mut tx, &mut effects).await.map(|()| value),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(value) => {
                tx.commit().await.map_err(EngineError::storage(op))?;
                self.announce(effects);
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, op, "rolling back after an error");
                }
                Err(e)
            }
        }
    }

    /// A connection for reads that need no transaction.
    pub(super) async fn read(
        &self,
        op: &'static str,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        self.reader
            .acquire()
            .await
            .map_err(EngineError::storage(op))
    }

    fn announce(&self, effects: Effects) {
        if effects.work {
            self.work.send_modify(|n| *n = n.wrapping_add(1));
        }
        // Nobody listening is fine: these are wake-ups, not the record.
        for id in effects.revoked {
            let _ = self.revoked.send(id);
        }
        for update in effects.updates {
            let _ = self.updates.send(update);
        }
        for tenant in effects.event_tenants {
            let _ = self.events.send(tenant);
        }
    }
}

/// Everything that waits on the executions this transaction ended: parents
/// waiting for their last child resume, flow edges resolve. That may end more
/// executions (skips, sibling cancels), settled in turn until nothing more ends.
pub(super) async fn settle(conn: &mut SqliteConnection, effects: &mut Effects) -> Result<()> {
    while !effects.finished.is_empty() {
        let finished = std::mem::take(&mut effects.finished);
        children::wake_parents(conn, &finished, effects).await?;
        resolve::resolve(conn, &finished, effects).await?;
    }
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.writer)
            .await
            .map_err(|e| EngineError::Storage {
                op: "migrate",
                cause: e.into(),
            })
    }

    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        catalog::create_tenant(self, name).await
    }
    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        catalog::list_tenants(self).await
    }
    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant> {
        catalog::get_tenant(&mut *self.read("get tenant").await?, tenant).await
    }
    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&mut *self.read("read migrations").await?)
                .await
                .map_err(EngineError::storage("read migrations"))?;
        Ok(crate::backend::pending(&MIGRATOR, &applied))
    }
    async fn stored_bytes(&self, tenant: TenantId) -> Result<u64> {
        catalog::stored_bytes(&mut *self.read("measure stored bytes").await?, tenant).await
    }
    async fn set_tenant_limits(&self, tenant: TenantId, limits: &TenantLimits) -> Result<Tenant> {
        catalog::set_tenant_limits(self, tenant, limits).await
    }
    async fn admission(
        &self,
        tenant: TenantId,
        kinds: &[&str],
    ) -> Result<(TenantLimits, Vec<String>)> {
        catalog::admission(self, tenant, kinds).await
    }

    async fn create_api_key(
        &self,
        tenant: TenantId,
        key_id: uuid::Uuid,
        name: &str,
        secret_sha256: &[u8],
    ) -> Result<ApiKey> {
        catalog::create_api_key(self, tenant, key_id, name, secret_sha256).await
    }
    async fn find_api_key(&self, key_id: uuid::Uuid) -> Result<Option<StoredApiKey>> {
        catalog::find_api_key(self, key_id).await
    }
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        catalog::list_api_keys(self, tenant).await
    }
    async fn revoke_api_key(&self, tenant: TenantId, key_id: uuid::Uuid) -> Result<ApiKey> {
        catalog::revoke_api_key(self, tenant, key_id).await
    }

    async fn create_executions(
        &self,
        tenant: TenantId,
        executions: &[NewExecution],
        max_queued: Option<u32>,
    ) -> Result<Vec<Created>> {
        ingress::create_executions(self, tenant, executions, max_queued).await
    }
    async fn get_execution(&self, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
        let mut conn = self.read("get execution").await?;
        record::Exec::get(&mut conn, tenant, id)
            .await?
            .to_execution()
    }
    async fn execution_state(&self, tenant: TenantId, id: ExecutionId) -> Result<ExecutionState> {
        ingress::execution_state(self, tenant, id).await
    }
    async fn list_executions(
        &self,
        tenant: TenantId,
        filter: &ExecutionFilter,
    ) -> Result<Vec<Execution>> {
        ingress::list_executions(self, tenant, filter).await
    }

    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>> {
        lease::claim(self, request).await
    }
    async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
        lease::renew(self, lease, ttl).await
    }
    async fn complete(&self, lease: &LeaseHandle, result: &[u8]) -> Result<()> {
        lease::complete(self, lease, result).await
    }
    async fn complete_many(&self, completions: &[(LeaseHandle, &[u8])]) -> Result<Vec<Result<()>>> {
        lease::complete_many(self, completions).await
    }
    async fn fail(&self, lease: &LeaseHandle, failure: &Failure) -> Result<FailOutcome> {
        lease::fail(self, lease, failure).await
    }
    async fn cancel_by_worker(&self, lease: &LeaseHandle, reason: &str) -> Result<()> {
        lease::cancel_by_worker(self, lease, reason).await
    }
    async fn cancel(&self, tenant: TenantId, id: ExecutionId, reason: &str) -> Result<bool> {
        ingress::cancel(self, tenant, id, reason).await
    }
    async fn replay(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        ingress::replay(self, tenant, id).await
    }
    async fn revoke_lease(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        ingress::revoke_lease(self, tenant, id).await
    }
    async fn delay(&self, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
        lease::delay(self, lease, until).await
    }
    async fn change_priority(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        priority: i32,
    ) -> Result<()> {
        ingress::change_priority(self, tenant, id, priority).await
    }

    async fn completion_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<CompletionEvent>> {
        output::completion_events(self, tenant, after, limit).await
    }
    async fn lease_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<LeaseEvent>> {
        output::lease_events(self, tenant, after, limit).await
    }
    async fn signal_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<SignalEvent>> {
        output::signal_events(self, tenant, after, limit).await
    }

    async fn put_component(
        &self,
        tenant: TenantId,
        kind: &str,
        digest: &str,
        wasm: &[u8],
    ) -> Result<(ComponentVersion, bool)> {
        catalog::put_component(self, tenant, kind, digest, wasm).await
    }
    async fn latest_component(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>> {
        catalog::latest_component(self, tenant, kind).await
    }
    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        catalog::component_wasm(self, tenant, digest).await
    }
    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        catalog::list_components(self, tenant).await
    }
    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        catalog::get_component(self, tenant, kind, version).await
    }
    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        catalog::deprecate_component(self, tenant, kind, version).await
    }

    async fn append_frame(
        &self,
        lease: &LeaseHandle,
        frame_type: &str,
        mode: StreamMode,
        payload: &[u8],
        max_attempt_bytes: u64,
    ) -> Result<i64> {
        output::append_frame(self, lease, frame_type, mode, payload, max_attempt_bytes).await
    }
    async fn read_frames(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Frame>> {
        output::read_frames(self, tenant, id, attempt_index, after, limit).await
    }
    async fn read_summary(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        attempt_index: i32,
    ) -> Result<Option<StreamSummary>> {
        output::read_summary(self, tenant, id, attempt_index).await
    }
    async fn set_progress(&self, lease: &LeaseHandle, percent: u8, message: &str) -> Result<()> {
        output::set_progress(self, lease, percent, message).await
    }

    async fn create_waitpoint(
        &self,
        lease: &LeaseHandle,
        key: &str,
        expires_in: Option<Duration>,
        max_waitpoints: u32,
    ) -> Result<Waitpoint> {
        suspension::create_waitpoint(self, lease, key, expires_in, max_waitpoints).await
    }
    async fn suspend(
        &self,
        lease: &LeaseHandle,
        suspension: &Suspension,
        timeout: Option<Duration>,
        max_waitpoints: u32,
    ) -> Result<SuspendOutcome> {
        suspension::suspend(self, lease, suspension, timeout, max_waitpoints).await
    }
    async fn deliver_signal(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        waitpoint_id: uuid::Uuid,
        signal: &NewSignal,
    ) -> Result<SignalOutcome> {
        suspension::deliver_signal(self, tenant, id, waitpoint_id, signal).await
    }
    async fn resume(&self, tenant: TenantId, id: ExecutionId) -> Result<()> {
        suspension::resume(self, tenant, id).await
    }
    async fn resume_signals(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        seq: i32,
    ) -> Result<Vec<Signal>> {
        suspension::resume_signals(self, tenant, id, seq).await
    }
    async fn list_waitpoints(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        after: Option<uuid::Uuid>,
        limit: u32,
    ) -> Result<Vec<Waitpoint>> {
        suspension::list_waitpoints(self, tenant, id, after, limit).await
    }

    async fn create_budget(&self, tenant: TenantId, budget: &NewBudget) -> Result<Budget> {
        budgets::create_budget(self, tenant, budget).await
    }
    async fn get_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        budgets::get_budget(self, tenant, id).await
    }
    async fn list_budgets(&self, tenant: TenantId) -> Result<Vec<Budget>> {
        budgets::list_budgets(self, tenant).await
    }
    async fn reset_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        budgets::reset_budget(self, tenant, id).await
    }
    async fn report_usage(
        &self,
        lease: &LeaseHandle,
        dimension: &str,
        delta: u64,
        dedup_key: Option<&str>,
    ) -> Result<UsageOutcome> {
        budgets::report_usage(self, lease, dimension, delta, dedup_key).await
    }

    async fn spawn_child(
        &self,
        lease: &LeaseHandle,
        child: &NewExecution,
        key: ChildKey<'_>,
        limits: SpawnLimits,
    ) -> Result<SpawnedChild> {
        children::spawn_child(self, lease, child, key, limits).await
    }
    async fn wait_children(
        &self,
        lease: &LeaseHandle,
        timeout: Option<Duration>,
        on_timeout: TimeoutBehavior,
    ) -> Result<ChildrenOutcome> {
        children::wait_children(self, lease, timeout, on_timeout).await
    }

    async fn create_flow(
        &self,
        tenant: TenantId,
        flow: &NewFlow,
        change: &GraphChange,
        max_queued: Option<u32>,
    ) -> Result<GraphApplied> {
        flows::create_flow(self, tenant, flow, change, max_queued).await
    }
    async fn extend_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        change: &GraphChange,
        max_queued: Option<u32>,
    ) -> Result<GraphApplied> {
        flows::extend_flow(self, tenant, flow, change, max_queued).await
    }
    async fn get_flow(&self, tenant: TenantId, flow: FlowId) -> Result<FlowSnapshot> {
        flows::get_flow(self, tenant, flow).await
    }
    async fn list_flows(
        &self,
        tenant: TenantId,
        after: Option<FlowId>,
        limit: u32,
    ) -> Result<Vec<FlowSummary>> {
        flows::list_flows(self, tenant, after, limit).await
    }
    async fn cancel_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        policy: FlowCancelPolicy,
        reason: &str,
    ) -> Result<u64> {
        flows::cancel_flow(self, tenant, flow, policy, reason).await
    }

    async fn work_signal(&self) -> Result<watch::Receiver<u64>> {
        Ok(self.work.subscribe())
    }
    async fn revocations(&self) -> Result<broadcast::Receiver<ExecutionId>> {
        Ok(self.revoked.subscribe())
    }
    async fn updates(&self) -> Result<broadcast::Receiver<ExecutionUpdate>> {
        Ok(self.updates.subscribe())
    }
    async fn event_wakeups(&self) -> Result<broadcast::Receiver<TenantId>> {
        Ok(self.events.subscribe())
    }

    async fn reclaim_expired_leases(&self, limit: u32) -> Result<u64> {
        scan::reclaim_expired_leases(self, limit).await
    }
    async fn promote_delayed(&self, limit: u32) -> Result<u64> {
        scan::promote_delayed(self, limit).await
    }
    async fn fail_timed_out_attempts(&self, limit: u32) -> Result<u64> {
        scan::fail_timed_out_attempts(self, limit).await
    }
    async fn expire_past_deadline(&self, limit: u32) -> Result<u64> {
        scan::expire_past_deadline(self, limit).await
    }
    async fn time_out_suspensions(&self, limit: u32) -> Result<u64> {
        suspension::time_out_suspensions(self, limit).await
    }
    // One writer means no row is ever locked by another transaction: a
    // satisfied `cancel_remaining` join cancels its upstreams, and a child's
    // end resumes its waiting parent, in the same transaction. Neither is
    // ever left over for these passes.
    async fn cancel_pending_siblings(&self, _limit: u32) -> Result<u64> {
        Ok(0)
    }
    async fn wake_waiting_parents(&self, _limit: u32) -> Result<u64> {
        Ok(0)
    }
    async fn reset_due_budgets(&self, limit: u32) -> Result<u64> {
        budgets::reset_due_budgets(self, limit).await
    }
    async fn prune_events(&self, retention: Duration, limit: u32) -> Result<u64> {
        scan::prune_events(self, retention, limit).await
    }
}
