//! Usage corrected by hand (`Budgets::adjust_usage`), and the audit trail
//! of those corrections (the statements are in `shared/budgets.rs`), under
//! the one writer.

use super::budgets::release_holds;
use super::SqliteBackend;
use crate::backend::shared::budgets::sqlite::{get_budget, record_adjustment};
use crate::backend::UsageAdjust;
use crate::error::Result;
use crate::model::{Budget, TenantId};

pub(super) async fn adjust_usage(
    db: &SqliteBackend,
    tenant: TenantId,
    adjust: UsageAdjust<'_>,
) -> Result<Budget> {
    db.write("adjust usage", async |conn, effects| {
        if record_adjustment(conn, tenant, adjust).await? {
            release_holds(conn, tenant, adjust.budget, effects).await?;
        }
        get_budget(conn, tenant, adjust.budget).await
    })
    .await
}
