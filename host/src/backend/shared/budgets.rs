//! Budget operations that are the same on both drivers.

use crate::error::{EngineError, Result};
use crate::model::{BudgetScope, TenantId};

for_both_drivers! {
    /// A flow or execution scope must name one of the tenant's own.
    async fn check_scope_exists(conn, tenant: TenantId, scope: &BudgetScope) -> Result<()> {
        let (what, sql, id) = match scope {
            BudgetScope::Flow { flow_id } => (
                "flow",
                "SELECT EXISTS (SELECT 1 FROM flows WHERE tenant_id = $1 AND flow_id = $2)",
                flow_id.as_uuid(),
            ),
            BudgetScope::Execution { execution_id } => (
                "execution",
                "SELECT EXISTS (SELECT 1 FROM executions WHERE tenant_id = $1 AND execution_id = $2)",
                execution_id.as_uuid(),
            ),
            BudgetScope::Tenant | BudgetScope::Lane { .. } => return Ok(()),
        };
        let exists: bool = sqlx::query_scalar(sql)
            .bind(tenant)
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(EngineError::storage("check budget scope"))?;
        if exists {
            Ok(())
        } else {
            Err(EngineError::NotFound {
                what,
                id: id.to_string(),
            })
        }
    }
}
