//! Capability ceilings and component grants, stored as JSON documents.

use async_trait::async_trait;
use sqlx::types::Json;

use super::time::{at, now, Millis};
use super::SqliteBackend;
use crate::backend::refusals::unknown_tenant_or;
use crate::backend::shared::grants::sqlite as shared;
use crate::backend::Grants;
use crate::error::{EngineError, Result};
use crate::model::{CapabilityCeiling, ComponentGrant, StoredGrant, TenantId};

type GrantRow = (String, Json<ComponentGrant>, Millis);

fn stored((kind, Json(grant), updated_at): GrantRow) -> StoredGrant {
    StoredGrant {
        kind,
        grant,
        updated_at: at(updated_at),
    }
}

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
        // Primary key of component_grants.
        let row: Option<GrantRow> = sqlx::query_as(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = ? AND kind = ?",
        )
        .bind(tenant)
        .bind(kind)
        .fetch_optional(self.reader())
        .await
        .map_err(EngineError::storage("read grant"))?;
        Ok(row.map(stored))
    }

    async fn list_grants(&self, tenant: TenantId) -> Result<Vec<StoredGrant>> {
        // Primary key of component_grants, in its order.
        let rows: Vec<GrantRow> = sqlx::query_as(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = ? ORDER BY kind",
        )
        .bind(tenant)
        .fetch_all(self.reader())
        .await
        .map_err(EngineError::storage("list grants"))?;
        Ok(rows.into_iter().map(stored).collect())
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
        // Both primary keys, one statement.
        let (ceiling, grant): (
            Option<Json<CapabilityCeiling>>,
            Option<Json<ComponentGrant>>,
        ) = sqlx::query_as(
            "SELECT (SELECT ceiling FROM capability_ceilings WHERE tenant_id = ?1), \
                        (SELECT grant_spec FROM component_grants \
                         WHERE tenant_id = ?1 AND kind = ?2)",
        )
        .bind(tenant)
        .bind(kind)
        .fetch_one(self.reader())
        .await
        .map_err(EngineError::storage("read capabilities"))?;
        Ok((
            ceiling.map(|Json(c)| c).unwrap_or_default(),
            grant.map(|Json(g)| g).unwrap_or_default(),
        ))
    }
}
