//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections. The dimension row is locked first, as a report
//! locks it, so a correction and a report of the same budget serialise.

use super::PgBackend;

use super::budgets::release_holds;
use super::rows::transaction;
use crate::backend::shared::budgets::pg::{check_adjustment_room, get_budget};
use crate::backend::{refusals, UsageAdjust};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{Budget, BudgetId, TenantId};

pub(super) async fn adjust_usage(
    db: &PgBackend,
    tenant: TenantId,
    id: BudgetId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    let pool = &db.pool;
    let op = "adjust usage";
    transaction(pool, op, async |tx| {
        let row: Option<(i64, Option<i64>, bool)> = sqlx::query_as(
            "SELECT used, hard_limit, exhausted FROM budget_dimensions \
             WHERE tenant_id = $1 AND budget_id = $2 AND dimension = $3 FOR UPDATE",
        )
        .bind(tenant)
        .bind(id)
        .bind(&adjust.adjustment.dimension)
        .optional(&mut *tx, op)
        .await?;
        let Some((used, hard, was_exhausted)) = row else {
            return Err(refusals::budget_dimension_not_found(
                id,
                &adjust.adjustment.dimension,
            ));
        };
        check_adjustment_room(tx, tenant, id, adjust.max_adjustments).await?;
        let used_after = adjust.adjustment.applied_to(used);
        let exhausted = hard.is_some_and(|h| used_after >= h);
        sqlx::query(
            "WITH adjusted AS ( \
                 UPDATE budget_dimensions SET used = $4, exhausted = $5 \
                 WHERE tenant_id = $1 AND budget_id = $2 AND dimension = $3) \
             INSERT INTO budget_adjustments \
                 (tenant_id, budget_id, dimension, delta, used_after, reason) \
             VALUES ($1, $2, $3, $6, $4, $7)",
        )
        .bind(tenant)
        .bind(id)
        .bind(&adjust.adjustment.dimension)
        .bind(used_after)
        .bind(exhausted)
        .bind(adjust.adjustment.delta)
        .bind(&adjust.adjustment.reason)
        .run(&mut *tx, op)
        .await?;
        if was_exhausted && !exhausted {
            let still: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM budget_dimensions \
                 WHERE tenant_id = $1 AND budget_id = $2 AND exhausted)",
            )
            .bind(tenant)
            .bind(id)
            .one(&mut *tx, op)
            .await?;
            if !still {
                release_holds(tx, tenant, id).await?;
            }
        }
        get_budget(tx, tenant, id).await
    })
    .await
}
