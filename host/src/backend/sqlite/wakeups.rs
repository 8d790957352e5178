//! [`Wakeups`] on SQLite: in-process channels, fired after a write commits
//! (see `SqliteBackend::write`). Nothing outside this process writes the
//! file while it runs, so nothing is missed.

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::SqliteBackend;
use crate::backend::Wakeups;
use crate::error::Result;
use crate::model::{ExecutionId, ExecutionUpdate, TenantId};
#[async_trait]
impl Wakeups for SqliteBackend {
    async fn work_signal(&self) -> Result<watch::Receiver<u64>> {
        Ok(self.work.subscribe())
    }

    async fn revocations(&self) -> Result<broadcast::Receiver<ExecutionId>> {
        Ok(self.revoked.subscribe())
    }

    async fn updates(&self, watched: ExecutionUpdate) -> Result<broadcast::Receiver<()>> {
        Ok(self.updates.subscribe(watched))
    }

    async fn event_wakeups(&self, tenant: TenantId) -> Result<broadcast::Receiver<()>> {
        Ok(self.events.subscribe(tenant))
    }
}
