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
        let attempts = self
            .backend
            .list_attempts(tenant, id, MAX_ATTEMPT_PAGE)
            .await?;
        self.not_found_unless_seen(tenant, id, attempts).await
    }

    /// The execution's lease history: its newest [`MAX_LEASE_HISTORY`]
    /// lease events (acquired, renewed, released, expired, revoked,
    /// reclaimed), oldest first.
    pub async fn lease_history(
        &self,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<Vec<LeaseEvent>> {
        let events = self
            .backend
            .lease_history(tenant, id, MAX_LEASE_HISTORY)
            .await?;
        self.not_found_unless_seen(tenant, id, events).await
    }

    /// `rows` read about the tenant's execution `id`; when there are none,
    /// `NotFound` unless the execution is the tenant's (one never claimed
    /// has no attempts and no lease events yet).
    async fn not_found_unless_seen<T>(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        rows: Vec<T>,
    ) -> Result<Vec<T>> {
        if rows.is_empty() {
            self.backend.execution_state(tenant, id).await?;
        }
        Ok(rows)
    }

    /// Counts by state, and how the last hour's attempts ended.
    pub async fn overview(&self, tenant: TenantId) -> Result<Overview> {
        self.backend
            .overview(tenant, Utc::now() - OVERVIEW_WINDOW)
            .await
    }
}
