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
use crate::backend::insights::{
    ended_failed_list, outcome_window_start, overview_of, state_names, STATE_COUNT_PROBE,
};
use crate::backend::shared::events::{LeaseRow, Stream};
use crate::error::{EngineError, Result};
use crate::model::{
    ExecutionId, LeaseEvent, Overview, TenantId, MAX_FAILING_KINDS, MAX_LEASE_HISTORY,
};

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
    .fetch_all(db.reader())
    .await
    .map_err(EngineError::storage(op))?;
    Ok(rows.into_iter().rev().map(event).collect())
}

async fn overview(db: &SqliteBackend, tenant: TenantId, since: DateTime<Utc>) -> Result<Overview> {
    let op = "read the overview";
    db.read(op, async |conn| {
        // executions_state_idx, at most STATE_COUNT_PROBE entries a state.
        let states: Vec<(String, i64)> = sqlx::query_as(
            "SELECT s.value, (SELECT count(*) FROM (SELECT 1 FROM executions e \
             WHERE e.tenant_id = ?1 AND e.public_state = s.value LIMIT ?2)) \
         FROM json_each(?3) AS s ORDER BY s.value",
        )
        .bind(tenant)
        .bind(STATE_COUNT_PROBE)
        .bind(serde_json::to_string(&state_names()).expect("names serialise"))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage(op))?;
        let failed = ended_failed_list();
        let started = millis_of(outcome_window_start(since));
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
        .bind(started)
        .bind(millis_of(since))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage(op))?;
        let kinds: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT e.kind, count(*) AS failed \
         FROM attempts a \
         JOIN executions e ON e.tenant_id = a.tenant_id AND e.execution_id = a.execution_id \
         WHERE a.tenant_id = ?1 AND a.started_at >= ?2 AND a.ended_at >= ?3 \
           AND a.state IN ({failed}) \
         GROUP BY e.kind ORDER BY failed DESC, e.kind LIMIT ?4"
        ))
        .bind(tenant)
        .bind(started)
        .bind(millis_of(since))
        .bind(i64::from(MAX_FAILING_KINDS))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage(op))?;
        overview_of(
            states,
            minutes.into_iter().map(|(m, s, f)| (at(m), s, f)).collect(),
            kinds,
        )
    })
    .await
}
