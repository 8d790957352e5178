//! [`Events`](crate::backend::Events) on Postgres: the three per-tenant
//! streams, each an outbox table read by cursor up to the horizon of
//! running transactions (see `outbox`).

use super::outbox::Outbox;
use super::PgBackend;
use crate::backend::shared::events::origins;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{EventBatch, EventCursor, ExecutionId, ExecutionOrigin, Page, TenantId};

crate::backend::shared::events::implement!(PgBackend);

async fn read_stream<R: Outbox>(
    db: &PgBackend,
    tenant: TenantId,
    page: Page<EventCursor>,
) -> Result<EventBatch<R::Event>> {
    super::outbox::read::<R>(&db.pool, tenant, page.after, page.limit).await
}

/// Point reads of `executions_pkey`, one per id.
async fn execution_origins(
    db: &PgBackend,
    tenant: TenantId,
    ids: &[ExecutionId],
) -> Result<Vec<ExecutionOrigin>> {
    let rows: Vec<(ExecutionId, String, String)> = sqlx::query_as(
        "SELECT execution_id, kind, lane FROM executions \
         WHERE tenant_id = $1 AND execution_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .all(&db.pool, "read execution origins")
    .await?;
    Ok(origins(rows))
}
