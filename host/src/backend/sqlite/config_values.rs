//! Tenant config values and secrets, as sealed by the engine (the shared
//! statements are in `shared/config_values.rs`).

use super::SqliteBackend;
use crate::backend::shared::config_values::sqlite as shared;
use crate::backend::shared::config_values::{sealed, ConfigRow as Row, COLUMNS};
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{SealedConfig, TenantId};

crate::backend::configuration::implement_config_values!(SqliteBackend, sqlite);

/// One writer at a time: the count cannot move under the put.
async fn put_config(
    db: &SqliteBackend,
    tenant: TenantId,
    value: &SealedConfig,
    max_values: u32,
) -> Result<()> {
    db.quiet_write("put config value", async |conn| {
        shared::put_config(conn, tenant, value, max_values).await
    })
    .await
}

/// Primary key of config_values; the names travel as one JSON array.
async fn config_values(
    db: &SqliteBackend,
    tenant: TenantId,
    names: &[String],
) -> Result<Vec<SealedConfig>> {
    let names = serde_json::to_string(names).expect("names serialise");
    sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM config_values WHERE tenant_id = ? \
         AND name IN (SELECT value FROM json_each(?)) ORDER BY name"
    ))
    .bind(tenant)
    .bind(names)
    .all_mapped(db.reader(), "read config values", sealed)
    .await
}
