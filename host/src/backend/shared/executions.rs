//! Executions: a point read of the public state written once; creation,
//! listing and the operator operations are each backend's own (Postgres
//! writes a batch in one `unnest` statement and cancels through its
//! PL/pgSQL function; SQLite runs the rules in Rust on the one writer).

use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, ExecutionState, TenantId};

for_both_drivers! {
    /// The execution's public state and attempt, off `executions_pkey`.
    async fn execution_state(conn, tenant: TenantId, id: ExecutionId) -> Result<ExecutionState> {
        let row: Option<(String, i32)> = sqlx::query_as(
            "SELECT public_state, attempt_index FROM executions \
             WHERE tenant_id = $1 AND execution_id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(EngineError::storage("get execution state"))?;
        let (state, attempt_index) = row.ok_or_else(|| EngineError::NotFound {
            what: "execution",
            id: id.to_string(),
        })?;
        Ok(ExecutionState {
            state: state.parse().map_err(EngineError::Corrupt)?,
            attempt_index,
        })
    }
}
