//! Durable steps: the journal table, written by the lease holder only.
//!
//! With one writer, a record reads what it needs first (the step at its
//! position, the journal's count and bytes: a range scan of the primary
//! key), then writes the step and its `step` frame in the same transaction.

use chrono::Utc;

use super::output::{attempt_frame_bytes, insert_frames};
use super::record::Exec;
use super::suspension::record_suspension;
use super::tx::Tx;
use super::writes::Writes;
use super::Held;
use super::{Effects, SqliteBackend};
use crate::backend::refusals::{step_admission, StepSlot};
use crate::backend::stored_i64;
use crate::backend::{SleepRequest, StepRecord};
use crate::error::Result;
use crate::model::{LeaseHandle, StepOutcome, StreamMode};

crate::backend::coordination::implement_steps!(SqliteBackend, sqlite);

async fn record_step(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    record: StepRecord<'_>,
) -> Result<()> {
    db.write_held_tx("record step", lease, &record, |held, record| {
        Box::pin(async move {
            let mut row = held.row;
            record_in(held.tx, held.lease, &mut row, record, held.effects).await
        })
    })
    .await
}

async fn sleep(held: Held<'_, '_>, request: SleepRequest<'_>) -> Result<()> {
    let (tx, lease, mut row, effects) = (held.tx, held.lease, held.row, held.effects);
    if let Some(record) = request.record() {
        record_in(tx, lease, &mut row, &record, effects).await?;
    }
    let (suspension, timeout) = request.suspension(Utc::now());
    record_suspension(tx.conn()?, &mut row, &suspension, Some(timeout), effects).await
}

/// Record `step` for the held `row`, with its frame, unless refused.
async fn record_in(
    tx: &mut Tx<'_>,
    lease: &LeaseHandle,
    row: &mut Exec,
    record: &StepRecord<'_>,
    effects: &mut Effects,
) -> Result<()> {
    let op = "record step";
    let (tenant, id) = (lease.tenant_id, lease.execution_id);
    let (count, bytes): (i64, i64) = tx
        .one(
            op,
            "SELECT count(*), coalesce(sum(size), 0) FROM steps \
             WHERE tenant_id = ? AND execution_id = ?",
            |w| {
                w.bind(tenant).bind(id);
            },
        )
        .await?;
    let existing: Option<(String, i32, String)> = tx
        .optional(
            op,
            "SELECT name, attempt_index, kind FROM steps \
             WHERE tenant_id = ? AND execution_id = ? AND step_index = ?",
            |w| {
                w.bind(tenant)
                    .bind(id)
                    .bind(i64::from(record.step.position));
            },
        )
        .await?;
    let slot = StepSlot {
        count,
        bytes,
        existing: existing
            .as_ref()
            .map(|(name, attempt, kind)| (name.as_str(), *attempt, kind.as_str())),
    };
    if !step_admission(&slot, record.step, lease.attempt_index, record.limits)? {
        return Ok(());
    }
    let (output, error, wake_at) = match &record.step.outcome {
        StepOutcome::Completed(output) => (Some(output.as_slice()), None, None),
        StepOutcome::Failed(message) => (None, Some(message.as_str()), None),
        StepOutcome::Sleep { wake_at } => (None, None, Some(super::time::millis_of(*wake_at))),
    };
    let mut step = Writes::default();
    step.statement(
        "INSERT INTO steps (tenant_id, execution_id, step_index, name, kind, output, error, \
             wake_at, size, attempt_index, duration_ms, recorded_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant)
    .bind(id)
    .bind(i64::from(record.step.position))
    .bind(record.step.name.as_str())
    .bind(record.step.outcome.kind().as_str())
    .bind(output)
    .bind(error)
    .bind(wake_at)
    .bind(record.step.outcome.size() as i64)
    .bind(lease.attempt_index)
    .bind(stored_i64(record.step.duration_ms))
    .bind(super::time::now());
    tx.run(step, op).await?;
    let frame_bytes = attempt_frame_bytes(row) + record.frame.len() as u64;
    insert_frames(
        tx,
        lease,
        row,
        "step",
        StreamMode::Durable,
        &[record.frame],
        frame_bytes,
        effects,
    )
    .await?;
    Ok(())
}
