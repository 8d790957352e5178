//! Capability ceilings and component grants, stored as JSON documents.

use async_trait::async_trait;
use sqlx::types::Json;

use super::time::now;
use super::SqliteBackend;
use crate::backend::refusals::unknown_tenant_or;
use crate::backend::shared::grants::sqlite as shared;
use crate::backend::shared::grants::{stored, GrantRow};
use crate::backend::Grants;
use crate::error::Result;
use crate::model::{CapabilityCeiling, ComponentGrant, StoredGrant, TenantId};

#[async_trait]
impl Grants for SqliteBackend {
    async fn set_ceiling(&self, tenant: TenantId, ceiling: &CapabilityCeiling) -> Result<()> {
        self.write("set capability ceiling", async |conn, _| {
            sqlx::query(
                "INSERT INTO capability_ceilings (tenant_id, ceiling, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (tenant_id) DO UPDATE \
                     SET ceiling = excluded.ceiling, updated_at = excluded.updated_at",
            )
            .bind(tenant)
            .bind(Json(ceiling))
            .bind(now())
            .execute(conn)
            .await
            .map_err(unknown_tenant_or("set capability ceiling", tenant))?;
            Ok(())
        })
        .await
    }

    async fn ceiling(&self, tenant: TenantId) -> Result<CapabilityCeiling> {
        self.read("read capability ceiling", async |conn| {
            shared::ceiling(conn, tenant).await
        })
        .await
    }

    async fn put_grant(
        &self,
        tenant: TenantId,
        kind: &str,
        grant: &ComponentGrant,
    ) -> Result<StoredGrant> {
        self.write("put grant", async |conn, _| {
            let row: GrantRow = sqlx::query_as(
                "INSERT INTO component_grants (tenant_id, kind, grant_spec, updated_at) \
                 VALUES (?, ?, ?, ?) \
                 ON CONFLICT (tenant_id, kind) DO UPDATE \
                     SET grant_spec = excluded.grant_spec, updated_at = excluded.updated_at \
                 RETURNING kind, grant_spec, updated_at",
            )
            .bind(tenant)
            .bind(kind)
            .bind(Json(grant))
            .bind(now())
            .fetch_one(conn)
            .await
            .map_err(unknown_tenant_or("put grant", tenant))?;
            Ok(stored(row))
        })
        .await
    }

    async fn grant(&self, tenant: TenantId, kind: &str) -> Result<Option<StoredGrant>> {
        self.read("read grant", async |conn| {
            shared::grant(conn, tenant, kind).await
        })
        .await
    }

    async fn list_grants(&self, tenant: TenantId) -> Result<Vec<StoredGrant>> {
        self.read("list grants", async |conn| {
            shared::list_grants(conn, tenant).await
        })
        .await
    }

    async fn delete_grant(&self, tenant: TenantId, kind: &str) -> Result<bool> {
        self.write("delete grant", async |conn, _| {
            shared::delete_grant(conn, tenant, kind).await
        })
        .await
    }

    async fn capabilities(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<(CapabilityCeiling, ComponentGrant)> {
        self.read("read capabilities", async |conn| {
            shared::capabilities(conn, tenant, kind).await
        })
        .await
    }
}
