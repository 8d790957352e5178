//! [`Components`] on SQLite: component versions and their wasm bytes.

use async_trait::async_trait;

use super::tenancy::get_tenant;
use super::time::{at, now, Millis};
use super::SqliteBackend;
use crate::backend::shared::components::sqlite as shared;
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
        let db = self;
        let row: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? \
             AND NOT deprecated ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(kind)
        .fetch_optional(db.reader())
        .await
        .map_err(EngineError::storage("latest component"))?;
        Ok(row.map(ComponentVersion::from))
    }

    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        self.read("component wasm", async |conn| {
            shared::component_wasm(conn, tenant, digest).await
        })
        .await
    }

    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        let db = self;
        let rows: Vec<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? ORDER BY kind, version"
        ))
        .bind(tenant)
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("list components"))?;
        Ok(rows.into_iter().map(ComponentVersion::from).collect())
    }

    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? AND version = ?"
        );
        let named = (tenant, kind, version);
        one_version(self.reader(), &sql, named, "get component").await
    }

    /// Deprecated versions stay stored; new attempts run the newest version that
    /// is not deprecated. Idempotent.
    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        let op = "deprecate component";
        let sql = format!(
            "UPDATE components SET deprecated = 1 \
             WHERE tenant_id = ? AND kind = ? AND version = ? RETURNING {VERSION_COLUMNS}"
        );
        let named = (tenant, kind, version);
        self.write(op, async |conn, _| one_version(conn, &sql, named, op).await)
            .await
    }
}

/// The one version `sql` reads or changes, named by its three parameters.
async fn one_version<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    sql: &str,
    (tenant, kind, version): (TenantId, &str, i32),
    op: &'static str,
) -> Result<ComponentVersion> {
    let row: Option<VersionRow> = sqlx::query_as(sql)
        .bind(tenant)
        .bind(kind)
        .bind(version)
        .fetch_optional(executor)
        .await
        .map_err(EngineError::storage(op))?;
    row.map(ComponentVersion::from)
        .ok_or_else(|| version_not_found(kind, version))
}

#[derive(Clone, sqlx::FromRow)]
struct VersionRow {
    kind: String,
    version: i32,
    digest: String,
    size_bytes: i32,
    deprecated: bool,
    created_at: Millis,
    imports: Option<sqlx::types::Json<Vec<String>>>,
}

impl From<VersionRow> for ComponentVersion {
    fn from(r: VersionRow) -> Self {
        ComponentVersion {
            kind: r.kind,
            version: r.version,
            digest: r.digest,
            size_bytes: r.size_bytes,
            deprecated: r.deprecated,
            created_at: at(r.created_at),
            imports: r.imports.map(|j| j.0),
        }
    }
}

const VERSION_COLUMNS: &str = "kind, version, digest, size_bytes, deprecated, created_at, imports";

fn version_not_found(kind: &str, number: i32) -> EngineError {
    EngineError::NotFound {
        what: "component version",
        id: format!("{kind}@{number}"),
    }
}
