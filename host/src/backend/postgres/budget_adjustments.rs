//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections (the statements are in `shared/budgets.rs`).

use super::budgets::release_holds;
use super::rows::transaction;
use super::PgBackend;
use crate::backend::shared::budgets::pg::{get_budget, record_adjustment};
use crate::backend::UsageAdjust;
use crate::error::Result;
use crate::model::{Budget, TenantId};

pub(super) async fn adjust_usage(
    db: &PgBackend,
    tenant: TenantId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    transaction(&db.pool, "adjust usage", async |tx| {
        if record_adjustment(tx, tenant, adjust).await? {
            release_holds(tx, tenant, adjust.budget).await?;
        }
        get_budget(tx, tenant, adjust.budget).await
    })
    .await
}
