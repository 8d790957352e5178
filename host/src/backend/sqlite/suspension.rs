//! Waitpoints, suspension, signal delivery and resume.
//!
//! The same model as Postgres (`postgres/suspension.rs`): a waitpoint is
//! `pending`, then `active` while a suspension waits on it, then `closed`;
//! signals are buffered until a resume consumes them. Every operation runs in
//! the one writer's transaction, so a condition is evaluated once per change
//! and racing signals cannot resume an execution twice.

use std::time::Duration;

use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::executions::end_attempt;
use super::record::Exec;
use super::time::{after, at, now, Millis};
use super::Held;
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::shared::suspension::sqlite as shared;
use crate::backend::shared::suspension::{WaitpointRow, WAITPOINT_COLUMNS};
use crate::backend::{Fetch, Run};
use crate::backend::{NewWaitpoint, SignalDelivery, SuspendRequest};
use crate::error::{EngineError, Result};
use crate::model::WaitpointId;
use crate::model::{AttemptPhase, Eligibility, LifecyclePhase};
use crate::model::{
    ExecutionId, PublicState, Signal, SignalOutcome, SuspendOutcome, Suspension, TenantId,
    Waitpoint,
};

crate::backend::coordination::implement_suspension!(SqliteBackend, sqlite);

async fn create_waitpoint(held: Held<'_, '_>, new: NewWaitpoint<'_>) -> Result<Waitpoint> {
    let (conn, lease) = (held.tx.conn()?, held.lease);
    let (tenant, id) = (lease.tenant_id, lease.execution_id);
    if let Some(open) = open_waitpoint(conn, tenant, id, new.key).await? {
        return Ok(open.into());
    }
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM waitpoints \
         WHERE tenant_id = ? AND execution_id = ? LIMIT ?)",
    )
    .bind(tenant)
    .bind(id)
    .bind(i64::from(new.max_waitpoints))
    .one(&mut *conn, "create waitpoint")
    .await?;
    if total >= i64::from(new.max_waitpoints) {
        return Err(refusals::waitpoints_exceeded(new.max_waitpoints));
    }
    let expires_at = new.expires_in.map(|d| after(now(), d));
    Ok(
        insert_waitpoint(conn, tenant, id, new.key, "pending", expires_at)
            .await?
            .into(),
    )
}

async fn suspend(held: Held<'_, '_>, request: SuspendRequest<'_>) -> Result<SuspendOutcome> {
    let (conn, lease, mut row, effects) = (held.tx.conn()?, held.lease, held.row, held.effects);
    let (tenant, id) = (lease.tenant_id, lease.execution_id);
    let seq = row.suspension_seq + 1;
    let mut expired = None;
    for key in request.suspension.condition.keys() {
        match open_waitpoint(conn, tenant, id, key).await? {
            Some(open) => {
                let past = open.expired_by(at(now()));
                if open.state == "pending" && past && expired.is_none() {
                    expired = Some(key.to_owned());
                }
                sqlx::query(
                    "UPDATE waitpoints SET state = 'active' \
                     WHERE tenant_id = ? AND execution_id = ? AND waitpoint_id = ?",
                )
                .bind(tenant)
                .bind(id)
                .bind(open.waitpoint_id)
                .run(&mut *conn, "suspend")
                .await?;
            }
            None => {
                insert_waitpoint(conn, tenant, id, key, "active", None).await?;
            }
        }
    }
    // Counted after the inserts; past the cap, the write is undone.
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM waitpoints \
         WHERE tenant_id = ? AND execution_id = ? LIMIT ?)",
    )
    .bind(tenant)
    .bind(id)
    .bind(i64::from(request.max_waitpoints) + 1)
    .one(&mut *conn, "suspend")
    .await?;
    if total > i64::from(request.max_waitpoints) {
        return Err(refusals::waitpoints_exceeded(request.max_waitpoints));
    }
    let buffered = shared::buffered_signals(conn, tenant, id).await?;
    let satisfied = request.suspension.is_satisfied_by(&buffered);
    if let (false, Some(key)) = (satisfied, &expired) {
        // Signals refused since it expired would never resume this.
        return Err(refusals::waitpoint_expired(key));
    }
    if satisfied {
        let consumed = consume_and_close(conn, tenant, id, seq).await?;
        let before = row.lease_before();
        row.suspension_seq = seq;
        row.save(conn, Some(before), effects).await?;
        return Ok(SuspendOutcome::AlreadySatisfied(consumed));
    }
    record_suspension(conn, &mut row, request.suspension, request.timeout, effects).await?;
    Ok(SuspendOutcome::Suspended)
}

/// The open (not closed) waitpoint of the execution with this key.
async fn open_waitpoint(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
    key: &str,
) -> Result<Option<WaitpointRow>> {
    sqlx::query_as(&format!(
        "SELECT {WAITPOINT_COLUMNS} FROM waitpoints WHERE tenant_id = ? AND execution_id = ? \
         AND waitpoint_key = ? AND state <> 'closed'"
    ))
    .bind(tenant)
    .bind(id)
    .bind(key)
    .optional(conn, "read waitpoint")
    .await
}

async fn insert_waitpoint(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
    key: &str,
    state: &str,
    expires_at: Option<Millis>,
) -> Result<WaitpointRow> {
    sqlx::query_as(&format!(
        "INSERT INTO waitpoints (tenant_id, execution_id, waitpoint_id, waitpoint_key, state, \
         expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {WAITPOINT_COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(Uuid::now_v7())
    .bind(key)
    .bind(state)
    .bind(expires_at)
    .bind(now())
    .one(conn, "create waitpoint")
    .await
}

/// Suspend a held row as its next suspension: the lease is released and the
/// attempt waits, until a resume or `timeout`.
pub(super) async fn record_suspension(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    suspension: &Suspension,
    timeout: Option<Duration>,
    effects: &mut Effects,
) -> Result<()> {
    let now = now();
    let before = row.lease_before();
    row.release_lease(now);
    row.lifecycle_phase = LifecyclePhase::Suspended;
    row.eligibility_state = Eligibility::NotApplicable;
    row.blocking_reason = Some(suspension.blocking_reason().into());
    row.attempt_state = AttemptPhase::AttemptSuspended;
    row.suspension = Some(Json(suspension.clone()));
    row.suspension_seq += 1;
    row.suspension_timeout_at = timeout.map(|d| after(now, d));
    row.save(conn, Some(before), effects).await?;
    end_attempt(conn, row, "suspended", None, &["running"], now).await
}

/// The active waitpoints' buffered signals become resume `seq`'s; the
/// waitpoints close, so a later signal to them is refused.
async fn consume_and_close(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
    seq: i32,
) -> Result<Vec<Signal>> {
    let consumed = shared::buffered_signals(conn, tenant, id).await?;
    sqlx::query(
        "UPDATE signals SET consumed_in = ?3 \
         WHERE tenant_id = ?1 AND execution_id = ?2 AND consumed_in IS NULL \
           AND waitpoint_id IN (SELECT waitpoint_id FROM waitpoints \
               WHERE tenant_id = ?1 AND execution_id = ?2 AND state = 'active')",
    )
    .bind(tenant)
    .bind(id)
    .bind(seq)
    .run(&mut *conn, "consume signals")
    .await?;
    sqlx::query(
        "UPDATE waitpoints SET state = 'closed' \
         WHERE tenant_id = ? AND execution_id = ? AND state = 'active'",
    )
    .bind(tenant)
    .bind(id)
    .run(conn, "consume signals")
    .await?;
    Ok(consumed)
}

/// Make a suspended row runnable again on its suspended attempt.
pub(super) async fn resume_row(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    effects: &mut Effects,
) -> Result<()> {
    consume_and_close(conn, row.tenant_id, row.execution_id, row.suspension_seq).await?;
    let before = row.lease_before();
    row.resume(now());
    row.save(conn, Some(before), effects).await
}

pub(super) async fn deliver_signal(
    db: &SqliteBackend,
    tenant: TenantId,
    delivery: SignalDelivery<'_>,
) -> Result<SignalOutcome> {
    let (to, new) = (delivery.to, delivery.signal);
    db.write("deliver signal", async |conn, effects| {
        let mut row = Exec::get(conn, tenant, to.execution).await?;
        let event = |signal_id| SignalEventRow {
            tenant,
            execution: to.execution,
            waitpoint: to.waitpoint,
            signal: signal_id,
            name: &new.name,
        };
        if let Some(key) = &new.idempotency_key {
            let existing: Option<Uuid> = sqlx::query_scalar(
                "SELECT signal_id FROM signals \
                 WHERE tenant_id = ? AND execution_id = ? AND idempotency_key = ?",
            )
            .bind(tenant)
            .bind(to.execution)
            .bind(key)
            .optional(&mut *conn, "deliver signal")
            .await?;
            if let Some(signal_id) = existing {
                event(signal_id).record(conn, "duplicate", effects).await?;
                return Ok(SignalOutcome::Duplicate { signal_id });
            }
        }
        let target: WaitpointRow = sqlx::query_as(&format!(
            "SELECT {WAITPOINT_COLUMNS} FROM waitpoints \
             WHERE tenant_id = ? AND execution_id = ? AND waitpoint_id = ?"
        ))
        .bind(tenant)
        .bind(to.execution)
        .bind(to.waitpoint)
        .optional(&mut *conn, "deliver signal")
        .await?
        .ok_or_else(|| EngineError::not_found("waitpoint", to.waitpoint))?;
        let expired = target.expired_by(at(now()));
        if target.state == "closed" || expired {
            return Err(refusals::waitpoint_closed(&target.waitpoint_key));
        }
        let state = row.derived_public_state();
        if state.is_terminal() {
            return Err(refusals::takes_no_signals(to.execution, state));
        }
        shared::check_signal_room(conn, tenant, to.execution, delivery.max_signals).await?;
        let key = &target.waitpoint_key;
        let signal_id = shared::insert_signal(conn, tenant, to, key, new).await?;
        let mut resumed = false;
        if let (PublicState::Suspended, Some(suspension)) = (state, row.suspension.clone()) {
            let buffered = shared::buffered_signals(conn, tenant, to.execution).await?;
            if suspension.is_satisfied_by(&buffered) {
                resume_row(conn, &mut row, effects).await?;
                resumed = true;
            }
        }
        let effect = if resumed { "resumed" } else { "buffered" };
        event(signal_id).record(conn, effect, effects).await?;
        Ok(SignalOutcome::Accepted { signal_id, resumed })
    })
    .await
}

/// A signal-delivery event, written in the delivering transaction.
pub(super) struct SignalEventRow<'a> {
    pub(super) tenant: TenantId,
    pub(super) execution: ExecutionId,
    pub(super) waitpoint: WaitpointId,
    pub(super) signal: Uuid,
    pub(super) name: &'a str,
}

impl SignalEventRow<'_> {
    pub(super) async fn record(
        &self,
        conn: &mut SqliteConnection,
        effect: &str,
        effects: &mut Effects,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO signal_events (tenant_id, execution_id, waitpoint_id, signal_id, name, \
             effect, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.tenant)
        .bind(self.execution)
        .bind(self.waitpoint)
        .bind(self.signal)
        .bind(self.name)
        .bind(effect)
        .bind(now())
        .run(conn, "record signal event")
        .await?;
        effects.event_tenants.insert(self.tenant);
        Ok(())
    }
}

/// An operator resumes a suspended execution, whatever its condition.
pub(super) async fn resume(db: &SqliteBackend, tenant: TenantId, id: ExecutionId) -> Result<()> {
    db.write_row("resume", tenant, id, async |conn, mut row, effects| {
        let state = row.derived_public_state();
        if state != PublicState::Suspended {
            return Err(refusals::not_suspended(id, state));
        }
        resume_row(conn, &mut row, effects).await
    })
    .await
}
