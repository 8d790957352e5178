//! Budgets: limits on the usage guests report (tokens, cost, calls…), per
//! tenant, flow, execution or lane, checked in the transaction that applies a
//! report.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ExecutionId, FlowId};

pub use super::ids::BudgetId;

/// What a budget covers: every execution that falls in the scope counts
/// against it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BudgetScope {
    Tenant,
    Flow {
        #[schema(value_type = uuid::Uuid)]
        flow_id: FlowId,
    },
    Execution {
        #[schema(value_type = uuid::Uuid)]
        execution_id: ExecutionId,
    },
    Lane {
        lane: String,
    },
}

impl BudgetScope {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Flow { .. } => "flow",
            Self::Execution { .. } => "execution",
            Self::Lane { .. } => "lane",
        }
    }

    /// The scope's key in storage: the id or lane, empty for the tenant.
    pub fn key(&self) -> String {
        match self {
            Self::Tenant => String::new(),
            Self::Flow { flow_id } => flow_id.to_string(),
            Self::Execution { execution_id } => execution_id.to_string(),
            Self::Lane { lane } => lane.clone(),
        }
    }
}

/// What happens to an execution whose report would cross a hard limit (the
/// report itself is never applied).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HardLimitAction {
    /// Fail it for good (class `budget_exceeded`).
    #[default]
    Fail,
    /// Suspend it until the budget is reset (or an operator resumes it).
    Suspend,
}

impl HardLimitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Suspend => "suspend",
        }
    }
}

impl std::str::FromStr for HardLimitAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fail" => Ok(Self::Fail),
            "suspend" => Ok(Self::Suspend),
            other => Err(format!("unknown hard-limit action `{other}`")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DimensionLimit {
    pub dimension: String,
    /// Crossing it is reported (`soft_breach`); the usage is applied.
    #[serde(default)]
    pub soft_limit: Option<u64>,
    /// Usage that would cross it is refused (`hard_breach`).
    #[serde(default)]
    pub hard_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBudget {
    pub name: String,
    pub scope: BudgetScope,
    pub dimensions: Vec<DimensionLimit>,
    #[serde(default)]
    pub on_hard_limit: HardLimitAction,
    /// Usage goes back to zero this often (and suspended executions resume).
    #[serde(default)]
    pub reset_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DimensionUsage {
    pub dimension: String,
    pub soft_limit: Option<u64>,
    pub hard_limit: Option<u64>,
    pub used: u64,
    /// The hard limit was reached, or a report refused for crossing it: the
    /// budget admits no new work it covers (claims block it) until a reset.
    pub exhausted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Budget {
    #[schema(value_type = uuid::Uuid)]
    pub budget_id: BudgetId,
    pub name: String,
    pub scope: BudgetScope,
    pub on_hard_limit: HardLimitAction,
    pub reset_interval_ms: Option<u64>,
    pub next_reset_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub dimensions: Vec<DimensionUsage>,
}

/// A correction of one dimension's usage, made without a lease (an
/// operator's `report_usage_admin`): `delta` may be negative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageAdjustment {
    pub dimension: String,
    pub delta: i64,
    /// Why, for the audit trail (1 to 512 bytes, no control characters).
    pub reason: String,
}

impl UsageAdjustment {
    /// The usage it leaves: `used + delta`, kept within 0..=i64::MAX.
    pub fn applied_to(&self, used: i64) -> i64 {
        (i128::from(used) + i128::from(self.delta)).clamp(0, i128::from(i64::MAX)) as i64
    }
}

/// An adjustment as the budget's audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BudgetAdjustment {
    pub adjustment_id: i64,
    pub dimension: String,
    pub delta: i64,
    /// The dimension's usage after it (clamped at 0).
    pub used_after: u64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// Budgets one tenant may have at once (deleting one makes room).
pub const MAX_BUDGETS_PER_TENANT: u32 = 1_000;

/// Adjustments one budget keeps at most.
pub const MAX_ADJUSTMENTS_PER_BUDGET: u32 = 10_000;

/// One dimension of a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEntry {
    pub dimension: String,
    pub delta: u64,
}

/// Dimensions one report may carry at most.
pub const MAX_REPORT_DIMENSIONS: usize = 16;

/// A limit a report reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Breach {
    pub budget_id: BudgetId,
    pub dimension: String,
    /// Usage with the report applied (soft) or as it would have been (hard).
    pub current: u64,
    pub limit: u64,
    pub action: HardLimitAction,
}

/// What `report_usage` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum UsageOutcome {
    /// Applied; within every limit.
    Ok,
    /// Applied; a soft limit is now exceeded.
    SoftBreach(Breach),
    /// Not applied: a hard limit would be crossed. The execution was failed
    /// or suspended as the breached budget says; its lease is gone.
    HardBreach(Breach),
    /// A report with the same dedup key was applied before.
    AlreadyApplied,
}
