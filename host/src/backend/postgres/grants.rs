//! Capability ceilings and component grants, stored as JSON documents.

use async_trait::async_trait;
use sqlx::types::Json;

use super::rows::unknown_tenant_or;
use super::PgBackend;
use crate::backend::shared::grants::pg as shared;
use crate::backend::shared::grants::{stored, GrantRow};
use crate::backend::Grants;
use crate::error::Result;
use crate::model::{CapabilityCeiling, ComponentGrant, StoredGrant, TenantId};

#[async_trait]
impl Grants for PgBackend {
    async fn set_ceiling(&self, tenant: TenantId, ceiling: &CapabilityCeiling) -> Result<()> {
        sqlx::query(
            "INSERT INTO capability_ceilings (tenant_id, ceiling) VALUES ($1, $2) \
             ON CONFLICT (tenant_id) DO UPDATE SET ceiling = excluded.ceiling, updated_at = now()",
        )
        .bind(tenant)
        .bind(Json(ceiling))
        .execute(&self.pool)
        .await
        .map_err(unknown_tenant_or("set capability ceiling", tenant))?;
        Ok(())
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
        let row: GrantRow = sqlx::query_as(
            "INSERT INTO component_grants (tenant_id, kind, grant_spec) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id, kind) DO UPDATE \
                 SET grant_spec = excluded.grant_spec, updated_at = now() \
             RETURNING kind, grant_spec, updated_at",
        )
        .bind(tenant)
        .bind(kind)
        .bind(Json(grant))
        .fetch_one(&self.pool)
        .await
        .map_err(unknown_tenant_or("put grant", tenant))?;
        Ok(stored(row))
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
        self.read("delete grant", async |conn| {
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
