//! Reviving the flow members a failed member's end skipped, when that
//! member is replayed with `revive_dependents` (see [`crate::model::Replay`]).
//!
//! Runs in the replay's transaction, a round per generation: the failed
//! edges out of this round's members re-open, each dependent's join is
//! recounted from its edges (so upstreams that ended while the dependent
//! was skipped count too), and a skipped dependent whose join is pending
//! again comes back to wait on it; the members that came back are the next
//! round. Join groups are locked in key order, as `flowfabric_resolve`
//! locks them, so a resolution running at the same time cannot deadlock
//! with a revival and cannot be counted twice: it either committed its edge
//! before the recount reads it (and, finding the group not pending, left
//! the counts alone) or adds its edge to the recount after.

use sqlx::PgConnection;

use crate::backend::refusals;
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, FlowId, TenantId};

const OP: &str = "revive flow dependents";

/// The execution's flow, refusing an execution outside any flow, or in a
/// cancelled one. Locks the execution's row for the replay.
pub(super) async fn check_revivable(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ExecutionId,
) -> Result<()> {
    // Primary keys of executions and flows.
    let member: Option<(Option<FlowId>, bool)> = sqlx::query_as(
        "SELECT e.flow_id, f.cancelled_at IS NOT NULL FROM executions e \
         LEFT JOIN flows f ON f.tenant_id = e.tenant_id AND f.flow_id = e.flow_id \
         WHERE e.tenant_id = $1 AND e.execution_id = $2 FOR UPDATE OF e",
    )
    .bind(tenant)
    .bind(id)
    .optional(&mut *conn, OP)
    .await?;
    match member {
        None => Err(EngineError::not_found("execution", id)),
        Some((None, _)) => Err(refusals::not_a_flow_member(id)),
        Some((Some(flow), true)) => Err(refusals::flow_cancelled(flow, "revived members")),
        Some((Some(_), false)) => Ok(()),
    }
}

/// Bring back, generation by generation, what `root`'s failure skipped.
pub(super) async fn revive_dependents(
    conn: &mut PgConnection,
    tenant: TenantId,
    root: ExecutionId,
) -> Result<Vec<ExecutionId>> {
    let mut revived = Vec::new();
    let mut round = vec![root];
    while !round.is_empty() {
        let downstreams = reopen_edges(conn, tenant, &round).await?;
        if downstreams.is_empty() {
            break;
        }
        let (ids, states) = recount_joins(conn, tenant, &downstreams).await?;
        round = revive_skipped(conn, tenant, &ids, &states).await?;
        revived.extend_from_slice(&round);
    }
    Ok(revived)
}

/// Re-open the failed edges out of `upstreams` into dependents that are
/// skipped or still waiting (a dependent that ran, or was cancelled, keeps
/// its history); their dependents, with their join groups locked.
async fn reopen_edges(
    conn: &mut PgConnection,
    tenant: TenantId,
    upstreams: &[ExecutionId],
) -> Result<Vec<ExecutionId>> {
    // Primary key of flow_edges by (tenant, upstream); groups by theirs.
    let locked: Vec<ExecutionId> = sqlx::query_scalar(
        "SELECT g.downstream_id FROM flow_groups g \
         WHERE g.tenant_id = $1 AND g.state IN ('pending', 'impossible') \
           AND g.downstream_id IN (SELECT ed.downstream_id FROM flow_edges ed \
               WHERE ed.tenant_id = $1 AND ed.upstream_id = ANY($2) \
                 AND ed.state = 'unsatisfied') \
         ORDER BY g.downstream_id FOR UPDATE OF g",
    )
    .bind(tenant)
    .bind(upstreams)
    .all(&mut *conn, OP)
    .await?;
    if locked.is_empty() {
        return Ok(locked);
    }
    let mut reopened: Vec<ExecutionId> = sqlx::query_scalar(
        "UPDATE flow_edges ed SET state = 'pending' FROM executions d \
         WHERE ed.tenant_id = $1 AND ed.upstream_id = ANY($2) AND ed.state = 'unsatisfied' \
           AND ed.downstream_id = ANY($3) \
           AND d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id \
           AND (d.terminal_outcome = 'skipped' \
                OR (d.lifecycle_phase = 'runnable' \
                    AND d.eligibility_state = 'blocked_by_dependencies')) \
         RETURNING ed.downstream_id",
    )
    .bind(tenant)
    .bind(upstreams)
    .bind(&locked)
    .all(&mut *conn, OP)
    .await?;
    reopened.sort();
    reopened.dedup();
    Ok(reopened)
}

/// Recount each dependent's join from its edges; the state each is in now.
async fn recount_joins(
    conn: &mut PgConnection,
    tenant: TenantId,
    downstreams: &[ExecutionId],
) -> Result<(Vec<ExecutionId>, Vec<String>)> {
    // flow_edges_downstream_idx for the counts, the groups' primary key.
    let rows: Vec<(ExecutionId, String)> = sqlx::query_as(
        "UPDATE flow_groups g SET succeeded = c.ok, unsatisfied = c.bad, \
             state = CASE WHEN c.ok >= coalesce(g.k, g.total) THEN 'satisfied' \
                          WHEN g.total - c.bad < coalesce(g.k, g.total) THEN 'impossible' \
                          ELSE 'pending' END \
         FROM (SELECT downstream_id, \
                      count(*) FILTER (WHERE state = 'satisfied')::int AS ok, \
                      count(*) FILTER (WHERE state = 'unsatisfied')::int AS bad \
               FROM flow_edges WHERE tenant_id = $1 AND downstream_id = ANY($2) \
               GROUP BY downstream_id) c \
         WHERE g.tenant_id = $1 AND g.downstream_id = c.downstream_id \
         RETURNING g.downstream_id, g.state",
    )
    .bind(tenant)
    .bind(downstreams)
    .all(&mut *conn, OP)
    .await?;
    Ok(rows.into_iter().unzip())
}

/// Skipped dependents whose join is pending again wait on it again, with a
/// fresh deadline; the ones that came back. (A recount cannot find such a
/// join satisfied: the edge that re-opened it is pending, and the others
/// could not meet it when it became impossible.)
async fn revive_skipped(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[ExecutionId],
    states: &[String],
) -> Result<Vec<ExecutionId>> {
    let mut revived: Vec<ExecutionId> = sqlx::query_scalar(
        r#"
UPDATE executions e
SET lifecycle_phase = 'runnable', ownership_state = 'unowned',
    terminal_outcome = NULL, finished_at = NULL,
    attempt_state = CASE WHEN e.attempt_index = 0 THEN 'pending_first_attempt'
                         ELSE 'pending_replay_attempt' END,
    eligibility_state = 'blocked_by_dependencies',
    blocking_reason = 'waiting_for_dependencies',
    eligible_at = now(),
    deadline_at = now()
        + least((e.policy -> 'timeouts' ->> 'execution_deadline_ms')::numeric, 31622400000)::bigint
            * interval '1 millisecond',
    updated_at = now()
FROM unnest($2::uuid[], $3::text[]) AS s(execution_id, state)
WHERE e.tenant_id = $1 AND e.execution_id = s.execution_id
  AND e.terminal_outcome = 'skipped' AND s.state = 'pending'
RETURNING e.execution_id
"#,
    )
    .bind(tenant)
    .bind(ids)
    .bind(states)
    .all(&mut *conn, OP)
    .await?;
    revived.sort();
    Ok(revived)
}
