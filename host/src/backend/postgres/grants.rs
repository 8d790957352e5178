//! Capability ceilings and component grants, stored as JSON documents.

use super::Connections;
use async_trait::async_trait;
use sqlx::types::Json;

use super::rows::unknown_tenant_or;
use super::PgBackend;
use crate::backend::shared::grants::pg as shared;
use crate::backend::Grants;
use crate::error::{EngineError, Result};
use crate::model::{CapabilityCeiling, ComponentGrant, StoredGrant, TenantId};

type GrantRow = (String, Json<ComponentGrant>, chrono::DateTime<chrono::Utc>);

fn stored((kind, Json(grant), updated_at): GrantRow) -> StoredGrant {
    StoredGrant {
        kind,
        grant,
        updated_at,
    }
}

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
        shared::ceiling(
            &mut *self.connection("read capability ceiling").await?,
            tenant,
        )
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
        // Primary key of component_grants.
        let row: Option<GrantRow> = sqlx::query_as(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await
        .map_err(EngineError::storage("read grant"))?;
        Ok(row.map(stored))
    }

    async fn list_grants(&self, tenant: TenantId) -> Result<Vec<StoredGrant>> {
        // Primary key of component_grants, in its order.
        let rows: Vec<GrantRow> = sqlx::query_as(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = $1 ORDER BY kind",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::storage("list grants"))?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn delete_grant(&self, tenant: TenantId, kind: &str) -> Result<bool> {
        shared::delete_grant(&mut *self.connection("delete grant").await?, tenant, kind).await
    }

    async fn capabilities(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<(CapabilityCeiling, ComponentGrant)> {
        capabilities(&self.pool, tenant, kind).await
    }
}

/// Both primary keys, one round trip.
async fn capabilities(
    pool: &Connections,
    tenant: TenantId,
    kind: &str,
) -> Result<(CapabilityCeiling, ComponentGrant)> {
    let (ceiling, grant): (
        Option<Json<CapabilityCeiling>>,
        Option<Json<ComponentGrant>>,
    ) = sqlx::query_as(
        "SELECT (SELECT ceiling FROM capability_ceilings WHERE tenant_id = $1), \
                    (SELECT grant_spec FROM component_grants WHERE tenant_id = $1 AND kind = $2)",
    )
    .bind(tenant)
    .bind(kind)
    .fetch_one(pool)
    .await
    .map_err(EngineError::storage("read capabilities"))?;
    Ok((
        ceiling.map(|Json(c)| c).unwrap_or_default(),
        grant.map(|Json(g)| g).unwrap_or_default(),
    ))
}
