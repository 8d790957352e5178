//! Reading the event outboxes (`completion_events`, lease events,
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
//!
//! Lease events and completion events are stored a statement's worth to a
//! row (`lease_event_batches`, migration 0038; `completion_event_batches`,
//! 0040), beside the tables the builds before stored them in, a row an
//! event: a row's events are read back one by one, each with its own id, by
//! unnesting its arrays ([`Batches`]), merged with the old table's.

use super::Connections;
use sqlx::postgres::PgRow;

use super::rows::col;
use crate::backend::shared::events::{CompletionRow, LeaseRow, SignalRow, Stream};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::ExecutionId;
use crate::model::{EventBatch, EventCursor, LeaseEvent, TenantId};

/// The oldest transaction still running, as the outboxes store txids.
const HORIZON: &str = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint";

/// A stream as Postgres stores it: the query that reads a tenant's events
/// after a cursor, and the tables pruned.
pub(super) trait Outbox: Stream {
    /// The tables its rows are in, each with how many events a row holds.
    const STORED_IN: &'static [(&'static str, &'static str)];
    /// Tenant `$1`'s events after the cursor `($2, $3)`, in cursor order, at
    /// most `$4`: the row's columns, `txid` and `horizon`. This reads the
    /// one table of a stream stored a row an event; a stream stored
    /// otherwise, or in more than one table, says how to read it.
    fn read_sql() -> String {
        format!(
            "SELECT {columns}, txid, {HORIZON} AS horizon FROM {table} \
             WHERE tenant_id = $1 AND (txid, event_id) > ($2, $3) \
             ORDER BY txid, event_id LIMIT $4",
            columns = Self::COLUMNS,
            table = Self::STORED_IN[0].0,
        )
    }
}

/// A stream stored a statement's worth to a row (migrations 0038 and 0040)
/// beside the table the builds before stored it in, a row an event. A row's
/// `event_id` is its first event's; it holds fewer than 2^20 events.
struct Batches {
    table: &'static str,
    legacy: &'static str,
    /// The stream's columns and `txid`, one row per event of the rows `b`
    /// that `unnest` unnests as `u`.
    events: &'static str,
    unnest: &'static str,
}

impl Batches {
    /// How many events a row of `table` holds (what it counts for when
    /// pruned).
    const EVENT_COUNT: &'static str = "cardinality(execution_ids)";

    /// Events after the cursor `({txid}, {event_id})`, in cursor order, at
    /// most `{limit}`, of both tables: the stream's columns (the legacy
    /// table's `legacy_columns`), `txid` and `horizon`; a tenant's, or every
    /// tenant's with `tenant_id` too. A row with an event after `event_id`
    /// starts after `event_id - 2^20`: that bound keeps the scan on the
    /// index, the next condition picks the events.
    fn read_after(&self, legacy_columns: &str, scope: Scope, cursor: [&str; 3]) -> String {
        let [txid, event_id, limit] = cursor;
        let (legacy_extra, legacy_scope, extra, scope) = match scope {
            Scope::Tenant(t) => (
                String::new(),
                format!("tenant_id = {t} AND"),
                String::new(),
                format!("b.tenant_id = {t} AND"),
            ),
            Scope::Every => (
                "tenant_id, ".into(),
                String::new(),
                "b.tenant_id, ".into(),
                String::new(),
            ),
        };
        format!(
            "SELECT e.*, {HORIZON} AS horizon FROM ( \
                 (SELECT {legacy_extra}{legacy_columns}, txid FROM {legacy} \
                  WHERE {legacy_scope} (txid, event_id) > ({txid}, {event_id}) \
                  ORDER BY txid, event_id LIMIT {limit}) \
                 UNION ALL \
                 (SELECT {extra}{events} FROM {table} b {unnest} \
                  WHERE {scope} (b.txid, b.event_id) > ({txid}, {event_id} - 1048576) \
                    AND (b.txid, b.event_id + u.ord - 1) > ({txid}, {event_id}) \
                  ORDER BY b.txid, b.event_id, u.ord LIMIT {limit})) e \
             ORDER BY e.txid, e.event_id LIMIT {limit}",
            legacy = self.legacy,
            table = self.table,
            events = self.events,
            unnest = self.unnest,
        )
    }

    /// A tenant's read: tenant `$1`, cursor `($2, $3)`, limit `$4`.
    fn tenant_read(&self, legacy_columns: &str) -> String {
        self.read_after(legacy_columns, Scope::Tenant("$1"), ["$2", "$3", "$4"])
    }
}

/// Whose events a read of [`Batches`] takes.
enum Scope {
    /// The tenant bound as this parameter's.
    Tenant(&'static str),
    /// Every tenant's, each event with its `tenant_id`.
    Every,
}

impl Outbox for CompletionRow {
    const STORED_IN: &'static [(&'static str, &'static str)] = &[
        (COMPLETIONS.table, Batches::EVENT_COUNT),
        (COMPLETIONS.legacy, "1"),
    ];

    fn read_sql() -> String {
        COMPLETIONS.tenant_read(Self::COLUMNS)
    }
}

/// The completion outbox (migration 0040): outcomes decoded from their
/// one-byte codes by `flowfabric_outcome`.
const COMPLETIONS: Batches = Batches {
    table: "completion_event_batches",
    legacy: "completion_events",
    events: "b.event_id + u.ord - 1 AS event_id, u.execution_id, u.attempt_index, \
        flowfabric_outcome(u.outcome) AS outcome, b.created_at, b.txid",
    unnest: "CROSS JOIN LATERAL unnest(b.execution_ids, b.attempt_indexes, b.outcomes) \
        WITH ORDINALITY AS u(execution_id, attempt_index, outcome, ord)",
};

impl Outbox for SignalRow {
    const STORED_IN: &'static [(&'static str, &'static str)] = &[("signal_events", "1")];
}

impl Outbox for LeaseRow {
    const STORED_IN: &'static [(&'static str, &'static str)] =
        &[(LEASES.table, Batches::EVENT_COUNT), (LEASES.legacy, "1")];

    fn read_sql() -> String {
        LEASES.tenant_read(Self::COLUMNS)
    }
}

/// Lease history (migration 0038): kinds and phases decoded from their
/// one-byte codes (an unknown code reads as NULL, which decoding refuses).
const LEASES: Batches = Batches {
    table: "lease_event_batches",
    legacy: "lease_events",
    events: "b.event_id + u.ord - 1 AS event_id, u.execution_id, \
    u.attempt_index, u.lease_epoch, \
    CASE u.kind WHEN 'a' THEN 'acquired' WHEN 'c' THEN 'reclaimed' WHEN 'n' THEN 'renewed' \
        WHEN 'r' THEN 'released' WHEN 'e' THEN 'expired' WHEN 'v' THEN 'revoked' END AS kind, \
    u.lease_expires_at, \
    CASE u.phase WHEN 'u' THEN 'submitted' WHEN 'r' THEN 'runnable' WHEN 'a' THEN 'active' \
        WHEN 's' THEN 'suspended' WHEN 't' THEN 'terminal' END AS phase, \
    b.created_at, b.txid",
    unnest: "CROSS JOIN LATERAL unnest(\
    b.execution_ids, b.attempt_indexes, b.lease_epochs, b.kinds, b.lease_expires_ats, b.phases) \
    WITH ORDINALITY AS u(execution_id, attempt_index, lease_epoch, kind, lease_expires_at, phase, ord)",
};

/// The expression `lease_event_batches_moment_idx` indexes (migration 0042):
/// a key (tenant, moment of creation) an event of the row; the index keeps
/// each key once.
const LEASE_MOMENTS: &str = "flowfabric_execution_moments(tenant_id, execution_ids)";

/// The tenant's events of stream `R` after `after`, oldest first, at most
/// `limit`.
pub(super) async fn read<R: Outbox>(
    pool: &Connections,
    tenant: TenantId,
    after: EventCursor,
    limit: u32,
) -> Result<EventBatch<R::Event>> {
    let sql = R::read_sql();
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

/// Delete up to `limit` of each tenant's oldest rows of stream `R` written
/// before `retention_ms` ago, in each of its tables; returns how many
/// events went.
pub(super) async fn prune<R: Outbox>(
    pool: &Connections,
    retention_ms: i64,
    limit: u32,
) -> Result<u64> {
    let mut gone = 0;
    for (table, events) in R::STORED_IN {
        gone += prune_table(pool, table, events, retention_ms, limit).await?;
    }
    Ok(gone)
}

/// Takes the head of each tenant's primary-key range and deletes what is
/// old enough in it, so a pass with nothing to prune reads `limit` rows per
/// tenant, not the table. `events`: what a row counts for.
async fn prune_table(
    pool: &Connections,
    table: &str,
    events: &str,
    retention_ms: i64,
    limit: u32,
) -> Result<u64> {
    let sql = format!(
        "WITH head AS ( \
             SELECT h.tenant_id, h.txid, h.event_id, h.created_at FROM tenants t \
             CROSS JOIN LATERAL ( \
                 SELECT tenant_id, txid, event_id, created_at FROM {table} o \
                 WHERE o.tenant_id = t.tenant_id ORDER BY txid, event_id LIMIT $2) h), \
         gone AS ( \
             DELETE FROM {table} o USING head h \
             WHERE o.tenant_id = h.tenant_id AND o.txid = h.txid AND o.event_id = h.event_id \
               AND h.created_at < now() - $1 * interval '1 millisecond' \
             RETURNING {events} AS events) \
         SELECT coalesce(sum(events), 0)::bigint FROM gone",
    );
    let (gone,): (i64,) = sqlx::query_as(&sql)
        .bind(retention_ms)
        .bind(i64::from(limit))
        .one(pool, "prune events")
        .await?;
    Ok(gone.max(0) as u64)
}

/// The execution's newest `limit` lease events, oldest first: the batches
/// `lease_event_batches_moment_idx` finds for it and the rows of the old
/// table `lease_events_execution_idx` does, merged. That index keys a row by
/// the tenant and the 16 ms in which each of its executions was created
/// (migration 0042), so it finds the rows of every execution the tenant
/// created with this one, and only this execution's events are kept. The
/// batches are found by the key alone (`OFFSET 0` keeps the tenant's
/// condition out of that scan): planned by the tenant's primary-key range
/// instead, a timeline would read the tenant's whole history. Committed
/// ones, whatever the horizon (a history, not a stream to follow).
pub(super) async fn lease_history(
    pool: &Connections,
    tenant: TenantId,
    id: ExecutionId,
    limit: u32,
) -> Result<Vec<LeaseEvent>> {
    let sql = lease_history_sql();
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

/// [`lease_history`]'s statement (`$1` tenant, `$2` execution, `$3` limit).
pub(super) fn lease_history_sql() -> String {
    format!(
        "SELECT e.* FROM ( \
             (SELECT {columns}, txid FROM {legacy} \
              WHERE tenant_id = $1 AND execution_id = $2 ORDER BY event_id DESC LIMIT $3) \
             UNION ALL \
             (SELECT {events} FROM ( \
                  SELECT * FROM lease_event_batches \
                  WHERE {moments} @> flowfabric_execution_moments($1, ARRAY[$2::uuid]) \
                  OFFSET 0) b {unnest} \
              WHERE b.tenant_id = $1 AND u.execution_id = $2 \
              ORDER BY b.event_id + u.ord DESC LIMIT $3)) e \
         ORDER BY e.event_id DESC LIMIT $3",
        columns = LeaseRow::COLUMNS,
        legacy = LEASES.legacy,
        events = LEASES.events,
        unnest = LEASES.unnest,
        moments = LEASE_MOMENTS,
    )
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
/// events after `after` (served by the tables' `(txid, event_id)` indexes),
/// as `(tenant, execution)` pairs, with the new cursor and the pending flag.
pub(super) async fn all_completions(
    pool: &Connections,
    after: EventCursor,
    limit: u32,
) -> Result<(Vec<(TenantId, ExecutionId)>, EventCursor, bool)> {
    let sql = COMPLETIONS.read_after(CompletionRow::COLUMNS, Scope::Every, ["$1", "$2", "$3"]);
    let rows = sqlx::query(&sql)
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
        "SELECT txid, event_id FROM ( \
             (SELECT txid, event_id FROM {legacy} WHERE txid < {HORIZON} \
              ORDER BY txid DESC, event_id DESC LIMIT 1) \
             UNION ALL \
             (SELECT txid, event_id + {count} - 1 FROM {table} WHERE txid < {HORIZON} \
              ORDER BY txid DESC, event_id DESC LIMIT 1)) h \
         ORDER BY txid DESC, event_id DESC LIMIT 1",
        legacy = COMPLETIONS.legacy,
        table = COMPLETIONS.table,
        count = Batches::EVENT_COUNT,
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
