//! Child executions: spawning into the parent's flow, waiting for them, and
//! resuming the parent when the last one ends.
//!
//! As on Postgres (migration 0008), a parent waiting on children is
//! suspended with blocking reason `waiting_for_children`, and the transaction
//! that ends its last child resumes it ([`wake_parents`], called by
//! [`super::settle`]), so every way a child can end counts. With one writer a
//! parent is never locked by another transaction, so none is left for the
//! wake-parents scanner.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::SqliteConnection;

use super::executions::{create_one, Placement};
use super::flows::flow_state;
use super::record::Exec;
use super::suspension::record_suspension;
use super::time::now;
use super::Held;
use super::{Effects, Finished, SqliteBackend};
use crate::backend::refusals;
use crate::backend::shared::children::sqlite::check_child_spawn;
use crate::backend::shared::flows::sqlite::bump_graph_revision;
use crate::backend::ChildSpawn;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::FlowId;
use crate::model::LifecyclePhase;
use crate::model::{
    ChildOutcome, ChildrenOutcome, ExecutionId, LeaseHandle, PublicState, ResumeCondition,
    SpawnedChild, Suspension, TenantId, TimeoutBehavior, ROOT_KEY,
};

crate::backend::coordination::implement_children!(SqliteBackend, sqlite);

async fn spawn_child(
    db: &SqliteBackend,
    lease: &LeaseHandle,
    spawn: ChildSpawn<'_>,
) -> Result<SpawnedChild> {
    let ChildSpawn { child, key, limits } = spawn;
    db.write_held("spawn child", lease, async |held| {
        let (conn, mut parent, effects) = (held.tx.conn()?, held.row, held.effects);
        let tenant = lease.tenant_id;
        let key = &key.resolve(parent.flow_key.as_deref(), limits.max_key_len)?;
        let flow_id = match parent.flow_id {
            Some(flow_id) => flow_id,
            None => {
                let flow_id = FlowId::new();
                sqlx::query(
                    "INSERT INTO flows (tenant_id, flow_id, name, tags, created_at) \
                     VALUES (?, ?, ?, '{}', ?)",
                )
                .bind(tenant)
                .bind(flow_id)
                .bind(format!("children of {}", lease.execution_id))
                .bind(now())
                .run(&mut *conn, "spawn child")
                .await?;
                let before = parent.lease_before();
                parent.flow_id = Some(flow_id);
                parent.flow_key = Some(ROOT_KEY.into());
                parent.save(conn, Some(before), effects).await?;
                flow_id
            }
        };
        let (_, cancelled) = flow_state(conn, tenant, flow_id).await?;
        if cancelled {
            return Err(refusals::flow_cancelled(flow_id, "new children"));
        }
        if let Some(spawned) =
            check_child_spawn(conn, tenant, lease.execution_id, flow_id, key, &limits).await?
        {
            return Ok(spawned);
        }
        if let Some(limit) = limits.max_queued {
            super::executions::admit(conn, tenant, 1, limit).await?;
        }
        let placement = Placement {
            flow_id,
            key,
            blocked: false,
            parent: Some(lease.execution_id),
        };
        let created = create_one(conn, tenant, child, Some(placement), effects).await?;
        bump_graph_revision(conn, tenant, flow_id).await?;
        Ok(SpawnedChild {
            execution_id: created.execution_id,
            created: true,
        })
    })
    .await
}

/// The lease's children if all have ended; otherwise suspend the parent
/// until the last one does.
async fn wait_children(
    held: Held<'_, '_>,
    timeout: Option<Duration>,
    on_timeout: TimeoutBehavior,
) -> Result<ChildrenOutcome> {
    let (conn, lease, mut parent, effects) = (held.tx.conn()?, held.lease, held.row, held.effects);
    let children = Exec::children(conn, lease.tenant_id, lease.execution_id).await?;
    if children.iter().all(Exec::is_terminal) {
        return Ok(ChildrenOutcome::Done(
            children.iter().map(outcome).collect::<Result<_>>()?,
        ));
    }
    let suspension = Suspension::new(ResumeCondition::Children, on_timeout);
    record_suspension(conn, &mut parent, &suspension, timeout, effects).await?;
    Ok(ChildrenOutcome::Suspended)
}

fn outcome(child: &Exec) -> Result<ChildOutcome> {
    let state = child.derived_public_state();
    Ok(ChildOutcome {
        execution_id: child.execution_id,
        key: child.flow_key.clone().unwrap_or_default(),
        kind: child.kind.clone(),
        result: child.result.clone(),
        error: match state {
            PublicState::Completed => None,
            _ => child
                .last_failure
                .as_ref()
                .map(|f| f.message.clone())
                .or_else(|| child.cancellation_reason.clone()),
        },
        state,
    })
}

/// Resume the parents of `finished` executions that wait on children and
/// have none left unfinished.
pub(super) async fn wake_parents(
    conn: &mut SqliteConnection,
    finished: &[Finished],
    effects: &mut Effects,
) -> Result<()> {
    let parents: BTreeSet<(TenantId, ExecutionId)> = finished
        .iter()
        .filter_map(|f| Some((f.tenant, f.parent?)))
        .collect();
    for (tenant, id) in parents {
        let Some(mut parent) = Exec::load(conn, tenant, id).await? else {
            continue;
        };
        let waiting = parent.lifecycle_phase == LifecyclePhase::Suspended
            && parent.blocking_reason.as_deref() == Some("waiting_for_children");
        if !waiting {
            continue;
        }
        let unfinished: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM executions WHERE tenant_id = ? AND parent_id = ? \
             AND lifecycle_phase <> 'terminal')",
        )
        .bind(tenant)
        .bind(id)
        .one(&mut *conn, "wake parents")
        .await?;
        if !unfinished {
            let before = parent.lease_before();
            parent.resume(now());
            parent.save(conn, Some(before), effects).await?;
        }
    }
    Ok(())
}
