//! The [`Insights`] storage trait, and what both backends' implementations
//! share: which attempt endings count as failures, how far back an attempt
//! may have started to be counted, and turning their rows into an overview.

use async_trait::async_trait;

use super::shared::storage_methods;
use chrono::{DateTime, TimeDelta, Utc};

use crate::error::{EngineError, Result};
use crate::model::{
    AttemptRecord, ExecutionId, KindFailures, LeaseEvent, MinuteOutcomes, Overview, PublicState,
    StateCount, TenantId, MAX_STATE_COUNT,
};

/// Reads over what the lifecycle recorded: an execution's attempts and
/// lease history, a tenant's overview (see `model/insights.rs`).
#[async_trait]
pub trait Insights: Send + Sync {
    /// The execution's attempts, newest first, at most `limit`. Empty for
    /// an execution never claimed and for another tenant's: the engine
    /// tells the two apart.
    async fn list_attempts(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        limit: u32,
    ) -> Result<Vec<AttemptRecord>>;

    /// The execution's newest `limit` lease events, oldest first: its lease
    /// history (empty for another tenant's id, as for an execution never
    /// claimed). Off the lease events' index by execution.
    async fn lease_history(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        limit: u32,
    ) -> Result<Vec<LeaseEvent>>;

    /// Counts by state, and the attempts that ended since `since`.
    async fn overview(&self, tenant: TenantId, since: DateTime<Utc>) -> Result<Overview>;
}

// The lease history and the overview are the backend's own.
storage_methods! { $ implement_insights: impl Insights in insights {
    read {
        "list attempts" list_attempts(tenant: TenantId, id: ExecutionId, limit: u32)
            -> Vec<AttemptRecord>;
    }
    write {}
    own {
        lease_history(tenant: TenantId, id: ExecutionId, limit: u32) -> Vec<LeaseEvent>;
        overview(tenant: TenantId, since: DateTime<Utc>) -> Overview;
    }
} }

/// Attempt states the overview counts as failed: the guest failed, its
/// lease ran out, or its execution's deadline passed under it.
pub(crate) const ENDED_FAILED: &[&str] = &["failed", "lease_expired", "expired"];

/// The earliest start of an attempt the overview counts as ending after
/// `since`: one hour before it. The index is by start time, so this bounds
/// the scan; an attempt that ran longer than an hour is left out.
pub(crate) fn outcome_window_start(since: DateTime<Utc>) -> DateTime<Utc> {
    since - TimeDelta::hours(1)
}

/// How far each state's count reads: one past the cap, to tell "exactly
/// the cap" from "more".
pub(crate) const STATE_COUNT_PROBE: i64 = MAX_STATE_COUNT as i64 + 1;

/// Every public state's name, for the per-state counts.
pub(crate) fn state_names() -> Vec<&'static str> {
    PublicState::ALL.iter().map(|s| s.as_str()).collect()
}

/// [`ENDED_FAILED`] as an SQL list, for a backend that binds no arrays.
pub(crate) fn ended_failed_list() -> String {
    ENDED_FAILED
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The overview from both backends' rows: (state, count up to
/// [`STATE_COUNT_PROBE`]; zero counts are left out), (minute, succeeded,
/// failed), (kind, failed).
pub(crate) fn overview_of(
    states: Vec<(String, i64)>,
    minutes: Vec<(DateTime<Utc>, i64, i64)>,
    kinds: Vec<(String, i64)>,
) -> Result<Overview> {
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(Overview {
        states: states
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(state, n)| {
                Ok(StateCount {
                    state: state.parse().map_err(EngineError::Corrupt)?,
                    count: count(n).min(MAX_STATE_COUNT),
                    more: count(n) > MAX_STATE_COUNT,
                })
            })
            .collect::<Result<_>>()?,
        minutes: minutes
            .into_iter()
            .map(|(minute, succeeded, failed)| MinuteOutcomes {
                minute,
                succeeded: count(succeeded),
                failed: count(failed),
            })
            .collect(),
        failing_kinds: kinds
            .into_iter()
            .map(|(kind, failed)| KindFailures {
                kind,
                failed: count(failed),
            })
            .collect(),
    })
}
