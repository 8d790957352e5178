//! Reading the event outboxes (`completion_events`, `lease_events`,
//! `signal_events`) by cursor, and pruning them.
//!
//! A read delivers only events written by transactions older than the oldest
//! one still running (the snapshot's `xmin`), in `(txid, event_id)` order: an
//! event that is invisible now because its transaction has not committed can
//! never land behind a cursor already handed out (migration 0011 explains).
//! The read takes one row more than asked for; when rows exist that the horizon
//! withholds, the batch says `pending` so a follower reads again shortly rather
//! than waiting for the next wake-up. Each read is a range scan of the table's
//! `(tenant_id, txid, event_id)` primary key.

use super::Connections;
use sqlx::postgres::PgRow;

use super::rows::col;
use crate::error::{EngineError, Result};
use crate::model::ExecutionId;
use crate::model::{CompletionEvent, EventBatch, EventCursor, LeaseEvent, SignalEvent, TenantId};

/// One outbox table: what to select and how a row becomes an event.
pub(super) struct Outbox<E> {
    table: &'static str,
    columns: &'static str,
    op: &'static str,
    event: fn(&PgRow, EventCursor) -> Result<E>,
}

pub(super) const COMPLETIONS: Outbox<CompletionEvent> = Outbox {
    table: "completion_events",
    columns: "execution_id, attempt_index, outcome, created_at",
    op: "read completion events",
    event: |row, cursor| {
        Ok(CompletionEvent {
            cursor,
            event_id: cursor.event_id,
            execution_id: col(row, "execution_id")?,
            attempt_index: col(row, "attempt_index")?,
            outcome: col(row, "outcome")?,
            created_at: col(row, "created_at")?,
        })
    },
};

pub(super) const LEASES: Outbox<LeaseEvent> = Outbox {
    table: "lease_events",
    columns: "execution_id, attempt_index, lease_epoch, kind, lease_expires_at, phase, created_at",
    op: "read lease events",
    event: |row, cursor| {
        Ok(LeaseEvent {
            cursor,
            event_id: cursor.event_id,
            execution_id: col(row, "execution_id")?,
            attempt_index: col(row, "attempt_index")?,
            lease_epoch: col(row, "lease_epoch")?,
            kind: col(row, "kind")?,
            lease_expires_at: col(row, "lease_expires_at")?,
            phase: col(row, "phase")?,
            created_at: col(row, "created_at")?,
        })
    },
};

pub(super) const SIGNALS: Outbox<SignalEvent> = Outbox {
    table: "signal_events",
    columns: "execution_id, waitpoint_id, signal_id, name, effect, created_at",
    op: "read signal events",
    event: |row, cursor| {
        Ok(SignalEvent {
            cursor,
            event_id: cursor.event_id,
            execution_id: col(row, "execution_id")?,
            waitpoint_id: col(row, "waitpoint_id")?,
            signal_id: col(row, "signal_id")?,
            name: col(row, "name")?,
            effect: col(row, "effect")?,
            created_at: col(row, "created_at")?,
        })
    },
};

/// The oldest transaction still running, as the outboxes store txids.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

impl<E> Outbox<E> {
    /// The tenant's events after `after`, oldest first, at most `limit`.
    pub(super) async fn read(
        &self,
        pool: &Connections,
        tenant: TenantId,
        after: EventCursor,
        limit: u32,
    ) -> Result<EventBatch<E>> {
        let sql = format!(
            "SELECT {columns}, txid, event_id, {HORIZON} AS horizon FROM {table} \
             WHERE tenant_id = $1 AND (txid, event_id) > ($2, $3) \
             ORDER BY txid, event_id LIMIT $4",
            columns = self.columns,
            table = self.table,
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(after.txid)
            .bind(after.event_id)
            .bind(i64::from(limit) + 1)
            .fetch_all(pool)
            .await
            .map_err(EngineError::storage(self.op))?;
        let mut events = Vec::with_capacity(rows.len());
        let mut pending = false;
        for row in &rows {
            let (cursor, deliverable) = position(row)?;
            if !deliverable {
                pending = true;
                break;
            }
            if events.len() == limit as usize {
                break;
            }
            events.push((self.event)(row, cursor)?);
        }
        Ok(EventBatch { events, pending })
    }

    /// Delete up to `limit` of each tenant's oldest events written before
    /// `retention_ms` ago; returns how many went. Takes the head of each
    /// tenant's primary-key range and deletes what is old enough in it, so a
    /// pass with nothing to prune reads `limit` rows per tenant, not the table.
    pub(super) async fn prune(
        &self,
        pool: &Connections,
        retention_ms: i64,
        limit: u32,
    ) -> Result<u64> {
        let sql = format!(
            "WITH head AS ( \
                 SELECT h.tenant_id, h.txid, h.event_id, h.created_at FROM tenants t \
                 CROSS JOIN LATERAL ( \
                     SELECT tenant_id, txid, event_id, created_at FROM {table} o \
                     WHERE o.tenant_id = t.tenant_id ORDER BY txid, event_id LIMIT $2) h) \
             DELETE FROM {table} o USING head h \
             WHERE o.tenant_id = h.tenant_id AND o.txid = h.txid AND o.event_id = h.event_id \
               AND h.created_at < now() - $1 * interval '1 millisecond'",
            table = self.table,
        );
        let done = sqlx::query(&sql)
            .bind(retention_ms)
            .bind(i64::from(limit))
            .execute(pool)
            .await
            .map_err(EngineError::storage("prune events"))?;
        Ok(done.rows_affected())
    }
}

impl Outbox<LeaseEvent> {
    /// The execution's newest `limit` lease events, oldest first, off
    /// `lease_events_execution_idx`: committed ones, whatever the horizon
    /// (a history, not a stream to follow).
    pub(super) async fn history(
        &self,
        pool: &Connections,
        tenant: TenantId,
        id: ExecutionId,
        limit: u32,
    ) -> Result<Vec<LeaseEvent>> {
        let sql = format!(
            "SELECT {columns}, txid, event_id FROM {table} \
             WHERE tenant_id = $1 AND execution_id = $2 ORDER BY event_id DESC LIMIT $3",
            columns = self.columns,
            table = self.table,
        );
        let rows = sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(EngineError::storage("read lease history"))?;
        let mut events = rows
            .iter()
            .map(|row| {
                let cursor = EventCursor {
                    txid: col(row, "txid")?,
                    event_id: col(row, "event_id")?,
                };
                (self.event)(row, cursor)
            })
            .collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }
}

/// A row's cursor, and whether the horizon lets it be delivered.
fn position(row: &PgRow) -> Result<(EventCursor, bool)> {
    let cursor = EventCursor {
        txid: col(row, "txid")?,
        event_id: col(row, "event_id")?,
    };
    let horizon: i64 = col(row, "horizon")?;
    Ok((cursor, cursor.txid < horizon))
}

/// Process-wide read for the completion dispatcher: every tenant's completion
/// events after `after` (served by `completion_events_txid_idx`), as
/// `(tenant, execution)` pairs, with the new cursor and the pending flag.
pub(super) async fn all_completions(
    pool: &Connections,
    after: EventCursor,
    limit: u32,
) -> Result<(Vec<(TenantId, ExecutionId)>, EventCursor, bool)> {
    let rows = sqlx::query(&format!(
        "SELECT tenant_id, execution_id, txid, event_id, {HORIZON} AS horizon \
         FROM completion_events WHERE (txid, event_id) > ($1, $2) \
         ORDER BY txid, event_id LIMIT $3"
    ))
    .bind(after.txid)
    .bind(after.event_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(EngineError::storage(
        "read completion events for subscribers",
    ))?;
    let mut cursor = after;
    let mut woken = Vec::with_capacity(rows.len());
    for row in &rows {
        let (position, deliverable) = position(row)?;
        if !deliverable {
            return Ok((woken, cursor, true));
        }
        woken.push((col(row, "tenant_id")?, col(row, "execution_id")?));
        cursor = position;
    }
    Ok((woken, cursor, false))
}

/// The newest deliverable position of the completion outbox: where a
/// dispatcher that starts now begins.
pub(super) async fn completions_head(pool: &Connections) -> Result<EventCursor> {
    let row: Option<(i64, i64)> = sqlx::query_as(&format!(
        "SELECT txid, event_id FROM completion_events WHERE txid < {HORIZON} \
         ORDER BY txid DESC, event_id DESC LIMIT 1"
    ))
    .fetch_optional(pool)
    .await
    .map_err(EngineError::storage("read outbox head"))?;
    Ok(
        row.map_or(EventCursor::START, |(txid, event_id)| EventCursor {
            txid,
            event_id,
        }),
    )
}
