//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections. The dimension row is locked first, as a report
//! locks it, so a correction and a report of the same budget serialise.

use super::PgBackend;

use super::budgets::release_holds;
use super::rows::transaction;
use crate::backend::shared::budgets::pg::{get_budget, record_adjustment};
use crate::backend::shared::budgets::{DimensionBefore, DIMENSION_BEFORE};
use crate::backend::Fetch;
use crate::backend::{refusals, UsageAdjust};
use crate::error::Result;
use crate::model::{Budget, TenantId};

pub(super) async fn adjust_usage(
    db: &PgBackend,
    tenant: TenantId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    let (id, dimension) = (adjust.budget, &adjust.adjustment.dimension);
    transaction(&db.pool, "adjust usage", async |tx| {
        let before: Option<DimensionBefore> =
            sqlx::query_as(&format!("{DIMENSION_BEFORE} FOR UPDATE"))
                .bind(tenant)
                .bind(id)
                .bind(dimension)
                .optional(&mut *tx, "adjust usage")
                .await?;
        let before = before.ok_or_else(|| refusals::budget_dimension_not_found(id, dimension))?;
        if record_adjustment(tx, tenant, adjust, before).await? {
            release_holds(tx, tenant, id).await?;
        }
        get_budget(tx, tenant, id).await
    })
    .await
}
