//! Reads over what the lifecycle recorded: an execution's attempts (off the
//! `attempts` primary key), its lease history (`outbox::LEASES`) and a
//! tenant's overview (state counts off
//! `executions_state_idx`, the last hour's outcomes off `attempts_started_idx`).

use chrono::{DateTime, Utc};

use super::PgBackend;
use crate::backend::insights::{outcome_window_start, overview_of, ENDED_FAILED};
use crate::backend::shared::insights::pg as shared;
use crate::backend::shared::stamp::Stamp;
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, LeaseEvent, Overview, TenantId, MAX_LEASE_HISTORY};

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

crate::backend::insights::implement_insights!(PgBackend, pg);

async fn lease_history(
    db: &PgBackend,
    tenant: TenantId,
    id: ExecutionId,
    limit: u32,
) -> Result<Vec<LeaseEvent>> {
    let limit = limit.clamp(1, MAX_LEASE_HISTORY);
    super::outbox::lease_history(&db.pool, tenant, id, limit).await
}

async fn overview(db: &PgBackend, tenant: TenantId, since: DateTime<Utc>) -> Result<Overview> {
    let op = "read the overview";
    let mut conn = db.pool.acquire().await.map_err(EngineError::storage(op))?;
    let states = shared::state_counts(&mut conn, tenant).await?;
    let started = outcome_window_start(since);
    let minutes: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(MINUTES_SQL)
        .bind(tenant)
        .bind(started)
        .bind(since)
        .bind(ENDED_FAILED)
        .all(&mut *conn, op)
        .await?;
    let kinds = shared::failing_kinds(&mut conn, tenant, Stamp(started), Stamp(since)).await?;
    overview_of(states, minutes, kinds)
}
