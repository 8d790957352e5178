//! Flows: graph changes (members and edges), snapshots, listing and cancel.
//!
//! Resolving edges when a member ends is not here: it runs in SQL
//! (`flowfabric_resolve`, migration 0006), fired by the completion outbox, so
//! every way an execution can end resolves its edges in the same transaction.
//! A graph change follows the same lock order as that resolution: upstream
//! executions (shared), then join groups in key order, so the two cannot
//! deadlock; an edge from a member that already ended resolves before commit.

use sqlx::PgConnection;

use super::executions::{insert_executions, FlowPlacement};
use super::flow_cancel::cancel_flow;
use super::rows::{col, transaction};
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::shared::flows::pg as shared;
use crate::backend::shared::flows::{EdgePlan, Graph, Members};
use crate::backend::GraphWrite;
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, FlowId, GraphApplied, NewExecution, NewFlow, TenantId};

crate::backend::coordination::implement_flows!(PgBackend, pg);

async fn create_flow(
    db: &PgBackend,
    tenant: TenantId,
    flow: &NewFlow,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    transaction(&db.pool, "create flow", async |tx| {
        let flow_id = shared::insert_flow(tx, tenant, flow).await?;
        apply(tx, write.on(tenant, flow_id)).await
    })
    .await
}

pub(super) async fn extend_flow(
    db: &PgBackend,
    tenant: TenantId,
    flow_id: FlowId,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    let pool = &db.pool;
    transaction(pool, "extend flow", async |tx| {
        let row = sqlx::query(
            "SELECT graph_revision, cancelled_at IS NOT NULL AS cancelled FROM flows \
             WHERE tenant_id = $1 AND flow_id = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(flow_id)
        .optional(&mut *tx, "extend flow")
        .await?
        .ok_or_else(|| refusals::flow_not_found(flow_id))?;
        let state = (col(&row, "graph_revision")?, col(&row, "cancelled")?);
        refusals::check_graph_change(flow_id, state, write.change.expected_revision)?;
        apply(tx, write.on(tenant, flow_id)).await
    })
    .await
}

/// Add the change to a flow whose row the caller has written or locked.
async fn apply(conn: &mut PgConnection, graph: Graph<'_>) -> Result<GraphApplied> {
    let (tenant, flow_id) = (graph.tenant, graph.flow_id);
    let members = insert_members(conn, graph).await?;
    let plan = shared::plan_edges(conn, graph, &members).await?;

    // Upstreams first (shared: they may end, but not while we read them).
    let ended: Vec<(ExecutionId, String)> = sqlx::query_as(
        "SELECT execution_id, terminal_outcome FROM executions \
         WHERE tenant_id = $1 AND execution_id = ANY($2) AND lifecycle_phase = 'terminal' \
         ORDER BY execution_id FOR SHARE",
    )
    .bind(tenant)
    .bind(&plan.upstreams)
    .all(&mut *conn, "lock upstreams")
    .await?;

    // Then the groups of members that already existed: they must still wait.
    if !plan.existing_downstreams.is_empty() {
        check_still_waiting(conn, tenant, &plan).await?;
    }
    insert_groups(conn, graph, &members).await?;
    insert_edges(conn, graph, &plan.edges).await?;
    if !plan.existing_downstreams.is_empty() {
        shared::refuse_cycles(conn, tenant, flow_id).await?;
    }
    if !ended.is_empty() {
        let (done, outcomes): (Vec<ExecutionId>, Vec<String>) = ended.into_iter().unzip();
        sqlx::query("SELECT flowfabric_resolve(array_fill($1::uuid, ARRAY[cardinality($2::uuid[])]), $2, $3)")
            .bind(tenant)
            .bind(&done)
            .bind(&outcomes)
            .run(&mut *conn, "resolve edges")
            .await?;
    }
    let revision = shared::bump_graph_revision(conn, tenant, flow_id).await?;
    Ok(GraphApplied {
        flow_id,
        revision,
        members,
    })
}

/// The change's new members, inserted in one statement.
async fn insert_members(conn: &mut PgConnection, graph: Graph<'_>) -> Result<Members> {
    let members = &graph.change.members;
    if members.is_empty() {
        return Ok(Members::new());
    }
    let waiting = graph.waiting();
    let placement = FlowPlacement {
        flow_id: graph.flow_id,
        keys: members.iter().map(|m| m.key.as_str()).collect(),
        blocked: members
            .iter()
            .map(|m| waiting.contains(m.key.as_str()))
            .collect(),
        parent: None,
    };
    let executions: Vec<&NewExecution> = members.iter().map(|m| &m.execution).collect();
    let max_queued = graph.max_queued;
    let created = insert_executions(
        conn,
        graph.tenant,
        &executions,
        max_queued,
        Some(&placement),
    )
    .await
    .map_err(|e| match violated(&e) {
        Some("executions_flow_key_idx") => refusals::member_key_taken(),
        _ => e,
    })?;
    Ok(members
        .iter()
        .zip(created)
        .map(|(m, c)| (m.key.clone(), c.execution_id))
        .collect())
}

/// Lock the join groups of `downstreams`, which must all still wait.
async fn check_still_waiting(
    conn: &mut PgConnection,
    tenant: TenantId,
    plan: &EdgePlan,
) -> Result<()> {
    let downstreams = &plan.existing_downstreams;
    let waiting: Vec<ExecutionId> = sqlx::query_scalar(
        "SELECT downstream_id FROM flow_groups \
         WHERE tenant_id = $1 AND downstream_id = ANY($2) AND state = 'pending' \
         ORDER BY downstream_id FOR UPDATE",
    )
    .bind(tenant)
    .bind(downstreams.as_slice())
    .all(&mut *conn, "lock join groups")
    .await?;
    match downstreams.iter().find(|d| !waiting.contains(d)) {
        Some(started) => Err(plan.started(*started)),
        None => Ok(()),
    }
}

/// A join group for each new member that waits on incoming edges.
async fn insert_groups(conn: &mut PgConnection, graph: Graph<'_>, members: &Members) -> Result<()> {
    let joining = graph.joining();
    if joining.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO flow_groups (tenant_id, downstream_id, flow_id, policy, k, on_satisfied) \
         SELECT $1, d, $2, p, k, o FROM unnest($3::uuid[], $4::text[], $5::int4[], $6::text[]) \
             AS x(d, p, k, o)",
    )
    .bind(graph.tenant)
    .bind(graph.flow_id)
    .bind(joining.iter().map(|m| members[&m.key]).collect::<Vec<_>>())
    .bind(joining.iter().map(|m| m.join.name()).collect::<Vec<_>>())
    .bind(
        joining
            .iter()
            .map(|m| m.join.k().map(|k| k as i32))
            .collect::<Vec<_>>(),
    )
    .bind(
        joining
            .iter()
            .map(|m| m.join.on_satisfied().as_str())
            .collect::<Vec<_>>(),
    )
    .run(&mut *conn, "insert join groups")
    .await?;
    Ok(())
}

/// The change's edges, counted into their join groups.
async fn insert_edges(
    conn: &mut PgConnection,
    graph: Graph<'_>,
    edges: &[(ExecutionId, ExecutionId, bool)],
) -> Result<()> {
    if edges.is_empty() {
        return Ok(());
    }
    let mut columns: (Vec<ExecutionId>, Vec<ExecutionId>, Vec<bool>) = Default::default();
    columns.extend(edges.iter().copied());
    sqlx::query(
        "WITH e AS ( \
             INSERT INTO flow_edges (tenant_id, upstream_id, downstream_id, flow_id, pass_result) \
             SELECT $1, u, d, $2, p FROM unnest($3::uuid[], $4::uuid[], $5::bool[]) AS x(u, d, p) \
             RETURNING downstream_id) \
         UPDATE flow_groups g SET total = g.total + c.n \
         FROM (SELECT downstream_id, count(*)::int AS n FROM e GROUP BY downstream_id) c \
         WHERE g.tenant_id = $1 AND g.downstream_id = c.downstream_id",
    )
    .bind(graph.tenant)
    .bind(graph.flow_id)
    .bind(columns.0)
    .bind(columns.1)
    .bind(columns.2)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        let e = EngineError::Storage {
            op: "insert edges",
            cause: e,
        };
        match violated(&e) {
            Some("flow_edges_pkey") => refusals::dependency_exists(),
            Some("flow_edges_one_input_idx") => refusals::second_input(),
            _ => e,
        }
    })?;
    Ok(())
}

/// The name of the constraint a storage error violated, if any.
pub(super) fn violated(e: &EngineError) -> Option<&str> {
    match e {
        EngineError::Storage {
            cause: sqlx::Error::Database(db),
            ..
        } => db.constraint(),
        _ => None,
    }
}
