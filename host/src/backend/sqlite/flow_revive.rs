//! Reviving the flow members a failed member's end skipped, when that
//! member is replayed with `revive_dependents` (see [`crate::model::Replay`]).
//!
//! The same rounds as on Postgres, in the replay's transaction: the failed
//! edges out of this round's members re-open, each dependent's join is
//! recounted from its edges, and a skipped dependent whose join is pending
//! again comes back to wait on it; the members that came back are the next
//! round. One writer: nothing moves in between.

use sqlx::SqliteConnection;

use super::record::Exec;
use super::time::now;
use super::Effects;
use crate::backend::refusals;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{
    AttemptPhase, Eligibility, ExecutionId, LifecyclePhase, TenantId, TerminalOutcome,
};

const OP: &str = "revive flow dependents";

/// Refuse an execution outside any flow, or in a cancelled one.
pub(super) async fn check_revivable(conn: &mut SqliteConnection, row: &Exec) -> Result<()> {
    let Some(flow) = row.flow_id else {
        return Err(refusals::not_a_flow_member(row.execution_id));
    };
    // Primary key of flows.
    let cancelled: bool = sqlx::query_scalar(
        "SELECT cancelled_at IS NOT NULL FROM flows WHERE tenant_id = ? AND flow_id = ?",
    )
    .bind(row.tenant_id)
    .bind(flow)
    .one(&mut *conn, OP)
    .await?;
    if cancelled {
        return Err(refusals::flow_cancelled(flow, "revived members"));
    }
    Ok(())
}

/// Bring back, generation by generation, what `root`'s failure skipped.
pub(super) async fn revive_dependents(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    root: ExecutionId,
    effects: &mut Effects,
) -> Result<Vec<ExecutionId>> {
    let mut revived = Vec::new();
    let mut round = vec![root];
    while !round.is_empty() {
        let mut downstreams = Vec::new();
        for upstream in &round {
            downstreams.extend(reopen_edges(conn, tenant, *upstream).await?);
        }
        downstreams.sort();
        downstreams.dedup();
        let mut next = Vec::new();
        for downstream in downstreams {
            let state = recount_join(conn, tenant, downstream).await?;
            if state == "pending" && revive(conn, tenant, downstream, effects).await? {
                next.push(downstream);
            }
        }
        revived.extend_from_slice(&next);
        round = next;
    }
    Ok(revived)
}

/// Re-open the failed edges out of `upstream` into dependents that are
/// skipped or still waiting, whose joins are not yet satisfied; their
/// dependents.
async fn reopen_edges(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    upstream: ExecutionId,
) -> Result<Vec<ExecutionId>> {
    // Primary keys of flow_edges (by upstream), flow_groups and executions.
    sqlx::query_scalar(
        "UPDATE flow_edges SET state = 'pending' \
         WHERE tenant_id = ?1 AND upstream_id = ?2 AND state = 'unsatisfied' \
           AND EXISTS (SELECT 1 FROM flow_groups g \
               WHERE g.tenant_id = ?1 AND g.downstream_id = flow_edges.downstream_id \
                 AND g.state IN ('pending', 'impossible')) \
           AND EXISTS (SELECT 1 FROM executions d \
               WHERE d.tenant_id = ?1 AND d.execution_id = flow_edges.downstream_id \
                 AND (d.terminal_outcome = 'skipped' \
                      OR (d.lifecycle_phase = 'runnable' \
                          AND d.eligibility_state = 'blocked_by_dependencies'))) \
         RETURNING downstream_id",
    )
    .bind(tenant)
    .bind(upstream)
    .all(&mut *conn, OP)
    .await
}

/// Recount a dependent's join from its edges; the state it is in now.
async fn recount_join(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    downstream: ExecutionId,
) -> Result<String> {
    // flow_edges_downstream_idx for the counts, the group's primary key.
    sqlx::query_scalar(
        "UPDATE flow_groups AS g SET succeeded = c.ok, unsatisfied = c.bad, \
             state = CASE WHEN c.ok >= coalesce(g.k, g.total) THEN 'satisfied' \
                          WHEN g.total - c.bad < coalesce(g.k, g.total) THEN 'impossible' \
                          ELSE 'pending' END \
         FROM (SELECT count(*) FILTER (WHERE state = 'satisfied') AS ok, \
                      count(*) FILTER (WHERE state = 'unsatisfied') AS bad \
               FROM flow_edges WHERE tenant_id = ?1 AND downstream_id = ?2) AS c \
         WHERE g.tenant_id = ?1 AND g.downstream_id = ?2 \
         RETURNING state",
    )
    .bind(tenant)
    .bind(downstream)
    .one(&mut *conn, OP)
    .await
}

/// A skipped dependent waits on its join again, with a fresh deadline.
/// Whether it came back. (A recount cannot find a re-opened join satisfied:
/// the edge that re-opened it is pending, and the others could not meet it
/// when it became impossible.)
async fn revive(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
    effects: &mut Effects,
) -> Result<bool> {
    let mut row = Exec::get(conn, tenant, id).await?;
    if row.terminal_outcome != Some(TerminalOutcome::Skipped) {
        return Ok(false);
    }
    let now = now();
    let before = row.lease_before();
    row.reopen(now);
    row.lifecycle_phase = LifecyclePhase::Runnable;
    row.eligibility_state = Eligibility::BlockedByDependencies;
    row.attempt_state = if row.attempt_index == 0 {
        AttemptPhase::PendingFirstAttempt
    } else {
        AttemptPhase::PendingReplayAttempt
    };
    row.eligible_at = now;
    row.save(conn, Some(before), effects).await?;
    Ok(true)
}
