//! Flows: graph changes (members and edges), snapshots, listing and cancel.
//!
//! Resolving edges when a member ends is not here: it runs in SQL
//! (`flowfabric_resolve`, migration 0006), fired by the completion outbox, so
//! every way an execution can end resolves its edges in the same transaction.
//! A graph change follows the same lock order as that resolution: upstream
//! executions (shared), then join groups in key order, so the two cannot
//! deadlock; an edge from a member that already ended resolves before commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::postgres::PgRow;
use sqlx::PgConnection;

use super::executions::{insert_executions, FlowPlacement};
use super::flow_cancel::cancel_flow;
use super::flow_edges::flow_edges;
use super::rows::{col, json, parse, transaction, unknown_tenant_or};
use super::PgBackend;
use crate::backend::refusals;
use crate::backend::shared::flows::pg::{bump_graph_revision, refuse_cycles};
use crate::backend::GraphWrite;
use crate::error::{EngineError, Result};
use crate::model::{
    EdgeState, ExecutionId, FlowEdgeView, FlowId, FlowMemberView, FlowSnapshot, FlowState,
    FlowSummary, GraphApplied, GraphChange, JoinPolicy, JoinState, NewExecution, NewFlow, Page,
    PublicState, TenantId,
};

crate::backend::coordination::implement_flows!(PgBackend, pg);

async fn create_flow(
    db: &PgBackend,
    tenant: TenantId,
    flow: &NewFlow,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    let GraphWrite { change, max_queued } = write;
    let pool = &db.pool;
    transaction(pool, "create flow", async |tx| {
        let flow_id = FlowId::new();
        sqlx::query("INSERT INTO flows (tenant_id, flow_id, name, tags) VALUES ($1, $2, $3, $4)")
            .bind(tenant)
            .bind(flow_id)
            .bind(&flow.name)
            .bind(serde_json::to_value(&flow.tags).expect("tags serialise"))
            .execute(&mut *tx)
            .await
            .map_err(unknown_tenant_or("create flow", tenant))?;
        let applied = apply(tx, tenant, flow_id, change, max_queued).await?;
        Ok(applied)
    })
    .await
}

async fn list_flows(
    db: &PgBackend,
    tenant: TenantId,
    page: Page<Option<FlowId>>,
) -> Result<Vec<FlowSummary>> {
    let pool = &db.pool;
    // Counts per flow off `executions_flow_key_idx`.
    let sql = format!(
        "SELECT {FLOW_COLUMNS}, count(e.execution_id) AS members, \
             count(*) FILTER (WHERE e.lifecycle_phase <> 'terminal') AS unfinished, \
             count(*) FILTER (WHERE e.terminal_outcome IN ('failed', 'expired')) AS failed \
         FROM flows f \
         LEFT JOIN executions e ON e.tenant_id = f.tenant_id AND e.flow_id = f.flow_id \
         WHERE f.tenant_id = $1 AND ($2::uuid IS NULL OR f.flow_id > $2) \
         GROUP BY f.tenant_id, f.flow_id ORDER BY f.flow_id LIMIT $3"
    );
    sqlx::query(&sql)
        .bind(tenant)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(pool)
        .await
        .map_err(EngineError::storage("list flows"))?
        .iter()
        .map(|r| {
            summary(
                r,
                (col(r, "members")?, col(r, "unfinished")?, col(r, "failed")?),
            )
        })
        .collect()
}

pub(super) async fn extend_flow(
    db: &PgBackend,
    tenant: TenantId,
    flow_id: FlowId,
    write: GraphWrite<'_>,
) -> Result<GraphApplied> {
    let pool = &db.pool;
    let GraphWrite { change, max_queued } = write;
    transaction(pool, "extend flow", async |tx| {
        let row = sqlx::query(
            "SELECT graph_revision, cancelled_at IS NOT NULL AS cancelled FROM flows \
             WHERE tenant_id = $1 AND flow_id = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(flow_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(EngineError::storage("extend flow"))?
        .ok_or_else(|| refusals::flow_not_found(flow_id))?;
        let revision: i32 = col(&row, "graph_revision")?;
        if col::<bool>(&row, "cancelled")? {
            return Err(refusals::flow_cancelled(flow_id, "new members or edges"));
        }
        if let Some(expected) = change.expected_revision {
            if expected != revision {
                return Err(refusals::revision_conflict(flow_id, revision, expected));
            }
        }
        let applied = apply(tx, tenant, flow_id, change, max_queued).await?;
        Ok(applied)
    })
    .await
}

/// Add `change` to a flow whose row the caller has written or locked.
async fn apply(
    conn: &mut PgConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    max_queued: Option<u32>,
) -> Result<GraphApplied> {
    let members = insert_members(conn, tenant, flow_id, change, max_queued).await?;
    let ids = resolve_keys(conn, tenant, flow_id, change, &members).await?;
    let edge_ids: Vec<(ExecutionId, ExecutionId)> = change
        .edges
        .iter()
        .map(|e| (ids[&e.from], ids[&e.to]))
        .collect();

    // Upstreams first (shared: they may end, but not while we read them).
    let upstreams: BTreeSet<ExecutionId> = edge_ids.iter().map(|(u, _)| *u).collect();
    let upstreams: Vec<ExecutionId> = upstreams.into_iter().collect();
    let ended: Vec<(ExecutionId, String)> = sqlx::query_as(
        "SELECT execution_id, terminal_outcome FROM executions \
         WHERE tenant_id = $1 AND execution_id = ANY($2) AND lifecycle_phase = 'terminal' \
         ORDER BY execution_id FOR SHARE",
    )
    .bind(tenant)
    .bind(&upstreams)
    .fetch_all(&mut *conn)
    .await
    .map_err(EngineError::storage("lock upstreams"))?;

    // Then the groups of members that already existed: they must still wait.
    let new_ids: BTreeSet<ExecutionId> = members.values().copied().collect();
    let existing_downstreams: BTreeSet<ExecutionId> = edge_ids
        .iter()
        .map(|(_, d)| *d)
        .filter(|d| !new_ids.contains(d))
        .collect();
    let existing_downstreams: Vec<ExecutionId> = existing_downstreams.into_iter().collect();
    if !existing_downstreams.is_empty() {
        check_still_waiting(conn, tenant, &existing_downstreams, &ids).await?;
    }
    insert_groups(conn, tenant, flow_id, change, &members).await?;
    insert_edges(conn, tenant, flow_id, change, &edge_ids).await?;
    if !existing_downstreams.is_empty() {
        refuse_cycles(conn, tenant, flow_id).await?;
    }
    if !ended.is_empty() {
        let (done, outcomes): (Vec<ExecutionId>, Vec<String>) = ended.into_iter().unzip();
        sqlx::query("SELECT flowfabric_resolve(array_fill($1::uuid, ARRAY[cardinality($2::uuid[])]), $2, $3)")
            .bind(tenant)
            .bind(&done)
            .bind(&outcomes)
            .execute(&mut *conn)
            .await
            .map_err(EngineError::storage("resolve edges"))?;
    }
    let revision = bump_graph_revision(conn, tenant, flow_id).await?;
    Ok(GraphApplied {
        flow_id,
        revision,
        members,
    })
}

async fn insert_members(
    conn: &mut PgConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    max_queued: Option<u32>,
) -> Result<BTreeMap<String, ExecutionId>> {
    if change.members.is_empty() {
        return Ok(BTreeMap::new());
    }
    let waits: BTreeSet<&str> = change.edges.iter().map(|e| e.to.as_str()).collect();
    let placement = FlowPlacement {
        flow_id,
        keys: change.members.iter().map(|m| m.key.as_str()).collect(),
        blocked: change
            .members
            .iter()
            .map(|m| waits.contains(m.key.as_str()))
            .collect(),
        parent: None,
    };
    let executions: Vec<&NewExecution> = change.members.iter().map(|m| &m.execution).collect();
    let created = insert_executions(conn, tenant, &executions, max_queued, Some(&placement))
        .await
        .map_err(|e| match violated(&e) {
            Some("executions_flow_key_idx") => refusals::member_key_taken(),
            _ => e,
        })?;
    Ok(change
        .members
        .iter()
        .zip(created)
        .map(|(m, c)| (m.key.clone(), c.execution_id))
        .collect())
}

/// Ids for every key the change names: its new members and existing ones.
async fn resolve_keys(
    conn: &mut PgConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    members: &BTreeMap<String, ExecutionId>,
) -> Result<HashMap<String, ExecutionId>> {
    let mut ids: HashMap<String, ExecutionId> =
        members.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let wanted: BTreeSet<&str> = change
        .edges
        .iter()
        .flat_map(|e| [e.from.as_str(), e.to.as_str()])
        .filter(|k| !ids.contains_key(*k))
        .collect();
    if wanted.is_empty() {
        return Ok(ids);
    }
    let wanted: Vec<&str> = wanted.into_iter().collect();
    let rows: Vec<(String, ExecutionId)> = sqlx::query_as(
        "SELECT flow_key, execution_id FROM executions \
         WHERE tenant_id = $1 AND flow_id = $2 AND flow_key = ANY($3)",
    )
    .bind(tenant)
    .bind(flow_id)
    .bind(&wanted)
    .fetch_all(&mut *conn)
    .await
    .map_err(EngineError::storage("resolve member keys"))?;
    ids.extend(rows);
    for (i, edge) in change.edges.iter().enumerate() {
        for (end, key) in [("from", &edge.from), ("to", &edge.to)] {
            if !ids.contains_key(key) {
                return Err(EngineError::invalid(
                    format!("edges[{i}].{end}"),
                    format!("no member `{key}` in this flow or this request"),
                ));
            }
        }
    }
    Ok(ids)
}

async fn check_still_waiting(
    conn: &mut PgConnection,
    tenant: TenantId,
    downstreams: &[ExecutionId],
    ids: &HashMap<String, ExecutionId>,
) -> Result<()> {
    let waiting: Vec<ExecutionId> = sqlx::query_scalar(
        "SELECT downstream_id FROM flow_groups \
         WHERE tenant_id = $1 AND downstream_id = ANY($2) AND state = 'pending' \
         ORDER BY downstream_id FOR UPDATE",
    )
    .bind(tenant)
    .bind(downstreams)
    .fetch_all(&mut *conn)
    .await
    .map_err(EngineError::storage("lock join groups"))?;
    if let Some(started) = downstreams.iter().find(|d| !waiting.contains(d)) {
        let key = ids
            .iter()
            .find(|(_, id)| *id == started)
            .map(|(k, _)| k.as_str())
            .unwrap_or("?");
        return Err(refusals::member_started(key));
    }
    Ok(())
}

async fn insert_groups(
    conn: &mut PgConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    members: &BTreeMap<String, ExecutionId>,
) -> Result<()> {
    let waits: BTreeSet<&str> = change.edges.iter().map(|e| e.to.as_str()).collect();
    let joining: Vec<_> = change
        .members
        .iter()
        .filter(|m| waits.contains(m.key.as_str()))
        .collect();
    if joining.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO flow_groups (tenant_id, downstream_id, flow_id, policy, k, on_satisfied) \
         SELECT $1, d, $2, p, k, o FROM unnest($3::uuid[], $4::text[], $5::int4[], $6::text[]) \
             AS x(d, p, k, o)",
    )
    .bind(tenant)
    .bind(flow_id)
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
    .execute(&mut *conn)
    .await
    .map_err(EngineError::storage("insert join groups"))?;
    Ok(())
}

async fn insert_edges(
    conn: &mut PgConnection,
    tenant: TenantId,
    flow_id: FlowId,
    change: &GraphChange,
    edge_ids: &[(ExecutionId, ExecutionId)],
) -> Result<()> {
    if edge_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH e AS ( \
             INSERT INTO flow_edges (tenant_id, upstream_id, downstream_id, flow_id, pass_result) \
             SELECT $1, u, d, $2, p FROM unnest($3::uuid[], $4::uuid[], $5::bool[]) AS x(u, d, p) \
             RETURNING downstream_id) \
         UPDATE flow_groups g SET total = g.total + c.n \
         FROM (SELECT downstream_id, count(*)::int AS n FROM e GROUP BY downstream_id) c \
         WHERE g.tenant_id = $1 AND g.downstream_id = c.downstream_id",
    )
    .bind(tenant)
    .bind(flow_id)
    .bind(edge_ids.iter().map(|(u, _)| *u).collect::<Vec<_>>())
    .bind(edge_ids.iter().map(|(_, d)| *d).collect::<Vec<_>>())
    .bind(
        change
            .edges
            .iter()
            .map(|e| e.pass_result)
            .collect::<Vec<_>>(),
    )
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

const FLOW_COLUMNS: &str =
    "f.flow_id, f.name, f.tags, f.graph_revision, f.cancelled_at, f.created_at";

/// Member counts of a flow: (members, unfinished, failed or expired).
type Counts = (i64, i64, i64);

fn summary(row: &PgRow, (members, unfinished, failed): Counts) -> Result<FlowSummary> {
    let cancelled_at: Option<chrono::DateTime<chrono::Utc>> = col(row, "cancelled_at")?;
    Ok(FlowSummary {
        flow_id: col(row, "flow_id")?,
        name: col(row, "name")?,
        tags: json(col(row, "tags")?, "flow tags")?,
        revision: col(row, "graph_revision")?,
        state: FlowState::derive(cancelled_at.is_some(), members, unfinished, failed),
        members,
        unfinished,
        failed,
        cancelled_at,
        created_at: col(row, "created_at")?,
    })
}

/// The flow, its members and its edges; the member counts come from the
/// members read here rather than from a second aggregate query.
pub(super) async fn get_flow(
    db: &PgBackend,
    tenant: TenantId,
    flow_id: FlowId,
) -> Result<FlowSnapshot> {
    let pool = &db.pool;
    let row = sqlx::query(&format!(
        "SELECT {FLOW_COLUMNS} FROM flows f WHERE f.tenant_id = $1 AND f.flow_id = $2"
    ))
    .bind(tenant)
    .bind(flow_id)
    .fetch_optional(pool)
    .await
    .map_err(EngineError::storage("read flow"))?
    .ok_or_else(|| refusals::flow_not_found(flow_id))?;
    let members = sqlx::query(
        "SELECT e.flow_key, e.execution_id, e.kind, e.public_state, \
                g.policy, g.k, g.on_satisfied, g.state AS join_state \
         FROM executions e \
         LEFT JOIN flow_groups g ON g.tenant_id = e.tenant_id AND g.downstream_id = e.execution_id \
         WHERE e.tenant_id = $1 AND e.flow_id = $2 ORDER BY e.flow_key",
    )
    .bind(tenant)
    .bind(flow_id)
    .fetch_all(pool)
    .await
    .map_err(EngineError::storage("read flow members"))?
    .iter()
    .map(member)
    .collect::<Result<Vec<_>>>()?;
    let count = |f: fn(PublicState) -> bool| members.iter().filter(|m| f(m.state)).count() as i64;
    let counts = (
        members.len() as i64,
        count(|s| !s.is_terminal()),
        count(|s| matches!(s, PublicState::Failed | PublicState::Expired)),
    );
    let summary = summary(&row, counts)?;
    let edges = sqlx::query(
        "SELECT u.flow_key AS from_key, d.flow_key AS to_key, ed.pass_result, ed.state \
         FROM flow_edges ed \
         JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
         JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id \
         WHERE ed.tenant_id = $1 AND ed.flow_id = $2 ORDER BY 1, 2",
    )
    .bind(tenant)
    .bind(flow_id)
    .fetch_all(pool)
    .await
    .map_err(EngineError::storage("read flow edges"))?
    .iter()
    .map(|r| {
        Ok(FlowEdgeView {
            from: col(r, "from_key")?,
            to: col(r, "to_key")?,
            pass_result: col(r, "pass_result")?,
            state: EdgeState::from_stored(&col::<String>(r, "state")?),
        })
    })
    .collect::<Result<Vec<_>>>()?;
    Ok(FlowSnapshot {
        summary,
        members,
        edges,
    })
}

fn member(row: &PgRow) -> Result<FlowMemberView> {
    let policy: Option<String> = col(row, "policy")?;
    let join = match policy {
        Some(name) => Some(
            JoinPolicy::from_parts(&name, col(row, "k")?, &col::<String>(row, "on_satisfied")?)
                .map_err(EngineError::Corrupt)?,
        ),
        None => None,
    };
    let join_state = col::<Option<String>>(row, "join_state")?.map(|s| match s.as_str() {
        "satisfied" => JoinState::Satisfied,
        "impossible" => JoinState::Impossible,
        _ => JoinState::Pending,
    });
    Ok(FlowMemberView {
        key: col(row, "flow_key")?,
        execution_id: col(row, "execution_id")?,
        kind: col(row, "kind")?,
        state: parse::<PublicState>(&col::<String>(row, "public_state")?)?,
        join,
        join_state,
    })
}
