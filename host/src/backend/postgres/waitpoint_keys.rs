//! The keys that sign waitpoint tokens (the statements are in
//! `shared/waitpoint_keys.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::rows::transaction;
use super::PgBackend;
use crate::backend::shared::waitpoint_keys::pg as shared;
use crate::backend::WaitpointKeys;
use crate::error::Result;
use crate::model::{SealedBytes, StoredWaitpointKey};

#[async_trait]
impl WaitpointKeys for PgBackend {
    async fn waitpoint_keys(&self) -> Result<Vec<StoredWaitpointKey>> {
        self.read("read waitpoint keys", async |conn| {
            shared::waitpoint_keys(conn).await
        })
        .await
    }

    async fn add_waitpoint_key(
        &self,
        key: &StoredWaitpointKey,
        retire_others_at: Option<DateTime<Utc>>,
        prune_retired_before: DateTime<Utc>,
    ) -> Result<bool> {
        // Nothing is written when the key exists already: committing then is
        // the same as rolling back.
        transaction(&self.pool, "add waitpoint key", async |tx| {
            shared::add_waitpoint_key(tx, key, retire_others_at, prune_retired_before).await
        })
        .await
    }

    async fn reseal_waitpoint_key(
        &self,
        kid: &str,
        old_key_id: &str,
        secret: &SealedBytes,
    ) -> Result<bool> {
        self.read("reseal waitpoint key", async |conn| {
            shared::reseal_waitpoint_key(conn, kid, old_key_id, secret).await
        })
        .await
    }
}
