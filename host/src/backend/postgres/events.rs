//! [`Events`] on Postgres: the three per-tenant streams, each an outbox
//! table read by cursor (see `outbox`).

use async_trait::async_trait;

use super::PgBackend;
use crate::backend::Events;
use crate::error::{EngineError, Result};
use crate::model::{
    CompletionEvent, EventBatch, EventCursor, ExecutionId, ExecutionOrigin, LeaseEvent, Page,
    SignalEvent, TenantId,
};
#[async_trait]
impl Events for PgBackend {
    async fn completion_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<CompletionEvent>> {
        super::outbox::COMPLETIONS
            .read(&self.pool, tenant, page.after, page.limit)
            .await
    }

    async fn lease_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<LeaseEvent>> {
        super::outbox::LEASES
            .read(&self.pool, tenant, page.after, page.limit)
            .await
    }

    async fn signal_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<SignalEvent>> {
        super::outbox::SIGNALS
            .read(&self.pool, tenant, page.after, page.limit)
            .await
    }

    /// Point reads of `executions_pkey`, one per id.
    async fn execution_origins(
        &self,
        tenant: TenantId,
        ids: &[ExecutionId],
    ) -> Result<Vec<ExecutionOrigin>> {
        let rows: Vec<(ExecutionId, String, String)> = sqlx::query_as(
            "SELECT execution_id, kind, lane FROM executions \
             WHERE tenant_id = $1 AND execution_id = ANY($2)",
        )
        .bind(tenant)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::storage("read execution origins"))?;
        Ok(rows.into_iter().map(origin).collect())
    }
}

fn origin((execution_id, kind, lane): (ExecutionId, String, String)) -> ExecutionOrigin {
    ExecutionOrigin {
        execution_id,
        kind,
        lane,
    }
}
