//! Durable steps: the journal table, written by the lease holder only.
//!
//! A record is one statement, shaped like a frame append: it checks the
//! lease on the execution's row and advances the execution's counters within
//! the journal's caps (the counters keep the step count and bytes, so no cap
//! needs a scan), and the same statement inserts the step and the `step`
//! frame announcing it.
//! A refused record changes nothing; why it was refused is read afterwards.

use super::Connections;
use super::Held;
use chrono::Utc;
use sqlx::PgConnection;

use super::counters;
use super::leases::{rejection, FENCE};
use super::rows::{col, Args};
use super::suspension::record_suspension;
use super::{notify_followers, PgBackend};
use crate::backend::refusals::{step_admission, StepSlot};
use crate::backend::stored_i64;
use crate::backend::Fetch;
use crate::backend::{SleepRequest, StepRecord};
use crate::error::{EngineError, Result};
use crate::model::{JournalLimits, LeaseHandle, NewStep, StepOutcome};

crate::backend::coordination::implement_steps!(PgBackend, pg);

async fn record_step(db: &PgBackend, lease: &LeaseHandle, record: StepRecord<'_>) -> Result<()> {
    let op = "record step";
    let mut conn = db.pool.acquire().await.map_err(EngineError::storage(op))?;
    let recorded = record_in(&db.pool, &mut conn, lease, record).await;
    conn.settle_on_ok(recorded)
}

async fn sleep(held: Held<'_>, request: SleepRequest<'_>) -> Result<()> {
    let (tx, lease, suspensions, pool) = (held.tx, held.lease, held.suspensions, held.pool);
    let seq = suspensions + 1;
    if let Some(record) = request.record() {
        record_in(pool, tx, lease, record).await?;
    }
    let (suspension, timeout) = request.suspension(Utc::now());
    record_suspension(tx, lease, &suspension, seq, Some(timeout)).await
}

/// Record `step` on `conn` (the pool's or a transaction's), or say why not.
async fn record_in(
    pool: &Connections,
    conn: &mut PgConnection,
    lease: &LeaseHandle,
    record: StepRecord<'_>,
) -> Result<()> {
    let op = "record step";
    let sql = format!(
        "WITH {fence}, \
         held AS ( \
             INSERT INTO execution_counters AS c (tenant_id, execution_id, attempt_index, \
                 frame_seq, frame_bytes, step_count, step_bytes) \
             SELECT $1, $2, $3, 1, octet_length($14), 1, $8 FROM fence \
             WHERE $15 > 0 AND $8 <= $16 \
               AND NOT EXISTS (SELECT 1 FROM steps \
                   WHERE tenant_id = $1 AND execution_id = $2 AND step_index = $6) \
             ON CONFLICT (tenant_id, execution_id) DO UPDATE SET {next}, \
                 step_count = c.step_count + 1, step_bytes = c.step_bytes + excluded.step_bytes \
             WHERE c.step_count < $15 AND c.step_bytes + excluded.step_bytes <= $16 \
             RETURNING frame_seq), \
         step AS ( \
             INSERT INTO steps (tenant_id, execution_id, step_index, name, kind, output, error, \
                 wake_at, size, attempt_index, duration_ms) \
             SELECT $1, $2, $6, $7, $9, $10, $11, $12, $8, $3, $13 FROM held), \
         frame AS ( \
             INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, frame_type, mode, \
                 payload) \
             SELECT $1, $2, $3, frame_seq, 'step', 'durable', $14 FROM held) \
         SELECT frame_seq, {notify} FROM held",
        fence = counters::fenced(),
        next = counters::next_frame(),
        notify = notify_followers(),
    );
    let (output, error, wake_at) = match &record.step.outcome {
        StepOutcome::Completed(output) => (Some(output.as_slice()), None, None),
        StepOutcome::Failed(message) => (None, Some(message.as_str()), None),
        StepOutcome::Sleep { wake_at } => (None, None, Some(*wake_at)),
    };
    let bound = Args::fence(lease)
        .push(step_index(record.step.position)?)
        .push(record.step.name.as_str())
        .push(record.step.outcome.size() as i64)
        .push(record.step.outcome.kind().as_str())
        .push(output)
        .push(error)
        .push(wake_at)
        .push(stored_i64(record.step.duration_ms))
        .push(record.frame)
        .push(i64::from(record.limits.max_steps))
        .push(stored_i64(record.limits.max_bytes))
        .done(op)?;
    let recorded: Option<i64> = sqlx::query_scalar_with(&sql, bound)
        .optional(&mut *conn, op)
        .await?;
    if recorded.is_some() {
        return Ok(());
    }
    explain_miss(pool, conn, lease, record.step, record.limits).await
}

/// A record matched no row: the lease is gone, the journal is full, or the
/// position is taken (by this same step: a replayed call, which is `Ok`).
async fn explain_miss(
    pool: &Connections,
    conn: &mut PgConnection,
    lease: &LeaseHandle,
    step: &NewStep,
    limits: JournalLimits,
) -> Result<()> {
    let op = "record step";
    let sql = format!(
        "SELECT coalesce(c.step_count, 0) AS step_count, coalesce(c.step_bytes, 0) AS step_bytes, \
             s.name, s.attempt_index, s.kind \
         FROM executions e \
         LEFT JOIN execution_counters c ON c.tenant_id = e.tenant_id \
             AND c.execution_id = e.execution_id \
         LEFT JOIN steps s ON s.tenant_id = e.tenant_id \
             AND s.execution_id = e.execution_id AND s.step_index = $6 \
         WHERE e.{}",
        FENCE.replace(" AND ", " AND e.")
    );
    let bound = Args::fence(lease)
        .push(step_index(step.position)?)
        .done(op)?;
    let row = sqlx::query_with(&sql, bound)
        .optional(&mut *conn, op)
        .await?;
    let Some(row) = row else {
        return Err(rejection(pool, lease, None).await?);
    };
    let name: Option<String> = col(&row, "name")?;
    let attempt: Option<i32> = col(&row, "attempt_index")?;
    let kind: Option<String> = col(&row, "kind")?;
    let slot = StepSlot {
        count: i64::from(col::<i32>(&row, "step_count")?),
        bytes: col(&row, "step_bytes")?,
        existing: match (&name, attempt, &kind) {
            (Some(name), Some(attempt), Some(kind)) => Some((name, attempt, kind)),
            _ => None,
        },
    };
    match step_admission(&slot, step, lease.attempt_index, limits)? {
        false => Ok(()),
        // Admissible now, yet refused a moment ago: a concurrent change.
        true => Err(EngineError::Conflict(format!(
            "step {} could not be recorded: the execution changed meanwhile; retry",
            step.position
        ))),
    }
}

/// A position as the `integer` column holds it (the engine caps positions
/// far below `i32::MAX`).
fn step_index(position: u32) -> Result<i32> {
    i32::try_from(position)
        .map_err(|_| EngineError::invalid("step position", "past the journal's range"))
}
