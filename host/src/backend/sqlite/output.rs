//! What executions emit: fenced frames and progress, rolling summaries, and
//! the three event streams read by cursor.
//!
//! With one writer, event ids are handed out in commit order, so a reader
//! paging by id can never pass an event that commits later: nothing is ever
//! withheld (`pending` is always false) and the cursor is the id itself.

use sqlx::types::Json;

use super::record::Exec;
use super::time::{now, Millis};
use super::tx::Tx;
use super::writes::Writes;
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::stored_i64;
use crate::backend::{FrameBatch, NewFrame};
use crate::error::{EngineError, Result};
use crate::model::{merge_patch, ExecutionUpdate, LeaseHandle, StreamMode, BEST_EFFORT_WINDOW};

crate::backend::traits::implement_output!(SqliteBackend, sqlite);

/// The fenced row update hands out the next sequence number of the attempt.
async fn append_frame(db: &SqliteBackend, lease: &LeaseHandle, frame: NewFrame<'_>) -> Result<i64> {
    db.write_held_tx("append frame", lease, &frame, |held, frame| {
        Box::pin(async move {
            let (tx, lease, mut row, effects) = (held.tx, held.lease, held.row, held.effects);
            let adding = frame.payload.len() as u64;
            let bytes = bytes_after(&row, adding, frame.max_attempt_bytes)?;
            let now = now();
            let seq = insert_frames(
                tx,
                lease,
                &mut row,
                frame.frame_type,
                frame.mode,
                &[frame.payload],
                bytes,
                effects,
            )
            .await?;
            match frame.mode {
                StreamMode::Durable => {}
                StreamMode::Summary => merge_summary(tx, lease, frame.payload, now).await?,
                StreamMode::BestEffort => {
                    let mut trim = Writes::default();
                    trim.statement(
                        "DELETE FROM frames WHERE tenant_id = ? AND execution_id = ? \
                         AND attempt_index = ? AND mode = 'best_effort' AND seq <= ?",
                    )
                    .bind_attempt(lease)
                    .bind(seq - BEST_EFFORT_WINDOW);
                    tx.run(trim, "trim best-effort frames").await?;
                }
            }
            Ok(seq)
        })
    })
    .await
}

/// As `append_frame`, for many durable frames in one write.
async fn append_frames(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    batch: FrameBatch<'_>,
) -> Result<i64> {
    db.write_held_tx("append frames", lease, &batch, |held, batch| {
        Box::pin(async move {
            let (tx, lease, mut row, effects) = (held.tx, held.lease, held.row, held.effects);
            let bytes = bytes_after(&row, batch.bytes(), batch.max_attempt_bytes)?;
            let payloads: Vec<&[u8]> = batch.payloads.iter().map(Vec::as_slice).collect();
            insert_frames(
                tx,
                lease,
                &mut row,
                batch.frame_type,
                StreamMode::Durable,
                &payloads,
                bytes,
                effects,
            )
            .await
        })
    })
    .await
}

async fn set_progress(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    percent: u8,
    message: &str,
) -> Result<()> {
    db.write_held_tx("set progress", lease, &(percent, message), |held, input| {
        Box::pin(async move {
            let (tx, mut row, effects) = (held.tx, held.row, held.effects);
            let (percent, message) = *input;
            let before = row.lease_before();
            row.progress_percent = Some(i16::from(percent.min(100)));
            row.progress_message = Some(message.to_owned());
            row.save_in(tx, Some(before), effects, |_, _, _| {}).await
        })
    })
    .await
}

/// Fold a summary frame's patch (a JSON object, checked by the engine) into
/// the attempt's document.
async fn merge_summary(
    tx: &mut Tx<'_>,
    lease: &LeaseHandle,
    patch: &[u8],
    now: Millis,
) -> Result<()> {
    let op = "merge summary";
    let patch: serde_json::Value = serde_json::from_slice(patch)
        .map_err(|e| EngineError::invalid("payload", format!("not JSON: {e}")))?;
    let current: Option<(Json<serde_json::Value>,)> = tx
        .optional(
            op,
            "SELECT document FROM stream_summaries \
             WHERE tenant_id = ? AND execution_id = ? AND attempt_index = ?",
            |w| {
                w.bind_attempt(lease);
            },
        )
        .await?;
    let mut document = current.map_or_else(|| serde_json::json!({}), |(d,)| d.0);
    merge_patch(&mut document, &patch);
    let mut upsert = Writes::default();
    upsert
        .statement(
            "INSERT INTO stream_summaries (tenant_id, execution_id, attempt_index, document, \
             version, first_applied_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?) \
             ON CONFLICT (tenant_id, execution_id, attempt_index) DO UPDATE \
             SET document = excluded.document, version = version + 1, \
             updated_at = excluded.updated_at",
        )
        .bind_attempt(lease)
        .bind(Json(document))
        .bind(now)
        .bind(now);
    tx.run(upsert, op).await
}

/// Append frames to the held `row`'s attempt, now holding `bytes` in all:
/// the next sequence numbers, the running total, the frames and a wake-up
/// for their watchers. Returns the last frame's sequence number.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_frames(
    tx: &mut Tx<'_>,
    lease: &LeaseHandle,
    row: &mut Exec,
    frame_type: &str,
    mode: StreamMode,
    payloads: &[&[u8]],
    bytes: u64,
    effects: &mut Effects,
) -> Result<i64> {
    let before = row.lease_before();
    let first = row.frame_seq + 1;
    row.frame_seq += payloads.len() as i64;
    row.frame_bytes = stored_i64(bytes);
    row.save_in(tx, Some(before), effects, |_, _, _| {}).await?;
    let mut frames = Writes::default();
    let created_at = now();
    for (seq, payload) in (first..).zip(payloads) {
        frames
            .statement(
                "INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, frame_type, \
                 mode, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind_attempt(lease)
            .bind(seq)
            .bind(frame_type)
            .bind(mode.as_str())
            .bind(*payload)
            .bind(created_at);
    }
    tx.run(frames, "append frame").await?;
    effects.updates.push(ExecutionUpdate {
        tenant_id: lease.tenant_id,
        execution_id: lease.execution_id,
    });
    Ok(row.frame_seq)
}

/// What the held `row`'s attempt's frames will hold with `adding` bytes
/// more, or the refusal when that passes `max`.
fn bytes_after(row: &Exec, adding: u64, max: u64) -> Result<u64> {
    let used = attempt_frame_bytes(row);
    let bytes = used.saturating_add(adding);
    if bytes > max {
        let adding = usize::try_from(adding).unwrap_or(usize::MAX);
        return Err(refusals::frame_bytes_exceeded(max, used, adding));
    }
    Ok(bytes)
}

/// The bytes the held `row`'s attempt's frames hold.
pub(super) fn attempt_frame_bytes(row: &Exec) -> u64 {
    refusals::frame_bytes_after(row.frame_seq, row.frame_bytes, 0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::sqlite::plans::{claim_request, Scratch};
    use crate::backend::{Executions, Leases, Output, StepRecord, Steps, Tenancy};
    use crate::model::{Completion, JournalLimits, NewExecution, NewStep, StepOutcome};

    async fn count(db: &SqliteBackend, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(db.reader())
            .await
            .unwrap()
    }

    /// A lease holder's frequent writes (frames of each mode, a batch of
    /// frames, progress, a step, a renewal, the end) run whole on the
    /// writer's locked handle: none runs again through sqlx. Refusals are
    /// made there too, of the write itself (too many bytes) or of the lease
    /// (its run ended), and write nothing.
    #[tokio::test]
    async fn a_lease_holders_writes_stay_on_the_locked_handle() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        let tenant = db.create_tenant("hot").await.unwrap().tenant_id;
        db.create_executions(tenant, &[NewExecution::new("job", Vec::new())], None)
            .await
            .unwrap();
        let claimed = db
            .claim(&claim_request(&["default"], &[], 1))
            .await
            .unwrap();
        let lease = &claimed[0].lease;
        let before = db.sqlx_writes();
        let frame = |mode, payload: &'static [u8]| NewFrame {
            frame_type: "log",
            mode,
            payload,
            max_attempt_bytes: 1 << 20,
        };
        let mut seqs = Vec::new();
        for (mode, payload) in [
            (StreamMode::Durable, &b"one"[..]),
            (StreamMode::BestEffort, b"two"),
            (StreamMode::Summary, br#"{"done": 1}"#),
        ] {
            seqs.push(db.append_frame(lease, frame(mode, payload)).await.unwrap());
        }
        let payloads = [b"four".to_vec(), b"five".to_vec()];
        let batch = FrameBatch {
            frame_type: "log",
            payloads: &payloads,
            max_attempt_bytes: 1 << 20,
        };
        seqs.push(db.append_frames(lease, batch).await.unwrap());
        assert_eq!(seqs, [1, 2, 3, 5]);
        db.set_progress(lease, 50, "half").await.unwrap();
        let step = NewStep {
            position: 0,
            name: "fetch".into(),
            outcome: StepOutcome::Completed(b"ok".to_vec()),
            duration_ms: 3,
        };
        let limits = JournalLimits {
            max_steps: 10,
            max_bytes: 1 << 20,
        };
        let record = StepRecord {
            step: &step,
            frame: b"{}",
            limits,
        };
        db.record_step(lease, record).await.unwrap();
        db.renew(lease, Duration::from_secs(60)).await.unwrap();
        assert_eq!(db.sqlx_writes(), before, "every write ran locked");
        assert_eq!(count(db, "frames").await, 6, "five frames and the step's");
        assert_eq!(count(db, "steps").await, 1);

        // Past the attempt's frame bytes: refused on the handle, nothing written.
        let refused = db
            .append_frame(
                lease,
                NewFrame {
                    max_attempt_bytes: 8,
                    ..frame(StreamMode::Durable, b"too many")
                },
            )
            .await
            .unwrap_err();
        assert_eq!(refused.kind(), "limit_exceeded", "{refused}");
        assert_eq!(db.sqlx_writes(), before);

        db.complete(&Completion::new(lease, b"done")).await.unwrap();
        let stale = db
            .append_frame(lease, frame(StreamMode::Durable, b"late"))
            .await
            .unwrap_err();
        assert_eq!(stale.kind(), "not_active", "{stale}");
        assert_eq!(db.sqlx_writes(), before, "explained on the handle");
        assert_eq!(
            count(db, "frames").await,
            6,
            "the refused frames wrote nothing"
        );
    }
}
