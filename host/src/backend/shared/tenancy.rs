//! API key statements that are the same on both drivers, the row every read
//! of a key decodes, and what a tenant stores. (Tenants themselves are
//! stored differently: Postgres keeps each limit in a column of its own,
//! SQLite the limits as one JSON document.)

use chrono::Utc;

use super::stamp::Stamp;
use crate::backend::NewApiKey;
use crate::backend::{Fetch, Op};
use crate::error::{EngineError, Result};
use crate::model::{ApiKey, ApiKeyId, StoredApiKey, TenantId, STORED_RECORD_BYTES};

/// The columns of a key, as [`KeyRow`] reads them (never its secret's hash).
pub(crate) const KEY_COLUMNS: &str = "key_id, tenant_id, name, created_at, revoked_at";

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    key_id: ApiKeyId,
    tenant_id: TenantId,
    name: String,
    created_at: Stamp,
    revoked_at: Option<Stamp>,
}

impl From<KeyRow> for ApiKey {
    fn from(r: KeyRow) -> Self {
        ApiKey {
            key_id: r.key_id,
            tenant_id: r.tenant_id,
            name: r.name,
            created_at: r.created_at.into(),
            revoked_at: r.revoked_at.map(Into::into),
        }
    }
}

#[derive(sqlx::FromRow)]
struct StoredKeyRow {
    #[sqlx(flatten)]
    key: KeyRow,
    secret_sha256: Vec<u8>,
}

for_both_drivers! {
    /// Bytes the tenant keeps: inputs and results of its executions, the
    /// payloads of their frames and signals, their steps, and its
    /// components' bytes.
    /// `octet_length` reads a stored value's length from its header
    /// (Postgres) or record header (SQLite), without fetching it. Each part
    /// reads off an index that leads with the tenant (`component_blobs`:
    /// its primary key).
    async fn stored_bytes(conn, tenant: TenantId) -> Result<u64> {
        // $2 is what each record counts besides its payload
        // (STORED_RECORD_BYTES).
        let bytes: i64 = sqlx::query_scalar(
            "SELECT CAST((SELECT coalesce(sum(octet_length(input) \
                              + coalesce(octet_length(result), 0) + $2), 0) \
                          FROM executions WHERE tenant_id = $1) \
                       + (SELECT count(*) * $2 FROM flows WHERE tenant_id = $1) \
                       + (SELECT coalesce(sum(octet_length(payload) + $2), 0) \
                          FROM frames WHERE tenant_id = $1) \
                       + (SELECT coalesce(sum(size + $2), 0) FROM steps WHERE tenant_id = $1) \
                       + (SELECT coalesce(sum(octet_length(payload) + $2), 0) \
                          FROM signals WHERE tenant_id = $1) \
                       + (SELECT coalesce(sum(octet_length(wasm)), 0) \
                          FROM component_blobs WHERE tenant_id = $1) \
                     AS BIGINT)",
        )
        .bind(tenant)
        .bind(STORED_RECORD_BYTES as i64)
        .one(&mut *conn, "measure stored bytes")
        .await?;
        Ok(bytes.max(0) as u64)
    }

    /// Store a key the engine minted (only its secret's hash).
    async fn create_api_key(conn, tenant: TenantId, key: NewApiKey<'_>) -> Result<ApiKey> {
        let row: KeyRow = sqlx::query_as(&format!(
            "INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {KEY_COLUMNS}"
        ))
        .bind(key.id)
        .bind(tenant)
        .bind(key.name)
        .bind(key.secret_sha256)
        .bind(Stamp(Utc::now()))
        .one(&mut *conn, Op::for_tenant("create api key", tenant))
        .await?;
        Ok(row.into())
    }

    /// Revoke the tenant's key; revoking twice keeps the first revocation
    /// time.
    async fn revoke_api_key(conn, tenant: TenantId, key_id: ApiKeyId) -> Result<ApiKey> {
        let row: Option<KeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, $3) \
             WHERE key_id = $1 AND tenant_id = $2 RETURNING {KEY_COLUMNS}"
        ))
        .bind(key_id)
        .bind(tenant)
        .bind(Stamp(Utc::now()))
        .optional(&mut *conn, "revoke api key")
        .await?;
        row.map(ApiKey::from).ok_or_else(|| EngineError::not_found("api key", key_id))
    }

    /// The key with this id, revoked or not, with its secret's hash (one
    /// probe of the api_keys primary key).
    async fn find_api_key(conn, key_id: ApiKeyId) -> Result<Option<StoredApiKey>> {
        let row: Option<StoredKeyRow> = sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS}, secret_sha256 FROM api_keys WHERE key_id = $1"
        ))
        .bind(key_id)
        .optional(&mut *conn, "find api key")
        .await?;
        Ok(row.map(|r| StoredApiKey {
            key: r.key.into(),
            secret_sha256: r.secret_sha256,
        }))
    }

    /// The tenant's keys, oldest first (off `api_keys_tenant_idx`).
    async fn list_api_keys(conn, tenant: TenantId) -> Result<Vec<ApiKey>> {
        sqlx::query_as::<_, KeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY created_at"
        ))
        .bind(tenant)
        .all_mapped(&mut *conn, "list api keys", ApiKey::from)
        .await
    }
}
