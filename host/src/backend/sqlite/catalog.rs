//! Tenants, their API keys and their components.

use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::time::{at, now, Millis};
use super::SqliteBackend;
use crate::error::{EngineError, Result};
use crate::model::{ApiKey, ComponentVersion, StoredApiKey, Tenant, TenantId, TenantLimits};

#[derive(sqlx::FromRow)]
struct TenantRow {
    tenant_id: Uuid,
    name: String,
    created_at: Millis,
    limits: Json<TenantLimits>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            tenant_id: r.tenant_id,
            name: r.name,
            created_at: at(r.created_at),
            limits: r.limits.0,
        }
    }
}

const TENANT_COLUMNS: &str = "tenant_id, name, created_at, limits";

fn unknown_tenant(id: TenantId) -> EngineError {
    EngineError::NotFound {
        what: "tenant",
        id: id.to_string(),
    }
}

pub(super) async fn create_tenant(db: &SqliteBackend, name: &str) -> Result<Tenant> {
    db.write("create tenant", async |conn, _| {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "INSERT INTO tenants (tenant_id, name, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(now())
        .fetch_optional(conn)
        .await
        .map_err(EngineError::storage("create tenant"))?;
        row.map(Tenant::from)
            .ok_or_else(|| EngineError::Conflict(format!("a tenant named `{name}` already exists")))
    })
    .await
}

pub(super) async fn list_tenants(db: &SqliteBackend) -> Result<Vec<Tenant>> {
    let rows: Vec<TenantRow> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
    ))
    .fetch_all(&mut *db.read("list tenants").await?)
    .await
    .map_err(EngineError::storage("list tenants"))?;
    Ok(rows.into_iter().map(Tenant::from).collect())
}

pub(super) async fn get_tenant(conn: &mut SqliteConnection, id: TenantId) -> Result<Tenant> {
    let row: Option<TenantRow> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .map_err(EngineError::storage("get tenant"))?;
    row.map(Tenant::from).ok_or_else(|| unknown_tenant(id))
}

/// Bytes the tenant keeps: inputs and results of its executions, and the
/// payloads of their frames (`length` of a blob reads its size from the
/// record header).
pub(super) async fn stored_bytes(conn: &mut SqliteConnection, tenant: TenantId) -> Result<u64> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (SELECT coalesce(sum(length(input) + coalesce(length(result), 0)), 0) \
                 FROM executions WHERE tenant_id = ?1) \
              + (SELECT coalesce(sum(length(payload)), 0) FROM frames WHERE tenant_id = ?1)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
    .map_err(EngineError::storage("measure stored bytes"))?;
    Ok(bytes.max(0) as u64)
}

pub(super) async fn set_tenant_limits(
    db: &SqliteBackend,
    tenant: TenantId,
    limits: &TenantLimits,
) -> Result<Tenant> {
    db.write("set tenant limits", async |conn, effects| {
        let done = sqlx::query("UPDATE tenants SET limits = ? WHERE tenant_id = ?")
            .bind(Json(limits))
            .bind(tenant)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("set tenant limits"))?;
        if done.rows_affected() == 0 {
            return Err(unknown_tenant(tenant));
        }
        // A loosened limit may free claimable work.
        effects.work = true;
        get_tenant(conn, tenant).await
    })
    .await
}

/// The tenant's limits and the kinds among `kinds` without a non-deprecated
/// component.
pub(super) async fn admission(
    db: &SqliteBackend,
    tenant: TenantId,
    kinds: &[&str],
) -> Result<(TenantLimits, Vec<String>)> {
    let mut conn = db.read("admission").await?;
    let limits = get_tenant(&mut conn, tenant).await?.limits;
    let mut missing = Vec::new();
    for kind in kinds {
        let runnable: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM components \
             WHERE tenant_id = ? AND kind = ? AND NOT deprecated)",
        )
        .bind(tenant)
        .bind(kind)
        .fetch_one(&mut *conn)
        .await
        .map_err(EngineError::storage("admission"))?;
        if !runnable {
            missing.push((*kind).to_owned());
        }
    }
    Ok((limits, missing))
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    key_id: Uuid,
    tenant_id: Uuid,
    name: String,
    created_at: Millis,
    revoked_at: Option<Millis>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            key_id: r.key_id,
            tenant_id: r.tenant_id,
            name: r.name,
            created_at: at(r.created_at),
            revoked_at: r.revoked_at.map(at),
        }
    }
}

const KEY_COLUMNS: &str = "key_id, tenant_id, name, created_at, revoked_at";

pub(super) async fn create_api_key(
    db: &SqliteBackend,
    tenant: TenantId,
    key_id: Uuid,
    name: &str,
    secret_sha256: &[u8],
) -> Result<ApiKey> {
    db.write("create api key", async |conn, _| {
        get_tenant(conn, tenant).await?;
        let row: KeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, created_at) \
             VALUES (?, ?, ?, ?, ?) RETURNING {KEY_COLUMNS}"
        ))
        .bind(key_id)
        .bind(tenant)
        .bind(name)
        .bind(secret_sha256)
        .bind(now())
        .fetch_one(conn)
        .await
        .map_err(EngineError::storage("create api key"))?;
        Ok(row.into())
    })
    .await
}

pub(super) async fn find_api_key(db: &SqliteBackend, key_id: Uuid) -> Result<Option<StoredApiKey>> {
    #[derive(sqlx::FromRow)]
    struct Stored {
        #[sqlx(flatten)]
        key: KeyRow,
        secret_sha256: Vec<u8>,
    }
    let row: Option<Stored> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = ?"
    ))
    .bind(key_id)
    .fetch_optional(&mut *db.read("find api key").await?)
    .await
    .map_err(EngineError::storage("find api key"))?;
    Ok(row.map(|r| StoredApiKey {
        key: r.key.into(),
        secret_sha256: r.secret_sha256,
    }))
}

/// Uses `api_keys_tenant_idx`.
pub(super) async fn list_api_keys(db: &SqliteBackend, tenant: TenantId) -> Result<Vec<ApiKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY created_at"
    ))
    .bind(tenant)
    .fetch_all(&mut *db.read("list api keys").await?)
    .await
    .map_err(EngineError::storage("list api keys"))?;
    Ok(rows.into_iter().map(ApiKey::from).collect())
}

/// Revoking twice keeps the first revocation time.
pub(super) async fn revoke_api_key(
    db: &SqliteBackend,
    tenant: TenantId,
    key_id: Uuid,
) -> Result<ApiKey> {
    db.write("revoke api key", async |conn, _| {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?) \
             WHERE key_id = ? AND tenant_id = ? RETURNING {KEY_COLUMNS}"
        ))
        .bind(now())
        .bind(key_id)
        .bind(tenant)
        .fetch_optional(conn)
        .await
        .map_err(EngineError::storage("revoke api key"))?;
        row.map(ApiKey::from).ok_or_else(|| EngineError::NotFound {
            what: "api key",
            id: key_id.to_string(),
        })
    })
    .await
}

#[derive(Clone, sqlx::FromRow)]
struct VersionRow {
    kind: String,
    version: i32,
    digest: String,
    size_bytes: i32,
    deprecated: bool,
    created_at: Millis,
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
        }
    }
}

const VERSION_COLUMNS: &str = "kind, version, digest, size_bytes, deprecated, created_at";

/// Uploading the bytes the newest version already has returns that version.
/// The single writer gives concurrent uploads of one kind consecutive versions.
pub(super) async fn put_component(
    db: &SqliteBackend,
    tenant: TenantId,
    kind: &str,
    digest: &str,
    wasm: &[u8],
) -> Result<(ComponentVersion, bool)> {
    db.write("put component", async |conn, _| {
        get_tenant(conn, tenant).await?;
        let latest: Option<VersionRow> = sqlx::query_as(&format!(
            "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? \
             ORDER BY version DESC LIMIT 1"
        ))
        .bind(tenant)
        .bind(kind)
        .fetch_optional(&mut *conn)
        .await
        .map_err(EngineError::storage("put component"))?;
        if let Some(latest) = &latest {
            if latest.digest == digest && !latest.deprecated {
                return Ok((latest.clone().into(), false));
            }
        }
        sqlx::query(
            "INSERT INTO component_blobs (tenant_id, digest, wasm) VALUES (?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(digest)
        .bind(wasm)
        .execute(&mut *conn)
        .await
        .map_err(EngineError::storage("put component"))?;
        let row: VersionRow = sqlx::query_as(&format!(
            "INSERT INTO components (tenant_id, kind, version, digest, size_bytes, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING {VERSION_COLUMNS}"
        ))
        .bind(tenant)
        .bind(kind)
        .bind(latest.map_or(1, |v| v.version + 1))
        .bind(digest)
        .bind(i32::try_from(wasm.len()).unwrap_or(i32::MAX))
        .bind(now())
        .fetch_one(conn)
        .await
        .map_err(EngineError::storage("put component"))?;
        Ok((row.into(), true))
    })
    .await
}

pub(super) async fn latest_component(
    db: &SqliteBackend,
    tenant: TenantId,
    kind: &str,
) -> Result<Option<ComponentVersion>> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? \
         AND NOT deprecated ORDER BY version DESC LIMIT 1"
    ))
    .bind(tenant)
    .bind(kind)
    .fetch_optional(&mut *db.read("latest component").await?)
    .await
    .map_err(EngineError::storage("latest component"))?;
    Ok(row.map(ComponentVersion::from))
}

pub(super) async fn component_wasm(
    db: &SqliteBackend,
    tenant: TenantId,
    digest: &str,
) -> Result<Vec<u8>> {
    sqlx::query_scalar("SELECT wasm FROM component_blobs WHERE tenant_id = ? AND digest = ?")
        .bind(tenant)
        .bind(digest)
        .fetch_optional(&mut *db.read("component wasm").await?)
        .await
        .map_err(EngineError::storage("component wasm"))?
        .ok_or_else(|| EngineError::NotFound {
            what: "component",
            id: digest.to_owned(),
        })
}

pub(super) async fn list_components(
    db: &SqliteBackend,
    tenant: TenantId,
) -> Result<Vec<ComponentVersion>> {
    let rows: Vec<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? ORDER BY kind, version"
    ))
    .bind(tenant)
    .fetch_all(&mut *db.read("list components").await?)
    .await
    .map_err(EngineError::storage("list components"))?;
    Ok(rows.into_iter().map(ComponentVersion::from).collect())
}

pub(super) async fn get_component(
    db: &SqliteBackend,
    tenant: TenantId,
    kind: &str,
    version: i32,
) -> Result<ComponentVersion> {
    let row: Option<VersionRow> = sqlx::query_as(&format!(
        "SELECT {VERSION_COLUMNS} FROM components WHERE tenant_id = ? AND kind = ? AND version = ?"
    ))
    .bind(tenant)
    .bind(kind)
    .bind(version)
    .fetch_optional(&mut *db.read("get component").await?)
    .await
    .map_err(EngineError::storage("get component"))?;
    row.map(ComponentVersion::from)
        .ok_or_else(|| version_not_found(kind, version))
}

/// Deprecated versions stay stored; new attempts run the newest version that
/// is not deprecated. Idempotent.
pub(super) async fn deprecate_component(
    db: &SqliteBackend,
    tenant: TenantId,
    kind: &str,
    version: i32,
) -> Result<ComponentVersion> {
    db.write("deprecate component", async |conn, _| {
        let row: Option<VersionRow> = sqlx::query_as(&format!(
            "UPDATE components SET deprecated = 1 \
             WHERE tenant_id = ? AND kind = ? AND version = ? RETURNING {VERSION_COLUMNS}"
        ))
        .bind(tenant)
        .bind(kind)
        .bind(version)
        .fetch_optional(conn)
        .await
        .map_err(EngineError::storage("deprecate component"))?;
        row.map(ComponentVersion::from)
            .ok_or_else(|| version_not_found(kind, version))
    })
    .await
}

fn version_not_found(kind: &str, number: i32) -> EngineError {
    EngineError::NotFound {
        what: "component version",
        id: format!("{kind}@{number}"),
    }
}
