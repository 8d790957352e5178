//! The keys that sign waitpoint tokens.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::time::{at, millis_of, Millis};
use super::SqliteBackend;
use crate::backend::WaitpointKeys;
use crate::error::{EngineError, Result};
use crate::model::{SealedBytes, StoredWaitpointKey};

type Row = (
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    Millis,
    Millis,
    Option<Millis>,
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
        created_at: at(created_at),
        activates_at: at(activates_at),
        retires_at: retires_at.map(at),
    }
}

#[async_trait]
impl WaitpointKeys for SqliteBackend {
    async fn waitpoint_keys(&self) -> Result<Vec<StoredWaitpointKey>> {
        let op = "read waitpoint keys";
        // A handful of rows, read whole.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at \
             FROM waitpoint_keys ORDER BY created_at, kid",
        )
        .fetch_all(self.reader())
        .await
        .map_err(EngineError::storage(op))?;
        Ok(rows.into_iter().map(stored).collect())
    }

    async fn add_waitpoint_key(
        &self,
        key: &StoredWaitpointKey,
        retire_others_at: Option<DateTime<Utc>>,
        prune_retired_before: DateTime<Utc>,
    ) -> Result<bool> {
        let op = "add waitpoint key";
        self.write(op, async |conn, _| {
            let added = sqlx::query(
                "INSERT INTO waitpoint_keys \
                     (kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kid) DO NOTHING",
            )
            .bind(&key.kid)
            .bind(&key.secret.key_id)
            .bind(&key.secret.nonce)
            .bind(&key.secret.ciphertext)
            .bind(millis_of(key.created_at))
            .bind(millis_of(key.activates_at))
            .bind(key.retires_at.map(millis_of))
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage(op))?
            .rows_affected()
                > 0;
            if !added {
                return Ok(false);
            }
            if let Some(retire_at) = retire_others_at {
                sqlx::query(
                    "UPDATE waitpoint_keys SET retires_at = ?2 \
                     WHERE kid <> ?1 AND (retires_at IS NULL OR retires_at > ?2)",
                )
                .bind(&key.kid)
                .bind(millis_of(retire_at))
                .execute(&mut *conn)
                .await
                .map_err(EngineError::storage(op))?;
            }
            sqlx::query("DELETE FROM waitpoint_keys WHERE retires_at < ?")
                .bind(millis_of(prune_retired_before))
                .execute(&mut *conn)
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
        let op = "reseal waitpoint key";
        self.write(op, async |conn, _| {
            let done = sqlx::query(
                "UPDATE waitpoint_keys SET sealed_by = ?3, nonce = ?4, ciphertext = ?5 \
                 WHERE kid = ?1 AND sealed_by = ?2",
            )
            .bind(kid)
            .bind(old_key_id)
            .bind(&secret.key_id)
            .bind(&secret.nonce)
            .bind(&secret.ciphertext)
            .execute(conn)
            .await
            .map_err(EngineError::storage(op))?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }
}
