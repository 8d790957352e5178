//! Component versions and their wasm bytes.

use async_trait::async_trait;

use super::rows::{transaction, unknown_tenant_or};
use super::PgBackend;
use crate::backend::shared::components::pg as shared;
use crate::backend::shared::components::{VersionRow, VERSION_COLUMNS};
use crate::backend::{Components, NewComponent};
use crate::error::{EngineError, Result};
use crate::model::{ComponentVersion, TenantId};

#[async_trait]
impl Components for PgBackend {
    /// One transaction under an advisory lock on (tenant, kind), so concurrent
    /// uploads of one kind get consecutive versions instead of a key conflict.
    async fn put_component(
        &self,
        tenant: TenantId,
        component: NewComponent<'_>,
    ) -> Result<(ComponentVersion, bool)> {
        let pool = &self.pool;
        let imports = sqlx::types::Json(component.imports);
        let err = EngineError::storage;
        transaction(pool, "put component", async |tx| {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2, 0))")
                .bind(tenant)
                .bind(component.kind)
                .execute(&mut *tx)
                .await
                .map_err(err("put component"))?;
            let latest: Option<VersionRow> = sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 \
                 ORDER BY version DESC LIMIT 1"
            ))
            .bind(tenant)
            .bind(component.kind)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("put component"))?;
            if let Some(latest) = latest
                .as_ref()
                .filter(|v| v.digest == component.digest && !v.deprecated)
            {
                if latest.imports.is_some() {
                    return Ok((latest.clone().into(), false));
                }
                // Stored before imports were recorded: record them now.
                let row: VersionRow = sqlx::query_as(&format!(
                    "UPDATE components SET imports = $4 \
                     WHERE tenant_id = $1 AND kind = $2 AND version = $3 RETURNING {VERSION_COLUMNS}"
                ))
                .bind(tenant)
                .bind(component.kind)
                .bind(latest.version)
                .bind(imports)
                .fetch_one(&mut *tx)
                .await
                .map_err(err("put component"))?;
                return Ok((row.into(), false));
            }
            sqlx::query(
                "INSERT INTO component_blobs (tenant_id, digest, wasm) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(component.digest)
            .bind(component.wasm)
            .execute(&mut *tx)
            .await
            .map_err(unknown_tenant_or("put component", tenant))?;
            let row: VersionRow = sqlx::query_as(&format!(
                "INSERT INTO components (tenant_id, kind, version, digest, size_bytes, imports) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {VERSION_COLUMNS}"
            ))
            .bind(tenant)
            .bind(component.kind)
            .bind(latest.map_or(1, |v| v.version + 1))
            .bind(component.digest)
            .bind(i32::try_from(component.wasm.len()).unwrap_or(i32::MAX))
            .bind(imports)
            .fetch_one(&mut *tx)
            .await
            .map_err(err("put component"))?;
            Ok((row.into(), true))
        })
        .await
    }

    async fn latest_component(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>> {
        self.read("latest component", async |conn| {
            shared::latest_component(conn, tenant, kind).await
        })
        .await
    }

    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        self.read("component wasm", async |conn| {
            shared::component_wasm(conn, tenant, digest).await
        })
        .await
    }

    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        self.read("list components", async |conn| {
            shared::list_components(conn, tenant).await
        })
        .await
    }

    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        self.read("get component", async |conn| {
            shared::get_component(conn, tenant, kind, version).await
        })
        .await
    }

    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        self.read("deprecate component", async |conn| {
            shared::deprecate_component(conn, tenant, kind, version).await
        })
        .await
    }
}
