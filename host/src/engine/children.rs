//! Child executions spawned by a running guest: checked here like any new
//! execution (kind, input size, the tenant's backlog), placed by storage.

use super::signals::check_timeout;
use super::Engine;
use crate::backend::ChildSpawn;
use crate::error::{EngineError, Result};
use crate::model::{
    ChildKey, ChildrenOutcome, LeaseHandle, NewExecution, SpawnLimits, SpawnedChild,
    TimeoutBehavior,
};

impl Engine {
    /// Spawn `child` as member `key` of the lease's flow. A key the parent
    /// already spawned returns that child, so a re-run guest spawns nothing twice.
    pub async fn spawn_child<'k>(
        &self,
        lease: &LeaseHandle,
        child: NewExecution,
        key: impl Into<ChildKey<'k>>,
    ) -> Result<SpawnedChild> {
        let key = key.into();
        if let ChildKey::Named(key) = key {
            self.check_name("key", key)?;
        }
        if child.idempotency_key.is_some() {
            return Err(EngineError::invalid(
                "idempotency_key",
                "a child is keyed by its flow key; idempotency keys are not taken",
            ));
        }
        let max_queued = self.admit(lease.tenant_id, &[&child], "children").await?;
        let caps = self.caps(lease.tenant_id).await?;
        let limits = SpawnLimits {
            max_queued,
            max_children: caps.children_per_execution,
            max_flow_members: caps.flow_members,
            max_key_len: self.limits.max_name_len,
        };
        let spawn = ChildSpawn {
            child: &child,
            key,
            limits,
        };
        self.backend.spawn_child(lease, spawn).await
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
