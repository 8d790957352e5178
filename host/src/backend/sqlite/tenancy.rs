//! Tenants, their API keys and their components.

use async_trait::async_trait;
use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::time::{at, now, Millis};
use super::SqliteBackend;
use crate::backend::shared::tenancy::sqlite as shared;
use crate::backend::shared::tenancy::{KeyRow, KEY_COLUMNS};
use crate::backend::{NewApiKey, Tenancy};
use crate::error::{EngineError, Result};
use crate::model::{ApiKey, ApiKeyId, StoredApiKey, Tenant, TenantId, TenantLimits};

#[async_trait]
impl Tenancy for SqliteBackend {
    async fn create_tenant(&self, name: &str) -> Result<Tenant> {
        let db = self;
        db.write("create tenant", async |conn, _| {
            let row: Option<TenantRow> = sqlx::query_as(&format!(
                "INSERT INTO tenants (tenant_id, name, created_at) VALUES (?, ?, ?) \
                 ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLUMNS}"
            ))
            .bind(Uuid::now_v7())
            .bind(name)
            .bind(now())
            .fetch_optional(conn)
            .await
            .map_err(EngineError::storage("create tenant"))?;
            row.map(Tenant::from).ok_or_else(|| {
                EngineError::Conflict(format!("a tenant named `{name}` already exists"))
            })
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let db = self;
        let rows: Vec<TenantRow> = sqlx::query_as(&format!(
            "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
        ))
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("list tenants"))?;
        Ok(rows.into_iter().map(Tenant::from).collect())
    }

    async fn get_tenant(&self, tenant: TenantId) -> Result<Tenant> {
        self.read("get tenant", async |conn| get_tenant(conn, tenant).await)
            .await
    }

    async fn stored_bytes(&self, tenant: TenantId) -> Result<u64> {
        self.read("measure stored bytes", async |conn| {
            stored_bytes(conn, tenant).await
        })
        .await
    }

    async fn set_tenant_limits(&self, tenant: TenantId, limits: &TenantLimits) -> Result<Tenant> {
        let db = self;
        db.write("set tenant limits", async |conn, effects| {
            let done = sqlx::query("UPDATE tenants SET limits = ? WHERE tenant_id = ?")
                .bind(Json(limits))
                .bind(tenant)
                .execute(&mut *conn)
                .await
                .map_err(EngineError::storage("set tenant limits"))?;
            if done.rows_affected() == 0 {
                return Err(unknown_tenant(tenant));
            }
            // A loosened limit may free claimable work.
            effects.work = true;
            get_tenant(conn, tenant).await
        })
        .await
    }

    /// The tenant's limits and the kinds among `kinds` without a non-deprecated
    /// component.
    async fn admission(
        &self,
        tenant: TenantId,
        kinds: &[&str],
    ) -> Result<(TenantLimits, Vec<String>)> {
        let db = self;
        db.read("admission", async |conn| {
            let limits = get_tenant(conn, tenant).await?.limits;
            let mut missing = Vec::new();
            for kind in kinds {
                let runnable: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM components \
                 WHERE tenant_id = ? AND kind = ? AND NOT deprecated)",
                )
                .bind(tenant)
                .bind(kind)
                .fetch_one(&mut *conn)
                .await
                .map_err(EngineError::storage("admission"))?;
                if !runnable {
                    missing.push((*kind).to_owned());
                }
            }
            Ok((limits, missing))
        })
        .await
    }

    async fn create_api_key(&self, tenant: TenantId, key: NewApiKey<'_>) -> Result<ApiKey> {
        let db = self;
        db.write("create api key", async |conn, _| {
            get_tenant(conn, tenant).await?;
            let row: KeyRow = sqlx::query_as(&format!(
                "INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, created_at) \
                 VALUES (?, ?, ?, ?, ?) RETURNING {KEY_COLUMNS}"
            ))
            .bind(key.id)
            .bind(tenant)
            .bind(key.name)
            .bind(key.secret_sha256)
            .bind(now())
            .fetch_one(conn)
            .await
            .map_err(EngineError::storage("create api key"))?;
            Ok(row.into())
        })
        .await
    }

    async fn find_api_key(&self, key_id: ApiKeyId) -> Result<Option<StoredApiKey>> {
        self.read("find api key", async |conn| {
            shared::find_api_key(conn, key_id).await
        })
        .await
    }

    /// Uses `api_keys_tenant_idx`.
    async fn list_api_keys(&self, tenant: TenantId) -> Result<Vec<ApiKey>> {
        self.read("list api keys", async |conn| {
            shared::list_api_keys(conn, tenant).await
        })
        .await
    }

    /// Revoking twice keeps the first revocation time.
    async fn revoke_api_key(&self, tenant: TenantId, key_id: ApiKeyId) -> Result<ApiKey> {
        let db = self;
        db.write("revoke api key", async |conn, _| {
            let row: Option<KeyRow> = sqlx::query_as(&format!(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) \
                 WHERE key_id = ? AND tenant_id = ? RETURNING {KEY_COLUMNS}"
            ))
            .bind(now())
            .bind(key_id)
            .bind(tenant)
            .fetch_optional(conn)
            .await
            .map_err(EngineError::storage("revoke api key"))?;
            row.map(ApiKey::from).ok_or_else(|| EngineError::NotFound {
                what: "api key",
                id: key_id.to_string(),
            })
        })
        .await
    }
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    tenant_id: TenantId,
    name: String,
    created_at: Millis,
    limits: Json<TenantLimits>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            tenant_id: r.tenant_id,
            name: r.name,
            created_at: at(r.created_at),
            limits: r.limits.0,
        }
    }
}

const TENANT_COLUMNS: &str = "tenant_id, name, created_at, limits";

use crate::backend::refusals::unknown_tenant;

pub(super) async fn get_tenant(conn: &mut SqliteConnection, id: TenantId) -> Result<Tenant> {
    let row: Option<TenantRow> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(EngineError::storage("get tenant"))?;
    row.map(Tenant::from).ok_or_else(|| unknown_tenant(id))
}

/// Bytes the tenant keeps: inputs and results of its executions, and the
/// payloads of their frames (`length` of a blob reads its size from the
/// record header).
pub(super) async fn stored_bytes(conn: &mut SqliteConnection, tenant: TenantId) -> Result<u64> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (SELECT coalesce(sum(length(input) + coalesce(length(result), 0)), 0) \
                 FROM executions WHERE tenant_id = ?1) \
              + (SELECT coalesce(sum(length(payload)), 0) FROM frames WHERE tenant_id = ?1) \
              + (SELECT coalesce(sum(size), 0) FROM steps WHERE tenant_id = ?1)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
    .map_err(EngineError::storage("measure stored bytes"))?;
    Ok(bytes.max(0) as u64)
}
