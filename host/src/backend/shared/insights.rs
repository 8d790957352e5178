//! An execution's attempts, and the parts of a tenant's overview that are
//! the same statement on both drivers (its per-minute outcomes are not: the
//! drivers bucket times differently).

use std::sync::LazyLock;

use sqlx::types::Json;

use super::stamp::Stamp;
use crate::backend::insights::{ended_failed_list, state_names, STATE_COUNT_PROBE};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{AttemptRecord, ExecutionId, TenantId, MAX_ATTEMPT_PAGE, MAX_FAILING_KINDS};

/// Each public state's count, at most [`STATE_COUNT_PROBE`] entries a
/// state: running executions off the running ones' index
/// (`lifecycle_phase = 'active'`; on Postgres `executions_lease_expiry_idx`),
/// the others off `executions_state_idx`, which on Postgres has no running
/// executions (`public_state <> 'active'` spelt out lets the plan use it). The
/// states are spelt out as rows (a list neither driver needs to bind).
static STATE_COUNTS_SQL: LazyLock<String> = LazyLock::new(|| {
    let states: Vec<String> = state_names()
        .into_iter()
        .map(|s| format!("SELECT '{s}' AS state"))
        .collect();
    format!(
        "SELECT s.state, CASE WHEN s.state = 'active' \
             THEN (SELECT count(*) FROM (SELECT 1 FROM executions e \
                 WHERE e.tenant_id = $1 AND e.lifecycle_phase = 'active' LIMIT $2) c) \
             ELSE (SELECT count(*) FROM (SELECT 1 FROM executions e \
                 WHERE e.tenant_id = $1 AND e.public_state = s.state \
                   AND e.public_state <> 'active' LIMIT $2) c) END \
         FROM ({}) s ORDER BY s.state",
        states.join(" UNION ALL ")
    )
});

/// The kinds with the most failed attempts that ended after `$3` (started
/// after `$2`, the `attempts_started_idx` range).
static FAILING_KINDS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT e.kind, count(*) AS failed \
         FROM attempts a \
         JOIN executions e ON e.tenant_id = a.tenant_id AND e.execution_id = a.execution_id \
         WHERE a.tenant_id = $1 AND a.started_at >= $2 AND a.ended_at >= $3 \
           AND a.state IN ({}) \
         GROUP BY e.kind ORDER BY failed DESC, e.kind LIMIT $4",
        ended_failed_list()
    )
});

type AttemptRow = (
    i32,
    String,
    i64,
    String,
    String,
    Stamp,
    Option<Stamp>,
    Option<Json<serde_json::Value>>,
);

for_both_drivers! {
    /// (state, count up to [`STATE_COUNT_PROBE`]) for every public state.
    async fn state_counts(conn, tenant: TenantId) -> Result<Vec<(String, i64)>> {
        sqlx::query_as(STATE_COUNTS_SQL.as_str())
            .bind(tenant)
            .bind(STATE_COUNT_PROBE)
            .all(&mut *conn, "read the overview")
            .await
    }

    /// (kind, failed attempts) for the kinds failing most in the window.
    async fn failing_kinds(conn, tenant: TenantId, started: Stamp, since: Stamp)
        -> Result<Vec<(String, i64)>>
    {
        sqlx::query_as(FAILING_KINDS_SQL.as_str())
            .bind(tenant)
            .bind(started)
            .bind(since)
            .bind(i64::from(MAX_FAILING_KINDS))
            .all(&mut *conn, "read the overview")
            .await
    }

    /// The execution's attempts, newest first, at most `limit` (a range of
    /// the attempts primary key). Empty for an execution never claimed and
    /// for another tenant's: the caller tells the two apart.
    async fn list_attempts(conn, tenant: TenantId, id: ExecutionId, limit: u32)
        -> Result<Vec<AttemptRecord>>
    {
        let rows: Vec<AttemptRow> = sqlx::query_as(
            "SELECT attempt_index, attempt_type, lease_epoch, worker_id, state, started_at, \
                    ended_at, failure \
             FROM attempts WHERE tenant_id = $1 AND execution_id = $2 \
             ORDER BY attempt_index DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(i64::from(limit.clamp(1, MAX_ATTEMPT_PAGE)))
        .all(&mut *conn, "list attempts")
        .await?;
        rows.into_iter().map(attempt).collect()
    }
}

fn attempt(row: AttemptRow) -> Result<AttemptRecord> {
    let (attempt_index, attempt_type, lease_epoch, worker_id, state, started_at, ended_at, failure) =
        row;
    Ok(AttemptRecord {
        attempt_index,
        attempt_type: attempt_type.parse().map_err(EngineError::Corrupt)?,
        lease_epoch,
        worker_id,
        state: state.parse().map_err(EngineError::Corrupt)?,
        started_at: started_at.into(),
        ended_at: ended_at.map(Into::into),
        failure: failure
            .map(|Json(f)| serde_json::from_value(f))
            .transpose()
            .map_err(|e| EngineError::Corrupt(format!("attempt failure: {e}")))?,
    })
}
