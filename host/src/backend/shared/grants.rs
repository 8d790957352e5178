//! Ceiling and grant operations that are the same on both drivers, and the
//! row every read of a grant decodes.

use chrono::Utc;
use sqlx::types::Json;

use super::stamp::Stamp;
use crate::backend::{Fetch, Op, Run};
use crate::error::Result;
use crate::model::{CapabilityCeiling, ComponentGrant, StoredGrant, TenantId};

/// A grant as `RETURNING kind, grant_spec, updated_at` reads it.
pub(crate) type GrantRow = (String, Json<ComponentGrant>, Stamp);

pub(crate) fn stored((kind, Json(grant), updated_at): GrantRow) -> StoredGrant {
    StoredGrant {
        kind,
        grant,
        updated_at: updated_at.into(),
    }
}

for_both_drivers! {
    /// Replace the tenant's ceiling (capability_ceilings primary key).
    async fn set_ceiling(conn, tenant: TenantId, ceiling: &CapabilityCeiling) -> Result<()> {
        sqlx::query(
            "INSERT INTO capability_ceilings (tenant_id, ceiling, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE \
                 SET ceiling = excluded.ceiling, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(Json(ceiling))
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, Op::for_tenant("set capability ceiling", tenant))
        .await?;
        Ok(())
    }

    /// Create or replace the grant of `kind` (component_grants primary key).
    async fn put_grant(conn, tenant: TenantId, kind: &str, grant: &ComponentGrant)
        -> Result<StoredGrant>
    {
        let row: GrantRow = sqlx::query_as(
            "INSERT INTO component_grants (tenant_id, kind, grant_spec, updated_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, kind) DO UPDATE \
                 SET grant_spec = excluded.grant_spec, updated_at = excluded.updated_at \
             RETURNING kind, grant_spec, updated_at",
        )
        .bind(tenant)
        .bind(kind)
        .bind(Json(grant))
        .bind(Stamp(Utc::now()))
        .one(&mut *conn, Op::for_tenant("put grant", tenant))
        .await?;
        Ok(stored(row))
    }

    /// The tenant's grant for `kind` (component_grants primary key).
    async fn grant(conn, tenant: TenantId, kind: &str) -> Result<Option<StoredGrant>> {
        let row: Option<GrantRow> = sqlx::query_as(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(kind)
        .optional(&mut *conn, "read grant")
        .await?;
        Ok(row.map(stored))
    }

    /// The tenant's grants in kind order (component_grants primary key).
    async fn list_grants(conn, tenant: TenantId) -> Result<Vec<StoredGrant>> {
        sqlx::query_as::<_, GrantRow>(
            "SELECT kind, grant_spec, updated_at FROM component_grants \
             WHERE tenant_id = $1 ORDER BY kind",
        )
        .bind(tenant)
        .all_mapped(&mut *conn, "list grants", stored)
        .await
    }

    /// The tenant's ceiling and its grant for `kind`, each the default when
    /// none was set: both primary keys, one statement.
    async fn capabilities(conn, tenant: TenantId, kind: &str)
        -> Result<(CapabilityCeiling, ComponentGrant)>
    {
        let (ceiling, grant): (Option<Json<CapabilityCeiling>>, Option<Json<ComponentGrant>>) =
            sqlx::query_as(
                "SELECT (SELECT ceiling FROM capability_ceilings WHERE tenant_id = $1), \
                        (SELECT grant_spec FROM component_grants \
                         WHERE tenant_id = $1 AND kind = $2)",
            )
            .bind(tenant)
            .bind(kind)
            .one(&mut *conn, "read capabilities")
            .await?;
        Ok((
            ceiling.map(|Json(c)| c).unwrap_or_default(),
            grant.map(|Json(g)| g).unwrap_or_default(),
        ))
    }

    /// The tenant's ceiling; nothing when none was set.
    async fn ceiling(conn, tenant: TenantId) -> Result<CapabilityCeiling> {
        // Primary key of capability_ceilings.
        let row: Option<Json<CapabilityCeiling>> =
            sqlx::query_scalar("SELECT ceiling FROM capability_ceilings WHERE tenant_id = $1")
                .bind(tenant)
                .optional(&mut *conn, "read capability ceiling")
                .await?;
        Ok(row.map(|Json(c)| c).unwrap_or_default())
    }

    /// Delete the grant of `kind`; whether there was one.
    async fn delete_grant(conn, tenant: TenantId, kind: &str) -> Result<bool> {
        sqlx::query("DELETE FROM component_grants WHERE tenant_id = $1 AND kind = $2")
            .bind(tenant)
            .bind(kind)
            .changed(&mut *conn, "delete grant")
            .await
    }
}
