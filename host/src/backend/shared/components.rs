//! Component version statements that are the same on both drivers, and the
//! row every read of a version decodes.

use chrono::Utc;

use super::stamp::Stamp;
use crate::backend::NewComponent;
use crate::backend::{Fetch, Op, Run};
use crate::error::{EngineError, Result};
use crate::model::{ComponentVersion, TenantId};

/// The columns of a version, in [`VersionRow`]'s order.
pub(crate) const VERSION_COLUMNS: &str =
    "kind, version, digest, size_bytes, deprecated, created_at, imports";

#[derive(Clone, sqlx::FromRow)]
pub(crate) struct VersionRow {
    kind: String,
    pub(crate) version: i32,
    pub(crate) digest: String,
    size_bytes: i32,
    pub(crate) deprecated: bool,
    created_at: Stamp,
    pub(crate) imports: Option<sqlx::types::Json<Vec<String>>>,
}

impl From<VersionRow> for ComponentVersion {
    fn from(r: VersionRow) -> Self {
        ComponentVersion {
            kind: r.kind,
            version: r.version,
            digest: r.digest,
            size_bytes: r.size_bytes,
            deprecated: r.deprecated,
            created_at: r.created_at.into(),
            imports: r.imports.map(|j| j.0),
        }
    }
}

fn version_not_found(kind: &str, number: i32) -> EngineError {
    EngineError::not_found("component version", format!("{kind}@{number}"))
}

for_both_drivers! {
    /// Store `component` as the next version of its kind, with the kind's
    /// versions held still (`lock_name`), so concurrent uploads of one kind
    /// get consecutive versions instead of a key conflict: uploading the
    /// bytes the newest version already has returns that version, `false`
    /// for "nothing new".
    async fn put_component(conn, tenant: TenantId, component: NewComponent<'_>)
        -> Result<(ComponentVersion, bool)>
    {
        let op = "put component";
        lock_name(conn, tenant, component.kind, op).await?;
        let imports = sqlx::types::Json(component.imports);
        let latest: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(component.kind)
        .optional(&mut *conn, op)
        .await?;
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
            .one(&mut *conn, op)
            .await?;
            return Ok((row.into(), false));
        }
        sqlx::query(
            "INSERT INTO component_blobs (tenant_id, digest, wasm) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(component.digest)
        .bind(component.wasm)
        .run(&mut *conn, Op::for_tenant(op, tenant))
        .await?;
        let row: VersionRow = sqlx::query_as(&format!(
            "INSERT INTO components \
                 (tenant_id, kind, version, digest, size_bytes, created_at, imports) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {VERSION_COLUMNS}"
        ))
        .bind(tenant)
        .bind(component.kind)
        .bind(latest.map_or(1, |v| v.version + 1))
        .bind(component.digest)
        .bind(i32::try_from(component.wasm.len()).unwrap_or(i32::MAX))
        .bind(Stamp(Utc::now()))
        .bind(imports)
        .one(&mut *conn, Op::for_tenant(op, tenant))
        .await?;
        Ok((row.into(), true))
    }

    /// The stored bytes of the tenant's component with `digest`.
    async fn component_wasm(conn, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        sqlx::query_scalar("SELECT wasm FROM component_blobs WHERE tenant_id = $1 AND digest = $2")
            .bind(tenant)
            .bind(digest)
            .optional(&mut *conn, "component wasm")
            .await?
            .ok_or_else(|| EngineError::not_found("component", digest))
    }

    /// The newest version of `kind` that is not deprecated.
    async fn latest_component(conn, tenant: TenantId, kind: &str)
        -> Result<Option<ComponentVersion>>
    {
        let row: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 \
             AND NOT deprecated ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(kind)
        .optional(&mut *conn, "latest component")
        .await?;
        Ok(row.map(ComponentVersion::from))
    }

    /// Every version the tenant has, by kind and number.
    async fn list_components(conn, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = $1 ORDER BY kind, version"
        ))
        .bind(tenant)
        .all_mapped(&mut *conn, "list components", ComponentVersion::from)
        .await
    }

    /// Version `number` of `kind`.
    async fn get_component(conn, tenant: TenantId, kind: &str, number: i32)
        -> Result<ComponentVersion>
    {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM components \
             WHERE tenant_id = $1 AND kind = $2 AND version = $3"
        );
        one_version(conn, &sql, (tenant, kind, number), "get component").await
    }

    /// Deprecated versions stay stored (attempts already running keep them)
    /// but new attempts run the newest version that is not deprecated.
    /// Idempotent.
    async fn deprecate_component(conn, tenant: TenantId, kind: &str, number: i32)
        -> Result<ComponentVersion>
    {
        let sql = format!(
            "UPDATE components SET deprecated = true \
             WHERE tenant_id = $1 AND kind = $2 AND version = $3 RETURNING {VERSION_COLUMNS}"
        );
        one_version(conn, &sql, (tenant, kind, number), "deprecate component").await
    }

    /// A version `ComponentVersion::purge_refusal` lets go. Its bytes go
    /// with it unless another version of the tenant has the same digest
    /// (off the tenant's `components_pkey` prefix).
    async fn purge_component(conn, tenant: TenantId, kind: &str, number: i32) -> Result<()> {
        let op = "purge component";
        let version = get_component(conn, tenant, kind, number).await?;
        let newest: i32 = sqlx::query_scalar(
            "SELECT max(version) FROM components WHERE tenant_id = $1 AND kind = $2",
        )
        .bind(tenant)
        .bind(kind)
        .one(&mut *conn, op)
        .await?;
        if let Some(refusal) = version.purge_refusal(newest) {
            return Err(EngineError::Conflict(refusal));
        }
        sqlx::query("DELETE FROM components WHERE tenant_id = $1 AND kind = $2 AND version = $3")
            .bind(tenant)
            .bind(kind)
            .bind(number)
            .run(&mut *conn, op)
            .await?;
        sqlx::query(
            "DELETE FROM component_blobs WHERE tenant_id = $1 AND digest = $2 \
             AND NOT EXISTS (SELECT 1 FROM components WHERE tenant_id = $1 AND digest = $2)",
        )
        .bind(tenant)
        .bind(&version.digest)
        .run(&mut *conn, op)
        .await?;
        Ok(())
    }

    /// The one version `sql` reads or changes, named by `$1`–`$3`.
    async fn one_version(conn, sql: &str, named: (TenantId, &str, i32), op: &'static str)
        -> Result<ComponentVersion>
    {
        let (tenant, kind, number) = named;
        let row: Option<VersionRow> = sqlx::query_as(sql)
            .bind(tenant)
            .bind(kind)
            .bind(number)
            .optional(&mut *conn, op)
            .await?;
        row.map(ComponentVersion::from)
            .ok_or_else(|| version_not_found(kind, number))
    }
}
