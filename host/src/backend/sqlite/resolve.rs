//! Flow edge resolution: what follows when a member ends.
//!
//! The Postgres schema does this in a trigger on the completion outbox
//! (`flowfabric_resolve`, migration 0006). Here [`resolve`] runs from
//! [`super::settle`], in the transaction that ended the upstream, before it
//! commits: satisfied downstreams are released (with any passed result),
//! impossible ones skipped, and a satisfied `cancel_remaining` join cancels
//! its unfinished upstreams at once (one writer: no row is ever locked).

use std::collections::BTreeMap;

use sqlx::SqliteConnection;

use super::executions::cancel_row;
use super::record::Exec;
use super::time::now;
use super::{Effects, Finished};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{AttemptPhase, TerminalOutcome};
use crate::model::{Eligibility, LifecyclePhase};
use crate::model::{ExecutionId, TenantId};

const SIBLING_CANCELLED: &str = "flow: a sibling satisfied the join";

#[derive(sqlx::FromRow)]
struct Group {
    k: Option<i32>,
    on_satisfied: String,
    total: i32,
    succeeded: i32,
    unsatisfied: i32,
}

/// Resolve the edges out of executions that just ended, and what follows:
/// satisfied downstreams become runnable (taking an upstream's result as
/// input when an edge says so), impossible ones are skipped, satisfied
/// `cancel_remaining` joins cancel their unfinished upstreams. Skips and
/// cancels end executions too; they land in `effects.finished`, for the
/// caller's loop ([`super::settle`]): a cascade is a loop, not a recursion.
pub(super) async fn resolve(
    conn: &mut SqliteConnection,
    finished: &[Finished],
    effects: &mut Effects,
) -> Result<()> {
    // Per downstream: (succeeded, unsatisfied) edges resolved now.
    let mut resolved: BTreeMap<(TenantId, ExecutionId), (i32, i32)> = BTreeMap::new();
    for ended in finished.iter().filter(|f| f.in_flow) {
        let (tenant, upstream) = (ended.tenant, ended.id);
        let state = if ended.outcome == "success" {
            "satisfied"
        } else {
            "unsatisfied"
        };
        let downstreams: Vec<ExecutionId> = sqlx::query_scalar(
            "UPDATE flow_edges SET state = ? \
             WHERE tenant_id = ? AND upstream_id = ? AND state = 'pending' \
             RETURNING downstream_id",
        )
        .bind(state)
        .bind(tenant)
        .bind(upstream)
        .all(&mut *conn, "resolve edges")
        .await?;
        for downstream in downstreams {
            let counts = resolved.entry((tenant, downstream)).or_default();
            if state == "satisfied" {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    for ((tenant, downstream), (ok, bad)) in resolved {
        resolve_group(conn, tenant, downstream, ok, bad, effects).await?;
    }
    Ok(())
}

async fn resolve_group(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    downstream: ExecutionId,
    ok: i32,
    bad: i32,
    effects: &mut Effects,
) -> Result<()> {
    let group: Option<Group> = sqlx::query_as(
        "SELECT k, on_satisfied, total, succeeded, unsatisfied FROM flow_groups \
         WHERE tenant_id = ? AND downstream_id = ? AND state = 'pending'",
    )
    .bind(tenant)
    .bind(downstream)
    .optional(&mut *conn, "resolve join group")
    .await?;
    let Some(group) = group else {
        return Ok(());
    };
    let (succeeded, unsatisfied) = (group.succeeded + ok, group.unsatisfied + bad);
    let needed = group.k.unwrap_or(group.total);
    let state = if succeeded >= needed {
        "satisfied"
    } else if group.total - unsatisfied < needed {
        "impossible"
    } else {
        "pending"
    };
    sqlx::query(
        "UPDATE flow_groups SET succeeded = ?, unsatisfied = ?, state = ? \
         WHERE tenant_id = ? AND downstream_id = ?",
    )
    .bind(succeeded)
    .bind(unsatisfied)
    .bind(state)
    .bind(tenant)
    .bind(downstream)
    .run(&mut *conn, "resolve join group")
    .await?;
    match state {
        "satisfied" => {
            if let Some(row) = still_waiting(conn, tenant, downstream).await? {
                release(conn, row, effects).await?;
            }
            if group.on_satisfied == "cancel_remaining" {
                cancel_unfinished_upstreams(conn, tenant, downstream, effects).await?;
            }
        }
        "impossible" => {
            if let Some(row) = still_waiting(conn, tenant, downstream).await? {
                skip(conn, row, effects).await?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The downstream, if it still waits on its dependencies (an operator may
/// have cancelled it, or a flow cancel ended it, meanwhile).
async fn still_waiting(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
) -> Result<Option<Exec>> {
    let row = Exec::get(conn, tenant, id).await?;
    let waiting = row.lifecycle_phase == LifecyclePhase::Runnable
        && row.eligibility_state == Eligibility::BlockedByDependencies;
    Ok(waiting.then_some(row))
}

/// A satisfied downstream that still waits becomes runnable (now, or at its
/// own delay), taking its input from the edge that passes a result.
async fn release(conn: &mut SqliteConnection, mut row: Exec, effects: &mut Effects) -> Result<()> {
    let passed: Option<Option<Vec<u8>>> = sqlx::query_scalar(
        "SELECT u.result FROM flow_edges ed \
         JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
         WHERE ed.tenant_id = ? AND ed.downstream_id = ? AND ed.pass_result \
           AND ed.state = 'satisfied'",
    )
    .bind(row.tenant_id)
    .bind(row.execution_id)
    .optional(&mut *conn, "release downstream")
    .await?;
    if let Some(Some(input)) = passed {
        row.input = input;
    }
    let now = now();
    let before = row.lease_before();
    let eligible_at = row.eligible_at;
    row.make_runnable(eligible_at, AttemptPhase::PendingFirstAttempt, now);
    row.save(conn, Some(before), effects).await
}

/// A downstream whose join can no longer be satisfied ends `skipped`.
async fn skip(conn: &mut SqliteConnection, mut row: Exec, effects: &mut Effects) -> Result<()> {
    let before = row.lease_before();
    row.make_terminal(TerminalOutcome::Skipped, now());
    row.save(conn, Some(before), effects).await?;
    row.record_completion(conn, effects).await
}

async fn cancel_unfinished_upstreams(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    downstream: ExecutionId,
    effects: &mut Effects,
) -> Result<()> {
    let upstreams: Vec<ExecutionId> = sqlx::query_scalar(
        "SELECT ed.upstream_id FROM flow_edges ed \
         JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
         WHERE ed.tenant_id = ? AND ed.downstream_id = ? AND ed.state = 'pending' \
           AND u.lifecycle_phase <> 'terminal' ORDER BY ed.upstream_id",
    )
    .bind(tenant)
    .bind(downstream)
    .all(&mut *conn, "cancel siblings")
    .await?;
    for upstream in upstreams {
        let mut row = Exec::get(conn, tenant, upstream).await?;
        if !row.is_terminal() {
            cancel_row(conn, &mut row, SIBLING_CANCELLED, effects).await?;
        }
    }
    Ok(())
}
