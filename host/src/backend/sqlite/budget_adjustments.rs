//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections, under the one writer.

use super::budgets::release_holds;
use super::time::now;
use super::SqliteBackend;
use crate::backend::shared::budgets::sqlite::{check_adjustment_room, get_budget};
use crate::backend::{refusals, UsageAdjust};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{Budget, BudgetId, TenantId};

pub(super) async fn adjust_usage(
    db: &SqliteBackend,
    tenant: TenantId,
    id: BudgetId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    let op = "adjust usage";
    db.write(op, async |conn, effects| {
        let row: Option<(i64, Option<i64>, bool)> = sqlx::query_as(
            "SELECT used, hard_limit, exhausted FROM budget_dimensions \
             WHERE tenant_id = ? AND budget_id = ? AND dimension = ?",
        )
        .bind(tenant)
        .bind(id)
        .bind(&adjust.adjustment.dimension)
        .optional(&mut *conn, op)
        .await?;
        let Some((used, hard, was_exhausted)) = row else {
            return Err(refusals::budget_dimension_not_found(
                id,
                &adjust.adjustment.dimension,
            ));
        };
        check_adjustment_room(conn, tenant, id, adjust.max_adjustments).await?;
        let used_after = adjust.adjustment.applied_to(used);
        let exhausted = hard.is_some_and(|h| used_after >= h);
        sqlx::query(
            "UPDATE budget_dimensions SET used = ?, exhausted = ? \
             WHERE tenant_id = ? AND budget_id = ? AND dimension = ?",
        )
        .bind(used_after)
        .bind(exhausted)
        .bind(tenant)
        .bind(id)
        .bind(&adjust.adjustment.dimension)
        .run(&mut *conn, op)
        .await?;
        sqlx::query(
            "INSERT INTO budget_adjustments \
                 (tenant_id, budget_id, dimension, delta, used_after, reason, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant)
        .bind(id)
        .bind(&adjust.adjustment.dimension)
        .bind(adjust.adjustment.delta)
        .bind(used_after)
        .bind(&adjust.adjustment.reason)
        .bind(now())
        .run(&mut *conn, op)
        .await?;
        if was_exhausted && !exhausted {
            let still: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM budget_dimensions \
                 WHERE tenant_id = ? AND budget_id = ? AND exhausted)",
            )
            .bind(tenant)
            .bind(id)
            .one(&mut *conn, op)
            .await?;
            if !still {
                release_holds(conn, tenant, id, effects).await?;
            }
        }
        get_budget(conn, tenant, id).await
    })
    .await
}
