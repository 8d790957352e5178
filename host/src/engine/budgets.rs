//! Budget requests and usage reports: shape checks here, so a refused budget
//! writes nothing and names the field at fault; limits are enforced by storage
//! in the report's transaction.

use super::Engine;
use crate::backend::UsageAdjust;
use crate::error::{EngineError, Result};
use crate::model::{
    Budget, BudgetAdjustment, BudgetId, BudgetScope, LeaseHandle, NewBudget, TenantId,
    UsageAdjustment, UsageEntry, UsageOutcome, MAX_ADJUSTMENTS_PER_BUDGET, MAX_BUDGETS_PER_TENANT,
    MAX_REPORT_DIMENSIONS,
};

/// Dimensions one budget may limit.
const MAX_DIMENSIONS: usize = 32;
/// Resets are scanner work: no budget resets more often than this.
const MIN_RESET_INTERVAL_MS: u64 = 1_000;
/// The longest reset interval: a year (a leap one), so that adding it to a
/// timestamp can never overflow in storage.
const MAX_RESET_INTERVAL_MS: u64 = 366 * 24 * 3600 * 1000;

impl Engine {
    pub async fn create_budget(&self, tenant: TenantId, budget: NewBudget) -> Result<Budget> {
        self.check_budget(&budget)?;
        self.backend
            .create_budget(tenant, &budget, MAX_BUDGETS_PER_TENANT)
            .await
    }

    /// Delete a budget; what it held (claims blocked on it, executions
    /// suspended waiting for it) is released as a reset releases it.
    pub async fn delete_budget(&self, tenant: TenantId, id: BudgetId) -> Result<()> {
        self.backend.delete_budget(tenant, id).await
    }

    pub async fn reset_budget(&self, tenant: TenantId, id: BudgetId) -> Result<Budget> {
        self.backend.reset_budget(tenant, id).await
    }

    /// A guest's usage report, fenced by its lease.
    pub async fn report_usage(
        &self,
        lease: &LeaseHandle,
        dimension: &str,
        delta: u64,
        dedup_key: Option<&str>,
    ) -> Result<UsageOutcome> {
        let entry = UsageEntry {
            dimension: dimension.to_owned(),
            delta,
        };
        self.report_usage_many(lease, vec![entry], dedup_key).await
    }

    /// Whether a budget of the tenant limits `dimension`: while none does,
    /// a worker may count the dimension in memory and report it when the
    /// attempt ends, rather than at each use.
    pub async fn budget_limits(&self, tenant: TenantId, dimension: &str) -> Result<bool> {
        self.backend.limits_dimension(tenant, dimension).await
    }

    /// Correct a budget dimension's usage without a lease (negative `delta`
    /// to lower it), kept with `reason` in the budget's audit trail.
    pub async fn adjust_usage(
        &self,
        tenant: TenantId,
        id: BudgetId,
        adjustment: &UsageAdjustment,
    ) -> Result<Budget> {
        self.check_name("dimension", &adjustment.dimension)?;
        if adjustment.delta == i64::MIN {
            return Err(EngineError::invalid("delta", "must be within ±(2^63 - 1)"));
        }
        let reason = &adjustment.reason;
        if reason.is_empty() || reason.len() > 512 || reason.chars().any(char::is_control) {
            return Err(EngineError::invalid(
                "reason",
                "must be 1 to 512 bytes without control characters",
            ));
        }
        let adjust = UsageAdjust {
            budget: id,
            adjustment,
            max_adjustments: MAX_ADJUSTMENTS_PER_BUDGET,
        };
        self.backend.adjust_usage(tenant, adjust).await
    }

    /// The budget's hand corrections, newest first (at most 1,000).
    pub async fn list_adjustments(
        &self,
        tenant: TenantId,
        id: BudgetId,
        limit: u32,
    ) -> Result<Vec<BudgetAdjustment>> {
        self.backend
            .list_adjustments(tenant, id, limit.clamp(1, 1_000))
            .await
    }

    /// One report over several dimensions (1 to [`MAX_REPORT_DIMENSIONS`],
    /// each once), applied all together or not at all: a hard limit in any
    /// of them stops the whole report.
    pub async fn report_usage_many(
        &self,
        lease: &LeaseHandle,
        mut report: Vec<UsageEntry>,
        dedup_key: Option<&str>,
    ) -> Result<UsageOutcome> {
        if report.is_empty() || report.len() > MAX_REPORT_DIMENSIONS {
            return Err(EngineError::invalid(
                "dimensions",
                format!("give 1 to {MAX_REPORT_DIMENSIONS}"),
            ));
        }
        for entry in &report {
            self.check_name("dimension", &entry.dimension)?;
            if entry.delta > i64::MAX as u64 {
                return Err(EngineError::invalid("delta", "must fit in 63 bits"));
            }
        }
        // Name order: every report locks budget rows in the same order.
        report.sort_by(|a, b| a.dimension.cmp(&b.dimension));
        if let Some(twice) = report.windows(2).find(|w| w[0].dimension == w[1].dimension) {
            return Err(EngineError::invalid(
                "dimensions",
                format!("`{}` appears twice", twice[0].dimension),
            ));
        }
        if let Some(key) = dedup_key {
            if key.is_empty() || key.len() > 256 {
                return Err(EngineError::invalid("dedup_key", "must be 1 to 256 bytes"));
            }
        }
        self.backend.report_usage(lease, &report, dedup_key).await
    }

    fn check_budget(&self, budget: &NewBudget) -> Result<()> {
        self.check_name("name", &budget.name)?;
        if let BudgetScope::Lane { lane } = &budget.scope {
            self.check_name("scope.lane", lane)?;
        }
        if budget.dimensions.is_empty() || budget.dimensions.len() > MAX_DIMENSIONS {
            return Err(EngineError::invalid(
                "dimensions",
                format!("give 1 to {MAX_DIMENSIONS}"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in budget.dimensions.iter().enumerate() {
            let field = |f: &str| format!("dimensions[{i}]{f}");
            self.check_name(&field(".dimension"), &d.dimension)?;
            if !seen.insert(d.dimension.as_str()) {
                return Err(EngineError::invalid(field(".dimension"), "appears twice"));
            }
            let fits = |v: Option<u64>| v.is_none_or(|v| v <= i64::MAX as u64);
            match (d.soft_limit, d.hard_limit) {
                (None, None) => {
                    return Err(EngineError::invalid(
                        field(""),
                        "give a soft_limit, a hard_limit or both",
                    ))
                }
                (Some(soft), Some(hard)) if soft > hard => {
                    return Err(EngineError::invalid(
                        field(".soft_limit"),
                        "must not exceed the hard limit",
                    ))
                }
                (soft, hard) if !fits(soft) || !fits(hard) => {
                    return Err(EngineError::invalid(
                        field(""),
                        "limits must fit in 63 bits",
                    ))
                }
                _ => {}
            }
        }
        if let Some(ms) = budget.reset_interval_ms {
            if !(MIN_RESET_INTERVAL_MS..=MAX_RESET_INTERVAL_MS).contains(&ms) {
                return Err(EngineError::invalid(
                    "reset_interval_ms",
                    format!("must be between {MIN_RESET_INTERVAL_MS} and {MAX_RESET_INTERVAL_MS}"),
                ));
            }
        }
        Ok(())
    }
}
