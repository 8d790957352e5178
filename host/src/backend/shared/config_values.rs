//! Config value operations that are the same on both drivers, and the
//! row every read of them decodes.

use chrono::{DateTime, Utc};
use sqlx::types::Json;

use super::caps::Named;
use super::stamp::Stamp;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{SealedConfig, TenantId};

/// The columns of a config value, in [`ConfigRow`]'s order.
pub(crate) const COLUMNS: &str = "name, secret, key_id, nonce, ciphertext, updated_at";

pub(crate) type ConfigRow = (String, bool, String, Vec<u8>, Vec<u8>, Stamp);

/// A [`ConfigRow`] after its tenant's id.
type TenantConfigRow = (TenantId, String, bool, String, Vec<u8>, Vec<u8>, Stamp);

pub(crate) fn sealed(
    (name, secret, key_id, nonce, ciphertext, updated_at): ConfigRow,
) -> SealedConfig {
    SealedConfig {
        name,
        secret,
        key_id,
        nonce,
        ciphertext,
        updated_at: DateTime::<Utc>::from(updated_at),
    }
}

for_both_drivers! {
    /// Create or replace a value, refusing a new name past `max_values`
    /// (the cap holds the tenant's values still until commit).
    async fn put_config(conn, tenant: TenantId, value: &SealedConfig, max_values: u32)
        -> Result<()>
    {
        let op = "put config value";
        let key = [("name", value.name.as_str())];
        let named = Named { table: "config_values", key: &key, max: max_values, what: "config values" };
        caps::check_named_cap(conn, tenant, named, op).await?;
        sqlx::query(
            "INSERT INTO config_values \
                 (tenant_id, name, secret, key_id, nonce, ciphertext, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET secret = excluded.secret, \
                 key_id = excluded.key_id, nonce = excluded.nonce, \
                 ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&value.name)
        .bind(value.secret)
        .bind(&value.key_id)
        .bind(&value.nonce)
        .bind(&value.ciphertext)
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, op)
        .await?;
        Ok(())
    }

    /// The values among `names` that exist, in name order (probes of the
    /// config_values primary key; the names travel as one JSON array).
    async fn config_values(conn, tenant: TenantId, names: &[String]) -> Result<Vec<SealedConfig>> {
        sqlx::query_as::<_, ConfigRow>(&format!(
            "SELECT {COLUMNS} FROM config_values WHERE tenant_id = $1 AND {} ORDER BY name",
            in_json_texts("name", "$2")
        ))
        .bind(tenant)
        .bind(Json(names))
        .all_mapped(&mut *conn, "read config values", sealed)
        .await
    }

    /// The tenant's values, in name order (the config_values primary key).
    async fn list_config(conn, tenant: TenantId) -> Result<Vec<SealedConfig>> {
        sqlx::query_as::<_, ConfigRow>(&format!(
            "SELECT {COLUMNS} FROM config_values WHERE tenant_id = $1 ORDER BY name"
        ))
        .bind(tenant)
        .all_mapped(&mut *conn, "list config values", sealed)
        .await
    }

    /// Up to `limit` values sealed by a key other than `key_id`, with their
    /// tenants: a full scan, as rotation is a rare operator command.
    async fn config_sealed_by_other_keys(conn, key_id: &str, limit: u32)
        -> Result<Vec<(TenantId, SealedConfig)>>
    {
        let rows: Vec<TenantConfigRow> =
            sqlx::query_as(&format!(
                "SELECT tenant_id, {COLUMNS} FROM config_values WHERE key_id <> $1 \
                 ORDER BY tenant_id, name LIMIT $2"
            ))
            .bind(key_id)
            .bind(i64::from(limit))
            .all(&mut *conn, "find config values to reseal")
            .await?;
        Ok(rows
            .into_iter()
            .map(|(t, n, s, k, nonce, c, u)| (t, sealed((n, s, k, nonce, c, u))))
            .collect())
    }

    /// Seal `value` anew, if `old_key_id` still seals it; whether it did.
    async fn reseal_config(conn, tenant: TenantId, old_key_id: &str, value: &SealedConfig)
        -> Result<bool>
    {
        sqlx::query(
            "UPDATE config_values SET key_id = $4, nonce = $5, ciphertext = $6 \
             WHERE tenant_id = $1 AND name = $2 AND key_id = $3",
        )
        .bind(tenant)
        .bind(&value.name)
        .bind(old_key_id)
        .bind(&value.key_id)
        .bind(&value.nonce)
        .bind(&value.ciphertext)
        .changed(&mut *conn, "reseal config value")
        .await
    }

    /// Delete the value named `name`; whether there was one.
    async fn delete_config(conn, tenant: TenantId, name: &str) -> Result<bool> {
        sqlx::query("DELETE FROM config_values WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .changed(&mut *conn, "delete config value")
            .await
    }
}
