//! What a running attempt produces besides its result: frames and progress.
//! Both are worker writes, fenced by the lease like every other.

use sqlx::PgPool;

use super::lease::{rejection, FENCE};
use super::rows::{col, parse, Args};
use super::UPDATES_CHANNEL;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, Frame, LeaseHandle, StreamMode, TenantId};

/// The fenced `UPDATE` both checks the lease and hands out the next sequence
/// number, so a frame can never land after its lease is gone, and sequence
/// numbers are dense per attempt.
pub(super) async fn append_frame(
    pool: &PgPool,
    lease: &LeaseHandle,
    frame_type: &str,
    mode: StreamMode,
    payload: &[u8],
) -> Result<i64> {
    let sql = format!(
        "WITH seq AS (UPDATE executions SET frame_seq = frame_seq + 1 WHERE {FENCE} \
                      RETURNING frame_seq), \
              inserted AS (INSERT INTO frames (tenant_id, execution_id, attempt_index, seq, \
                               frame_type, mode, payload) \
                           SELECT $1, $2, $3, frame_seq, $6, $7, $8 FROM seq RETURNING seq) \
         SELECT seq, pg_notify('{UPDATES_CHANNEL}', $1::text || ':' || $2::text) FROM inserted"
    );
    let bound = Args::fence(lease)
        .push(frame_type)
        .push(mode.as_str())
        .push(payload)
        .done("append frame")?;
    // The second column (the notify's `void`) is never decoded.
    let seq: Option<i64> = sqlx::query_scalar_with(&sql, bound)
        .fetch_optional(pool)
        .await
        .map_err(EngineError::storage("append frame"))?;
    match seq {
        Some(seq) => Ok(seq),
        None => Err(rejection(pool, lease, None).await?),
    }
}

pub(super) async fn read_frames(
    pool: &PgPool,
    tenant: TenantId,
    id: ExecutionId,
    attempt_index: i32,
    after: i64,
    limit: u32,
) -> Result<Vec<Frame>> {
    let rows = sqlx::query(
        "SELECT seq, frame_type, mode, payload, created_at FROM frames \
         WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 AND seq > $4 \
         ORDER BY seq LIMIT $5",
    )
    .bind(tenant)
    .bind(id)
    .bind(attempt_index)
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(EngineError::storage("read frames"))?;
    rows.iter()
        .map(|r| {
            Ok(Frame {
                seq: col(r, "seq")?,
                frame_type: col(r, "frame_type")?,
                mode: parse::<StreamMode>(&col::<String>(r, "mode")?)?,
                payload: col(r, "payload")?,
                created_at: col(r, "created_at")?,
            })
        })
        .collect()
}

pub(super) async fn set_progress(
    pool: &PgPool,
    lease: &LeaseHandle,
    percent: u8,
    message: &str,
) -> Result<()> {
    let sql =
        format!("UPDATE executions SET progress_percent = $6, progress_message = $7 WHERE {FENCE}");
    let bound = Args::fence(lease)
        .push(i16::from(percent.min(100)))
        .push(message)
        .done("set progress")?;
    let updated = sqlx::query_with(&sql, bound)
        .execute(pool)
        .await
        .map_err(EngineError::storage("set progress"))?
        .rows_affected();
    if updated == 1 {
        Ok(())
    } else {
        Err(rejection(pool, lease, None).await?)
    }
}
