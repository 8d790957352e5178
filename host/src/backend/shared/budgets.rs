//! Budget operations that are the same on both drivers.

use super::stamp::Stamp;
use crate::backend::refusals::budget_not_found;
use crate::error::{EngineError, Result};
use crate::model::{BudgetAdjustment, BudgetId, BudgetScope, TenantId};

type AdjustmentRow = (i64, String, i64, i64, String, Stamp);

fn adjustment(
    (adjustment_id, dimension, delta, used_after, reason, created_at): AdjustmentRow,
) -> BudgetAdjustment {
    BudgetAdjustment {
        adjustment_id,
        dimension,
        delta,
        used_after: used_after.max(0) as u64,
        reason,
        created_at: created_at.into(),
    }
}

for_both_drivers! {
    /// The budget's newest `limit` adjustments, newest first, by the
    /// primary key; `NotFound` when the tenant has no such budget.
    async fn list_adjustments(conn, tenant: TenantId, id: BudgetId, limit: u32)
        -> Result<Vec<BudgetAdjustment>>
    {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = $1 AND budget_id = $2)",
        )
        .bind(tenant)
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .map_err(EngineError::storage("list adjustments"))?;
        if !exists {
            return Err(budget_not_found(id));
        }
        let rows: Vec<AdjustmentRow> = sqlx::query_as(
            "SELECT adjustment_id, dimension, delta, used_after, reason, created_at \
             FROM budget_adjustments WHERE tenant_id = $1 AND budget_id = $2 \
             ORDER BY adjustment_id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage("list adjustments"))?;
        Ok(rows.into_iter().map(adjustment).collect())
    }

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
