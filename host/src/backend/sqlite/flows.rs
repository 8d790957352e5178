//! Flows: graph changes, snapshots, listing and cancel.
//!
//! The model is Postgres's (migration 0006): a join group per downstream
//! with incoming edges, edges `pending` until their upstream ends (what
//! follows then is in `resolve`). A graph change is refused whole, with the
//! reason, exactly as on Postgres.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::SqliteConnection;

use super::executions::{admit, create_one, Placement};
use super::flow_cancel::cancel_flow;
use super::record::Exec;
use super::tenancy::read_tenant;
use super::time::{now, Millis};
use super::{Effects, Finished, SqliteBackend};
use crate::backend::refusals;
use crate::backend::shared::flows::sqlite::{bump_graph_revision, insert_flow, refuse_cycles};
use crate::backend::shared::flows::EdgePlan;
use crate::backend::GraphWrite;
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, FlowId, GraphApplied, GraphChange, NewFlow, TenantId};

crate::backend::coordination::implement_flows!(SqliteBackend, sqlite);

async fn create_flow(
    db: &SqliteBackend,
    tenant: TenantId,
    flow: &NewFlow,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    let GraphWrite { change, max_queued } = write;
    db.write("create flow", async |conn, effects| {
        read_tenant(conn, tenant).await?;
        let flow_id = insert_flow(conn, tenant, flow).await?;
        apply(conn, tenant, flow_id, change, max_queued, effects).await
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
    let GraphWrite { change, max_queued } = write;
    db.write("extend flow", async |conn, effects| {
        let state = flow_state(conn, tenant, flow_id).await?;
        refusals::check_graph_change(flow_id, state, change.expected_revision)?;
        apply(conn, tenant, flow_id, change, max_queued, effects).await
    })
    .await
}

/// Add `change` to a flow, whole or not at all (the caller's transaction).
async fn apply(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    max_queued: Option<u32>,
    effects: &mut Effects,
) -> Result<GraphApplied> {
    let members = insert_members(conn, tenant, flow_id, change, max_queued, effects).await?;
    let ids = resolve_keys(conn, tenant, flow_id, change, &members).await?;
    let plan = EdgePlan::new(change, &ids, &members);
    check_still_waiting(conn, tenant, &plan.existing_downstreams, &ids).await?;
    insert_groups(conn, tenant, flow_id, change, &members).await?;
    for (upstream, downstream, pass_result) in &plan.edges {
        insert_edge(conn, tenant, flow_id, *upstream, *downstream, *pass_result).await?;
    }
    if !plan.existing_downstreams.is_empty() {
        refuse_cycles(conn, tenant, flow_id).await?;
    }
    // Edges from members that already ended resolve now, before commit.
    for upstream in plan.upstreams {
        let row = Exec::get(conn, tenant, upstream).await?;
        if let (true, Some(outcome)) = (row.is_terminal(), &row.terminal_outcome) {
            effects.finished.push(Finished::of(&row, outcome.as_str()));
        }
    }
    let revision = bump_graph_revision(conn, tenant, flow_id).await?;
    Ok(GraphApplied {
        flow_id,
        revision,
        members,
    })
}

async fn insert_members(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    max_queued: Option<u32>,
    effects: &mut Effects,
) -> Result<BTreeMap<String, ExecutionId>> {
    if let Some(limit) = max_queued.filter(|_| !change.members.is_empty()) {
        admit(conn, tenant, change.members.len(), limit).await?;
    }
    let waits: BTreeSet<&str> = change.edges.iter().map(|e| e.to.as_str()).collect();
    let mut members = BTreeMap::new();
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
            blocked: waits.contains(member.key.as_str()),
            parent: None,
        };
        let created = create_one(conn, tenant, &member.execution, Some(placement), effects).await?;
        members.insert(member.key.clone(), created.execution_id);
    }
    Ok(members)
}

/// Ids for every key the change names: its new members and existing ones.
async fn resolve_keys(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    members: &BTreeMap<String, ExecutionId>,
) -> Result<HashMap<String, ExecutionId>> {
    let mut ids: HashMap<String, ExecutionId> =
        members.iter().map(|(k, v)| (k.clone(), *v)).collect();
    for (i, edge) in change.edges.iter().enumerate() {
        for (end, key) in [("from", &edge.from), ("to", &edge.to)] {
            if ids.contains_key(key) {
                continue;
            }
            let id: Option<ExecutionId> = sqlx::query_scalar(
                "SELECT execution_id FROM executions \
                 WHERE tenant_id = ? AND flow_id = ? AND flow_key = ?",
            )
            .bind(tenant)
            .bind(flow_id)
            .bind(key)
            .optional(&mut *conn, "resolve member keys")
            .await?;
            let id = id.ok_or_else(|| {
                EngineError::invalid(
                    format!("edges[{i}].{end}"),
                    format!("no member `{key}` in this flow or this request"),
                )
            })?;
            ids.insert(key.clone(), id);
        }
    }
    Ok(ids)
}

/// Edges may only point at members that still wait on their dependencies.
async fn check_still_waiting(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    downstreams: &[ExecutionId],
    ids: &HashMap<String, ExecutionId>,
) -> Result<()> {
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
            let key = ids
                .iter()
                .find(|(_, id)| *id == downstream)
                .map_or("?", |(k, _)| k.as_str());
            return Err(refusals::member_started(key));
        }
    }
    Ok(())
}

async fn insert_groups(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    members: &BTreeMap<String, ExecutionId>,
) -> Result<()> {
    let waits: BTreeSet<&str> = change.edges.iter().map(|e| e.to.as_str()).collect();
    for member in change
        .members
        .iter()
        .filter(|m| waits.contains(m.key.as_str()))
    {
        sqlx::query(
            "INSERT INTO flow_groups (tenant_id, downstream_id, flow_id, policy, k, on_satisfied) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(tenant)
        .bind(members[&member.key])
        .bind(flow_id)
        .bind(member.join.name())
        .bind(member.join.k().map(i64::from))
        .bind(member.join.on_satisfied().as_str())
        .run(&mut *conn, "insert join groups")
        .await?;
    }
    Ok(())
}

async fn insert_edge(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    flow_id: FlowId,
    upstream: ExecutionId,
    downstream: ExecutionId,
    pass_result: bool,
) -> Result<()> {
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
