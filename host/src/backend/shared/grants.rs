//! Ceiling and grant operations that are the same on both drivers.

use sqlx::types::Json;

use crate::error::{EngineError, Result};
use crate::model::{CapabilityCeiling, TenantId};

for_both_drivers! {
    /// The tenant's ceiling; nothing when none was set.
    async fn ceiling(conn, tenant: TenantId) -> Result<CapabilityCeiling> {
        // Primary key of capability_ceilings.
        let row: Option<Json<CapabilityCeiling>> =
            sqlx::query_scalar("SELECT ceiling FROM capability_ceilings WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(&mut *conn)
                .await
                .map_err(EngineError::storage("read capability ceiling"))?;
        Ok(row.map(|Json(c)| c).unwrap_or_default())
    }

    /// Delete the grant of `kind`; whether there was one.
    async fn delete_grant(conn, tenant: TenantId, kind: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM component_grants WHERE tenant_id = $1 AND kind = $2")
            .bind(tenant)
            .bind(kind)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("delete grant"))?;
        Ok(done.rows_affected() > 0)
    }
}
