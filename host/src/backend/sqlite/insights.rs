//! Reads over what the lifecycle recorded, on the embedded backend: an
//! execution's attempts (off the `attempts` primary key), its lease history
//! (off `lease_events_execution_idx`) and a tenant's
//! overview (state counts off `executions_state_idx`, the last hour's
//! outcomes off `attempts_started_idx`). Times are stored in milliseconds,
//! so a minute is an integer division.

use chrono::{DateTime, Utc};

use super::events::event;
use super::time::{at, millis_of, Millis};
use super::SqliteBackend;
use crate::backend::insights::{ended_failed_list, outcome_window_start, overview_of};
use crate::backend::shared::events::{LeaseRow, Stream};
use crate::backend::shared::insights::sqlite as shared;
use crate::backend::shared::stamp::Stamp;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{ExecutionId, LeaseEvent, Overview, TenantId, MAX_LEASE_HISTORY};

crate::backend::insights::implement_insights!(SqliteBackend, sqlite);

async fn lease_history(
    db: &SqliteBackend,
    tenant: TenantId,
    id: ExecutionId,
    limit: u32,
) -> Result<Vec<LeaseEvent>> {
    let op = "read lease history";
    let rows: Vec<LeaseRow> = sqlx::query_as(&format!(
        "SELECT {} FROM lease_events WHERE tenant_id = ? AND execution_id = ? \
         ORDER BY event_id DESC LIMIT ?",
        LeaseRow::COLUMNS
    ))
    .bind(tenant)
    .bind(id)
    .bind(i64::from(limit.clamp(1, MAX_LEASE_HISTORY)))
    .all(db.reader(), op)
    .await?;
    Ok(rows.into_iter().rev().map(event).collect())
}

async fn overview(db: &SqliteBackend, tenant: TenantId, since: DateTime<Utc>) -> Result<Overview> {
    let op = "read the overview";
    db.read(op, async |conn| {
        let states = shared::state_counts(conn, tenant).await?;
        let failed = ended_failed_list();
        let started = outcome_window_start(since);
        // Attempts that ended in the window, by minute (times are stored in
        // milliseconds, so a minute is an integer division).
        let minutes: Vec<(Millis, i64, i64)> = sqlx::query_as(&format!(
            "SELECT (ended_at / 60000) * 60000 AS minute, \
                count(*) FILTER (WHERE state = 'succeeded'), \
                count(*) FILTER (WHERE state IN ({failed})) \
             FROM attempts \
             WHERE tenant_id = ?1 AND started_at >= ?2 AND ended_at >= ?3 \
               AND (state = 'succeeded' OR state IN ({failed})) \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(tenant)
        .bind(millis_of(started))
        .bind(millis_of(since))
        .all(&mut *conn, op)
        .await?;
        let kinds = shared::failing_kinds(conn, tenant, Stamp(started), Stamp(since)).await?;
        overview_of(
            states,
            minutes.into_iter().map(|(m, s, f)| (at(m), s, f)).collect(),
            kinds,
        )
    })
    .await
}
