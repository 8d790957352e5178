//! Flow operations that are the same on both drivers: the cycle check and
//! revision count a graph change runs, and reading flows back.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;
use sqlx::types::Json;

use super::stamp::Stamp;
use crate::backend::refusals;
use crate::backend::{EdgeFilter, GraphWrite};
use crate::backend::{Fetch, Op, Run};
use crate::error::{EngineError, Result};
use crate::model::{
    find_cycle, EdgeState, ExecutionId, FlowEdgeDetail, FlowEdgeView, FlowId, FlowMember,
    FlowMemberView, FlowSnapshot, FlowState, FlowSummary, GraphChange, JoinPolicy, JoinState,
    NewFlow, Page, PublicState, TenantId,
};

/// A flow's own row, as both reads select it (`FLOW_COLUMNS`).
#[derive(sqlx::FromRow)]
struct FlowRow {
    flow_id: FlowId,
    name: String,
    tags: Json<BTreeMap<String, String>>,
    graph_revision: i32,
    cancelled_at: Option<Stamp>,
    created_at: Stamp,
}

const FLOW_COLUMNS: &str = "f.flow_id, f.name, f.tags, f.graph_revision, f.cancelled_at, \
                            f.created_at";

impl FlowRow {
    /// The flow with its member counts: all, not ended, and failed or
    /// expired (which decide its state with the cancel).
    fn summary(self, members: i64, unfinished: i64, failed: i64) -> FlowSummary {
        let cancelled = self.cancelled_at.is_some();
        FlowSummary {
            flow_id: self.flow_id,
            name: self.name,
            tags: self.tags.0,
            revision: self.graph_revision,
            state: FlowState::derive(cancelled, members, unfinished, failed),
            members,
            unfinished,
            failed,
            cancelled_at: self.cancelled_at.map(Into::into),
            created_at: self.created_at.into(),
        }
    }
}

/// A flow with its member counts, as the listing's aggregate reads it.
#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    flow: FlowRow,
    members: i64,
    unfinished: i64,
    failed: i64,
}

/// A member and, when it joins several upstreams, its join.
#[derive(sqlx::FromRow)]
struct MemberRow {
    flow_key: String,
    execution_id: ExecutionId,
    kind: String,
    public_state: String,
    policy: Option<String>,
    k: Option<i32>,
    on_satisfied: Option<String>,
    join_state: Option<String>,
}

impl MemberRow {
    fn view(self) -> Result<FlowMemberView> {
        let join = match (self.policy, self.on_satisfied) {
            (Some(name), Some(on_satisfied)) => Some(
                JoinPolicy::from_parts(&name, self.k, &on_satisfied)
                    .map_err(EngineError::Corrupt)?,
            ),
            _ => None,
        };
        Ok(FlowMemberView {
            key: self.flow_key,
            execution_id: self.execution_id,
            kind: self.kind,
            state: self
                .public_state
                .parse::<PublicState>()
                .map_err(EngineError::Corrupt)?,
            join,
            join_state: self.join_state.map(|s| match s.as_str() {
                "satisfied" => JoinState::Satisfied,
                "impossible" => JoinState::Impossible,
                _ => JoinState::Pending,
            }),
        })
    }
}

/// A flow's edges on their own. Starting from the flow's row makes "no such
/// flow" (no row) and "no such edges" (one row of nulls) one query. The
/// edges come by `flow_edges_flow_idx`, bounded by the flow's member cap,
/// and each end's key by the executions primary key.
const EDGES_SQL: &str = "\
    SELECT ed.upstream_id, ed.downstream_id, u.flow_key, d.flow_key, ed.pass_result, ed.state, \
           ed.created_at \
    FROM flows f \
    LEFT JOIN (flow_edges ed \
        JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
        JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id) \
      ON ed.tenant_id = f.tenant_id AND ed.flow_id = f.flow_id \
     AND ($3 IS NULL OR u.flow_key = $3) AND ($4 IS NULL OR d.flow_key = $4) \
    WHERE f.tenant_id = $1 AND f.flow_id = $2 \
    ORDER BY 3, 4";

/// An edge as [`EDGES_SQL`] reads it: all nulls for the flow's row when
/// no edge matches.
type EdgeRow = (
    Option<ExecutionId>,
    Option<ExecutionId>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<Stamp>,
);

/// An edge, or `None` for the flow's row with no edge matching.
fn edge(row: EdgeRow) -> Option<FlowEdgeDetail> {
    let (Some(up), Some(down), Some(from), Some(to), Some(pass), Some(state), Some(created)) = row
    else {
        return None;
    };
    Some(FlowEdgeDetail {
        from,
        to,
        from_execution_id: up,
        to_execution_id: down,
        pass_result: pass,
        state: EdgeState::from_stored(&state),
        created_at: created.into(),
    })
}

/// Keys to ids: a change's new members, as they are inserted.
pub(crate) type Members = BTreeMap<String, ExecutionId>;

/// Keys to ids: every key a change names, new members and existing ones.
pub(crate) type MemberIds = HashMap<String, ExecutionId>;

/// A graph change, the tenant's flow it applies to, and the backlog its
/// new members may not take the tenant past.
#[derive(Clone, Copy)]
pub(crate) struct Graph<'a> {
    pub tenant: TenantId,
    pub flow_id: FlowId,
    pub change: &'a GraphChange,
    pub max_queued: Option<u32>,
}

impl<'a> GraphWrite<'a> {
    /// This write, to the tenant's flow `flow_id`.
    pub(crate) fn on(self, tenant: TenantId, flow_id: FlowId) -> Graph<'a> {
        Graph {
            tenant,
            flow_id,
            change: self.change,
            max_queued: self.max_queued,
        }
    }
}

impl<'a> Graph<'a> {
    /// Keys of the members that incoming edges make wait (a join group
    /// each).
    pub(crate) fn waiting(&self) -> BTreeSet<&'a str> {
        self.change.edges.iter().map(|e| e.to.as_str()).collect()
    }

    /// The new members that wait on incoming edges, in the change's order.
    pub(crate) fn joining(&self) -> Vec<&'a FlowMember> {
        let waiting = self.waiting();
        self.change
            .members
            .iter()
            .filter(|m| waiting.contains(m.key.as_str()))
            .collect()
    }

    /// The new members' ids, and the keys its edges name that are not new
    /// (existing members, to be looked up).
    fn known_and_wanted(&self, members: &Members) -> (MemberIds, Vec<&'a str>) {
        let ids: MemberIds = members.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let wanted: BTreeSet<&str> = self
            .change
            .edges
            .iter()
            .flat_map(|e| [e.from.as_str(), e.to.as_str()])
            .filter(|k| !ids.contains_key(*k))
            .collect();
        (ids, wanted.into_iter().collect())
    }

    /// Refuse an edge that names a key that is neither a new member nor one
    /// the flow has (`ids`, as looked up).
    fn check_resolved(&self, ids: &MemberIds) -> Result<()> {
        for (i, edge) in self.change.edges.iter().enumerate() {
            for (end, key) in [("from", &edge.from), ("to", &edge.to)] {
                if !ids.contains_key(key) {
                    return Err(EngineError::invalid(
                        format!("edges[{i}].{end}"),
                        format!("no member `{key}` in this flow or this request"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A graph change in ids, once its new members exist and every key it
/// names is resolved: its edges, the upstreams they leave, and the members
/// that existed before the change and now wait on more.
pub(crate) struct EdgePlan {
    /// Every key the change names, with its id.
    pub ids: MemberIds,
    /// (upstream, downstream, pass_result), in the change's order.
    pub edges: Vec<(ExecutionId, ExecutionId, bool)>,
    /// Every upstream once, in id order (the order their rows are locked).
    pub upstreams: Vec<ExecutionId>,
    /// Downstreams that are not new in this change, in id order: they must
    /// still wait, and an edge into one may close a cycle.
    pub existing_downstreams: Vec<ExecutionId>,
}

impl EdgePlan {
    fn new(change: &GraphChange, ids: MemberIds, new_members: &Members) -> Self {
        let edges: Vec<(ExecutionId, ExecutionId, bool)> = change
            .edges
            .iter()
            .map(|e| (ids[&e.from], ids[&e.to], e.pass_result))
            .collect();
        let upstreams: BTreeSet<ExecutionId> = edges.iter().map(|(u, _, _)| *u).collect();
        let new_ids: BTreeSet<ExecutionId> = new_members.values().copied().collect();
        let existing_downstreams: BTreeSet<ExecutionId> = edges
            .iter()
            .map(|(_, d, _)| *d)
            .filter(|d| !new_ids.contains(d))
            .collect();
        EdgePlan {
            ids,
            edges,
            upstreams: upstreams.into_iter().collect(),
            existing_downstreams: existing_downstreams.into_iter().collect(),
        }
    }

    /// Refuse an edge into `started`, an existing member that no longer
    /// waits on its dependencies, named by its key.
    pub(crate) fn started(&self, started: ExecutionId) -> EngineError {
        let key = self
            .ids
            .iter()
            .find(|(_, id)| **id == started)
            .map_or("?", |(k, _)| k.as_str());
        refusals::member_started(key)
    }
}

for_both_drivers! {
    /// The change in ids, once its new `members` exist: every key it names
    /// is resolved to a new member or an existing one (one read of
    /// `executions_flow_key_idx` for all of those), or the change refused.
    async fn plan_edges(conn, graph: Graph<'_>, members: &Members) -> Result<EdgePlan> {
        let (mut ids, wanted) = graph.known_and_wanted(members);
        if !wanted.is_empty() {
            let found: Vec<(String, ExecutionId)> = sqlx::query_as(&format!(
                "SELECT flow_key, execution_id FROM executions \
                 WHERE tenant_id = $1 AND flow_id = $2 AND {}",
                in_json_texts("flow_key", "$3")
            ))
            .bind(graph.tenant)
            .bind(graph.flow_id)
            .bind(Json(&wanted))
            .all(&mut *conn, "resolve member keys")
            .await?;
            ids.extend(found);
        }
        graph.check_resolved(&ids)?;
        Ok(EdgePlan::new(graph.change, ids, members))
    }

    /// A new flow's own row, with no members yet; its id. An unknown tenant
    /// is `not_found`.
    async fn insert_flow(conn, tenant: TenantId, flow: &NewFlow) -> Result<FlowId> {
        let flow_id = FlowId::new();
        sqlx::query(
            "INSERT INTO flows (tenant_id, flow_id, name, tags, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(flow_id)
        .bind(&flow.name)
        .bind(Json(&flow.tags))
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, Op::for_tenant("create flow", tenant))
        .await?;
        Ok(flow_id)
    }

    /// The flow's edges in (from, to) key order, only those out of `from`
    /// and into `to` when given; `NotFound` when the tenant has no such flow.
    async fn flow_edges(conn, tenant: TenantId, flow: FlowId, filter: EdgeFilter<'_>)
        -> Result<Vec<FlowEdgeDetail>>
    {
        let rows: Vec<EdgeRow> = sqlx::query_as(EDGES_SQL)
            .bind(tenant)
            .bind(flow)
            .bind(filter.from)
            .bind(filter.to)
            .all(&mut *conn, "read flow edges")
            .await?;
        if rows.is_empty() {
            return Err(refusals::flow_not_found(flow));
        }
        Ok(rows.into_iter().filter_map(edge).collect())
    }

    /// A page of the tenant's flows in id order, each with its member
    /// counts off `executions_flow_key_idx`.
    async fn list_flows(conn, tenant: TenantId, page: Page<Option<FlowId>>) -> Result<Vec<FlowSummary>> {
        let rows: Vec<ListedRow> = sqlx::query_as(&format!(
            "SELECT {FLOW_COLUMNS}, count(e.execution_id) AS members, \
                 count(e.execution_id) FILTER (WHERE e.lifecycle_phase <> 'terminal') \
                     AS unfinished, \
                 count(e.execution_id) FILTER (WHERE e.terminal_outcome IN ('failed', 'expired')) \
                     AS failed \
             FROM flows f \
             LEFT JOIN executions e ON e.tenant_id = f.tenant_id AND e.flow_id = f.flow_id \
             WHERE f.tenant_id = $1 AND ($2 IS NULL OR f.flow_id > $2) \
             GROUP BY f.tenant_id, f.flow_id ORDER BY f.flow_id LIMIT $3"
        ))
        .bind(tenant)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .all(&mut *conn, "list flows")
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| r.flow.summary(r.members, r.unfinished, r.failed))
            .collect())
    }

    /// The flow, its members and its edges; the member counts come from the
    /// members read here rather than from a second aggregate query.
    async fn get_flow(conn, tenant: TenantId, flow_id: FlowId) -> Result<FlowSnapshot> {
        let flow: FlowRow = sqlx::query_as(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows f WHERE f.tenant_id = $1 AND f.flow_id = $2"
        ))
        .bind(tenant)
        .bind(flow_id)
        .optional(&mut *conn, "read flow")
        .await?
        .ok_or_else(|| refusals::flow_not_found(flow_id))?;
        let members = sqlx::query_as::<_, MemberRow>(
            "SELECT e.flow_key, e.execution_id, e.kind, e.public_state, \
                 g.policy, g.k, g.on_satisfied, g.state AS join_state \
             FROM executions e \
             LEFT JOIN flow_groups g \
                 ON g.tenant_id = e.tenant_id AND g.downstream_id = e.execution_id \
             WHERE e.tenant_id = $1 AND e.flow_id = $2 ORDER BY e.flow_key",
        )
        .bind(tenant)
        .bind(flow_id)
        .all(&mut *conn, "read flow members")
        .await?
        .into_iter()
        .map(MemberRow::view)
        .collect::<Result<Vec<_>>>()?;
        let count =
            |f: fn(PublicState) -> bool| members.iter().filter(|m| f(m.state)).count() as i64;
        let summary = flow.summary(
            members.len() as i64,
            count(|s| !s.is_terminal()),
            count(|s| matches!(s, PublicState::Failed | PublicState::Expired)),
        );
        let edges = sqlx::query_as::<_, (String, String, bool, String)>(
            "SELECT u.flow_key, d.flow_key, ed.pass_result, ed.state FROM flow_edges ed \
             JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
             JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id \
             WHERE ed.tenant_id = $1 AND ed.flow_id = $2 ORDER BY 1, 2",
        )
        .bind(tenant)
        .bind(flow_id)
        .all(&mut *conn, "read flow edges")
        .await?
        .into_iter()
        .map(|(from, to, pass_result, state)| FlowEdgeView {
            from,
            to,
            pass_result,
            state: EdgeState::from_stored(&state),
        })
        .collect();
        Ok(FlowSnapshot {
            summary,
            members,
            edges,
        })
    }

    /// The whole graph must stay acyclic. Only needed when an edge points at
    /// a member that already existed: edges into new members cannot close a
    /// cycle through the (acyclic) existing graph, and the engine checks the
    /// request's own edges before storage sees them.
    async fn refuse_cycles(conn, tenant: TenantId, flow_id: FlowId) -> Result<()> {
        let edges: Vec<(String, String)> = sqlx::query_as(
            "SELECT u.flow_key, d.flow_key FROM flow_edges ed \
             JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
             JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id \
             WHERE ed.tenant_id = $1 AND ed.flow_id = $2",
        )
        .bind(tenant)
        .bind(flow_id)
        .all(&mut *conn, "read flow edges")
        .await?;
        match find_cycle(&edges) {
            Some(cycle) => Err(refusals::cycle(&cycle)),
            None => Ok(()),
        }
    }

    /// Count a change to the flow's graph; returns the new revision.
    async fn bump_graph_revision(conn, tenant: TenantId, flow_id: FlowId) -> Result<i32> {
        sqlx::query_scalar(
            "UPDATE flows SET graph_revision = graph_revision + 1 \
             WHERE tenant_id = $1 AND flow_id = $2 RETURNING graph_revision",
        )
        .bind(tenant)
        .bind(flow_id)
        .one(&mut *conn, "bump graph revision")
        .await
    }
}
