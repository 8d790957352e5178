//! Budgets: definitions, usage reports checked and applied under the lease,
//! resets (by an operator or on the budget's interval).
//!
//! A report locks the execution (the fence), then the dimension rows of every
//! budget whose scope covers it, in budget id order: two reports against the
//! same budget serialise on its row, and never deadlock.

use super::budget_adjustments::adjust_usage;
use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::leases::{fail_locked, rejection, FENCE};
use super::rows::{col, json, parse, transaction, unknown_tenant_or, Args};
use super::suspension::{record_suspension, resume_execution};
use super::PgBackend;
use crate::backend::refusals::budget_not_found;
use crate::backend::refusals::check_usage_fits;
use crate::backend::shared::budgets::pg::{
    check_scope_exists, get_budget, remember_usage_report, usage_reported,
};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{
    Breach, Budget, BudgetId, ExecutionId, ExecutionPolicy, Failure, FailureClass, HardLimitAction,
    LeaseHandle, NewBudget, ResumeCondition, Suspension, TenantId, TimeoutBehavior, UsageEntry,
    UsageOutcome,
};

crate::backend::configuration::implement_budgets!(PgBackend, pg);

async fn create_budget(db: &PgBackend, tenant: TenantId, budget: &NewBudget) -> Result<Budget> {
    let pool = &db.pool;
    let op = "create budget";
    transaction(pool, op, async |tx| {
        check_scope_exists(tx, tenant, &budget.scope).await?;
        let id = BudgetId::new();
        sqlx::query(
            "WITH b AS ( \
                 INSERT INTO budgets (tenant_id, budget_id, name, scope, scope_key, on_hard_limit, \
                     reset_interval_ms, next_reset_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now() + $7 * interval '1 millisecond')) \
             INSERT INTO budget_dimensions (tenant_id, budget_id, dimension, soft_limit, hard_limit) \
             SELECT $1, $2, d, s, h FROM unnest($8::text[], $9::int8[], $10::int8[]) AS x(d, s, h)",
        )
        .bind(tenant)
        .bind(id)
        .bind(&budget.name)
        .bind(budget.scope.kind())
        .bind(budget.scope.key())
        .bind(budget.on_hard_limit.as_str())
        .bind(budget.reset_interval_ms.map(to_i64))
        .bind(
            budget
                .dimensions
                .iter()
                .map(|d| d.dimension.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            budget
                .dimensions
                .iter()
                .map(|d| d.soft_limit.map(to_i64))
                .collect::<Vec<_>>(),
        )
        .bind(
            budget
                .dimensions
                .iter()
                .map(|d| d.hard_limit.map(to_i64))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(unknown_tenant_or(op, tenant))?;
        let created = get_budget(tx, tenant, id).await?;
        Ok(created)
    })
    .await
}

/// Usage back to zero, and executions suspended on the budget resume.
async fn reset_budget(db: &PgBackend, tenant: TenantId, id: BudgetId) -> Result<Budget> {
    let pool = &db.pool;
    let op = "reset budget";
    transaction(pool, op, async |tx| {
        let found = sqlx::query(
            "UPDATE budgets SET next_reset_at = now() + least(reset_interval_ms, 31622400000) * interval '1 millisecond' \
             WHERE tenant_id = $1 AND budget_id = $2 RETURNING 1",
        )
        .bind(tenant)
        .bind(id)
        .optional(&mut *tx, op)
        .await?;
        if found.is_none() {
            return Err(budget_not_found(id));
        }
        reset_in(tx, tenant, id).await?;
        let budget = get_budget(tx, tenant, id).await?;
        Ok(budget)
    })
    .await
}

async fn report_usage(
    db: &PgBackend,
    lease: &LeaseHandle,
    report: &[UsageEntry],
    dedup_key: Option<&str>,
) -> Result<UsageOutcome> {
    let pool = &db.pool;
    let op = "report usage";
    transaction(pool, op, async |tx| {
        let sql = format!(
            "SELECT coalesce(flow_id::text, '') AS flow, lane, policy, retry_count, suspension_seq \
             FROM executions WHERE {FENCE} FOR UPDATE"
        );
        let Some(row) = sqlx::query_with(&sql, Args::fence(lease).done(op)?)
            .optional(&mut *tx, op)
            .await?
        else {
            return Err(rejection(pool, lease, None).await?);
        };
        // The execution's lock serialises its reports, so a read is enough here.
        if let Some(key) = dedup_key {
            if usage_reported(tx, lease.tenant_id, lease.execution_id, key).await? {
                return Ok(UsageOutcome::AlreadyApplied);
            }
        }
        // Every dimension is locked and checked before any is applied;
        // dimensions come in name order, so two reports lock alike.
        let mut checked = Vec::with_capacity(report.len());
        for entry in report {
            let (dimension, delta) = (entry.dimension.as_str(), to_i64(entry.delta));
            let limits = lock_limits(tx, lease, &row, dimension).await?;
            let attempt_used: String = sqlx::query_scalar(
                "SELECT coalesce(usage ->> $3, '0') FROM attempts \
                 WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $4",
            )
            .bind(lease.tenant_id)
            .bind(lease.execution_id)
            .bind(dimension)
            .bind(lease.attempt_index)
            .optional(&mut *tx, op)
            .await?
            .unwrap_or_else(|| "0".into());
            check_usage_fits(
                dimension,
                delta,
                limits.iter().map(|l| l.used),
                &attempt_used,
            )?;
            checked.push((dimension, delta, limits));
        }
        let hard = checked.iter().find_map(|(dimension, delta, limits)| {
            first_breach(limits, *delta, dimension, |l| l.hard)
        });
        if let Some(breach) = hard {
            // Not applied, and not remembered: the same report may be retried
            // once the budget allows it.
            enforce(tx, lease, &row, &breach).await?;
            // The budget admits no more work until it is reset (the claim blocks
            // what it covers). The row is already locked by `lock_limits`.
            sqlx::query(
                "UPDATE budget_dimensions SET exhausted = true \
                 WHERE tenant_id = $1 AND budget_id = $2 AND dimension = $3",
            )
            .bind(lease.tenant_id)
            .bind(breach.budget_id)
            .bind(&breach.dimension)
            .run(&mut *tx, op)
            .await?;
            return Ok(UsageOutcome::HardBreach(breach));
        }
        if let Some(key) = dedup_key {
            remember_usage_report(tx, lease.tenant_id, lease.execution_id, key).await?;
        }
        for (dimension, delta, limits) in &checked {
            let ids: Vec<BudgetId> = limits.iter().map(|l| l.budget_id).collect();
            sqlx::query(
                "WITH spent AS ( \
                     UPDATE budget_dimensions SET used = used + $4, \
                         exhausted = exhausted OR coalesce(used + $4 >= hard_limit, false) \
                     WHERE tenant_id = $1 AND budget_id = ANY($5) AND dimension = $3) \
                 UPDATE attempts SET usage = jsonb_set(usage, ARRAY[$3], \
                     to_jsonb(coalesce((usage ->> $3)::bigint, 0) + $4)) \
                 WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $6",
            )
            .bind(lease.tenant_id)
            .bind(lease.execution_id)
            .bind(dimension)
            .bind(delta)
            .bind(&ids)
            .bind(lease.attempt_index)
            .run(&mut *tx, op)
            .await?;
        }
        let over_soft = checked.iter().find_map(|(dimension, delta, limits)| {
            first_breach(limits, *delta, dimension, |l| l.soft)
        });
        Ok(over_soft.map_or(UsageOutcome::Ok, UsageOutcome::SoftBreach))
    })
    .await
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One matching dimension row, locked.
struct Limit {
    budget_id: BudgetId,
    action: HardLimitAction,
    soft: Option<i64>,
    hard: Option<i64>,
    used: i64,
}

/// The first limit (hard or soft, as `which` picks) that `delta` would cross.
fn first_breach(
    limits: &[Limit],
    delta: i64,
    dimension: &str,
    which: fn(&Limit) -> Option<i64>,
) -> Option<Breach> {
    limits.iter().find_map(|l| {
        let after = l.used.saturating_add(delta);
        which(l).filter(|limit| after > *limit).map(|limit| Breach {
            budget_id: l.budget_id,
            dimension: dimension.to_owned(),
            current: after.max(0) as u64,
            limit: limit.max(0) as u64,
            action: l.action,
        })
    })
}

/// The dimension rows of every budget covering the lease's execution, locked
/// in budget id order.
async fn lock_limits(
    tx: &mut PgConnection,
    lease: &LeaseHandle,
    execution: &PgRow,
    dimension: &str,
) -> Result<Vec<Limit>> {
    let rows = sqlx::query(
        "SELECT d.budget_id, b.on_hard_limit, d.soft_limit, d.hard_limit, d.used \
         FROM budgets b JOIN budget_dimensions d \
             ON d.tenant_id = b.tenant_id AND d.budget_id = b.budget_id AND d.dimension = $2 \
         WHERE b.tenant_id = $1 AND (b.scope, b.scope_key) IN \
             (('tenant', ''), ('flow', $3), ('execution', $4), ('lane', $5)) \
         ORDER BY d.budget_id FOR UPDATE OF d",
    )
    .bind(lease.tenant_id)
    .bind(dimension)
    .bind(col::<String>(execution, "flow")?)
    .bind(lease.execution_id.to_string())
    .bind(col::<String>(execution, "lane")?)
    .all(&mut *tx, "lock budgets")
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Limit {
                budget_id: col(r, "budget_id")?,
                action: parse(&col::<String>(r, "on_hard_limit")?)?,
                soft: col(r, "soft_limit")?,
                hard: col(r, "hard_limit")?,
                used: col(r, "used")?,
            })
        })
        .collect()
}

/// A hard breach ends the attempt as the budget says: failed for good, or
/// suspended until the budget resets.
async fn enforce(
    tx: &mut PgConnection,
    lease: &LeaseHandle,
    execution: &PgRow,
    breach: &Breach,
) -> Result<()> {
    match breach.action {
        HardLimitAction::Fail => {
            let policy: ExecutionPolicy = json(col(execution, "policy")?, "policy")?;
            let failure = Failure::new(
                FailureClass::BudgetExceeded,
                format!(
                    "budget {}: `{}` would reach {} of its hard limit {}",
                    breach.budget_id, breach.dimension, breach.current, breach.limit
                ),
            );
            fail_locked(tx, lease, &failure, &policy, col(execution, "retry_count")?).await?;
        }
        HardLimitAction::Suspend => {
            let suspension = Suspension::new(
                ResumeCondition::Budget {
                    budget_id: breach.budget_id,
                },
                TimeoutBehavior::Fail,
            );
            let seq = col::<i32>(execution, "suspension_seq")? + 1;
            record_suspension(tx, lease, &suspension, seq, None).await?;
        }
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
pub(super) async fn reset_due_budgets(db: &PgBackend, limit: u32) -> Result<u64> {
    let pool = &db.pool;
    let op = "reset due budgets";
    transaction(pool, op, async |tx| {
        let due: Vec<(TenantId, BudgetId)> = sqlx::query_as(
            "UPDATE budgets b SET next_reset_at = now() + least(reset_interval_ms, 31622400000) * interval '1 millisecond' \
             WHERE (tenant_id, budget_id) IN ( \
                 SELECT tenant_id, budget_id FROM budgets WHERE next_reset_at <= now() \
                 ORDER BY next_reset_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING tenant_id, budget_id",
        )
        .bind(i64::from(limit))
        .all(&mut *tx, op)
        .await?;
        for (tenant, id) in &due {
            reset_in(tx, *tenant, *id).await?;
        }
        Ok(due.len() as u64)
    })
    .await
}
