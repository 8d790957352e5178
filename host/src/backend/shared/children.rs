//! Spawning a child, the part both drivers write the same way: whether the
//! key is taken and whether the caps leave room. (Locking the parent and
//! creating the child are each backend's own.)

use crate::backend::refusals;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{ExecutionId, FlowId, SpawnLimits, SpawnedChild, TenantId};

for_both_drivers! {
    /// Whether `parent` may spawn a child under `key` in `flow_id`:
    /// `Some(child)` when it spawned one under this key already (spawning
    /// is idempotent per key), `KeyTaken` when another member holds the key,
    /// `LimitExceeded` past the parent's children or the flow's members, and
    /// `None` when the child is to be made. The caller holds the flow's row
    /// locked, so the counts are exact. `executions_flow_key_idx` finds the
    /// key; the counts read at most one past each cap.
    async fn check_child_spawn(
        conn,
        tenant: TenantId,
        parent: ExecutionId,
        flow_id: FlowId,
        key: &str,
        limits: &SpawnLimits,
    ) -> Result<Option<SpawnedChild>> {
        let op = "spawn child";
        let existing: Option<(ExecutionId, Option<ExecutionId>)> = sqlx::query_as(
            "SELECT execution_id, parent_id FROM executions \
             WHERE tenant_id = $1 AND flow_id = $2 AND flow_key = $3",
        )
        .bind(tenant)
        .bind(flow_id)
        .bind(key)
        .optional(&mut *conn, op)
        .await?;
        if let Some((execution_id, spawned_by)) = existing {
            return if spawned_by == Some(parent) {
                Ok(Some(SpawnedChild {
                    execution_id,
                    created: false,
                }))
            } else {
                Err(refusals::child_key_taken(key))
            };
        }
        let (children, members): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM executions \
                     WHERE tenant_id = $1 AND parent_id = $2 LIMIT $4) c), \
                 (SELECT count(*) FROM (SELECT 1 FROM executions \
                     WHERE tenant_id = $1 AND flow_id = $3 LIMIT $5) m)",
        )
        .bind(tenant)
        .bind(parent)
        .bind(flow_id)
        .bind(i64::from(limits.max_children))
        .bind(i64::from(limits.max_flow_members))
        .one(&mut *conn, op)
        .await?;
        refusals::check_spawn(limits, children, members)?;
        Ok(None)
    }
}
