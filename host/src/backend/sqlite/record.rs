//! The execution row as the embedded backend reads and writes it.
//!
//! On Postgres each transition is one `UPDATE … WHERE <fence>` and triggers
//! keep the derived parts (lease history) right. SQLite has one writer, so a
//! transition here is read, change in Rust, write back, inside the writer's
//! transaction: nothing can change the row in between. Every write of an
//! execution goes through [`Exec::save`], which sets the blocking reason and
//! records a lease event whenever the lease changed — as the Postgres trigger
//! does, so no path can skip either. The public state is a generated column
//! on both backends.

use std::collections::{BTreeMap, HashMap};

use sqlx::error::BoxDynError;
use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::lease_history::LeaseBefore;
use super::raw;
use super::stored_policy::StoredPolicy;
use super::time::{at, Millis};
use super::tx::Tx;
use super::writes::Writes;
use super::{Effects, Finished};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{
    public_state, runnable_blocking_reason, AttemptPhase, Eligibility, FlowId, LifecyclePhase,
    Ownership, TerminalOutcome,
};
use crate::model::{
    Execution, ExecutionId, ExecutionUpdate, Failure, LeaseHandle, PublicState, Suspension,
    TenantId,
};

/// One row of `executions`, every column.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Exec {
    pub tenant_id: TenantId,
    pub execution_id: ExecutionId,
    pub kind: String,
    pub lane: String,
    pub priority: i32,
    pub required_capabilities: Json<Vec<String>>,
    pub tags: Json<BTreeMap<String, String>>,
    pub input: Vec<u8>,
    pub policy: StoredPolicy,
    pub idempotency_key: Option<String>,
    pub lifecycle_phase: LifecyclePhase,
    pub ownership_state: Ownership,
    pub eligibility_state: Eligibility,
    pub blocking_reason: Option<String>,
    pub terminal_outcome: Option<TerminalOutcome>,
    pub attempt_state: AttemptPhase,
    pub attempt_index: i32,
    pub lease_epoch: i64,
    pub lease_id: Option<Uuid>,
    pub lease_expires_at: Option<Millis>,
    pub attempt_timeout_at: Option<Millis>,
    pub retry_count: i32,
    pub reclaim_count: i32,
    pub replay_count: i32,
    pub eligible_at: Millis,
    pub deadline_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub result: Option<Vec<u8>>,
    pub last_failure: Option<Json<Failure>>,
    pub cancellation_reason: Option<String>,
    pub progress_percent: Option<i16>,
    pub progress_message: Option<String>,
    pub frame_seq: i64,
    /// The bytes of the frames of the attempt that last appended one (see
    /// `refusals::frame_bytes_after`).
    pub frame_bytes: i64,
    pub flow_id: Option<FlowId>,
    pub flow_key: Option<String>,
    pub parent_id: Option<ExecutionId>,
    pub suspension_seq: i32,
    pub suspension: Option<Json<Suspension>>,
    pub suspension_timeout_at: Option<Millis>,
    pub concurrency_key: Option<String>,
    /// The scope (`kind` or `lane`) of the concurrency slot its current (or
    /// last) attempt holds.
    pub concurrency_held: Option<String>,
    /// The row as the database has it, when known: see [`Exec::remembering_stored`].
    #[sqlx(skip)]
    pub(super) stored: Option<Box<Exec>>,
}

/// Every column of `executions` but the generated `public_state`, named once:
/// the column list, the parameters of an insert, and the `SET` of an update
/// that writes only what changed. The keys come first and never change.
macro_rules! columns {
    (keys: $tenant:ident, $id:ident; values: $($value:ident),+ $(,)?) => {
        const COLUMNS: &str =
            concat!(stringify!($tenant), ", ", stringify!($id) $(, ", ", stringify!($value))+);
        const COLUMN_COUNT: usize = 2 + [$(stringify!($value)),+].len();

        /// The row read on the writer's handle, from a `SELECT` of
        /// [`COLUMNS`] in order ([`Exec::select_sql`]).
        impl raw::FromRaw for Exec {
            fn from_raw(row: &raw::Row<'_>) -> std::result::Result<Self, BoxDynError> {
                let mut at = 0..;
                let mut next = || at.next().expect("unbounded");
                Ok(Exec {
                    $tenant: row.get(next())?,
                    $id: row.get(next())?,
                    $($value: row.get(next())?,)+
                    stored: None,
                })
            }
        }

        impl Exec {
            /// Bind every column, in [`COLUMNS`] order.
            fn bind_all<'q>(&'q self, w: &mut Writes<'q>) {
                w.bind(self.$tenant).bind(self.$id);
                $(w.bind(&self.$value);)+
            }

            /// The `SET` list of the columns that differ from `before`, each
            /// bound in order; empty when nothing changed.
            fn bind_changes<'q>(&'q self, before: &Exec, w: &mut Writes<'q>) -> String {
                let mut set = Vec::new();
                $(if self.$value != before.$value {
                    set.push(concat!(stringify!($value), " = ?"));
                    w.bind(&self.$value);
                })+
                set.join(", ")
            }

            /// Bring `stored` up to this row after a save, copying only the
            /// columns that changed.
            fn catch_up(&self, stored: &mut Exec) {
                $(if self.$value != stored.$value {
                    stored.$value = self.$value.clone();
                })+
            }
        }
    };
}

columns! {
    keys: tenant_id, execution_id;
    values: kind, lane, priority, required_capabilities, tags, input, policy, idempotency_key,
        lifecycle_phase, ownership_state, eligibility_state, blocking_reason, terminal_outcome,
        attempt_state, attempt_index, lease_epoch, lease_id, lease_expires_at,
        attempt_timeout_at, retry_count, reclaim_count, replay_count, eligible_at, deadline_at,
        created_at, updated_at, started_at, finished_at, result, last_failure,
        cancellation_reason, progress_percent, progress_message, frame_seq, frame_bytes, flow_id, flow_key,
        parent_id, suspension_seq, suspension, suspension_timeout_at, concurrency_key,
        concurrency_held,
}

/// The whole row, inserted or written over: for a new row, and for one read
/// without [`Exec::remembering_stored`].
static SAVE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let params = vec!["?"; COLUMN_COUNT].join(", ");
    let updates = COLUMNS
        .split(", ")
        .skip(2)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO executions ({COLUMNS}) VALUES ({params}) \
         ON CONFLICT (tenant_id, execution_id) DO UPDATE SET {updates}"
    )
});

impl Exec {
    /// The row, if the tenant has it, remembering how it is stored: for a
    /// write, whose save then updates only what changed.
    pub async fn load(
        conn: &mut SqliteConnection,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Option<Exec>> {
        Self::load_in(&mut Tx::Sqlx(conn), tenant, id).await
    }

    /// [`Exec::load`], in a write transaction either way ([`Tx`]).
    pub async fn load_in(
        tx: &mut Tx<'_>,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Option<Exec>> {
        let row: Option<Exec> = tx
            .optional(
                "read execution",
                &Self::select_sql("tenant_id = ? AND execution_id = ?"),
                |w| {
                    w.bind(tenant).bind(id);
                },
            )
            .await?;
        Ok(row.map(Exec::remembering_stored))
    }

    /// The row, if the tenant has it, only to read.
    pub async fn peek(
        conn: &mut SqliteConnection,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Option<Exec>> {
        sqlx::query_as(&Self::select_sql("tenant_id = ? AND execution_id = ?"))
            .bind(tenant)
            .bind(id)
            .optional(conn, "read execution")
            .await
    }

    /// The rows of several executions in one statement (those that exist),
    /// each remembering how it is stored, by tenant and id.
    pub async fn load_many(
        tx: &mut Tx<'_>,
        keys: &[(TenantId, ExecutionId)],
    ) -> Result<HashMap<(TenantId, ExecutionId), Exec>> {
        let keys: Vec<[String; 2]> = keys
            .iter()
            .map(|(tenant, id)| {
                [
                    tenant.as_uuid().simple().to_string(),
                    id.as_uuid().simple().to_string(),
                ]
            })
            .collect();
        let keys = serde_json::to_string(&keys).expect("strings serialise");
        let sql = Self::select_sql(
            "(tenant_id, execution_id) IN \
             (SELECT unhex(value ->> 0), unhex(value ->> 1) FROM json_each(?))",
        );
        let rows: Vec<Exec> = tx
            .fetch("read executions", &sql, |w| {
                w.bind(keys);
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| ((row.tenant_id, row.execution_id), row.remembering_stored()))
            .collect())
    }

    /// The row, or `NotFound`.
    pub async fn get(
        conn: &mut SqliteConnection,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Exec> {
        Self::load(conn, tenant, id)
            .await?
            .ok_or_else(|| not_found(id))
    }

    /// The tenant's rows matching `clause` (its first parameter is the tenant).
    pub async fn fetch(
        conn: &mut SqliteConnection,
        clause: &str,
        tenant: TenantId,
        op: &'static str,
    ) -> Result<Vec<Exec>> {
        sqlx::query_as(&Self::select_sql(clause))
            .bind(tenant)
            .all(conn, op)
            .await
    }

    /// The executions `parent` spawned, in spawn order.
    pub async fn children(
        conn: &mut SqliteConnection,
        tenant: TenantId,
        parent: ExecutionId,
    ) -> Result<Vec<Exec>> {
        sqlx::query_as(&Self::select_sql(
            "tenant_id = ? AND parent_id = ? ORDER BY execution_id",
        ))
        .bind(tenant)
        .bind(parent)
        .all(conn, "read children")
        .await
    }

    /// `SELECT` of every column for rows matching `clause` (a `WHERE` body,
    /// with any `ORDER BY` and `LIMIT`), for `sqlx::query_as`.
    pub fn select_sql(clause: &str) -> String {
        format!("SELECT {COLUMNS} FROM executions WHERE {clause}")
    }

    /// Remember the row as it is stored, so that its next [`Exec::save`]
    /// writes only what changed. The read paths of writes call it; a row
    /// without it is written whole.
    pub fn remembering_stored(mut self) -> Self {
        self.stored = Some(Box::new(self.clone()));
        self
    }

    /// Whether the row's attempt holds a slot of its concurrency key, which
    /// ending the attempt hands on ([`super::concurrency::hand_on`]).
    pub fn holds_concurrency_slot(&self) -> bool {
        self.concurrency_key.is_some() && self.concurrency_held.is_some()
    }

    /// Whether `lease` names this row's live lease.
    pub fn is_held_by(&self, lease: &LeaseHandle) -> bool {
        self.lifecycle_phase == LifecyclePhase::Active
            && self.attempt_index == lease.attempt_index
            && self.lease_id == Some(lease.lease_id)
            && self.lease_epoch == lease.lease_epoch
    }

    pub fn lease(&self) -> Option<LeaseHandle> {
        Some(LeaseHandle {
            tenant_id: self.tenant_id,
            execution_id: self.execution_id,
            attempt_index: self.attempt_index,
            lease_id: self.lease_id?,
            lease_epoch: self.lease_epoch,
        })
    }

    pub fn is_terminal(&self) -> bool {
        self.lifecycle_phase == LifecyclePhase::Terminal
    }

    /// Refuse, with `refusal` naming the state it is in, unless the
    /// execution is in `phase`.
    pub fn require(
        &self,
        phase: LifecyclePhase,
        refusal: fn(ExecutionId, PublicState) -> EngineError,
    ) -> crate::error::Result<()> {
        if self.lifecycle_phase == phase {
            return Ok(());
        }
        Err(refusal(self.execution_id, self.derived_public_state()))
    }

    /// Drop the lease (every move out of `active` does).
    pub fn release_lease(&mut self, now: Millis) {
        self.ownership_state = Ownership::Unowned;
        self.lease_id = None;
        self.lease_expires_at = None;
        self.attempt_timeout_at = None;
        self.updated_at = now;
    }

    /// Runnable again at `eligible_at` (now or later).
    pub fn make_runnable(&mut self, eligible_at: Millis, attempt_state: AttemptPhase, now: Millis) {
        let due = eligible_at <= now;
        self.lifecycle_phase = LifecyclePhase::Runnable;
        self.eligibility_state = if due {
            Eligibility::EligibleNow
        } else {
            Eligibility::NotEligibleUntilTime
        };
        self.attempt_state = attempt_state;
        self.eligible_at = eligible_at.max(now);
        self.updated_at = now;
    }

    /// A suspended execution runnable again, due now, on its suspended
    /// attempt (its next claim continues that attempt under a new epoch).
    pub fn resume(&mut self, now: Millis) {
        self.make_runnable(now, AttemptPhase::PendingResumeAttempt, now);
        self.suspension = None;
        self.suspension_timeout_at = None;
    }

    /// An ended execution back among the live ones: unowned, its end
    /// cleared, with a fresh deadline from its policy. The caller sets how
    /// it is runnable. What replay and flow revival share.
    pub fn reopen(&mut self, now: Millis) {
        self.ownership_state = Ownership::Unowned;
        self.terminal_outcome = None;
        self.finished_at = None;
        self.cancellation_reason = None;
        self.deadline_at = self
            .policy
            .timeouts
            .execution_deadline_ms
            .map(|ms| super::time::after_ms(now, ms));
        self.updated_at = now;
    }

    /// End the execution with `outcome` (`success`, `failed`, `cancelled`, …).
    pub fn make_terminal(&mut self, outcome: TerminalOutcome, now: Millis) {
        self.release_lease(now);
        self.lifecycle_phase = LifecyclePhase::Terminal;
        self.eligibility_state = Eligibility::NotApplicable;
        self.blocking_reason = None;
        self.terminal_outcome = Some(outcome);
        self.attempt_state = AttemptPhase::AttemptTerminal;
        self.finished_at = Some(now);
        self.suspension = None;
        self.suspension_timeout_at = None;
    }

    /// The public state, derived from the state vector as the generated
    /// `public_state` column derives it (on both backends), without a read.
    pub fn derived_public_state(&self) -> PublicState {
        public_state(
            self.lifecycle_phase,
            self.eligibility_state,
            self.terminal_outcome,
        )
    }

    /// Write the row (insert or update) with its derived columns, the lease
    /// event its change makes (`before` is `None` for a new row), and the
    /// wake-ups to send once the transaction commits.
    pub async fn save(
        &mut self,
        conn: &mut SqliteConnection,
        before: Option<LeaseBefore>,
        effects: &mut Effects,
    ) -> Result<()> {
        self.save_and(conn, before, effects, |_, _, _| {}).await
    }

    /// [`Exec::save`], with more writes of the same transition (its attempt,
    /// its outbox row) sent after the row's own in the same round trip. A row
    /// that remembers how it is stored sets only the columns that differ
    /// from that, so unchanged indexes and payloads are not rewritten.
    pub async fn save_and(
        &mut self,
        conn: &mut SqliteConnection,
        before: Option<LeaseBefore>,
        effects: &mut Effects,
        more: impl FnOnce(&Exec, &mut Writes<'_>, &mut Effects),
    ) -> Result<()> {
        self.save_in(&mut Tx::Sqlx(conn), before, effects, more)
            .await
    }

    /// [`Exec::save_and`], in a write transaction either way ([`Tx`]).
    pub async fn save_in(
        &mut self,
        tx: &mut Tx<'_>,
        before: Option<LeaseBefore>,
        effects: &mut Effects,
        more: impl FnOnce(&Exec, &mut Writes<'_>, &mut Effects),
    ) -> Result<()> {
        let stored = self.begin_save();
        let mut writes = Writes::default();
        self.write_save(stored.as_deref(), before, &mut writes, effects);
        more(self, &mut writes, effects);
        tx.run(writes, "write execution").await?;
        self.end_save(stored, before, tx, effects).await
    }

    /// A save's first part: the derived columns set, and how the row is
    /// stored taken out (if known) for [`Exec::write_save`] to compare with.
    pub(super) fn begin_save(&mut self) -> Option<Box<Exec>> {
        self.blocking_reason = match self.lifecycle_phase {
            LifecyclePhase::Runnable => {
                Some(runnable_blocking_reason(self.eligibility_state, self.attempt_state).into())
            }
            LifecyclePhase::Active | LifecyclePhase::Terminal => None,
            LifecyclePhase::Submitted | LifecyclePhase::Suspended => self.blocking_reason.take(),
        };
        self.stored.take()
    }

    /// A save's statements: the row (only what differs from `stored`, or
    /// whole) and its lease event.
    pub(super) fn write_save<'q>(
        &'q self,
        stored: Option<&Exec>,
        before: Option<LeaseBefore>,
        writes: &mut Writes<'q>,
        effects: &mut Effects,
    ) {
        match stored {
            Some(stored) => {
                let set = self.bind_changes(stored, writes);
                if !set.is_empty() {
                    writes
                        .statement(&format!(
                            "UPDATE executions SET {set} WHERE tenant_id = ? AND execution_id = ?"
                        ))
                        .bind(self.tenant_id)
                        .bind(self.execution_id);
                }
            }
            None => {
                writes.statement(&SAVE_SQL);
                self.bind_all(writes);
            }
        }
        if let Some(before) = before {
            self.write_lease_event(before, writes, effects);
        }
    }

    /// A save's last part, once its statements ran: the stored copy caught
    /// up, a freed concurrency slot handed on, the work wake-up noted.
    pub(super) async fn end_save(
        &mut self,
        stored: Option<Box<Exec>>,
        before: Option<LeaseBefore>,
        tx: &mut Tx<'_>,
        effects: &mut Effects,
    ) -> Result<()> {
        if let Some(mut stored) = stored {
            self.catch_up(&mut stored);
            self.stored = Some(stored);
        }
        // Every move out of `active` drops the lease: a concurrency slot held
        // goes to the key's next execution.
        let released = before.is_some_and(|b| b.lease_id.is_some() && self.lease_id.is_none());
        if released && self.holds_concurrency_slot() {
            super::concurrency::hand_on(tx, self, effects).await?;
        }
        if self.lifecycle_phase == LifecyclePhase::Runnable
            && self.eligibility_state == Eligibility::EligibleNow
        {
            effects.work = true;
        }
        Ok(())
    }

    /// Record the execution's end in the completion outbox. Whatever waits on
    /// it (flow edges) is resolved before the transaction commits.
    pub async fn record_completion(
        &self,
        conn: &mut SqliteConnection,
        effects: &mut Effects,
    ) -> Result<()> {
        let mut writes = Writes::default();
        self.write_completion(&mut writes, effects);
        writes.run(conn, "record completion event").await
    }

    /// [`Exec::record_completion`], as one of a transition's writes.
    pub fn write_completion(&self, w: &mut Writes<'_>, effects: &mut Effects) {
        let outcome = self
            .terminal_outcome
            .unwrap_or(TerminalOutcome::Failed)
            .as_str();
        w.statement(
            "INSERT INTO completion_events (tenant_id, execution_id, attempt_index, outcome, \
             created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(self.tenant_id)
        .bind(self.execution_id)
        .bind(self.attempt_index)
        .bind(outcome)
        .bind(self.updated_at);
        effects.finished.push(Finished::of(self, outcome));
        effects.updates.push(ExecutionUpdate {
            tenant_id: self.tenant_id,
            execution_id: self.execution_id,
        });
    }

    pub fn to_execution(&self) -> Result<Execution> {
        let state = self.derived_public_state();
        let suspended = state == PublicState::Suspended;
        Ok(Execution {
            tenant_id: self.tenant_id,
            execution_id: self.execution_id,
            kind: self.kind.clone(),
            lane: self.lane.clone(),
            priority: self.priority,
            required_capabilities: self.required_capabilities.0.clone(),
            tags: self.tags.0.clone(),
            policy: self.policy.0.clone(),
            idempotency_key: self.idempotency_key.clone(),
            concurrency_key: self.concurrency_key.clone(),
            state,
            blocking_reason: self.blocking_reason.clone(),
            attempt_index: self.attempt_index,
            lease_epoch: self.lease_epoch,
            retry_count: self.retry_count,
            reclaim_count: self.reclaim_count,
            replay_count: self.replay_count,
            eligible_at: at(self.eligible_at),
            deadline_at: self.deadline_at.map(at),
            created_at: at(self.created_at),
            started_at: self.started_at.map(at),
            finished_at: self.finished_at.map(at),
            input: self.input.clone(),
            result: self.result.clone(),
            last_failure: self.last_failure.as_ref().map(|f| f.0.clone()),
            cancellation_reason: self.cancellation_reason.clone(),
            progress_percent: self.progress_percent,
            progress_message: self.progress_message.clone(),
            flow_id: self.flow_id,
            flow_key: self.flow_key.clone(),
            parent_id: self.parent_id,
            suspension: suspended
                .then(|| self.suspension.as_ref().map(|s| s.0.clone()))
                .flatten(),
            suspension_timeout_at: suspended
                .then_some(self.suspension_timeout_at.map(at))
                .flatten(),
        })
    }
}

pub(super) fn not_found(id: ExecutionId) -> EngineError {
    EngineError::not_found("execution", id)
}
