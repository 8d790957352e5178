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
use crate::backend::shared::events::{LeaseRow, Stream};
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::ExecutionId;
use crate::model::{EventBatch, EventCursor, LeaseEvent, TenantId};

/// The oldest transaction still running, as the outboxes store txids.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// The tenant's events of stream `R` after `after`, oldest first, at most
/// `limit`.
pub(super) async fn read<R: Stream>(
    pool: &Connections,
    tenant: TenantId,
    after: EventCursor,
    limit: u32,
) -> Result<EventBatch<R::Event>> {
    let sql = format!(
        "SELECT {columns}, txid, {HORIZON} AS horizon FROM {table} \
         WHERE tenant_id = $1 AND (txid, event_id) > ($2, $3) \
         ORDER BY txid, event_id LIMIT $4",
        columns = R::COLUMNS,
        table = R::TABLE,
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(after.txid)
        .bind(after.event_id)
        .bind(i64::from(limit) + 1)
        .all(pool, R::OP)
        .await?;
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
        events.push(decode::<R>(row)?.event(cursor));
    }
    Ok(EventBatch { events, pending })
}

/// Delete up to `limit` of each tenant's oldest events of `table` written
/// before `retention_ms` ago; returns how many went. Takes the head of each
/// tenant's primary-key range and deletes what is old enough in it, so a
/// pass with nothing to prune reads `limit` rows per tenant, not the table.
pub(super) async fn prune(
    pool: &Connections,
    table: &str,
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
    );
    let done = sqlx::query(&sql)
        .bind(retention_ms)
        .bind(i64::from(limit))
        .run(pool, "prune events")
        .await?;
    Ok(done.rows_affected())
}

/// The execution's newest `limit` lease events, oldest first, off
/// `lease_events_execution_idx`: committed ones, whatever the horizon (a
/// history, not a stream to follow).
pub(super) async fn lease_history(
    pool: &Connections,
    tenant: TenantId,
    id: ExecutionId,
    limit: u32,
) -> Result<Vec<LeaseEvent>> {
    let sql = format!(
        "SELECT {}, txid FROM lease_events \
         WHERE tenant_id = $1 AND execution_id = $2 ORDER BY event_id DESC LIMIT $3",
        LeaseRow::COLUMNS,
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(id)
        .bind(i64::from(limit))
        .all(pool, "read lease history")
        .await?;
    let mut events = rows
        .iter()
        .map(|row| {
            let cursor = EventCursor {
                txid: col(row, "txid")?,
                event_id: col(row, "event_id")?,
            };
            Ok(decode::<LeaseRow>(row)?.event(cursor))
        })
        .collect::<Result<Vec<_>>>()?;
    events.reverse();
    Ok(events)
}

fn decode<R: Stream>(row: &PgRow) -> Result<R> {
    R::from_row(row).map_err(|e| EngineError::Corrupt(format!("{}: {e}", R::TABLE)))
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
    .all(pool, "read completion events for subscribers")
    .await?;
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
    .optional(pool, "read outbox head")
    .await?;
    Ok(
        row.map_or(EventCursor::START, |(txid, event_id)| EventCursor {
            txid,
            event_id,
        }),
    )
}
