//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections, under the one writer.

use super::budgets::release_holds;
use super::SqliteBackend;
use crate::backend::shared::budgets::sqlite::{get_budget, record_adjustment};
use crate::backend::shared::budgets::{DimensionBefore, DIMENSION_BEFORE};
use crate::backend::Fetch;
use crate::backend::{refusals, UsageAdjust};
use crate::error::Result;
use crate::model::{Budget, TenantId};

pub(super) async fn adjust_usage(
    db: &SqliteBackend,
    tenant: TenantId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    let (id, dimension) = (adjust.budget, &adjust.adjustment.dimension);
    db.write("adjust usage", async |conn, effects| {
        let before: Option<DimensionBefore> = sqlx::query_as(DIMENSION_BEFORE)
            .bind(tenant)
            .bind(id)
            .bind(dimension)
            .optional(&mut *conn, "adjust usage")
            .await?;
        let before = before.ok_or_else(|| refusals::budget_dimension_not_found(id, dimension))?;
        if record_adjustment(conn, tenant, adjust, before).await? {
            release_holds(conn, tenant, id, effects).await?;
        }
        get_budget(conn, tenant, id).await
    })
    .await
}
