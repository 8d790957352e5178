//! The keys that sign waitpoint tokens: every statement is the same on both
//! drivers.

use chrono::{DateTime, Utc};

use super::stamp::Stamp;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{SealedBytes, StoredWaitpointKey};

type KeyRow = (
    String,
    String,
    Vec<u8>,
    Vec<u8>,
    Stamp,
    Stamp,
    Option<Stamp>,
);

fn stored(
    (kid, key_id, nonce, ciphertext, created_at, activates_at, retires_at): KeyRow,
) -> StoredWaitpointKey {
    StoredWaitpointKey {
        kid,
        secret: SealedBytes {
            key_id,
            nonce,
            ciphertext,
        },
        created_at: created_at.into(),
        activates_at: activates_at.into(),
        retires_at: retires_at.map(Into::into),
    }
}

for_both_drivers! {
    /// Every key, oldest first: a handful of rows, read whole.
    async fn waitpoint_keys(conn) -> Result<Vec<StoredWaitpointKey>> {
        sqlx::query_as::<_, KeyRow>(
            "SELECT kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at \
             FROM waitpoint_keys ORDER BY created_at, kid",
        )
        .all_mapped(&mut *conn, "read waitpoint keys", stored)
        .await
    }

    /// Add `key` unless one with its id exists (then nothing is written:
    /// `false`); retire the others at `retire_others_at` (those not retiring
    /// sooner), and delete those retired before `prune_retired_before`. Run
    /// it in a transaction.
    async fn add_waitpoint_key(
        conn,
        key: &StoredWaitpointKey,
        retire_others_at: Option<DateTime<Utc>>,
        prune_retired_before: DateTime<Utc>,
    ) -> Result<bool> {
        let op = "add waitpoint key";
        let added = sqlx::query(
            "INSERT INTO waitpoint_keys \
                 (kid, sealed_by, nonce, ciphertext, created_at, activates_at, retires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (kid) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.secret.key_id)
        .bind(&key.secret.nonce)
        .bind(&key.secret.ciphertext)
        .bind(Stamp(key.created_at))
        .bind(Stamp(key.activates_at))
        .bind(key.retires_at.map(Stamp))
        .run(&mut *conn, op)
        .await?
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
            .bind(Stamp(at))
            .run(&mut *conn, op)
            .await?;
        }
        sqlx::query("DELETE FROM waitpoint_keys WHERE retires_at < $1")
            .bind(Stamp(prune_retired_before))
            .run(&mut *conn, op)
            .await?;
        Ok(true)
    }

    /// Seal key `kid`'s secret anew, if `old_key_id` still seals it; whether
    /// it did.
    async fn reseal_waitpoint_key(conn, kid: &str, old_key_id: &str, secret: &SealedBytes)
        -> Result<bool>
    {
        sqlx::query(
            "UPDATE waitpoint_keys SET sealed_by = $3, nonce = $4, ciphertext = $5 \
             WHERE kid = $1 AND sealed_by = $2",
        )
        .bind(kid)
        .bind(old_key_id)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .changed(&mut *conn, "reseal waitpoint key")
        .await
    }
}
