//! Budget requests and usage reports: shape checks here, so a refused budget
//! writes nothing and names the field at fault; limits are enforced by storage
//! in the report's transaction.

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{Budget, BudgetId, BudgetScope, LeaseHandle, NewBudget, TenantId, UsageOutcome};

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
        self.backend.create_budget(tenant, &budget).await
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
        self.check_name("dimension", dimension)?;
        if delta > i64::MAX as u64 {
            return Err(EngineError::invalid("delta", "must fit in 63 bits"));
        }
        if let Some(key) = dedup_key {
            if key.is_empty() || key.len() > 256 {
                return Err(EngineError::invalid("dedup_key", "must be 1 to 256 bytes"));
            }
        }
        self.backend
            .report_usage(lease, dimension, delta, dedup_key)
            .await
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
