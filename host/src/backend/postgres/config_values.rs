//! Tenant config values and secrets, as sealed by the engine.

use async_trait::async_trait;

use super::rows::{transaction, unknown_tenant_or};
use super::PgBackend;
use crate::backend::shared::config_values::pg as shared;
use crate::backend::shared::config_values::{sealed, ConfigRow as Row, COLUMNS};
use crate::backend::ConfigValues;
use crate::error::{EngineError, Result};
use crate::model::{SealedConfig, TenantId};

#[async_trait]
impl ConfigValues for PgBackend {
    async fn put_config(
        &self,
        tenant: TenantId,
        value: &SealedConfig,
        max_values: u32,
    ) -> Result<()> {
        transaction(&self.pool, "put config value", async |tx| {
            // The tenant's row serialises concurrent puts, so the count below
            // cannot be passed by two new names at once.
            let exists: Option<bool> = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM config_values WHERE tenant_id = $1 AND name = $2) \
             FROM tenants WHERE tenant_id = $1 FOR UPDATE",
            )
            .bind(tenant)
            .bind(&value.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(EngineError::storage("put config value"))?;
            let exists = exists.ok_or_else(|| EngineError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
            })?;
            if !exists {
                // Primary key of config_values, by its tenant prefix.
                let held: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM config_values WHERE tenant_id = $1")
                        .bind(tenant)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(EngineError::storage("count config values"))?;
                if held >= i64::from(max_values) {
                    return Err(EngineError::LimitExceeded {
                        limit: "config_values",
                        value: held as u64,
                        detail: format!("a tenant keeps at most {max_values} config values"),
                    });
                }
            }
            sqlx::query(
                "INSERT INTO config_values (tenant_id, name, secret, key_id, nonce, ciphertext) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET secret = excluded.secret, \
                 key_id = excluded.key_id, nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext, updated_at = now()",
            )
            .bind(tenant)
            .bind(&value.name)
            .bind(value.secret)
            .bind(&value.key_id)
            .bind(&value.nonce)
            .bind(&value.ciphertext)
            .execute(&mut *tx)
            .await
            .map_err(unknown_tenant_or("put config value", tenant))?;
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
        // Primary key of config_values.
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM config_values WHERE tenant_id = $1 AND name = ANY($2) \
             ORDER BY name"
        ))
        .bind(tenant)
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::storage("read config values"))?;
        Ok(rows.into_iter().map(sealed).collect())
    }

    async fn delete_config(&self, tenant: TenantId, name: &str) -> Result<bool> {
        self.read("delete config value", async |conn| {
            shared::delete_config(conn, tenant, name).await
        })
        .await
    }

    async fn config_sealed_by_other_keys(
        &self,
        key_id: &str,
        limit: u32,
    ) -> Result<Vec<(TenantId, SealedConfig)>> {
        let op = "find config values to reseal";
        self.read(op, async |conn| {
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
        self.read("reseal config value", async |conn| {
            shared::reseal_config(conn, tenant, old_key_id, value).await
        })
        .await
    }
}
