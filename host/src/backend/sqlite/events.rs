//! [`Events`] on SQLite: the three per-tenant streams, read by cursor.

use async_trait::async_trait;
use uuid::Uuid;

use super::time::{at, Millis};
use super::SqliteBackend;
use crate::backend::Events;
use crate::error::{EngineError, Result};
use crate::model::{
    CompletionEvent, EventBatch, EventCursor, LeaseEvent, Page, SignalEvent, TenantId,
};
use crate::model::{ExecutionId, ExecutionOrigin, WaitpointId};
/// The columns of a lease event, as [`LeaseRow`] reads them.
pub(super) const LEASE_COLUMNS: &str =
    "event_id, execution_id, attempt_index, lease_epoch, kind, lease_expires_at, phase, created_at";

#[derive(sqlx::FromRow)]
pub(super) struct LeaseRow {
    event_id: i64,
    execution_id: ExecutionId,
    attempt_index: i32,
    lease_epoch: i64,
    kind: String,
    lease_expires_at: Option<Millis>,
    phase: String,
    created_at: Millis,
}

impl LeaseRow {
    pub(super) fn event(self) -> LeaseEvent {
        LeaseEvent {
            cursor: cursor(self.event_id),
            event_id: self.event_id,
            execution_id: self.execution_id,
            attempt_index: self.attempt_index,
            lease_epoch: self.lease_epoch,
            kind: self.kind,
            lease_expires_at: self.lease_expires_at.map(at),
            phase: self.phase,
            created_at: at(self.created_at),
        }
    }
}

#[async_trait]
impl Events for SqliteBackend {
    async fn completion_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<CompletionEvent>> {
        let db = self;
        let rows: Vec<(i64, ExecutionId, i32, String, Millis)> = sqlx::query_as(
            "SELECT event_id, execution_id, attempt_index, outcome, created_at \
             FROM completion_events WHERE tenant_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
        )
        .bind(tenant)
        .bind(page.after.event_id)
        .bind(i64::from(page.limit))
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("read completion events"))?;
        let events = rows
            .into_iter()
            .map(
                |(id, execution_id, attempt_index, outcome, created)| CompletionEvent {
                    cursor: cursor(id),
                    event_id: id,
                    execution_id,
                    attempt_index,
                    outcome,
                    created_at: at(created),
                },
            )
            .collect();
        Ok(EventBatch {
            events,
            pending: false,
        })
    }

    async fn lease_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<LeaseEvent>> {
        let db = self;
        let rows: Vec<LeaseRow> = sqlx::query_as(&format!(
            "SELECT {LEASE_COLUMNS} FROM lease_events WHERE tenant_id = ? AND event_id > ? \
             ORDER BY event_id LIMIT ?"
        ))
        .bind(tenant)
        .bind(page.after.event_id)
        .bind(i64::from(page.limit))
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("read lease events"))?;
        let events = rows.into_iter().map(LeaseRow::event).collect();
        Ok(EventBatch {
            events,
            pending: false,
        })
    }

    async fn signal_events(
        &self,
        tenant: TenantId,
        page: Page<EventCursor>,
    ) -> Result<EventBatch<SignalEvent>> {
        let db = self;
        #[derive(sqlx::FromRow)]
        struct Row {
            event_id: i64,
            execution_id: ExecutionId,
            waitpoint_id: WaitpointId,
            signal_id: Uuid,
            name: String,
            effect: String,
            created_at: Millis,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT event_id, execution_id, waitpoint_id, signal_id, name, effect, created_at \
             FROM signal_events WHERE tenant_id = ? AND event_id > ? ORDER BY event_id LIMIT ?",
        )
        .bind(tenant)
        .bind(page.after.event_id)
        .bind(i64::from(page.limit))
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("read signal events"))?;
        let events = rows
            .into_iter()
            .map(|r| SignalEvent {
                cursor: cursor(r.event_id),
                event_id: r.event_id,
                execution_id: r.execution_id,
                waitpoint_id: r.waitpoint_id,
                signal_id: r.signal_id,
                name: r.name,
                effect: r.effect,
                created_at: at(r.created_at),
            })
            .collect();
        Ok(EventBatch {
            events,
            pending: false,
        })
    }

    /// Point reads of the executions primary key, one per id.
    async fn execution_origins(
        &self,
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
        let rows = query
            .fetch_all(self.reader())
            .await
            .map_err(EngineError::storage("read execution origins"))?;
        Ok(rows
            .into_iter()
            .map(|(execution_id, kind, lane)| ExecutionOrigin {
                execution_id,
                kind,
                lane,
            })
            .collect())
    }
}

/// The cursor of an event: with one writer, its id alone orders it.
fn cursor(event_id: i64) -> EventCursor {
    EventCursor {
        txid: event_id,
        event_id,
    }
}
