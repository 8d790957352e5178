//! The keys that sign waitpoint tokens (the statements are in
//! `shared/waitpoint_keys.rs`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqliteBackend;
use crate::backend::shared::waitpoint_keys::sqlite as shared;
use crate::backend::WaitpointKeys;
use crate::error::Result;
use crate::model::{SealedBytes, StoredWaitpointKey};

#[async_trait]
impl WaitpointKeys for SqliteBackend {
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
        self.write("add waitpoint key", async |conn, _| {
            shared::add_waitpoint_key(conn, key, retire_others_at, prune_retired_before).await
        })
        .await
    }

    async fn reseal_waitpoint_key(
        &self,
        kid: &str,
        old_key_id: &str,
        secret: &SealedBytes,
    ) -> Result<bool> {
        self.write("reseal waitpoint key", async |conn, _| {
            shared::reseal_waitpoint_key(conn, kid, old_key_id, secret).await
        })
        .await
    }
}
