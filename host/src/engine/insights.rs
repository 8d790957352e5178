//! Reading back what the lifecycle recorded: attempts and lease history of an execution, and a
//! tenant's overview, for the API and the dashboard.

use chrono::{TimeDelta, Utc};

use super::Engine;
use crate::error::Result;
use crate::model::{
    AttemptRecord, ExecutionId, LeaseEvent, Overview, TenantId, MAX_ATTEMPT_PAGE, MAX_LEASE_HISTORY,
};

/// The overview's window of recent outcomes.
pub const OVERVIEW_WINDOW: TimeDelta = TimeDelta::hours(1);

impl Engine {
    /// The execution's attempts, newest first (at most [`MAX_ATTEMPT_PAGE`]).
    pub async fn attempts(&self, tenant: TenantId, id: ExecutionId) -> Result<Vec<AttemptRecord>> {
        self.backend
            .list_attempts(tenant, id, MAX_ATTEMPT_PAGE)
            .await
    }

    /// The execution's lease history: its newest [`MAX_LEASE_HISTORY`]
    /// lease events (acquired, renewed, released, expired, revoked,
    /// reclaimed), oldest first.
    pub async fn lease_history(
        &self,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Vec<LeaseEvent>> {
        self.backend
            .lease_history(tenant, id, MAX_LEASE_HISTORY)
            .await
    }

    /// Counts by state, and how the last hour's attempts ended.
    pub async fn overview(&self, tenant: TenantId) -> Result<Overview> {
        self.backend
            .overview(tenant, Utc::now() - OVERVIEW_WINDOW)
            .await
    }
}
