//! Component versions and their wasm bytes.

use super::Connections;
use async_trait::async_trait;
use sqlx::postgres::PgRow;

use super::rows::{col, transaction, unknown_tenant_or};
use super::PgBackend;
use crate::backend::shared::components::pg as shared;
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
            let latest = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 \
                 ORDER BY version DESC LIMIT 1"
            ))
            .bind(tenant)
            .bind(component.kind)
            .fetch_optional(&mut *tx)
            .await
            .map_err(err("put component"))?
            .map(|r| version(&r))
            .transpose()?;
            if let Some(latest) = latest
                .as_ref()
                .filter(|v| v.digest == component.digest && !v.deprecated)
            {
                if latest.imports.is_some() {
                    return Ok((latest.clone(), false));
                }
                // Stored before imports were recorded: record them now.
                let row = sqlx::query(&format!(
                    "UPDATE components SET imports = $4 \
                     WHERE tenant_id = $1 AND kind = $2 AND version = $3 RETURNING {COLUMNS}"
                ))
                .bind(tenant)
                .bind(component.kind)
                .bind(latest.version)
                .bind(imports)
                .fetch_one(&mut *tx)
                .await
                .map_err(err("put component"))?;
                return Ok((version(&row)?, false));
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
            let row = sqlx::query(&format!(
                "INSERT INTO components (tenant_id, kind, version, digest, size_bytes, imports) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
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
            let stored = version(&row)?;
            Ok((stored, true))
        })
        .await
    }

    async fn latest_component(
        &self,
        tenant: TenantId,
        kind: &str,
    ) -> Result<Option<ComponentVersion>> {
        let pool = &self.pool;
        sqlx::query(&format!(
            "SELECT {COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 AND NOT deprecated \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(kind)
        .fetch_optional(pool)
        .await
        .map_err(EngineError::storage("latest component"))?
        .map(|r| version(&r))
        .transpose()
    }

    async fn component_wasm(&self, tenant: TenantId, digest: &str) -> Result<Vec<u8>> {
        shared::component_wasm(
            &mut *self.connection("component wasm").await?,
            tenant,
            digest,
        )
        .await
    }

    async fn list_components(&self, tenant: TenantId) -> Result<Vec<ComponentVersion>> {
        let pool = &self.pool;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM components WHERE tenant_id = $1 ORDER BY kind, version"
        ))
        .bind(tenant)
        .fetch_all(pool)
        .await
        .map_err(EngineError::storage("list components"))?;
        rows.iter().map(version).collect()
    }

    async fn get_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        get(&self.pool, tenant, kind, version).await
    }

    async fn deprecate_component(
        &self,
        tenant: TenantId,
        kind: &str,
        version: i32,
    ) -> Result<ComponentVersion> {
        deprecate(&self.pool, tenant, kind, version).await
    }
}

const COLUMNS: &str = "kind, version, digest, size_bytes, deprecated, created_at, imports";

fn version(row: &PgRow) -> Result<ComponentVersion> {
    Ok(ComponentVersion {
        kind: col(row, "kind")?,
        version: col(row, "version")?,
        digest: col(row, "digest")?,
        size_bytes: col(row, "size_bytes")?,
        deprecated: col(row, "deprecated")?,
        created_at: col(row, "created_at")?,
        imports: col::<Option<sqlx::types::Json<Vec<String>>>>(row, "imports")?.map(|j| j.0),
    })
}

pub(super) async fn get(
    pool: &Connections,
    tenant: TenantId,
    kind: &str,
    number: i32,
) -> Result<ComponentVersion> {
    let sql = format!(
        "SELECT {COLUMNS} FROM components WHERE tenant_id = $1 AND kind = $2 AND version = $3"
    );
    one_version(pool, &sql, (tenant, kind, number), "get component").await
}

/// Deprecated versions stay stored (attempts already running keep them) but new
/// attempts run the newest version that is not deprecated. Idempotent.
pub(super) async fn deprecate(
    pool: &Connections,
    tenant: TenantId,
    kind: &str,
    number: i32,
) -> Result<ComponentVersion> {
    let sql = format!(
        "UPDATE components SET deprecated = true \
         WHERE tenant_id = $1 AND kind = $2 AND version = $3 RETURNING {COLUMNS}"
    );
    one_version(pool, &sql, (tenant, kind, number), "deprecate component").await
}

/// The one version `sql` reads or changes, named by `$1`–`$3`.
async fn one_version(
    pool: &Connections,
    sql: &str,
    (tenant, kind, number): (TenantId, &str, i32),
    op: &'static str,
) -> Result<ComponentVersion> {
    sqlx::query(sql)
        .bind(tenant)
        .bind(kind)
        .bind(number)
        .fetch_optional(pool)
        .await
        .map_err(EngineError::storage(op))?
        .ok_or_else(|| version_not_found(kind, number))
        .and_then(|r| version(&r))
}

fn version_not_found(kind: &str, number: i32) -> EngineError {
    EngineError::NotFound {
        what: "component version",
        id: format!("{kind}@{number}"),
    }
}
