//! [`Events`](crate::backend::Events) on SQLite: the three per-tenant
//! streams, read by cursor. With one writer, an event's id alone orders it,
//! and an event is never written behind one already read.

use super::SqliteBackend;
use crate::backend::shared::events::{origins, Stream};
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{EventBatch, EventCursor, ExecutionId, ExecutionOrigin, Page, TenantId};

crate::backend::shared::events::implement!(SqliteBackend);

/// A page of stream `R` in `event_id` order, off the table's primary key.
async fn read_stream<R: Stream>(
    db: &SqliteBackend,
    tenant: TenantId,
    page: Page<EventCursor>,
) -> Result<EventBatch<R::Event>> {
    let rows: Vec<R> = sqlx::query_as(&format!(
        "SELECT {} FROM {} WHERE tenant_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3",
        R::COLUMNS,
        R::TABLE,
    ))
    .bind(tenant)
    .bind(page.after.event_id)
    .bind(i64::from(page.limit))
    .all(db.reader(), R::OP)
    .await?;
    Ok(EventBatch {
        events: rows.into_iter().map(event).collect(),
        pending: false,
    })
}

/// The event a row is, at the cursor its id alone makes.
pub(super) fn event<R: Stream>(row: R) -> R::Event {
    let event_id = row.event_id();
    row.event(EventCursor {
        txid: event_id,
        event_id,
    })
}

/// Point reads of the executions primary key, one per id.
async fn execution_origins(
    db: &SqliteBackend,
    tenant: TenantId,
    ids: &[ExecutionId],
) -> Result<Vec<ExecutionOrigin>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT execution_id, kind, lane FROM executions \
         WHERE tenant_id = ? AND execution_id IN ({})",
        vec!["?"; ids.len()].join(", ")
    );
    let mut query = sqlx::query_as::<_, (ExecutionId, String, String)>(&sql).bind(tenant);
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.all(db.reader(), "read execution origins").await?;
    Ok(origins(rows))
}
