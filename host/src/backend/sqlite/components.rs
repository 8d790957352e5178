//! [`Components`] on SQLite: component versions and their wasm bytes.

use async_trait::async_trait;

use super::tenancy::get_tenant;
use super::time::now;
use super::SqliteBackend;
use crate::backend::shared::components::sqlite as shared;
use crate::backend::shared::components::{VersionRow, VERSION_COLUMNS};
use crate::backend::{Components, NewComponent};
use crate::error::{EngineError, Result};
use crate::model::{ComponentVersion, TenantId};

#[async_trait]
impl Components for SqliteBackend {
    /// Uploading the bytes the newest version already has returns that version.
    /// The single writer gives concurrent uploads of one kind consecutive versions.
    async fn put_component(
        &self,
        tenant: TenantId,
        component: NewComponent<'_>,
    ) -> Result<(ComponentVersion, bool)> {
        let db = self;
        let imports = sqlx::types::Json(component.imports);
        db.write("put component", async |conn, _| {
            get_tenant(conn, tenant).await?;
            let latest: Option<VersionRow> = sqlx::query_as(&format!(
                "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? \
                 ORDER BY version DESC LIMIT 1"
            ))
            .bind(tenant)
            .bind(component.kind)
            .fetch_optional(&mut *conn)
            .await
            .map_err(EngineError::storage("put component"))?;
            if let Some(latest) = latest
                .as_ref()
                .filter(|v| v.digest == component.digest && !v.deprecated)
            {
                if latest.imports.is_some() {
                    return Ok((latest.clone().into(), false));
                }
                // Stored before imports were recorded: record them now.
                let row: VersionRow = sqlx::query_as(&format!(
                    "UPDATE components SET imports = ? \
                     WHERE tenant_id = ? AND kind = ? AND version = ? RETURNING {VERSION_COLUMNS}"
                ))
                .bind(imports)
                .bind(tenant)
                .bind(component.kind)
                .bind(latest.version)
                .fetch_one(&mut *conn)
                .await
                .map_err(EngineError::storage("put component"))?;
                return Ok((row.into(), false));
            }
            sqlx::query(
                "INSERT INTO component_blobs (tenant_id, digest, wasm) VALUES (?, ?, ?) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(component.digest)
            .bind(component.wasm)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("put component"))?;
            let row: VersionRow = sqlx::query_as(&format!(
                "INSERT INTO components \
                     (tenant_id, kind, version, digest, size_bytes, created_at, imports) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {VERSION_COLUMNS}"
            ))
            .bind(tenant)
            .bind(component.kind)
            .bind(latest.map_or(1, |v| v.version + 1))
            .bind(component.digest)
            .bind(i32::try_from(component.wasm.len()).unwrap_or(i32::MAX))
            .bind(now())
            .bind(imports)
            .fetch_one(conn)
            .await
            .map_err(EngineError::storage("put component"))?;
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
        self.write("deprecate component", async |conn, _| {
            shared::deprecate_component(conn, tenant, kind, version).await
        })
        .await
    }
}
