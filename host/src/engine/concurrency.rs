//! Concurrency limits per key: checked here, enforced by the claim (see
//! [`crate::model::ConcurrencyLimit`] for the rules).

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{
    ConcurrencyLimit, ConcurrencyScope, TenantId, MAX_CONCURRENCY_LIMITS_PER_TENANT,
};

impl Engine {
    /// Create or replace the tenant's limit for a kind or lane. A bad name
    /// or number is refused with the field at fault and nothing is written.
    pub async fn set_concurrency_limit(
        &self,
        tenant: TenantId,
        limit: ConcurrencyLimit,
    ) -> Result<ConcurrencyLimit> {
        self.check_name(limit.scope.as_str(), &limit.name)?;
        limit.limit.validate()?;
        self.backend
            .set_concurrency_limit(tenant, &limit, MAX_CONCURRENCY_LIMITS_PER_TENANT)
            .await?;
        Ok(limit)
    }

    pub async fn list_concurrency_limits(&self, tenant: TenantId) -> Result<Vec<ConcurrencyLimit>> {
        self.backend.list_concurrency_limits(tenant).await
    }

    /// Delete a limit; what it held back becomes claimable.
    pub async fn delete_concurrency_limit(
        &self,
        tenant: TenantId,
        scope: ConcurrencyScope,
        name: &str,
    ) -> Result<()> {
        if self
            .backend
            .delete_concurrency_limit(tenant, scope, name)
            .await?
        {
            Ok(())
        } else {
            Err(EngineError::not_found(
                "concurrency limit",
                format!("{}/{name}", scope.as_str()),
            ))
        }
    }
}
