//! The keys that sign waitpoint tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::transaction;
use super::PgBackend;
use crate::backend::WaitpointKeys;
use crate::error::{EngineError, Result};
use crate::model::{SealedBytes, StoredWaitpointKey};

type Row = (
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn stored(
    (kid, key_id, nonce, ciphertext, created_at, activates_at, retires_at): Row,
) -> StoredWaitpointKey {
    StoredWaitpointKey {
        kid,
        secret: SealedBytes {
            key_id,
            nonce,
            ciphertext,
        },
        created_at,
        activates_at,
        retires_at,
    }
}

#[async_trait]
impl WaitpointKeys for PgBackend {
    async fn waitpoint_keys(&self) -> Result<Vec<StoredWaitpointKey>> {
        // A handful of rows, read whole.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at \
             FROM waitpoint_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(EngineError::storage("read waitpoint keys"))?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn add_waitpoint_key(
        &self,
        key: &StoredWaitpointKey,
        retire_others_at: Option<DateTime<Utc>>,
        prune_retired_before: DateTime<Utc>,
    ) -> Result<bool> {
        let op = "add waitpoint key";
        // Nothing is written when the key exists already: committing then is
        // the same as rolling back.
        transaction(&self.pool, op, async |tx| {
            let added = sqlx::query(
                "INSERT INTO waitpoint_keys \
                 (kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kid) DO NOTHING",
            )
            .bind(&key.kid)
            .bind(&key.secret.key_id)
            .bind(&key.secret.nonce)
            .bind(&key.secret.ciphertext)
            .bind(key.created_at)
            .bind(key.activates_at)
            .bind(key.retires_at)
            .execute(&mut *tx)
            .await
            .map_err(EngineError::storage(op))?
            .rows_affected()
                > 0;
            if !added {
                return Ok(false);
            }
            if let Some(at) = retire_others_at {
                sqlx::query(
                    "UPDATE waitpoint_keys SET retires_at = $2 \
                 WHERE kid <> $1 AND (retires_at IS NULL OR retires_at > $2)",
                )
                .bind(&key.kid)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(EngineError::storage(op))?;
            }
            sqlx::query("DELETE FROM waitpoint_keys WHERE retires_at < $1")
                .bind(prune_retired_before)
                .execute(&mut *tx)
                .await
                .map_err(EngineError::storage(op))?;
            Ok(true)
        })
        .await
    }

    async fn reseal_waitpoint_key(
        &self,
        kid: &str,
        old_key_id: &str,
        secret: &SealedBytes,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE waitpoint_keys SET sealed_by = $3, nonce = $4, ciphertext = $5 \
             WHERE kid = $1 AND sealed_by = $2",
        )
        .bind(kid)
        .bind(old_key_id)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .execute(&self.pool)
        .await
        .map_err(EngineError::storage("reseal waitpoint key"))?;
        Ok(done.rows_affected() > 0)
    }
}
