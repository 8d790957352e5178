//! An execution's attempts, read the same way on both drivers.

use sqlx::types::Json;

use super::stamp::Stamp;
use crate::error::{EngineError, Result};
use crate::model::{AttemptRecord, ExecutionId, TenantId, MAX_ATTEMPT_PAGE};

type AttemptRow = (
    i32,
    String,
    i64,
    String,
    String,
    Stamp,
    Option<Stamp>,
    Option<Json<serde_json::Value>>,
);

for_both_drivers! {
    /// The execution's attempts, newest first, at most `limit` (a range of
    /// the attempts primary key). Empty for an execution never claimed and
    /// for another tenant's: the caller tells the two apart.
    async fn list_attempts(conn, tenant: TenantId, id: ExecutionId, limit: u32)
        -> Result<Vec<AttemptRecord>>
    {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT attempt_index, attempt_type, lease_epoch, worker_id, state, started_at, \
                    ended_at, failure \
             FROM attempts WHERE tenant_id = $1 AND execution_id = $2 \
             ORDER BY attempt_index DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(i64::from(limit.clamp(1, MAX_ATTEMPT_PAGE)))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage("list attempts"))?;
        rows.into_iter().map(attempt).collect()
    }
}

fn attempt(row: AttemptRow) -> Result<AttemptRecord> {
    let (attempt_index, attempt_type, lease_epoch, worker_id, state, started_at, ended_at, failure) =
        row;
    Ok(AttemptRecord {
        attempt_index,
        attempt_type: attempt_type.parse().map_err(EngineError::Corrupt)?,
        lease_epoch,
        worker_id,
        state: state.parse().map_err(EngineError::Corrupt)?,
        started_at: started_at.into(),
        ended_at: ended_at.map(Into::into),
        failure: failure
            .map(|Json(f)| serde_json::from_value(f))
            .transpose()
            .map_err(|e| EngineError::Corrupt(format!("attempt failure: {e}")))?,
    })
}
