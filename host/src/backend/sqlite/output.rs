//! What executions emit: fenced frames and progress, rolling summaries, and
//! the three event streams read by cursor.
//!
//! With one writer, event ids are handed out in commit order, so a reader
//! paging by id can never pass an event that commits later: nothing is ever
//! withheld (`pending` is always false) and the cursor is the id itself.

use sqlx::types::Json;
use sqlx::SqliteConnection;

use super::record::Exec;
use super::time::{now, Millis};
use super::{Effects, SqliteBackend};
use crate::backend::refusals;
use crate::backend::stored_i64;
use crate::backend::{Fetch, Run};
use crate::backend::{FrameBatch, NewFrame};
use crate::error::{EngineError, Result};
use crate::model::{merge_patch, ExecutionUpdate, LeaseHandle, StreamMode, BEST_EFFORT_WINDOW};

crate::backend::traits::implement_output!(SqliteBackend, sqlite);

/// The fenced row update hands out the next sequence number of the attempt.
async fn append_frame(db: &SqliteBackend, lease: &LeaseHandle, frame: NewFrame<'_>) -> Result<i64> {
    db.write_held("append frame", lease, async |held| {
        let (conn, mut row, effects) = (held.conn, held.row, held.effects);
        let adding = frame.payload.len() as u64;
        let bytes = bytes_after(conn, &row, adding, frame.max_attempt_bytes).await?;
        let now = now();
        let seq = insert_frames(
            conn,
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
            StreamMode::Summary => merge_summary(conn, lease, frame.payload, now).await?,
            StreamMode::BestEffort => {
                sqlx::query(
                    "DELETE FROM frames WHERE tenant_id = ? AND execution_id = ? \
                     AND attempt_index = ? AND mode = 'best_effort' AND seq <= ?",
                )
                .bind(lease.tenant_id)
                .bind(lease.execution_id)
                .bind(lease.attempt_index)
                .bind(seq - BEST_EFFORT_WINDOW)
                .run(&mut *conn, "trim best-effort frames")
                .await?;
            }
        }
        Ok(seq)
    })
    .await
}

/// As `append_frame`, for many durable frames in one write.
async fn append_frames(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    batch: FrameBatch<'_>,
) -> Result<i64> {
    db.write_held("append frames", lease, async |held| {
        let (conn, mut row, effects) = (held.conn, held.row, held.effects);
        let bytes = bytes_after(conn, &row, batch.bytes(), batch.max_attempt_bytes).await?;
        let payloads: Vec<&[u8]> = batch.payloads.iter().map(Vec::as_slice).collect();
        insert_frames(
            conn,
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
    .await
}

async fn set_progress(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    percent: u8,
    message: &str,
) -> Result<()> {
    db.write_held("set progress", lease, async |held| {
        let (conn, mut row, effects) = (held.conn, held.row, held.effects);
        let before = row.lease_before();
        row.progress_percent = Some(i16::from(percent.min(100)));
        row.progress_message = Some(message.to_owned());
        row.save(conn, Some(before), effects).await
    })
    .await
}

/// Fold a summary frame's patch (a JSON object, checked by the engine) into
/// the attempt's document.
async fn merge_summary(
    conn: &mut sqlx::SqliteConnection,
    lease: &LeaseHandle,
    patch: &[u8],
    now: Millis,
) -> Result<()> {
    let patch: serde_json::Value = serde_json::from_slice(patch)
        .map_err(|e| EngineError::invalid("payload", format!("not JSON: {e}")))?;
    let current: Option<Json<serde_json::Value>> = sqlx::query_scalar(
        "SELECT document FROM stream_summaries \
         WHERE tenant_id = ? AND execution_id = ? AND attempt_index = ?",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(lease.attempt_index)
    .optional(&mut *conn, "merge summary")
    .await?;
    let mut document = current.map_or_else(|| serde_json::json!({}), |d| d.0);
    merge_patch(&mut document, &patch);
    sqlx::query(
        "INSERT INTO stream_summaries (tenant_id, execution_id, attempt_index, document, \
         version, first_applied_at, updated_at) VALUES (?, ?, ?, ?, 1, ?, ?) \
         ON CONFLICT (tenant_id, execution_id, attempt_index) DO UPDATE \
         SET document = excluded.document, version = version + 1, updated_at = excluded.updated_at",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .bind(lease.attempt_index)
    .bind(Json(document))
    .bind(now)
    .bind(now)
    .run(conn, "merge summary")
    .await?;
    Ok(())
}

/// Append a frame to the held `row`'s attempt, now holding `bytes` in all:
/// the next sequence number, the running total, the frame and a wake-up
/// for its watchers. Returns the frame's sequence number.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_frames(
    conn: &mut SqliteConnection,
    lease: &LeaseHandle,
    row: &mut Exec,
    frame_type: &str,
    mode: StreamMode,
    payloads: &[&[u8]],
    bytes: u64,
    effects: &mut Effects,
) -> Result<i64> {
    let op = "append frame";
    let before = row.lease_before();
    let first = row.frame_seq + 1;
    row.frame_seq += payloads.len() as i64;
    row.save(conn, Some(before), effects).await?;
    sqlx::query("UPDATE executions SET frame_bytes = ? WHERE tenant_id = ? AND execution_id = ?")
        .bind(stored_i64(bytes))
        .bind(lease.tenant_id)
        .bind(lease.execution_id)
        .run(&mut *conn, op)
        .await?;
    let created_at = now();
    for (seq, payload) in (first..).zip(payloads) {
        sqlx::query(
            "INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, frame_type, mode, \
             payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(lease.tenant_id)
        .bind(lease.execution_id)
        .bind(lease.attempt_index)
        .bind(seq)
        .bind(frame_type)
        .bind(mode.as_str())
        .bind(*payload)
        .bind(created_at)
        .run(&mut *conn, op)
        .await?;
    }
    effects.updates.push(ExecutionUpdate {
        tenant_id: lease.tenant_id,
        execution_id: lease.execution_id,
    });
    Ok(row.frame_seq)
}

/// What the held `row`'s attempt's frames will hold with `adding` bytes
/// more, or the refusal when that passes `max`.
async fn bytes_after(
    conn: &mut SqliteConnection,
    row: &Exec,
    adding: u64,
    max: u64,
) -> Result<u64> {
    let used = attempt_frame_bytes(conn, row).await?;
    let bytes = used.saturating_add(adding);
    if bytes > max {
        let adding = usize::try_from(adding).unwrap_or(usize::MAX);
        return Err(refusals::frame_bytes_exceeded(max, used, adding));
    }
    Ok(bytes)
}

/// The bytes the held `row`'s attempt's frames hold.
pub(super) async fn attempt_frame_bytes(conn: &mut SqliteConnection, row: &Exec) -> Result<u64> {
    let stored: i64 = sqlx::query_scalar(
        "SELECT frame_bytes FROM executions WHERE tenant_id = ? AND execution_id = ?",
    )
    .bind(row.tenant_id)
    .bind(row.execution_id)
    .one(&mut *conn, "append frame")
    .await?;
    Ok(refusals::frame_bytes_after(row.frame_seq, stored, 0))
}
