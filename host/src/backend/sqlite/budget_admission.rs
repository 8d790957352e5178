//! Budget admission at claim: a tenant with no exhausted budget pays one
//! index probe per claim; otherwise each candidate an exhausted budget covers
//! is moved to `blocked_by_budget` (public state `rate_limited`) instead of
//! being started. `budgets::release_holds` makes them claimable again when
//! the budget has room.

use sqlx::SqliteConnection;

use super::record::Exec;
use super::time::now;
use super::Effects;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::Eligibility;

/// Whether an exhausted budget covers `row`.
pub(super) async fn over_budget(conn: &mut SqliteConnection, row: &Exec) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM budget_dimensions d JOIN budgets b \
             ON b.tenant_id = d.tenant_id AND b.budget_id = d.budget_id \
         WHERE d.tenant_id = ?1 AND d.exhausted AND ((b.scope = 'tenant' AND b.scope_key = '') \
             OR (b.scope = 'flow' AND b.scope_key = ?2) \
             OR (b.scope = 'execution' AND b.scope_key = ?3) \
             OR (b.scope = 'lane' AND b.scope_key = ?4)))",
    )
    .bind(row.tenant_id)
    .bind(row.flow_id.map(|f| f.to_string()).unwrap_or_default())
    .bind(row.execution_id.to_string())
    .bind(&row.lane)
    .one(conn, "claim")
    .await
}

/// The claim moves a candidate an exhausted budget covers to
/// `blocked_by_budget` (public state `rate_limited`) instead of starting it.
pub(super) async fn block(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    effects: &mut Effects,
) -> Result<()> {
    let before = row.lease_before();
    row.eligibility_state = Eligibility::BlockedByBudget;
    row.updated_at = now();
    row.save(conn, Some(before), effects).await
}
