//! Budgets: definitions, usage reports checked and applied under the lease,
//! resets (by an operator or on the budget's interval), and the claim's
//! budget admission.
//!
//! The model is Postgres's (migrations 0009 and 0012). A report runs in the
//! one writer's transaction, so two reports against one budget are applied
//! one after the other without row locks.

use sqlx::SqliteConnection;

use super::budget_adjustments::adjust_usage;
use super::leases::fail_row;
use super::record::Exec;
use super::suspension::{record_suspension, resume_row};
use super::tenancy::read_tenant;
use super::time::now;
use super::tx::Tx;
use super::{Effects, SqliteBackend};
use crate::backend::refusals::budget_not_found;
use crate::backend::shared::budgets::sqlite::{
    check_budget_count, check_scope_exists, get_budget, insert_budget, remember_usage_report,
    usage_reported,
};
use crate::backend::shared::usage::{first_breach, Bound, Checked, Limit};
use crate::backend::stored_i64;
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::Eligibility;
use crate::model::{
    Breach, Budget, BudgetId, Failure, FailureClass, HardLimitAction, LeaseHandle, NewBudget,
    ResumeCondition, Suspension, TenantId, TimeoutBehavior, UsageEntry, UsageOutcome,
};

crate::backend::configuration::implement_budgets!(SqliteBackend, sqlite);

async fn create_budget(
    db: &SqliteBackend,
    tenant: TenantId,
    budget: &NewBudget,
    max_budgets: u32,
) -> Result<Budget> {
    db.write("create budget", async |conn, _| {
        read_tenant(conn, tenant).await?;
        check_scope_exists(conn, tenant, &budget.scope).await?;
        let id = BudgetId::new();
        insert_budget(conn, tenant, id, budget).await?;
        for d in &budget.dimensions {
            sqlx::query(
                "INSERT INTO budget_dimensions (tenant_id, budget_id, dimension, soft_limit, \
                 hard_limit) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(tenant)
            .bind(id)
            .bind(&d.dimension)
            .bind(d.soft_limit.map(stored_i64))
            .bind(d.hard_limit.map(stored_i64))
            .run(&mut *conn, "create budget")
            .await?;
        }
        check_budget_count(conn, tenant, max_budgets).await?;
        get_budget(conn, tenant, id).await
    })
    .await
}

/// Delete the budget (its dimensions and audit trail go with it), then
/// release what it held, as a reset does.
async fn delete_budget(db: &SqliteBackend, tenant: TenantId, id: BudgetId) -> Result<()> {
    db.write("delete budget", async |conn, effects| {
        let delete = sqlx::query("DELETE FROM budgets WHERE tenant_id = ? AND budget_id = ?");
        write_budget(conn, delete.bind(tenant).bind(id), id, "delete budget").await?;
        release_holds(conn, tenant, id, effects).await
    })
    .await
}

/// Run `write`, a write of the budget `id`; `not_found` when it matched
/// none.
async fn write_budget<'q>(
    conn: &mut SqliteConnection,
    write: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    id: BudgetId,
    op: &'static str,
) -> Result<()> {
    if write.run(&mut *conn, op).await?.rows_affected() == 0 {
        return Err(budget_not_found(id));
    }
    Ok(())
}

/// Usage back to zero, and executions suspended on the budget resume.
async fn reset_budget(db: &SqliteBackend, tenant: TenantId, id: BudgetId) -> Result<Budget> {
    db.write("reset budget", async |conn, effects| {
        let next = sqlx::query(
            "UPDATE budgets SET next_reset_at = ?1 + reset_interval_ms \
             WHERE tenant_id = ?2 AND budget_id = ?3",
        );
        let next = next.bind(now()).bind(tenant).bind(id);
        write_budget(conn, next, id, "reset budget").await?;
        reset_in(conn, tenant, id, effects).await?;
        get_budget(conn, tenant, id).await
    })
    .await
}

async fn report_usage(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    report: &[UsageEntry],
    dedup_key: Option<&str>,
) -> Result<UsageOutcome> {
    db.write_held("report usage", lease, async |held| {
        let (conn, mut row, effects) = (held.tx.conn()?, held.row, held.effects);
        let (tenant, id) = (lease.tenant_id, lease.execution_id);
        if let Some(key) = dedup_key {
            if usage_reported(conn, tenant, id, key).await? {
                return Ok(UsageOutcome::AlreadyApplied);
            }
        }
        // Every dimension is checked before any is applied.
        let mut checked = Vec::with_capacity(report.len());
        for entry in report {
            let limits = limits(conn, &row, &entry.dimension).await?;
            let attempt_used: String = sqlx::query_scalar(
                "SELECT coalesce(CAST(json_extract(usage, '$.' || json_quote(?1)) AS TEXT), '0') \
                 FROM attempts WHERE tenant_id = ?2 AND execution_id = ?3 AND attempt_index = ?4",
            )
            .bind(&entry.dimension)
            .bind(tenant)
            .bind(id)
            .bind(lease.attempt_index)
            .optional(&mut *conn, "report usage")
            .await?
            .unwrap_or_else(|| "0".into());
            checked.push(Checked::fitting(entry, limits, &attempt_used)?);
        }
        if let Some(breach) = first_breach(&checked, Bound::Hard)? {
            // Not applied, and not remembered: the same report may be
            // retried once the budget allows it.
            enforce(conn, &mut row, &breach, effects).await?;
            sqlx::query(
                "UPDATE budget_dimensions SET exhausted = 1 \
                 WHERE tenant_id = ? AND budget_id = ? AND dimension = ?",
            )
            .bind(tenant)
            .bind(breach.budget_id)
            .bind(&breach.dimension)
            .run(&mut *conn, "report usage")
            .await?;
            return Ok(UsageOutcome::HardBreach(breach));
        }
        if let Some(key) = dedup_key {
            remember_usage_report(conn, tenant, id, key).await?;
        }
        for entry in &checked {
            for limit in &entry.limits {
                sqlx::query(
                    "UPDATE budget_dimensions SET used = used + ?1, \
                         exhausted = exhausted OR coalesce(used + ?1 >= hard_limit, 0) \
                     WHERE tenant_id = ?2 AND budget_id = ?3 AND dimension = ?4",
                )
                .bind(entry.delta)
                .bind(tenant)
                .bind(limit.budget_id)
                .bind(entry.dimension)
                .run(&mut *conn, "report usage")
                .await?;
            }
            sqlx::query(
                "UPDATE attempts SET usage = json_set(usage, '$.' || json_quote(?1), \
                     coalesce(json_extract(usage, '$.' || json_quote(?1)), 0) + ?2) \
                 WHERE tenant_id = ?3 AND execution_id = ?4 AND attempt_index = ?5",
            )
            .bind(entry.dimension)
            .bind(entry.delta)
            .bind(tenant)
            .bind(id)
            .bind(lease.attempt_index)
            .run(&mut *conn, "report usage")
            .await?;
        }
        let over_soft = first_breach(&checked, Bound::Soft)?;
        Ok(over_soft.map_or(UsageOutcome::Ok, UsageOutcome::SoftBreach))
    })
    .await
}

/// The dimension `dimension` of every budget covering `row`, in budget order.
async fn limits(conn: &mut SqliteConnection, row: &Exec, dimension: &str) -> Result<Vec<Limit>> {
    sqlx::query_as(
        "SELECT d.budget_id, b.on_hard_limit, d.soft_limit, d.hard_limit, d.used \
         FROM budgets b JOIN budget_dimensions d \
             ON d.tenant_id = b.tenant_id AND d.budget_id = b.budget_id AND d.dimension = ?2 \
         WHERE b.tenant_id = ?1 AND ((b.scope = 'tenant' AND b.scope_key = '') \
             OR (b.scope = 'flow' AND b.scope_key = ?3) \
             OR (b.scope = 'execution' AND b.scope_key = ?4) \
             OR (b.scope = 'lane' AND b.scope_key = ?5)) \
         ORDER BY d.budget_id",
    )
    .bind(row.tenant_id)
    .bind(dimension)
    .bind(row.flow_id.map(|f| f.to_string()).unwrap_or_default())
    .bind(row.execution_id.to_string())
    .bind(&row.lane)
    .all(conn, "read budgets")
    .await
}

/// A hard breach ends the attempt as the budget says: failed for good, or
/// suspended until the budget resets.
async fn enforce(
    conn: &mut SqliteConnection,
    row: &mut Exec,
    breach: &Breach,
    effects: &mut Effects,
) -> Result<()> {
    match breach.action {
        HardLimitAction::Fail => {
            let failure = Failure::new(
                FailureClass::BudgetExceeded,
                format!(
                    "budget {}: `{}` would reach {} of its hard limit {}",
                    breach.budget_id, breach.dimension, breach.current, breach.limit
                ),
            );
            fail_row(&mut Tx::Sqlx(conn), row, &failure, effects).await?;
        }
        HardLimitAction::Suspend => {
            let suspension = Suspension::new(
                ResumeCondition::Budget {
                    budget_id: breach.budget_id,
                },
                TimeoutBehavior::Fail,
            );
            record_suspension(conn, row, &suspension, None, effects).await?;
        }
    }
    Ok(())
}

async fn reset_in(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: BudgetId,
    effects: &mut Effects,
) -> Result<()> {
    sqlx::query(
        "UPDATE budget_dimensions SET used = 0, exhausted = 0 \
         WHERE tenant_id = ? AND budget_id = ?",
    )
    .bind(tenant)
    .bind(id)
    .run(&mut *conn, "reset budget")
    .await?;
    release_holds(conn, tenant, id, effects).await
}

/// The budget `id` has room again: what the claim blocked on the tenant's
/// budgets is claimable, and what suspended on this one resumes.
pub(super) async fn release_holds(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: BudgetId,
    effects: &mut Effects,
) -> Result<()> {
    // Everything the claim blocked on a budget of this tenant is claimable
    // again; what another exhausted budget still covers is blocked anew.
    let blocked = Exec::fetch(
        conn,
        "tenant_id = ? AND eligibility_state = 'blocked_by_budget'",
        tenant,
        "unblock executions",
    )
    .await?;
    let waiting = Exec::fetch(
        conn,
        "tenant_id = ? AND lifecycle_phase = 'suspended' \
           AND blocking_reason = 'waiting_for_budget' ORDER BY execution_id",
        tenant,
        "find executions waiting on a budget",
    )
    .await?;
    let now = now();
    for mut row in blocked {
        let before = row.lease_before();
        row.eligibility_state = Eligibility::EligibleNow;
        row.updated_at = now;
        row.save(conn, Some(before), effects).await?;
    }
    for mut row in waiting {
        let on_this = matches!(
            row.suspension.as_ref().map(|s| &s.condition),
            Some(ResumeCondition::Budget { budget_id }) if *budget_id == id
        );
        if on_this {
            resume_row(conn, &mut row, effects).await?;
        }
    }
    Ok(())
}

/// Reset budgets whose interval has passed.
pub(super) async fn reset_due_budgets(db: &SqliteBackend, sweep: Sweep) -> Result<u64> {
    db.write("reset due budgets", async |conn, effects| {
        let now = now();
        let due: Vec<(TenantId, BudgetId)> = sqlx::query_as(
            "SELECT tenant_id, budget_id FROM budgets \
             WHERE next_reset_at <= ?1 AND (?3 IS NULL OR tenant_id = ?3) \
             ORDER BY next_reset_at LIMIT ?2",
        )
        .bind(now)
        .bind(i64::from(sweep.limit))
        .bind(sweep.tenant)
        .all(&mut *conn, "reset due budgets")
        .await?;
        for (tenant, id) in &due {
            sqlx::query(
                "UPDATE budgets SET next_reset_at = ? + reset_interval_ms \
                 WHERE tenant_id = ? AND budget_id = ?",
            )
            .bind(now)
            .bind(tenant)
            .bind(id)
            .run(&mut *conn, "reset due budgets")
            .await?;
            reset_in(conn, *tenant, *id, effects).await?;
        }
        Ok(due.len() as u64)
    })
    .await
}
