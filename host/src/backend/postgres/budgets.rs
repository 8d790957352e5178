//! Budgets: definitions and resets (by an operator or on the budget's
//! interval). Usage reports against them are `usage`'s.

use super::budget_adjustments::adjust_usage;
use sqlx::PgConnection;

use super::rows::transaction;
use super::suspension::resume_execution;
use super::usage::report_usage;
use super::PgBackend;
use crate::backend::refusals::budget_not_found;
use crate::backend::shared::budgets::pg::{
    check_budget_count, check_scope_exists, get_budget, insert_budget,
};
use crate::backend::stored_i64;
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::{Budget, BudgetId, ExecutionId, NewBudget, TenantId};

crate::backend::configuration::implement_budgets!(PgBackend, pg);

async fn create_budget(
    db: &PgBackend,
    tenant: TenantId,
    budget: &NewBudget,
    max_budgets: u32,
) -> Result<Budget> {
    let pool = &db.pool;
    let op = "create budget";
    transaction(pool, op, async |tx| {
        check_scope_exists(tx, tenant, &budget.scope).await?;
        let id = BudgetId::new();
        insert_budget(tx, tenant, id, budget).await?;
        let (names, soft, hard): (Vec<&str>, Vec<Option<i64>>, Vec<Option<i64>>) = budget
            .dimensions
            .iter()
            .map(|d| {
                let limit = |l: Option<u64>| l.map(stored_i64);
                (d.dimension.as_str(), limit(d.soft_limit), limit(d.hard_limit))
            })
            .collect();
        sqlx::query(
            "INSERT INTO budget_dimensions (tenant_id, budget_id, dimension, soft_limit, hard_limit) \
             SELECT $1, $2, d, s, h FROM unnest($3::text[], $4::int8[], $5::int8[]) AS x(d, s, h)",
        )
        .bind(tenant)
        .bind(id)
        .bind(names)
        .bind(soft)
        .bind(hard)
        .run(&mut *tx, op)
        .await?;
        check_budget_count(tx, tenant, max_budgets).await?;
        let created = get_budget(tx, tenant, id).await?;
        Ok(created)
    })
    .await
}

/// Delete the budget (its dimensions and audit trail go with it), then
/// release what it held, as a reset does.
async fn delete_budget(db: &PgBackend, tenant: TenantId, id: BudgetId) -> Result<()> {
    let pool = &db.pool;
    let op = "delete budget";
    transaction(pool, op, async |tx| {
        let sql = "DELETE FROM budgets WHERE tenant_id = $1 AND budget_id = $2";
        write_budget(tx, sql, tenant, id, op).await?;
        release_holds(tx, tenant, id).await
    })
    .await
}

/// Usage back to zero, and executions suspended on the budget resume.
async fn reset_budget(db: &PgBackend, tenant: TenantId, id: BudgetId) -> Result<Budget> {
    let pool = &db.pool;
    let op = "reset budget";
    transaction(pool, op, async |tx| {
        let sql = "UPDATE budgets SET next_reset_at = now() \
                       + least(reset_interval_ms, 31622400000) * interval '1 millisecond' \
                   WHERE tenant_id = $1 AND budget_id = $2";
        write_budget(tx, sql, tenant, id, op).await?;
        reset_in(tx, tenant, id).await?;
        let budget = get_budget(tx, tenant, id).await?;
        Ok(budget)
    })
    .await
}

/// Run `sql`, a write of the budget `($1, $2)`; `not_found` when it
/// matched none.
async fn write_budget(
    tx: &mut PgConnection,
    sql: &'static str,
    tenant: TenantId,
    id: BudgetId,
    op: &'static str,
) -> Result<()> {
    let done = sqlx::query(sql)
        .bind(tenant)
        .bind(id)
        .run(&mut *tx, op)
        .await?;
    if done.rows_affected() == 0 {
        return Err(budget_not_found(id));
    }
    Ok(())
}

async fn reset_in(tx: &mut PgConnection, tenant: TenantId, id: BudgetId) -> Result<()> {
    sqlx::query(
        "UPDATE budget_dimensions SET used = 0, exhausted = false \
         WHERE tenant_id = $1 AND budget_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .run(&mut *tx, "reset budget")
    .await?;
    release_holds(tx, tenant, id).await
}

/// The budget `id` has room again: what the claim blocked on the tenant's
/// budgets is claimable, and what suspended on this one resumes.
pub(super) async fn release_holds(
    tx: &mut PgConnection,
    tenant: TenantId,
    id: BudgetId,
) -> Result<()> {
    // Everything the claim blocked on a budget of this tenant is claimable
    // again; what another exhausted budget still covers is blocked anew.
    sqlx::query(
        "WITH unblocked AS ( \
             UPDATE executions SET eligibility_state = 'eligible_now', \
                 blocking_reason = 'waiting_for_worker', updated_at = now() \
             WHERE tenant_id = $1 AND eligibility_state = 'blocked_by_budget' \
             RETURNING 1) \
         SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM unblocked)",
    )
    .bind(tenant)
    .run(&mut *tx, "unblock executions")
    .await?;
    let waiting: Vec<(ExecutionId, i32)> = sqlx::query_as(
        "SELECT execution_id, suspension_seq FROM executions \
         WHERE tenant_id = $1 AND lifecycle_phase = 'suspended' \
           AND blocking_reason = 'waiting_for_budget' \
           AND suspension -> 'condition' ->> 'budget_id' = $2::text \
         ORDER BY execution_id FOR UPDATE",
    )
    .bind(tenant)
    .bind(id)
    .all(&mut *tx, "find executions waiting on a budget")
    .await?;
    for (execution, seq) in waiting {
        resume_execution(tx, tenant, execution, seq).await?;
    }
    Ok(())
}

/// Reset budgets whose interval has passed.
pub(super) async fn reset_due_budgets(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let pool = &db.pool;
    let op = "reset due budgets";
    transaction(pool, op, async |tx| {
        let due: Vec<(TenantId, BudgetId)> = sqlx::query_as(
            "UPDATE budgets b SET next_reset_at = now() + least(reset_interval_ms, 31622400000) * interval '1 millisecond' \
             WHERE (tenant_id, budget_id) IN ( \
                 SELECT tenant_id, budget_id FROM budgets \
                 WHERE next_reset_at <= now() AND ($2::uuid IS NULL OR tenant_id = $2) \
                 ORDER BY next_reset_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING tenant_id, budget_id",
        )
        .bind(i64::from(sweep.limit))
        .bind(sweep.tenant)
        .all(&mut *tx, op)
        .await?;
        for (tenant, id) in &due {
            reset_in(tx, *tenant, *id).await?;
        }
        Ok(due.len() as u64)
    })
    .await
}
