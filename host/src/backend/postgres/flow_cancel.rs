//! Cancelling flows: the operator's cancel, and the scanner pass that
//! finishes cancels a locked row or a dead process left unfinished.

use super::Connections;
use super::PgBackend;

use crate::backend::{refusals, FlowCancel};
use crate::backend::{Fetch, Run, Sweep};
use crate::error::Result;
use crate::model::{ExecutionId, TenantId};

/// Close the flow to new members, then cancel the members `policy` names one
/// statement each, newest first (so downstreams end `cancelled`, not
/// `skipped`). One statement per member keeps each cancel to the usual lock
/// order (the member, then its downstream groups); a single statement over
/// many members could deadlock with workers finishing them.
pub(super) async fn cancel_flow(
    db: &PgBackend,
    tenant: TenantId,
    cancel: FlowCancel<'_>,
) -> Result<u64> {
    let pool = &db.pool;
    let (flow_id, reason, phases) = (cancel.flow, cancel.reason, cancel.policy.phases());
    // `cancel_phases` records what is left to do, for the scanner to finish
    // if this process dies before the loop below has (migration 0018).
    let members: Option<Vec<ExecutionId>> = sqlx::query_scalar(
        "WITH f AS ( \
             UPDATE flows SET cancelled_at = coalesce(cancelled_at, now()), \
                 cancellation_reason = coalesce(cancellation_reason, $3), \
                 cancel_phases = CASE WHEN cardinality($4::text[]) > 0 THEN $4::text[] \
                                      ELSE cancel_phases END \
             WHERE tenant_id = $1 AND flow_id = $2 RETURNING flow_id) \
         SELECT coalesce(array_agg(e.execution_id ORDER BY e.execution_id DESC) \
                    FILTER (WHERE e.lifecycle_phase = ANY($4)), '{}') \
         FROM f LEFT JOIN executions e ON e.tenant_id = $1 AND e.flow_id = f.flow_id \
         GROUP BY f.flow_id",
    )
    .bind(tenant)
    .bind(flow_id)
    .bind(reason)
    .bind(phases)
    .optional(pool, "cancel flow")
    .await?;
    let members = members.ok_or_else(|| refusals::flow_not_found(flow_id))?;
    let mut cancelled = 0;
    for id in members {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM flowfabric_cancel(ARRAY[$1]::uuid[], ARRAY[$2]::uuid[], $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(reason)
        .one(pool, "cancel flow member")
        .await?;
        cancelled += n as u64;
    }
    sqlx::query(&format!(
        "UPDATE flows f SET cancel_phases = NULL \
         WHERE f.tenant_id = $1 AND f.flow_id = $2 AND f.cancel_phases IS NOT NULL \
           AND {NOTHING_LEFT_TO_CANCEL}"
    ))
    .bind(tenant)
    .bind(flow_id)
    .run(pool, "cancel flow")
    .await?;
    Ok(cancelled)
}

/// A cancelled flow (`f`) has no member left in a phase its cancel ends.
const NOTHING_LEFT_TO_CANCEL: &str = "NOT EXISTS (SELECT 1 FROM executions e \
    WHERE e.tenant_id = f.tenant_id AND e.flow_id = f.flow_id \
      AND e.lifecycle_phase = ANY(f.cancel_phases))";

/// Finish cancels of flows whose process died mid-way (`cancel_phases`),
/// passing over members another transaction holds.
async fn finish_cancelled_flows(pool: &Connections, sweep: Sweep) -> Result<u64> {
    let cancelled = cancel_skip_locked(
        pool,
        "FROM flows f \
         JOIN executions e ON e.tenant_id = f.tenant_id AND e.flow_id = f.flow_id \
         WHERE f.cancel_phases IS NOT NULL AND e.lifecycle_phase = ANY(f.cancel_phases)",
        sweep,
        "flow cancelled",
        "finish cancelled flows",
    )
    .await?;
    sqlx::query(&format!(
        "UPDATE flows f SET cancel_phases = NULL \
         WHERE (f.tenant_id, f.flow_id) IN ( \
             SELECT tenant_id, flow_id FROM flows WHERE cancel_phases IS NOT NULL \
               AND ($2::uuid IS NULL OR tenant_id = $2) \
             ORDER BY tenant_id, flow_id LIMIT $1 FOR UPDATE SKIP LOCKED) \
           AND {NOTHING_LEFT_TO_CANCEL}"
    ))
    .bind(i64::from(sweep.limit))
    .bind(sweep.tenant)
    .run(pool, "finish cancelled flows")
    .await?;
    Ok(cancelled)
}

/// Cancel up to `sweep.limit` executions (`e`) that `from_where` picks (of
/// `sweep.tenant` only, when it names one), passing over rows another
/// transaction holds, in one statement; returns how many ended.
async fn cancel_skip_locked(
    pool: &Connections,
    from_where: &str,
    sweep: Sweep,
    reason: &str,
    op: &'static str,
) -> Result<u64> {
    let cancelled: i64 = sqlx::query_scalar(&format!(
        "WITH c AS ( \
             SELECT e.tenant_id, e.execution_id {from_where} \
               AND ($3::uuid IS NULL OR e.tenant_id = $3) \
             ORDER BY e.tenant_id, e.execution_id LIMIT $1 \
             FOR UPDATE OF e SKIP LOCKED) \
         SELECT count(*) FROM flowfabric_cancel( \
             (SELECT array_agg(tenant_id ORDER BY tenant_id, execution_id) FROM c), \
             (SELECT array_agg(execution_id ORDER BY tenant_id, execution_id) FROM c), \
             $2)"
    ))
    .bind(i64::from(sweep.limit))
    .bind(reason)
    .bind(sweep.tenant)
    .one(pool, op)
    .await?;
    Ok(cancelled.max(0) as u64)
}

/// Sibling-cancel scanner: finish `cancel_remaining` for groups whose
/// upstreams were locked when the join was satisfied, and flow cancels a
/// process did not finish (see [`cancel_flow`]). Nothing here waits on a
/// lock, so it cannot deadlock with the transactions it is cleaning up after.
pub(super) async fn cancel_pending_siblings(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let pool = &db.pool;
    let cancelled = cancel_skip_locked(
        pool,
        "FROM flow_groups g \
         JOIN flow_edges ed ON ed.tenant_id = g.tenant_id AND ed.downstream_id = g.downstream_id \
         JOIN executions e ON e.tenant_id = ed.tenant_id AND e.execution_id = ed.upstream_id \
         WHERE g.cancel_pending AND ed.state = 'pending' AND e.lifecycle_phase <> 'terminal'",
        sweep,
        "flow: a sibling satisfied the join",
        "cancel pending siblings",
    )
    .await?;
    sqlx::query(
        "UPDATE flow_groups SET cancel_pending = false \
         WHERE (tenant_id, downstream_id) IN ( \
             SELECT g.tenant_id, g.downstream_id FROM flow_groups g \
             WHERE g.cancel_pending AND ($1::uuid IS NULL OR g.tenant_id = $1) AND NOT EXISTS ( \
                 SELECT 1 FROM flow_edges ed JOIN executions u \
                     ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
                 WHERE ed.tenant_id = g.tenant_id AND ed.downstream_id = g.downstream_id \
                   AND ed.state = 'pending' AND u.lifecycle_phase <> 'terminal') \
             ORDER BY g.tenant_id, g.downstream_id \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(sweep.tenant)
    .run(pool, "clear cancel-pending groups")
    .await?;
    Ok(cancelled + finish_cancelled_flows(pool, sweep).await?)
}
