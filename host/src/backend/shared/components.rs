//! Component operations that are the same on both drivers.

use crate::error::{EngineError, Result};
use crate::model::TenantId;

for_both_drivers! {
    /// The stored bytes of the tenant's component with `digest`.
    async fn component_wasm(conn, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT wasm FROM component_blobs WHERE tenant_id = $1 AND digest = $2")
            .bind(tenant)
            .bind(digest)
            .fetch_optional(&mut *conn)
            .await
            .map_err(EngineError::storage("component wasm"))?
            .ok_or_else(|| EngineError::NotFound {
                what: "component",
                id: digest.to_owned(),
            })
    }
}
