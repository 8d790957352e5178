//! Child executions spawned by a running guest: checked here like any new
//! execution (kind, input size, the tenant's backlog), placed by storage.

use super::signals::check_timeout;
use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::{ChildrenOutcome, LeaseHandle, NewExecution, SpawnedChild, TimeoutBehavior};

impl Engine {
    /// Spawn `child` as member `key` of the lease's flow. A key the parent
    /// already spawned returns that child, so a re-run guest spawns nothing twice.
    pub async fn spawn_child(
        &self,
        lease: &LeaseHandle,
        child: NewExecution,
        key: &str,
    ) -> Result<SpawnedChild> {
        self.check_name("key", key)?;
        if child.idempotency_key.is_some() {
            return Err(EngineError::invalid(
                "idempotency_key",
                "a child is keyed by its flow key; idempotency keys are not taken",
            ));
        }
        let max_queued = self.admit(lease.tenant_id, &[&child], "children").await?;
        self.backend
            .spawn_child(lease, &child, key, max_queued)
            .await
    }

    /// The lease's children once all have ended, or a suspension until then.
    pub async fn wait_children(
        &self,
        lease: &LeaseHandle,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<ChildrenOutcome> {
        check_timeout(timeout_ms)?;
        self.backend
            .wait_children(
                lease,
                timeout_ms.map(std::time::Duration::from_millis),
                on_timeout,
            )
            .await
    }
}
