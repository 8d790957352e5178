//! [`Events`] on Postgres: the three per-tenant streams, each an outbox
//! table read by cursor (see `outbox`).

use async_trait::async_trait;

use super::PgBackend;
use crate::backend::Events;
use crate::error::Result;
use crate::model::{CompletionEvent, EventBatch, EventCursor, LeaseEvent, SignalEvent, TenantId};
#[async_trait]
impl Events for PgBackend {
    async fn completion_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<CompletionEvent>> {
        super::outbox::COMPLETIONS
            .read(&self.pool, tenant, after, limit)
            .await
    }

    async fn lease_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<LeaseEvent>> {
        super::outbox::LEASES
            .read(&self.pool, tenant, after, limit)
            .await
    }

    async fn signal_events(
        &self,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<SignalEvent>> {
        super::outbox::SIGNALS
            .read(&self.pool, tenant, after, limit)
            .await
    }
}
