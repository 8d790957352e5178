//! Child executions: spawning into the parent's flow, waiting for them, and
//! the scanner that resumes parents a child's transaction could not.
//!
//! Resuming a parent when its last child ends is in SQL
//! (`flowfabric_wake_parents`, migration 0008), fired by the completion outbox
//! like flow resolution. Lock order: the parent's worker calls lock the parent
//! only; a child's transaction locks the child, then tries its parent with
//! SKIP LOCKED, so the two never wait on each other.

use std::time::Duration;

use sqlx::postgres::PgRow;

use super::executions::{insert_executions, FlowPlacement};
use super::flows::violated;
use super::leases::{rejection, FENCE};
use super::rows::{col, parse, transaction, Args};
use super::scanners::count_pass;
use super::suspension::record_suspension;
use super::Held;
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::shared::children::pg::check_child_spawn;
use crate::backend::shared::flows::pg::bump_graph_revision;
use crate::backend::ChildSpawn;
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::FlowId;
use crate::model::{
    ChildOutcome, ChildrenOutcome, LeaseHandle, PublicState, ResumeCondition, SpawnedChild,
    Suspension, TimeoutBehavior, ROOT_KEY,
};

crate::backend::coordination::implement_children!(PgBackend, pg);

async fn spawn_child(
    db: &PgBackend,
    lease: &LeaseHandle,
    spawn: ChildSpawn<'_>,
) -> Result<SpawnedChild> {
    let ChildSpawn { child, key, limits } = spawn;
    let pool = &db.pool;
    let op = "spawn child";
    let tenant = lease.tenant_id;
    transaction(pool, op, async |tx| {
        let sql = format!("SELECT flow_id, flow_key FROM executions WHERE {FENCE} FOR UPDATE");
        let parent: Option<(Option<FlowId>, Option<String>)> =
            sqlx::query_as_with(&sql, Args::fence(lease).done(op)?)
                .optional(&mut *tx, op)
                .await?;
        let Some((flow, parent_key)) = parent else {
            return Err(rejection(pool, lease, None).await?);
        };
        let key = &key.resolve(parent_key.as_deref(), limits.max_key_len)?;
        let flow_id = match flow {
            Some(flow_id) => flow_id,
            None => {
                let flow_id = FlowId::new();
                sqlx::query(
                    "WITH flow AS (INSERT INTO flows (tenant_id, flow_id, name) \
                         VALUES ($1, $2, 'children of ' || $3::text)) \
                     UPDATE executions SET flow_id = $2, flow_key = $4 \
                     WHERE tenant_id = $1 AND execution_id = $3",
                )
                .bind(tenant)
                .bind(flow_id)
                .bind(lease.execution_id)
                .bind(ROOT_KEY)
                .run(&mut *tx, op)
                .await?;
                flow_id
            }
        };
        // The lock this transaction's revision bump needs, taken up front:
        // a shared lock upgraded later deadlocked two members spawning into
        // one flow at once. It also keeps out cancel_flow (no child joins a
        // flow being cancelled) and makes counting the members exact.
        let cancelled: bool = sqlx::query_scalar(
            "SELECT cancelled_at IS NOT NULL FROM flows \
             WHERE tenant_id = $1 AND flow_id = $2 FOR NO KEY UPDATE",
        )
        .bind(tenant)
        .bind(flow_id)
        .optional(&mut *tx, op)
        .await?
        .ok_or_else(|| refusals::flow_not_found(flow_id))?;
        if cancelled {
            return Err(refusals::flow_cancelled(flow_id, "new children"));
        }
        if let Some(spawned) =
            check_child_spawn(tx, tenant, lease.execution_id, flow_id, key, &limits).await?
        {
            return Ok(spawned);
        }
        let max_queued = limits.max_queued;
        let placement = FlowPlacement {
            flow_id,
            keys: vec![key],
            blocked: vec![false],
            parent: Some(lease.execution_id),
        };
        let created = insert_executions(tx, tenant, &[child], max_queued, Some(&placement))
            .await
            .map_err(|e| match violated(&e) {
                // Spawned by a concurrent transaction of another member.
                Some("executions_flow_key_idx") => refusals::child_key_taken(key),
                _ => e,
            })?;
        bump_graph_revision(tx, tenant, flow_id).await?;
        Ok(SpawnedChild {
            execution_id: created[0].execution_id,
            created: true,
        })
    })
    .await
}

/// Return the children if all have ended; otherwise suspend the parent until
/// the last one does.
async fn wait_children(
    held: Held<'_>,
    timeout: Option<Duration>,
    on_timeout: TimeoutBehavior,
) -> Result<ChildrenOutcome> {
    let (tx, lease, op, suspensions) = (held.tx, held.lease, held.op, held.suspensions);
    let seq = suspensions + 1;
    // After the lock: a child ending from now on sees this transaction's
    // suspension (or skips the locked row and leaves it to the scanner).
    let rows = sqlx::query(
        "SELECT execution_id, flow_key, kind, public_state, result, \
             coalesce(last_failure->>'message', cancellation_reason) AS error \
         FROM executions WHERE tenant_id = $1 AND parent_id = $2 ORDER BY execution_id",
    )
    .bind(lease.tenant_id)
    .bind(lease.execution_id)
    .all(&mut *tx, op)
    .await?;
    let children = rows.iter().map(child).collect::<Result<Vec<_>>>()?;
    if children.iter().all(|c| c.state.is_terminal()) {
        return Ok(ChildrenOutcome::Done(children));
    }
    let suspension = Suspension::new(ResumeCondition::Children, on_timeout);
    record_suspension(tx, lease, &suspension, seq, timeout).await?;
    Ok(ChildrenOutcome::Suspended)
}

fn child(row: &PgRow) -> Result<ChildOutcome> {
    let state: PublicState = parse(&col::<String>(row, "public_state")?)?;
    Ok(ChildOutcome {
        execution_id: col(row, "execution_id")?,
        key: col(row, "flow_key")?,
        kind: col(row, "kind")?,
        result: col(row, "result")?,
        error: if state == PublicState::Completed {
            None
        } else {
            col(row, "error")?
        },
        state,
    })
}

/// Resume parents whose children have all ended but which no child's
/// transaction could resume (their row was locked at the time).
pub(super) async fn wake_waiting_parents(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    count_pass(&db.pool, WAKE_PARENTS_SQL, sweep, "wake waiting parents").await
}

const WAKE_PARENTS_SQL: &str = "\
    SELECT CAST(flowfabric_wake_parents(array_agg(w.tenant_id), array_agg(w.execution_id)) \
                AS BIGINT) \
    FROM tenants t CROSS JOIN LATERAL ( \
        SELECT e.tenant_id, e.execution_id FROM executions e \
        WHERE e.tenant_id = t.tenant_id AND e.lifecycle_phase = 'suspended' \
          AND e.blocking_reason = 'waiting_for_children' \
          AND NOT EXISTS (SELECT 1 FROM executions c \
              WHERE c.tenant_id = e.tenant_id AND c.parent_id = e.execution_id \
                AND c.lifecycle_phase <> 'terminal') \
        LIMIT $1) w \
    WHERE $2::uuid IS NULL OR t.tenant_id = $2";
