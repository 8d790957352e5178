//! Tenant config values and secrets, as sealed by the engine (the shared
//! statements are in `shared/config_values.rs`).

use super::PgBackend;
use crate::backend::shared::config_values::pg as shared;
use crate::backend::shared::config_values::{sealed, ConfigRow as Row, COLUMNS};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{SealedConfig, TenantId};

crate::backend::configuration::implement_config_values!(PgBackend, pg);

/// The tenant's row, locked, serialises concurrent puts.
async fn put_config(
    db: &PgBackend,
    tenant: TenantId,
    value: &SealedConfig,
    max_values: u32,
) -> Result<()> {
    let op = "put config value";
    db.quiet_write(op, async |tx| {
        sqlx::query("SELECT 1 FROM tenants WHERE tenant_id = $1 FOR UPDATE")
            .bind(tenant)
            .run(&mut *tx, op)
            .await?;
        shared::put_config(tx, tenant, value, max_values).await
    })
    .await
}

/// Primary key of config_values, the names as one array.
async fn config_values(
    db: &PgBackend,
    tenant: TenantId,
    names: &[String],
) -> Result<Vec<SealedConfig>> {
    db.read("read config values", async |conn| {
        sqlx::query_as::<_, Row>(&format!(
            "SELECT {COLUMNS} FROM config_values WHERE tenant_id = $1 AND name = ANY($2) \
             ORDER BY name"
        ))
        .bind(tenant)
        .bind(names)
        .all_mapped(conn, "read config values", sealed)
        .await
    })
    .await
}
