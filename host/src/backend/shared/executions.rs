//! Executions: the public-state read and the lane counts written once;
//! creation, listing and the operator operations are each backend's own
//! (Postgres writes a batch in one `unnest` statement and cancels through
//! its PL/pgSQL function; SQLite runs the rules in Rust on the one writer).

use std::sync::LazyLock;

use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{
    ExecutionId, ExecutionState, LaneCounts, Page, PublicState, TenantId, MAX_LANE_PAGE,
};

/// The lane counts' statement: the public states of executions not yet
/// ended are spelt out, so that both drivers read only those entries of
/// `executions_state_idx` (tenant, public state), never the ended ones; the
/// running ones are read apart (`lifecycle_phase = 'active'`), since the
/// Postgres index leaves them out (migration 0041).
static LANE_COUNTS_SQL: LazyLock<String> = LazyLock::new(|| {
    let waiting: Vec<String> = PublicState::ALL
        .into_iter()
        .filter(|s| !s.is_terminal() && *s != PublicState::Active)
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "SELECT lane, \
                count(*) FILTER (WHERE lifecycle_phase = 'runnable'), \
                count(*) FILTER (WHERE lifecycle_phase = 'active'), \
                count(*) FILTER (WHERE lifecycle_phase = 'suspended') \
         FROM ( \
             SELECT lane, lifecycle_phase FROM executions \
             WHERE tenant_id = $1 AND public_state IN ({}) \
               AND (CAST($2 AS TEXT) IS NULL OR lane > $2) \
             UNION ALL \
             SELECT lane, lifecycle_phase FROM executions \
             WHERE tenant_id = $1 AND lifecycle_phase = 'active' \
               AND (CAST($2 AS TEXT) IS NULL OR lane > $2)) live \
         GROUP BY lane ORDER BY lane LIMIT $3",
        waiting.join(", ")
    )
});

for_both_drivers! {
    /// A page of the tenant's lanes with unfinished executions, by lane.
    async fn lane_counts(conn, tenant: TenantId, page: Page<Option<&str>>) -> Result<Vec<LaneCounts>> {
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(LANE_COUNTS_SQL.as_str())
            .bind(tenant)
            .bind(page.after)
            .bind(i64::from(page.limit.min(MAX_LANE_PAGE)))
            .all(&mut *conn, "count lanes")
            .await?;
        Ok(rows.into_iter().map(crate::backend::lane_counts).collect())
    }

    /// The execution's public state and attempt, off `executions_pkey`.
    async fn execution_state(conn, tenant: TenantId, id: ExecutionId) -> Result<ExecutionState> {
        let row: Option<(String, i32)> = sqlx::query_as(
            "SELECT public_state, attempt_index FROM executions \
             WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(tenant)
        .bind(id)
        .optional(&mut *conn, "get execution state")
        .await?;
        let (state, attempt_index) = row.ok_or_else(|| EngineError::not_found("execution", id))?;
        Ok(ExecutionState {
            state: state.parse().map_err(EngineError::Corrupt)?,
            attempt_index,
        })
    }
}
