//! Reads over what the lifecycle recorded: an execution's attempts (off the
//! `attempts` primary key), its lease history (`outbox::LEASES`) and a
//! tenant's overview (state counts off
//! `executions_state_idx`, the last hour's outcomes off `attempts_started_idx`).

use chrono::{DateTime, Utc};

use super::PgBackend;
use crate::backend::insights::{
    outcome_window_start, overview_of, state_names, ENDED_FAILED, STATE_COUNT_PROBE,
};
use crate::backend::shared::events::LeaseRow;
use crate::error::{EngineError, Result};
use crate::model::{
    ExecutionId, LeaseEvent, Overview, TenantId, MAX_FAILING_KINDS, MAX_LEASE_HISTORY,
};

/// Attempts that ended in the window, by minute: started no earlier than
/// an hour before it (the index's range), ended inside it.
const MINUTES_SQL: &str = "\
    SELECT date_trunc('minute', ended_at) AS minute,
           count(*) FILTER (WHERE state = 'succeeded'),
           count(*) FILTER (WHERE state = ANY($4))
    FROM attempts
    WHERE tenant_id = $1 AND started_at >= $2 AND ended_at >= $3
      AND (state = 'succeeded' OR state = ANY($4))
    GROUP BY 1 ORDER BY 1";

const FAILING_KINDS_SQL: &str = "\
    SELECT e.kind, count(*) AS failed
    FROM attempts a
    JOIN executions e ON e.tenant_id = a.tenant_id AND e.execution_id = a.execution_id
    WHERE a.tenant_id = $1 AND a.started_at >= $2 AND a.ended_at >= $3 AND a.state = ANY($4)
    GROUP BY e.kind ORDER BY failed DESC, e.kind LIMIT $5";

crate::backend::insights::implement_insights!(PgBackend, pg);

async fn lease_history(
    db: &PgBackend,
    tenant: TenantId,
    id: ExecutionId,
    limit: u32,
) -> Result<Vec<LeaseEvent>> {
    let limit = limit.clamp(1, MAX_LEASE_HISTORY);
    super::outbox::history::<LeaseRow>(&db.pool, tenant, id, limit).await
}

async fn overview(db: &PgBackend, tenant: TenantId, since: DateTime<Utc>) -> Result<Overview> {
    let op = "read the overview";
    // executions_state_idx, at most STATE_COUNT_PROBE entries a state.
    let states: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.state, (SELECT count(*) FROM (SELECT 1 FROM executions e \
             WHERE e.tenant_id = $1 AND e.public_state = s.state LIMIT $2) c) \
         FROM unnest($3::text[]) AS s(state) ORDER BY s.state",
    )
    .bind(tenant)
    .bind(STATE_COUNT_PROBE)
    .bind(state_names())
    .fetch_all(&db.pool)
    .await
    .map_err(EngineError::storage(op))?;
    let started = outcome_window_start(since);
    let minutes: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(MINUTES_SQL)
        .bind(tenant)
        .bind(started)
        .bind(since)
        .bind(ENDED_FAILED)
        .fetch_all(&db.pool)
        .await
        .map_err(EngineError::storage(op))?;
    let kinds: Vec<(String, i64)> = sqlx::query_as(FAILING_KINDS_SQL)
        .bind(tenant)
        .bind(started)
        .bind(since)
        .bind(ENDED_FAILED)
        .bind(i64::from(MAX_FAILING_KINDS))
        .fetch_all(&db.pool)
        .await
        .map_err(EngineError::storage(op))?;
    overview_of(states, minutes, kinds)
}
