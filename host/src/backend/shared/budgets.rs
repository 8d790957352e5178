//! Budget operations that are the same on both drivers: reading budgets
//! back, their adjustments, the scope check a new budget passes, the cap on
//! a budget's adjustments, and the keys that make a usage report apply once.

use std::collections::BTreeMap;

use chrono::Utc;

use super::caps::{Counted, Rows};
use super::stamp::Stamp;
use crate::backend::refusals::{
    adjustments_exceeded, budget_dimension_not_found, budget_not_found, budgets_exceeded,
};
use crate::backend::{stored_i64, Fetch, Op, Run, UsageAdjust};
use crate::error::{EngineError, Result};
use crate::model::{
    Budget, BudgetAdjustment, BudgetId, BudgetScope, DimensionUsage, ExecutionId, NewBudget,
    TenantId,
};

/// A dimension as read before a hand correction: its usage, its hard
/// limit, and whether it was exhausted.
#[derive(sqlx::FromRow)]
struct DimensionBefore {
    used: i64,
    hard_limit: Option<i64>,
    exhausted: bool,
}

/// The read of [`DimensionBefore`] (the driver adds its row lock): by
/// `budget_dimensions_pkey`.
const DIMENSION_BEFORE: &str = "SELECT used, hard_limit, exhausted \
    FROM budget_dimensions WHERE tenant_id = $1 AND budget_id = $2 AND dimension = $3";

#[derive(sqlx::FromRow)]
struct BudgetRow {
    budget_id: BudgetId,
    name: String,
    scope: String,
    scope_key: String,
    on_hard_limit: String,
    reset_interval_ms: Option<i64>,
    next_reset_at: Option<Stamp>,
    created_at: Stamp,
}

const BUDGET_COLUMNS: &str = "budget_id, name, scope, scope_key, on_hard_limit, \
    reset_interval_ms, next_reset_at, created_at";

#[derive(sqlx::FromRow)]
struct DimensionRow {
    budget_id: BudgetId,
    dimension: String,
    soft_limit: Option<i64>,
    hard_limit: Option<i64>,
    used: i64,
    exhausted: bool,
}

impl DimensionRow {
    fn usage(self) -> DimensionUsage {
        let unsigned = |v: i64| v.max(0) as u64;
        DimensionUsage {
            dimension: self.dimension,
            soft_limit: self.soft_limit.map(unsigned),
            hard_limit: self.hard_limit.map(unsigned),
            used: unsigned(self.used),
            exhausted: self.exhausted,
        }
    }
}

impl BudgetRow {
    fn budget(self, dimensions: Vec<DimensionUsage>) -> Result<Budget> {
        fn id<T: std::str::FromStr>(k: &str) -> Result<T> {
            k.parse::<T>()
                .map_err(|_| EngineError::Corrupt(format!("budget scope key `{k}`")))
        }
        let scope = match self.scope.as_str() {
            "tenant" => BudgetScope::Tenant,
            "flow" => BudgetScope::Flow {
                flow_id: id(&self.scope_key)?,
            },
            "execution" => BudgetScope::Execution {
                execution_id: id(&self.scope_key)?,
            },
            "lane" => BudgetScope::Lane {
                lane: self.scope_key,
            },
            other => return Err(EngineError::Corrupt(format!("budget scope `{other}`"))),
        };
        Ok(Budget {
            budget_id: self.budget_id,
            name: self.name,
            scope,
            on_hard_limit: self.on_hard_limit.parse().map_err(EngineError::Corrupt)?,
            reset_interval_ms: self.reset_interval_ms.map(|v| v.max(0) as u64),
            next_reset_at: self.next_reset_at.map(Into::into),
            created_at: self.created_at.into(),
            dimensions,
        })
    }
}

type AdjustmentRow = (i64, String, i64, i64, String, Stamp);

fn adjustment(
    (adjustment_id, dimension, delta, used_after, reason, created_at): AdjustmentRow,
) -> BudgetAdjustment {
    BudgetAdjustment {
        adjustment_id,
        dimension,
        delta,
        used_after: used_after.max(0) as u64,
        reason,
        created_at: created_at.into(),
    }
}

for_both_drivers! {
    /// The tenant's budget, with its dimensions in name order (primary
    /// keys of `budgets` and `budget_dimensions`); `NotFound` when the
    /// tenant has none by this id. Writes call it on their own
    /// transaction, to return what they left.
    async fn get_budget(conn, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        let row: BudgetRow = sqlx::query_as(&format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets WHERE tenant_id = $1 AND budget_id = $2"
        ))
        .bind(tenant)
        .bind(id)
        .optional(&mut *conn, "get budget")
        .await?
        .ok_or_else(|| budget_not_found(id))?;
        let dimensions: Vec<DimensionRow> = sqlx::query_as(
            "SELECT budget_id, dimension, soft_limit, hard_limit, used, exhausted \
             FROM budget_dimensions WHERE tenant_id = $1 AND budget_id = $2 ORDER BY dimension",
        )
        .bind(tenant)
        .bind(id)
        .all(&mut *conn, "get budget")
        .await?;
        row.budget(dimensions.into_iter().map(DimensionRow::usage).collect())
    }

    /// Every budget of the tenant in id order, each with its dimensions:
    /// two reads, whatever the number of budgets.
    async fn list_budgets(conn, tenant: TenantId) -> Result<Vec<Budget>> {
        let rows: Vec<BudgetRow> = sqlx::query_as(&format!(
            "SELECT {BUDGET_COLUMNS} FROM budgets WHERE tenant_id = $1 ORDER BY budget_id"
        ))
        .bind(tenant)
        .all(&mut *conn, "list budgets")
        .await?;
        let dimensions: Vec<DimensionRow> = sqlx::query_as(
            "SELECT budget_id, dimension, soft_limit, hard_limit, used, exhausted \
             FROM budget_dimensions WHERE tenant_id = $1 ORDER BY budget_id, dimension",
        )
        .bind(tenant)
        .all(&mut *conn, "list budgets")
        .await?;
        let mut by_budget: BTreeMap<BudgetId, Vec<DimensionUsage>> = BTreeMap::new();
        for d in dimensions {
            by_budget.entry(d.budget_id).or_default().push(d.usage());
        }
        rows.into_iter()
            .map(|row| {
                let dimensions = by_budget.remove(&row.budget_id).unwrap_or_default();
                row.budget(dimensions)
            })
            .collect()
    }

    /// Whether any of the tenant's budgets has `dimension`: the primary
    /// key's tenant prefix (a tenant's budgets and their dimensions are
    /// capped).
    async fn limits_dimension(conn, tenant: TenantId, dimension: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM budget_dimensions \
             WHERE tenant_id = $1 AND dimension = $2)",
        )
        .bind(tenant)
        .bind(dimension)
        .one(&mut *conn, "limits dimension")
        .await
    }

    /// The budget's newest `limit` adjustments, newest first, by the
    /// primary key; `NotFound` when the tenant has no such budget.
    async fn list_adjustments(conn, tenant: TenantId, id: BudgetId, limit: u32)
        -> Result<Vec<BudgetAdjustment>>
    {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM budgets WHERE tenant_id = $1 AND budget_id = $2)",
        )
        .bind(tenant)
        .bind(id)
        .one(&mut *conn, "list adjustments")
        .await?;
        if !exists {
            return Err(budget_not_found(id));
        }
        sqlx::query_as::<_, AdjustmentRow>(
            "SELECT adjustment_id, dimension, delta, used_after, reason, created_at \
             FROM budget_adjustments WHERE tenant_id = $1 AND budget_id = $2 \
             ORDER BY adjustment_id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(i64::from(limit))
        .all_mapped(&mut *conn, "list adjustments", adjustment)
        .await
    }

    /// A budget keeps at most `max` adjustments; one more is refused.
    /// Counted by the primary key's prefix, stopping past the cap.
    async fn check_adjustment_room(conn, tenant: TenantId, id: BudgetId, max: u32) -> Result<()> {
        let rows = Rows {
            table: "budget_adjustments",
            within: Some(("budget_id", id.as_uuid())),
        };
        if !caps::within_cap(conn, tenant, rows, max, Counted::BeforeWrite, "adjust usage").await? {
            return Err(adjustments_exceeded(max));
        }
        Ok(())
    }

    /// Apply a hand correction to a dimension, read and locked first, as a
    /// report locks it, so that the two serialise: within the budget's cap
    /// on adjustments, the dimension's new usage and whether it is
    /// exhausted, and the correction in the audit trail. Whether the budget
    /// has no exhausted dimension left because of it: then the caller
    /// releases what the budget held, as its driver does.
    async fn record_adjustment(conn, tenant: TenantId, adjust: UsageAdjust<'_>) -> Result<bool> {
        let op = "adjust usage";
        let UsageAdjust { budget, adjustment, max_adjustments } = adjust;
        let dimension = &adjustment.dimension;
        let before: DimensionBefore = sqlx::query_as(&format!("{DIMENSION_BEFORE}{FOR_UPDATE}"))
            .bind(tenant)
            .bind(budget)
            .bind(dimension)
            .optional(&mut *conn, op)
            .await?
            .ok_or_else(|| budget_dimension_not_found(budget, dimension))?;
        check_adjustment_room(conn, tenant, budget, max_adjustments).await?;
        let used_after = adjustment.applied_to(before.used);
        let exhausted = before.hard_limit.is_some_and(|h| used_after >= h);
        // budget_dimensions_pkey.
        sqlx::query(
            "UPDATE budget_dimensions SET used = $4, exhausted = $5 \
             WHERE tenant_id = $1 AND budget_id = $2 AND dimension = $3",
        )
        .bind(tenant)
        .bind(budget)
        .bind(&adjustment.dimension)
        .bind(used_after)
        .bind(exhausted)
        .run(&mut *conn, op)
        .await?;
        sqlx::query(
            "INSERT INTO budget_adjustments \
                 (tenant_id, budget_id, dimension, delta, used_after, reason, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(budget)
        .bind(&adjustment.dimension)
        .bind(adjustment.delta)
        .bind(used_after)
        .bind(&adjustment.reason)
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, op)
        .await?;
        if !before.exhausted || exhausted {
            return Ok(false);
        }
        // budget_dimensions_pkey, by its (tenant, budget) prefix.
        let still: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM budget_dimensions \
             WHERE tenant_id = $1 AND budget_id = $2 AND exhausted)",
        )
        .bind(tenant)
        .bind(budget)
        .one(&mut *conn, op)
        .await?;
        Ok(!still)
    }

    /// Whether a usage report with this key was already applied to the
    /// execution (a report is applied once, however often it is sent).
    async fn usage_reported(conn, tenant: TenantId, id: ExecutionId, key: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM usage_reports \
             WHERE tenant_id = $1 AND execution_id = $2 AND dedup_key = $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(key)
        .one(&mut *conn, "report usage")
        .await
    }

    /// Remember that the report with this key was applied.
    async fn remember_usage_report(conn, tenant: TenantId, id: ExecutionId, key: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO usage_reports (tenant_id, execution_id, dedup_key, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(tenant)
        .bind(id)
        .bind(key)
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, "report usage")
        .await?;
        Ok(())
    }

    /// Refuse the budget just created when it takes the tenant past
    /// `max_budgets` (counted off `budgets_pkey` by its tenant prefix; one
    /// past the cap is enough), undoing the caller's transaction.
    async fn check_budget_count(conn, tenant: TenantId, max_budgets: u32) -> Result<()> {
        let rows = Rows {
            table: "budgets",
            within: None,
        };
        if !caps::within_cap(conn, tenant, rows, max_budgets, Counted::AfterWrite, "count budgets")
            .await?
        {
            return Err(budgets_exceeded(max_budgets));
        }
        Ok(())
    }

    /// The budget's own row, its first reset one interval from now (its
    /// dimensions are the caller's: Postgres inserts them as arrays, SQLite
    /// one by one). An unknown tenant is `not_found`.
    async fn insert_budget(conn, tenant: TenantId, id: BudgetId, budget: &NewBudget) -> Result<()> {
        let now = Utc::now();
        sqlx::query(
            "INSERT INTO budgets (tenant_id, budget_id, name, scope, scope_key, on_hard_limit, \
             reset_interval_ms, next_reset_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(id)
        .bind(&budget.name)
        .bind(budget.scope.kind())
        .bind(budget.scope.key())
        .bind(budget.on_hard_limit.as_str())
        .bind(budget.reset_interval_ms.map(stored_i64))
        .bind(budget.reset_interval_ms.map(|ms| Stamp::after(now, ms)))
        .bind(Stamp(now))
        .run(&mut *conn, Op::for_tenant("create budget", tenant))
        .await?;
        Ok(())
    }

    /// A flow or execution scope must name one of the tenant's own.
    async fn check_scope_exists(conn, tenant: TenantId, scope: &BudgetScope) -> Result<()> {
        let (what, sql, id) = match scope {
            BudgetScope::Flow { flow_id } => (
                "flow",
                "SELECT EXISTS (SELECT 1 FROM flows WHERE tenant_id = $1 AND flow_id = $2)",
                flow_id.as_uuid(),
            ),
            BudgetScope::Execution { execution_id } => (
                "execution",
                "SELECT EXISTS (SELECT 1 FROM executions WHERE tenant_id = $1 AND execution_id = $2)",
                execution_id.as_uuid(),
            ),
            BudgetScope::Tenant | BudgetScope::Lane { .. } => return Ok(()),
        };
        let exists: bool = sqlx::query_scalar(sql)
            .bind(tenant)
            .bind(id)
            .one(&mut *conn, "check budget scope")
            .await?;
        if exists {
            Ok(())
        } else {
            Err(EngineError::not_found(what, id))
        }
    }
}
