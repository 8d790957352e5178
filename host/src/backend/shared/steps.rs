//! Reading an execution's journal: the same statement and decoding on both
//! drivers.

use super::stamp::Stamp;
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, JournalEntry, Page, StepKind, StepOutcome, TenantId};

#[derive(sqlx::FromRow)]
struct StepRow {
    step_index: i32,
    name: String,
    kind: String,
    output: Option<Vec<u8>>,
    error: Option<String>,
    wake_at: Option<Stamp>,
    attempt_index: i32,
    duration_ms: i64,
    recorded_at: Stamp,
}

impl StepRow {
    /// The entry a stored step is: its kind says which of `output`,
    /// `error` and `wake_at` holds the outcome (the table's CHECKs keep
    /// exactly that one set).
    fn entry(self) -> Result<JournalEntry> {
        let kind: StepKind = self.kind.parse().map_err(EngineError::Corrupt)?;
        let outcome = match kind {
            StepKind::Completed => StepOutcome::Completed(self.output.unwrap_or_default()),
            StepKind::Failed => StepOutcome::Failed(self.error.unwrap_or_default()),
            StepKind::Sleep => StepOutcome::Sleep {
                wake_at: self
                    .wake_at
                    .ok_or_else(|| {
                        EngineError::Corrupt("a sleep step without its wake time".into())
                    })?
                    .into(),
            },
        };
        Ok(JournalEntry {
            position: u32::try_from(self.step_index)
                .map_err(|_| EngineError::Corrupt("a negative step index".into()))?,
            name: self.name,
            outcome,
            attempt_index: self.attempt_index,
            duration_ms: self.duration_ms.max(0) as u64,
            recorded_at: self.recorded_at.into(),
        })
    }
}

for_both_drivers! {
    /// A page of the execution's journal after the page's position, in
    /// order (a range of the steps primary key).
    async fn journal(conn, tenant: TenantId, id: ExecutionId, page: Page<Option<u32>>)
        -> Result<Vec<JournalEntry>>
    {
        let rows: Vec<StepRow> = sqlx::query_as(
            "SELECT step_index, name, kind, output, error, wake_at, attempt_index, duration_ms, \
                 recorded_at \
             FROM steps WHERE tenant_id = $1 AND execution_id = $2 AND step_index > $3 \
             ORDER BY step_index LIMIT $4",
        )
        .bind(tenant)
        .bind(id)
        .bind(page.after.map_or(-1, i64::from))
        .bind(i64::from(page.limit))
        .all(&mut *conn, "read journal")
        .await?;
        rows.into_iter().map(StepRow::entry).collect()
    }
}
