//! Usage reports: a guest's usage checked against every budget that covers
//! its execution and applied under its lease, all of a report or none.
//!
//! A report locks the execution (the fence), then the dimension rows of every
//! budget whose scope covers it, in dimension then budget id order: two
//! reports against the same budget serialise on its row, and never deadlock.
//!
//! Most reports cross no hard limit. Those are applied by one statement (one
//! round trip, no `BEGIN`/`COMMIT`), which matters because a guest with a
//! budget on `http_requests` reports before each request it sends. The
//! statement applies nothing when a hard limit would be crossed, a counter
//! would overflow, or the report carries a dedup key; the report is then
//! made again step by step in a transaction, which decides the outcome with
//! the same Rust rules (`first_breach`, `check_usage_fits`) as always. The
//! statement's own test is only the gate in front of them: it can send a
//! report the slow way that would have fitted, never apply one that would
//! not.

use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection};

use super::leases::{fail_locked, rejection, FENCE};
use super::rows::{col, json, transaction, Args};
use super::suspension::record_suspension;
use super::PgBackend;
use crate::backend::shared::budgets::pg::{remember_usage_report, usage_reported};
use crate::backend::shared::usage::{delta_of, first_breach, Bound, Checked, Limit};
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::{
    Breach, BudgetId, ExecutionPolicy, Failure, FailureClass, HardLimitAction, LeaseHandle,
    ResumeCondition, Suspension, TimeoutBehavior, UsageEntry, UsageOutcome,
};

pub(super) async fn report_usage(
    db: &PgBackend,
    lease: &LeaseHandle,
    report: &[UsageEntry],
    dedup_key: Option<&str>,
) -> Result<UsageOutcome> {
    if dedup_key.is_none() {
        if let Some(outcome) = report_in_one_statement(db, lease, report).await? {
            return Ok(outcome);
        }
    }
    report_step_by_step(db, lease, report, dedup_key).await
}

/// The report applied by one statement when it crosses no hard limit and
/// overflows no counter: `Some` outcome (applied, or a soft breach), or
/// `None` when the statement left it to [`report_step_by_step`]. The
/// statement locks what the step-by-step report locks, in the same order.
async fn report_in_one_statement(
    db: &PgBackend,
    lease: &LeaseHandle,
    report: &[UsageEntry],
) -> Result<Option<UsageOutcome>> {
    let op = "report usage";
    let sql = format!(
        "WITH execution AS MATERIALIZED ( \
             SELECT coalesce(flow_id::text, '') AS flow, lane, execution_id::text AS id \
             FROM executions WHERE {FENCE} FOR UPDATE), \
         report AS MATERIALIZED ( \
             SELECT * FROM unnest($6::text[], $7::int8[]) AS r(dimension, delta)), \
         limits AS MATERIALIZED ( \
             SELECT d.budget_id, d.dimension, b.on_hard_limit, d.soft_limit, d.hard_limit, \
                 d.used, r.delta \
             FROM execution e CROSS JOIN report r \
             JOIN budget_dimensions d ON d.tenant_id = $1 AND d.dimension = r.dimension \
             JOIN budgets b ON b.tenant_id = d.tenant_id AND b.budget_id = d.budget_id \
             WHERE (b.scope, b.scope_key) IN \
                 (('tenant', ''), ('flow', e.flow), ('execution', e.id), ('lane', e.lane)) \
             ORDER BY d.dimension, d.budget_id FOR UPDATE OF d), \
         attempt AS MATERIALIZED ( \
             SELECT usage FROM attempts \
             WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 FOR UPDATE), \
         held AS MATERIALIZED ( \
             SELECT 1 FROM limits \
             WHERE used::numeric + delta > least(hard_limit, 9223372036854775807) \
             UNION ALL \
             SELECT 1 FROM attempt a CROSS JOIN report r \
             WHERE coalesce((a.usage ->> r.dimension)::numeric, 0) + r.delta \
                 > 9223372036854775807), \
         go AS MATERIALIZED ( \
             SELECT 1 FROM execution WHERE NOT EXISTS (SELECT 1 FROM held)), \
         spent AS ( \
             UPDATE budget_dimensions d SET used = d.used + l.delta, \
                 exhausted = d.exhausted OR coalesce(d.used + l.delta >= d.hard_limit, false) \
             FROM limits l \
             WHERE EXISTS (SELECT 1 FROM go) AND d.tenant_id = $1 \
               AND d.budget_id = l.budget_id AND d.dimension = l.dimension), \
         counted AS ( \
             UPDATE attempts SET usage = usage || ( \
                 SELECT jsonb_object_agg(r.dimension, \
                     coalesce((usage ->> r.dimension)::bigint, 0) + r.delta) \
                 FROM report r) \
             WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $3 \
               AND EXISTS (SELECT 1 FROM go)) \
         SELECT EXISTS (SELECT 1 FROM execution) AS fenced_in, \
             EXISTS (SELECT 1 FROM go) AS applied, \
             l.budget_id, l.dimension, l.on_hard_limit, l.soft_limit, l.hard_limit, l.used \
         FROM (SELECT 1) AS one LEFT JOIN limits l ON true \
         ORDER BY l.dimension, l.budget_id"
    );
    let dimensions: Vec<&str> = report.iter().map(|e| e.dimension.as_str()).collect();
    let deltas: Vec<i64> = report.iter().map(delta_of).collect();
    let args = Args::fence(lease).push(dimensions).push(deltas).done(op)?;
    let rows = sqlx::query_with(&sql, args).all(&db.pool, op).await?;
    // One row at least (the left join), unless the statement changed.
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if !col::<bool>(first, "fenced_in")? {
        return Err(rejection(&db.pool, lease, None).await?);
    }
    if !col::<bool>(first, "applied")? {
        return Ok(None);
    }
    let mut checked = Vec::with_capacity(report.len());
    for entry in report {
        let limits = rows
            .iter()
            .filter(|r| {
                col::<Option<String>>(r, "dimension")
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(&entry.dimension)
            })
            .map(|r| Limit::from_row(r).map_err(EngineError::storage(op)))
            .collect::<Result<Vec<_>>>()?;
        checked.push(Checked::new(entry, limits));
    }
    debug_assert!(matches!(first_breach(&checked, Bound::Hard), Ok(None)));
    let soft = first_breach(&checked, Bound::Soft)?;
    Ok(Some(
        soft.map_or(UsageOutcome::Ok, UsageOutcome::SoftBreach),
    ))
}

/// The report a statement at a time, in one transaction: what the one
/// statement leaves to it (a hard limit, a counter that would overflow, a
/// dedup key) is decided here.
async fn report_step_by_step(
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
            let limits = lock_limits(tx, lease, &row, &entry.dimension).await?;
            let attempt_used: String = sqlx::query_scalar(
                "SELECT coalesce(usage ->> $3, '0') FROM attempts \
                 WHERE tenant_id = $1 AND execution_id = $2 AND attempt_index = $4",
            )
            .bind(lease.tenant_id)
            .bind(lease.execution_id)
            .bind(&entry.dimension)
            .bind(lease.attempt_index)
            .optional(&mut *tx, op)
            .await?
            .unwrap_or_else(|| "0".into());
            checked.push(Checked::fitting(entry, limits, &attempt_used)?);
        }
        let hard = first_breach(&checked, Bound::Hard)?;
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
        for entry in &checked {
            let ids: Vec<BudgetId> = entry.limits.iter().map(|l| l.budget_id).collect();
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
            .bind(entry.dimension)
            .bind(entry.delta)
            .bind(&ids)
            .bind(lease.attempt_index)
            .run(&mut *tx, op)
            .await?;
        }
        let over_soft = first_breach(&checked, Bound::Soft)?;
        Ok(over_soft.map_or(UsageOutcome::Ok, UsageOutcome::SoftBreach))
    })
    .await
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
        .map(|r| Limit::from_row(r).map_err(EngineError::storage("lock budgets")))
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
