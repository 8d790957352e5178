//! Flows: graph changes, snapshots, listing and cancel.
//!
//! The model is Postgres's (migration 0006): a join group per downstream
//! with incoming edges, edges `pending` until their upstream ends (what
//! follows then is in `resolve`). A graph change is refused whole, with the
//! reason, exactly as on Postgres.

use sqlx::SqliteConnection;

use super::executions::{admit, create_one, Placement};
use super::flow_cancel::cancel_flow;
use super::record::Exec;
use super::tenancy::read_tenant;
use super::time::{now, Millis};
use super::{Effects, Finished, SqliteBackend};
use crate::backend::refusals;
use crate::backend::shared::flows::sqlite as shared;
use crate::backend::shared::flows::{EdgePlan, Graph, Members};
use crate::backend::GraphWrite;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{ExecutionId, FlowId, GraphApplied, NewFlow, TenantId};

crate::backend::coordination::implement_flows!(SqliteBackend, sqlite);

async fn create_flow(
    db: &SqliteBackend,
    tenant: TenantId,
    flow: &NewFlow,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    db.write("create flow", async |conn, effects| {
        read_tenant(conn, tenant).await?;
        let flow_id = shared::insert_flow(conn, tenant, flow).await?;
        apply(conn, write.on(tenant, flow_id), effects).await
    })
    .await
}

/// A flow's graph revision and whether it was cancelled.
pub(super) async fn flow_state(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
) -> Result<(i32, bool)> {
    let (revision, cancelled_at): (i32, Option<Millis>) = sqlx::query_as(
        "SELECT graph_revision, cancelled_at FROM flows WHERE tenant_id = ? AND flow_id = ?",
    )
    .bind(tenant)
    .bind(flow_id)
    .optional(conn, "read flow")
    .await?
    .ok_or_else(|| refusals::flow_not_found(flow_id))?;
    Ok((revision, cancelled_at.is_some()))
}

pub(super) async fn extend_flow(
    db: &SqliteBackend,
    tenant: TenantId,
    flow_id: FlowId,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    db.write("extend flow", async |conn, effects| {
        let state = flow_state(conn, tenant, flow_id).await?;
        refusals::check_graph_change(flow_id, state, write.change.expected_revision)?;
        apply(conn, write.on(tenant, flow_id), effects).await
    })
    .await
}

/// Add the change to a flow, whole or not at all (the caller's transaction).
async fn apply(
    conn: &mut SqliteConnection,
    graph: Graph<'_>,
    effects: &mut Effects,
) -> Result<GraphApplied> {
    let (tenant, flow_id) = (graph.tenant, graph.flow_id);
    let members = insert_members(conn, graph, effects).await?;
    let plan = shared::plan_edges(conn, graph, &members).await?;
    check_still_waiting(conn, tenant, &plan).await?;
    insert_groups(conn, graph, &members).await?;
    for &(upstream, downstream, pass_result) in &plan.edges {
        let edge = NewEdge {
            upstream,
            downstream,
            pass_result,
        };
        insert_edge(conn, graph, edge).await?;
    }
    if !plan.existing_downstreams.is_empty() {
        shared::refuse_cycles(conn, tenant, flow_id).await?;
    }
    // Edges from members that already ended resolve now, before commit.
    for upstream in plan.upstreams {
        let row = Exec::get(conn, tenant, upstream).await?;
        if let (true, Some(outcome)) = (row.is_terminal(), &row.terminal_outcome) {
            effects.finished.push(Finished::of(&row, outcome.as_str()));
        }
    }
    let revision = shared::bump_graph_revision(conn, tenant, flow_id).await?;
    Ok(GraphApplied {
        flow_id,
        revision,
        members,
    })
}

/// The change's new members, one at a time under the one writer.
async fn insert_members(
    conn: &mut SqliteConnection,
    graph: Graph<'_>,
    effects: &mut Effects,
) -> Result<Members> {
    let (tenant, flow_id, change) = (graph.tenant, graph.flow_id, graph.change);
    if let Some(limit) = graph.max_queued.filter(|_| !change.members.is_empty()) {
        admit(conn, tenant, change.members.len(), limit).await?;
    }
    let waiting = graph.waiting();
    let mut members = Members::new();
    for member in &change.members {
        let taken: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM executions \
             WHERE tenant_id = ? AND flow_id = ? AND flow_key = ?)",
        )
        .bind(tenant)
        .bind(flow_id)
        .bind(&member.key)
        .one(&mut *conn, "insert members")
        .await?;
        if taken {
            return Err(refusals::member_key_taken());
        }
        let placement = Placement {
            flow_id,
            key: &member.key,
            blocked: waiting.contains(member.key.as_str()),
            parent: None,
        };
        let created = create_one(conn, tenant, &member.execution, Some(placement), effects).await?;
        members.insert(member.key.clone(), created.execution_id);
    }
    Ok(members)
}

/// Edges may only point at members that still wait on their dependencies.
async fn check_still_waiting(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    plan: &EdgePlan,
) -> Result<()> {
    let downstreams = &plan.existing_downstreams;
    for downstream in downstreams {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM flow_groups \
             WHERE tenant_id = ? AND downstream_id = ? AND state = 'pending')",
        )
        .bind(tenant)
        .bind(downstream)
        .one(&mut *conn, "read join groups")
        .await?;
        if !waiting {
            return Err(plan.started(*downstream));
        }
    }
    Ok(())
}

/// A join group for each new member that waits on incoming edges.
async fn insert_groups(
    conn: &mut SqliteConnection,
    graph: Graph<'_>,
    members: &Members,
) -> Result<()> {
    for member in graph.joining() {
        sqlx::query(
            "INSERT INTO flow_groups (tenant_id, downstream_id, flow_id, policy, k, on_satisfied) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(graph.tenant)
        .bind(members[&member.key])
        .bind(graph.flow_id)
        .bind(member.join.name())
        .bind(member.join.k().map(i64::from))
        .bind(member.join.on_satisfied().as_str())
        .run(&mut *conn, "insert join groups")
        .await?;
    }
    Ok(())
}

/// One edge of a change, in ids.
struct NewEdge {
    upstream: ExecutionId,
    downstream: ExecutionId,
    pass_result: bool,
}

/// An edge, refused when it repeats one or gives its downstream a second
/// input; counted into its join group.
async fn insert_edge(conn: &mut SqliteConnection, graph: Graph<'_>, edge: NewEdge) -> Result<()> {
    let (tenant, flow_id) = (graph.tenant, graph.flow_id);
    let NewEdge {
        upstream,
        downstream,
        pass_result,
    } = edge;
    let (exists, has_input): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM flow_edges \
                 WHERE tenant_id = ?1 AND upstream_id = ?2 AND downstream_id = ?3), \
             EXISTS (SELECT 1 FROM flow_edges \
                 WHERE tenant_id = ?1 AND downstream_id = ?3 AND pass_result)",
    )
    .bind(tenant)
    .bind(upstream)
    .bind(downstream)
    .one(&mut *conn, "insert edges")
    .await?;
    if exists {
        return Err(refusals::dependency_exists());
    }
    if pass_result && has_input {
        return Err(refusals::second_input());
    }
    sqlx::query(
        "INSERT INTO flow_edges (tenant_id, upstream_id, downstream_id, flow_id, pass_result, \
         created_at) VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(tenant)
    .bind(upstream)
    .bind(downstream)
    .bind(flow_id)
    .bind(pass_result)
    .bind(now())
    .run(&mut *conn, "insert edges")
    .await?;
    sqlx::query(
        "UPDATE flow_groups SET total = total + 1 WHERE tenant_id = ? AND downstream_id = ?",
    )
    .bind(tenant)
    .bind(downstream)
    .run(conn, "insert edges")
    .await?;
    Ok(())
}
