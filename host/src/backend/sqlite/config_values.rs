//! Tenant config values and secrets, as sealed by the engine.

use async_trait::async_trait;

use super::time::now;
use super::SqliteBackend;
use crate::backend::refusals::unknown_tenant;
use crate::backend::shared::config_values::sqlite as shared;
use crate::backend::shared::config_values::{sealed, ConfigRow as Row, COLUMNS};
use crate::backend::ConfigValues;
use crate::error::{EngineError, Result};
use crate::model::{SealedConfig, TenantId};

#[async_trait]
impl ConfigValues for SqliteBackend {
    async fn put_config(
        &self,
        tenant: TenantId,
        value: &SealedConfig,
        max_values: u32,
    ) -> Result<()> {
        self.write("put config value", async |conn, _| {
            // One writer at a time: the count cannot move under us.
            let (known, exists, held): (bool, bool, i64) = sqlx::query_as(
                "SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = ?1), \
                        EXISTS (SELECT 1 FROM config_values WHERE tenant_id = ?1 AND name = ?2), \
                        (SELECT count(*) FROM config_values WHERE tenant_id = ?1)",
            )
            .bind(tenant)
            .bind(&value.name)
            .fetch_one(&mut *conn)
            .await
            .map_err(EngineError::storage("put config value"))?;
            if !known {
                return Err(unknown_tenant(tenant));
            }
            if !exists && held >= i64::from(max_values) {
                return Err(EngineError::LimitExceeded {
                    limit: "config_values",
                    value: held as u64,
                    detail: format!("a tenant keeps at most {max_values} config values"),
                });
            }
            sqlx::query(
                "INSERT INTO config_values \
                     (tenant_id, name, secret, key_id, nonce, ciphertext, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET secret = excluded.secret, \
                     key_id = excluded.key_id, nonce = excluded.nonce, \
                     ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(&value.name)
            .bind(value.secret)
            .bind(&value.key_id)
            .bind(&value.nonce)
            .bind(&value.ciphertext)
            .bind(now())
            .execute(conn)
            .await
            .map_err(EngineError::storage("put config value"))?;
            Ok(())
        })
        .await
    }

    async fn list_config(&self, tenant: TenantId) -> Result<Vec<SealedConfig>> {
        self.read("list config values", async |conn| {
            shared::list_config(conn, tenant).await
        })
        .await
    }

    async fn config_values(&self, tenant: TenantId, names: &[String]) -> Result<Vec<SealedConfig>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // Primary key of config_values; the names travel as one JSON array.
        let names = serde_json::to_string(names).expect("names serialise");
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM config_values WHERE tenant_id = ? \
             AND name IN (SELECT value FROM json_each(?)) ORDER BY name"
        ))
        .bind(tenant)
        .bind(names)
        .fetch_all(self.reader())
        .await
        .map_err(EngineError::storage("read config values"))?;
        Ok(rows.into_iter().map(sealed).collect())
    }

    async fn delete_config(&self, tenant: TenantId, name: &str) -> Result<bool> {
        self.write("delete config value", async |conn, _| {
            shared::delete_config(conn, tenant, name).await
        })
        .await
    }

    async fn config_sealed_by_other_keys(
        &self,
        key_id: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, SealedConfig)>> {
        self.read("find config values to reseal", async |conn| {
            shared::config_sealed_by_other_keys(conn, key_id, limit).await
        })
        .await
    }

    async fn reseal_config(
        &self,
        tenant: TenantId,
        old_key_id: &str,
        value: &SealedConfig,
    ) -> Result<bool> {
        self.write("reseal config value", async |conn, _| {
            shared::reseal_config(conn, tenant, old_key_id, value).await
        })
        .await
    }
}
