//! What a usage report decides from the limits it read, written once for
//! both drivers: each backend reads (and on Postgres locks) the limits its
//! own way, then asks these which limit, if any, the report would cross.

use crate::backend::refusals::check_usage_fits;
use crate::backend::stored_i64;
use crate::error::{EngineError, Result};
use crate::model::{Breach, BudgetId, UsageEntry};

/// One covering budget's limits and use in one dimension, as a report
/// reads them.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Limit {
    pub(crate) budget_id: BudgetId,
    pub(crate) on_hard_limit: String,
    pub(crate) soft_limit: Option<i64>,
    pub(crate) hard_limit: Option<i64>,
    pub(crate) used: i64,
}

/// One dimension of a report, with every limit that covers it in budget
/// order.
pub(crate) struct Checked<'r> {
    pub(crate) dimension: &'r str,
    pub(crate) delta: i64,
    pub(crate) limits: Vec<Limit>,
}

impl<'r> Checked<'r> {
    pub(crate) fn new(entry: &'r UsageEntry, limits: Vec<Limit>) -> Self {
        Self {
            dimension: &entry.dimension,
            delta: delta_of(entry),
            limits,
        }
    }

    /// [`Self::new`], refused when the report would push a budget's counter
    /// or the attempt's (`attempt_used`, as stored) past 63 bits.
    pub(crate) fn fitting(
        entry: &'r UsageEntry,
        limits: Vec<Limit>,
        attempt_used: &str,
    ) -> Result<Self> {
        let checked = Self::new(entry, limits);
        check_usage_fits(
            checked.dimension,
            checked.delta,
            checked.limits.iter().map(|l| l.used),
            attempt_used,
        )?;
        Ok(checked)
    }
}

/// Which of a limit's two bounds a breach is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    Soft,
    Hard,
}

/// A report's delta as storage counts it (the engine refuses any past
/// 63 bits).
pub(crate) fn delta_of(entry: &UsageEntry) -> i64 {
    stored_i64(entry.delta)
}

/// The first limit the report would cross on `bound`: dimension by dimension
/// in report order, budget by budget within one.
pub(crate) fn first_breach(report: &[Checked<'_>], bound: Bound) -> Result<Option<Breach>> {
    for checked in report {
        for limit in &checked.limits {
            let after = limit.used.saturating_add(checked.delta);
            let bound = match bound {
                Bound::Soft => limit.soft_limit,
                Bound::Hard => limit.hard_limit,
            };
            if let Some(bound) = bound.filter(|bound| after > *bound) {
                return Ok(Some(Breach {
                    budget_id: limit.budget_id,
                    dimension: checked.dimension.to_owned(),
                    current: after.max(0) as u64,
                    limit: bound.max(0) as u64,
                    action: limit.on_hard_limit.parse().map_err(EngineError::Corrupt)?,
                }));
            }
        }
    }
    Ok(None)
}
