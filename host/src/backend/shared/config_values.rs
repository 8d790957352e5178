//! Config value operations that are the same on both drivers.

use crate::error::{EngineError, Result};
use crate::model::TenantId;

for_both_drivers! {
    /// Delete the value named `name`; whether there was one.
    async fn delete_config(conn, tenant: TenantId, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM config_values WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("delete config value"))?;
        Ok(done.rows_affected() > 0)
    }
}
