//! Waitpoints, suspension, signal delivery and resume.
//!
//! Every operation locks the execution row first (the fenced worker calls
//! through the lease, delivery and operator resume by id), so a suspension and
//! the signals that end it are serialised: a condition is evaluated once per
//! change, and an execution cannot be resumed twice by racing signals.

use std::time::Duration;

use super::Connections;
use super::Held;
use sqlx::PgConnection;
use uuid::Uuid;

use super::leases::{millis, rejection, FENCE};
use super::rows::{col, json, transaction, Args};
use super::PgBackend;
use super::EVENTS_CHANNEL;
use crate::backend::refusals;
use crate::backend::shared::suspension::pg as shared;
use crate::backend::shared::suspension::{
    SignalRow, WaitpointRow, SIGNAL_COLUMNS, WAITPOINT_COLUMNS,
};
use crate::backend::{Fetch, Run};
use crate::backend::{NewWaitpoint, SignalDelivery, SuspendRequest};
use crate::error::{EngineError, Result};
use crate::model::WaitpointId;
use crate::model::{
    ExecutionId, LeaseHandle, PublicState, Signal, SignalOutcome, SuspendOutcome, Suspension,
    TenantId, Waitpoint,
};

crate::backend::coordination::implement_suspension!(PgBackend, pg);

/// Create (or, for a key already open, return) a waitpoint of the lease's
/// execution. Signals delivered to it are kept until a suspension uses them.
async fn create_waitpoint(held: Held<'_>, new: NewWaitpoint<'_>) -> Result<Waitpoint> {
    let (tx, lease, op) = (held.tx, held.lease, held.op);
    // The execution's row lock serialises its waitpoints: count, then add.
    let (open, total): (bool, i64) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM waitpoints WHERE tenant_id = $1 AND execution_id = $2 \
             AND waitpoint_key = $3 AND state <> 'closed'), \
         (SELECT count(*) FROM (SELECT 1 FROM waitpoints \
             WHERE tenant_id = $1 AND execution_id = $2 LIMIT $4) w)",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(new.key)
    .bind(i64::from(new.max_waitpoints))
    .one(&mut *tx, op)
    .await?;
    if !open && total >= i64::from(new.max_waitpoints) {
        return Err(refusals::waitpoints_exceeded(new.max_waitpoints));
    }
    let row: WaitpointRow = sqlx::query_as(&format!(
        "INSERT INTO waitpoints (tenant_id, execution_id, waitpoint_id, waitpoint_key, state, \
             expires_at) \
         VALUES ($1, $2, $3, $4, 'pending', now() + $5 * interval '1 millisecond') \
         ON CONFLICT (tenant_id, execution_id, waitpoint_key) WHERE state <> 'closed' \
         DO UPDATE SET waitpoint_key = EXCLUDED.waitpoint_key \
         RETURNING {WAITPOINT_COLUMNS}"
    ))
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(Uuid::now_v7())
    .bind(new.key)
    .bind(new.expires_in.map(millis))
    .one(&mut *tx, op)
    .await?;
    Ok(row.into())
}

/// Suspend the lease's execution, unless signals already buffered on the
/// condition's waitpoints satisfy it.
async fn suspend(held: Held<'_>, request: SuspendRequest<'_>) -> Result<SuspendOutcome> {
    let (tx, lease, op, suspensions) = (held.tx, held.lease, held.op, held.suspensions);
    let seq = suspensions + 1;
    let keys = request.suspension.condition.keys();
    // Read before the insert below makes them active (and so unexpired).
    let expired: Option<String> = sqlx::query_scalar(
        "SELECT waitpoint_key FROM waitpoints \
         WHERE tenant_id = $1 AND execution_id = $2 AND state = 'pending' \
           AND waitpoint_key = ANY($3) AND expires_at <= now() \
         ORDER BY waitpoint_key LIMIT 1",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(&keys)
    .optional(&mut *tx, op)
    .await?;
    let ids: Vec<WaitpointId> = keys.iter().map(|_| WaitpointId::new()).collect();
    sqlx::query(
        "INSERT INTO waitpoints (tenant_id, execution_id, waitpoint_id, waitpoint_key, state) \
         SELECT $1, $2, id, key, 'active' FROM unnest($3::text[], $4::uuid[]) AS k(key, id) \
         ON CONFLICT (tenant_id, execution_id, waitpoint_key) WHERE state <> 'closed' \
         DO UPDATE SET state = 'active'",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(&keys)
    .bind(&ids)
    .run(&mut *tx, op)
    .await?;
    // Counted after the insert; past the cap, the transaction is undone.
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM waitpoints \
         WHERE tenant_id = $1 AND execution_id = $2 LIMIT $3) w",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(i64::from(request.max_waitpoints) + 1)
    .one(&mut *tx, op)
    .await?;
    if total > i64::from(request.max_waitpoints) {
        return Err(refusals::waitpoints_exceeded(request.max_waitpoints));
    }
    let buffered = shared::buffered_signals(tx, lease.tenant_id, lease.execution_id).await?;
    let satisfied = request.suspension.is_satisfied_by(&buffered);
    if let (false, Some(key)) = (satisfied, &expired) {
        // Signals refused since it expired would never resume this.
        return Err(refusals::waitpoint_expired(key));
    }
    if satisfied {
        let consumed = consume_and_close(tx, lease.tenant_id, lease.execution_id, seq).await?;
        sqlx::query(
            "UPDATE executions SET suspension_seq = $3 WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(lease.tenant_id)
        .bind(lease.execution_id)
        .bind(seq)
        .run(&mut *tx, op)
        .await?;
        return Ok(SuspendOutcome::AlreadySatisfied(consumed));
    }
    record_suspension(tx, lease, request.suspension, seq, request.timeout).await?;
    Ok(SuspendOutcome::Suspended)
}

/// An operator resumes a suspended execution, whatever its condition.
async fn resume(db: &PgBackend, tenant: TenantId, id: ExecutionId) -> Result<()> {
    let pool = &db.pool;
    let op = "resume";
    transaction(pool, op, async |tx| {
        let locked = lock_by_id(tx, tenant, id).await?;
        if locked.state != PublicState::Suspended {
            return Err(refusals::not_suspended(id, locked.state));
        }
        resume_execution(tx, tenant, id, locked.seq).await?;
        Ok(())
    })
    .await
}

/// Lock the lease's execution row, or explain why the lease does not hold.
/// Returns the execution's suspension count.
pub(super) async fn lock_leased(
    pool: &Connections,
    tx: &mut PgConnection,
    lease: &LeaseHandle,
    op: &'static str,
) -> Result<i32> {
    let sql = format!("SELECT suspension_seq FROM executions WHERE {FENCE} FOR UPDATE");
    let seq = sqlx::query_scalar_with(&sql, Args::fence(lease).done(op)?)
        .optional(&mut *tx, op)
        .await?;
    match seq {
        Some(seq) => Ok(seq),
        None => Err(rejection(pool, lease, None).await?),
    }
}

/// Suspend the lease's execution (locked by the caller) as suspension `seq`:
/// the lease is released and the attempt waits, until a resume or `timeout`.
pub(super) async fn record_suspension(
    tx: &mut PgConnection,
    lease: &LeaseHandle,
    suspension: &Suspension,
    seq: i32,
    timeout: Option<Duration>,
) -> Result<()> {
    let sql = format!(
        "WITH moved AS ( \
             UPDATE executions SET lifecycle_phase = 'suspended', ownership_state = 'unowned', \
                 eligibility_state = 'not_applicable', blocking_reason = $9, \
                 attempt_state = 'attempt_suspended', lease_id = NULL, lease_expires_at = NULL, \
                 attempt_timeout_at = NULL, suspension = $6, suspension_seq = $7, \
                 suspension_timeout_at = now() + $8 * interval '1 millisecond', updated_at = now() \
             WHERE {FENCE} RETURNING 1) \
         UPDATE attempts SET state = 'suspended' \
         WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 \
           AND EXISTS (SELECT 1 FROM moved)"
    );
    let args = Args::fence(lease)
        .push(serde_json::to_value(suspension).expect("a suspension serialises"))
        .push(seq)
        .push(timeout.map(millis))
        .push(suspension.blocking_reason())
        .done("suspend")?;
    sqlx::query_with(&sql, args)
        .run(&mut *tx, "suspend")
        .await?;
    Ok(())
}

/// The active waitpoints' buffered signals become the resume's (`seq`); the
/// waitpoints close, so a later signal to them is refused.
async fn consume_and_close(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: ExecutionId,
    seq: i32,
) -> Result<Vec<Signal>> {
    let op = "consume signals";
    let rows: Vec<SignalRow> = sqlx::query_as(&format!(
        "WITH active AS ( \
             UPDATE waitpoints SET state = 'closed' \
             WHERE tenant_id = $1 AND execution_id = $2 AND state = 'active' \
             RETURNING waitpoint_id) \
         UPDATE signals SET consumed_in = $3 \
         WHERE tenant_id = $1 AND execution_id = $2 AND consumed_in IS NULL \
           AND waitpoint_id IN (SELECT waitpoint_id FROM active) \
         RETURNING {SIGNAL_COLUMNS}"
    ))
    .bind(tenant)
    .bind(id)
    .bind(seq)
    .all(&mut *tx, op)
    .await?;
    let mut signals: Vec<Signal> = rows.into_iter().map(Signal::from).collect();
    signals.sort_by_key(|s| (s.created_at, s.signal_id));
    Ok(signals)
}

/// Make a suspended execution runnable again on its suspended attempt.
pub(super) async fn resume_execution(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: ExecutionId,
    seq: i32,
) -> Result<()> {
    consume_and_close(tx, tenant, id, seq).await?;
    sqlx::query(
        "WITH resumed AS ( \
             UPDATE executions SET lifecycle_phase = 'runnable', eligibility_state = 'eligible_now', \
                 blocking_reason = 'waiting_for_worker', attempt_state = 'pending_resume_attempt', \
                 suspension = NULL, suspension_timeout_at = NULL, eligible_at = now(), \
                 updated_at = now() \
             WHERE tenant_id = $1 AND execution_id = $2 AND lifecycle_phase = 'suspended' \
             RETURNING 1) \
         SELECT pg_notify('flowfabric_work', '') FROM resumed",
    )
    .bind(tenant)
    .bind(id)
    .run(&mut *tx, "resume")
    .await?;
    Ok(())
}

struct Locked {
    state: PublicState,
    suspension: Option<Suspension>,
    seq: i32,
}

async fn lock_by_id(tx: &mut PgConnection, tenant: TenantId, id: ExecutionId) -> Result<Locked> {
    let row = sqlx::query(
        "SELECT public_state, suspension, suspension_seq FROM executions \
         WHERE tenant_id = $1 AND execution_id = $2 FOR UPDATE",
    )
    .bind(tenant)
    .bind(id)
    .optional(&mut *tx, "lock execution")
    .await?
    .ok_or_else(|| EngineError::not_found("execution", id))?;
    let state: String = col(&row, "public_state")?;
    let suspension: Option<serde_json::Value> = col(&row, "suspension")?;
    Ok(Locked {
        state: super::rows::parse(&state)?,
        suspension: suspension.map(|s| json(s, "suspension")).transpose()?,
        seq: col(&row, "suspension_seq")?,
    })
}

/// Deliver a signal to a waitpoint; resumes the execution when this signal
/// completes its suspension's condition.
async fn deliver_signal(
    db: &PgBackend,
    tenant: TenantId,
    delivery: SignalDelivery<'_>,
) -> Result<SignalOutcome> {
    transaction(&db.pool, "deliver signal", async |tx| {
        deliver_in(tx, tenant, delivery).await
    })
    .await
}

async fn deliver_in(
    tx: &mut PgConnection,
    tenant: TenantId,
    delivery: SignalDelivery<'_>,
) -> Result<SignalOutcome> {
    let (to, new) = (delivery.to, delivery.signal);
    let op = "deliver signal";
    let locked = lock_by_id(&mut *tx, tenant, to.execution).await?;
    if let Some(key) = &new.idempotency_key {
        let existing: Option<Uuid> = sqlx::query_scalar(
            "SELECT signal_id FROM signals \
             WHERE tenant_id = $1 AND execution_id = $2 AND idempotency_key = $3",
        )
        .bind(tenant)
        .bind(to.execution)
        .bind(key)
        .optional(&mut *tx, op)
        .await?;
        if let Some(signal_id) = existing {
            let event =
                SignalEventRow::new(tenant, to.execution, to.waitpoint, signal_id, &new.name);
            event.record(&mut *tx, "duplicate").await?;
            return Ok(SignalOutcome::Duplicate { signal_id });
        }
    }
    #[derive(sqlx::FromRow)]
    struct Target {
        #[sqlx(flatten)]
        waitpoint: WaitpointRow,
        expired: Option<bool>,
    }
    let row: Target = sqlx::query_as(&format!(
        "SELECT {WAITPOINT_COLUMNS}, expires_at <= now() AS expired FROM waitpoints \
         WHERE tenant_id = $1 AND execution_id = $2 AND waitpoint_id = $3"
    ))
    .bind(tenant)
    .bind(to.execution)
    .bind(to.waitpoint)
    .optional(&mut *tx, op)
    .await?
    .ok_or_else(|| EngineError::not_found("waitpoint", to.waitpoint))?;
    let target = Waitpoint::from(row.waitpoint);
    if target.state == "closed" || row.expired == Some(true) {
        return Err(refusals::waitpoint_closed(&target.key));
    }
    if locked.state.is_terminal() {
        return Err(refusals::takes_no_signals(to.execution, locked.state));
    }
    shared::check_signal_room(tx, tenant, to.execution, delivery.max_signals).await?;
    let signal_id = shared::insert_signal(tx, tenant, to, &target.key, new).await?;
    let mut resumed = false;
    if let (PublicState::Suspended, Some(suspension)) = (locked.state, &locked.suspension) {
        let buffered = shared::buffered_signals(&mut *tx, tenant, to.execution).await?;
        if suspension.is_satisfied_by(&buffered) {
            resume_execution(&mut *tx, tenant, to.execution, locked.seq).await?;
            resumed = true;
        }
    }
    SignalEventRow::new(tenant, to.execution, to.waitpoint, signal_id, &new.name)
        .record(&mut *tx, if resumed { "resumed" } else { "buffered" })
        .await?;
    Ok(SignalOutcome::Accepted { signal_id, resumed })
}

/// A signal-delivery event, written in the delivering transaction.
pub(super) struct SignalEventRow<'a> {
    tenant: TenantId,
    execution: ExecutionId,
    waitpoint: WaitpointId,
    signal: Uuid,
    name: &'a str,
}

impl<'a> SignalEventRow<'a> {
    pub(super) fn new(
        tenant: TenantId,
        execution: ExecutionId,
        waitpoint: WaitpointId,
        signal: Uuid,
        name: &'a str,
    ) -> Self {
        Self {
            tenant,
            execution,
            waitpoint,
            signal,
            name,
        }
    }

    pub(super) async fn record(&self, tx: &mut PgConnection, effect: &str) -> Result<()> {
        sqlx::query(&format!(
            "WITH event AS ( \
                 INSERT INTO signal_events (tenant_id, execution_id, waitpoint_id, signal_id, \
                     name, effect) VALUES ($1, $2, $3, $4, $5, $6) RETURNING tenant_id) \
             SELECT pg_notify('{EVENTS_CHANNEL}', 'signal:' || tenant_id) FROM event"
        ))
        .bind(self.tenant)
        .bind(self.execution)
        .bind(self.waitpoint)
        .bind(self.signal)
        .bind(self.name)
        .bind(effect)
        .run(&mut *tx, "record signal event")
        .await?;
        Ok(())
    }
}
