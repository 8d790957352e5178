//! Reading back what an attempt streamed: the same statements on both
//! drivers.

use sqlx::types::Json;

use super::stamp::Stamp;
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{AttemptRef, Frame, Page, StreamSummary, TenantId};

type FrameRow = (i64, String, String, Vec<u8>, Stamp);

type SummaryRow = (Json<serde_json::Value>, i64, Stamp, Stamp);

for_both_drivers! {
    /// A page of the attempt's frames after the page's `seq`, in order (a
    /// range of the frames primary key).
    async fn read_frames(conn, tenant: TenantId, attempt: AttemptRef, page: Page<i64>)
        -> Result<Vec<Frame>>
    {
        let rows: Vec<FrameRow> = sqlx::query_as(
            "SELECT seq, frame_type, mode, payload, created_at FROM frames \
             WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 AND seq > $4 \
             ORDER BY seq LIMIT $5",
        )
        .bind(tenant)
        .bind(attempt.execution)
        .bind(attempt.index)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .all(&mut *conn, "read frames")
        .await?;
        rows.into_iter().map(frame).collect()
    }

    /// The attempt's rolling summary (`stream_summaries` primary key).
    async fn read_summary(conn, tenant: TenantId, attempt: AttemptRef)
        -> Result<Option<StreamSummary>>
    {
        let row: Option<SummaryRow> = sqlx::query_as(
            "SELECT document, version, first_applied_at, updated_at FROM stream_summaries \
             WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3",
        )
        .bind(tenant)
        .bind(attempt.execution)
        .bind(attempt.index)
        .optional(&mut *conn, "read summary")
        .await?;
        Ok(row.map(|(Json(document), version, first, updated)| StreamSummary {
            document,
            version,
            first_applied_at: first.into(),
            updated_at: updated.into(),
        }))
    }
}

fn frame((seq, frame_type, mode, payload, created): FrameRow) -> Result<Frame> {
    Ok(Frame {
        seq,
        frame_type,
        mode: mode.parse().map_err(EngineError::Corrupt)?,
        payload,
        created_at: created.into(),
    })
}
