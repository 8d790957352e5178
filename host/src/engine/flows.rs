//! Flow requests: everything about a graph change that can be checked without
//! storage is checked here, so a refused change writes nothing and names the
//! field at fault. Storage checks the rest (keys of existing members, members
//! that no longer wait, cycles through the existing graph, the revision).

use std::collections::{BTreeMap, HashSet};

use super::caps::stored_size;
use super::{Engine, Limits};
use crate::backend::{EdgeFilter, FlowCancel, GraphWrite};
use crate::error::{EngineError, Result};
use crate::model::{
    find_cycle, FlowCancelPolicy, FlowEdgeDetail, FlowId, FlowMemberView, FlowSummary,
    GraphApplied, GraphChange, JoinPolicy, NewExecution, NewFlow, Page, TenantId,
};

impl Engine {
    pub async fn create_flow(
        &self,
        tenant: TenantId,
        flow: NewFlow,
        change: GraphChange,
    ) -> Result<GraphApplied> {
        self.check_flow(&flow)?;
        // The flow's own record (its members are counted as executions).
        self.check_storage(tenant, stored_size(0, 1)).await?;
        let max_queued = self.check_change(tenant, &change).await?;
        self.check_members(tenant, 0, change.members.len()).await?;
        self.check_edges_cap(0, change.edges.len())?;
        let write = GraphWrite {
            change: &change,
            max_queued,
        };
        self.backend.create_flow(tenant, &flow, write).await
    }

    pub async fn extend_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        change: GraphChange,
    ) -> Result<GraphApplied> {
        if change.members.is_empty() && change.edges.is_empty() {
            return Err(EngineError::invalid(
                "members",
                "give at least one member or edge to add",
            ));
        }
        let max_queued = self.check_change(tenant, &change).await?;
        // Counted as read before the change: two extensions racing past the
        // same revision could both pass (`expected_revision` makes one of
        // them fail), by at most one request's members and edges.
        let have = self.backend.get_flow(tenant, flow).await?;
        if !change.members.is_empty() {
            self.check_members(tenant, have.members.len(), change.members.len())
                .await?;
        }
        self.check_edges_cap(have.edges.len(), change.edges.len())?;
        let write = GraphWrite {
            change: &change,
            max_queued,
        };
        self.backend.extend_flow(tenant, flow, write).await
    }

    /// Refuse `adding` edges to a flow of `have` past the installation's cap.
    fn check_edges_cap(&self, have: usize, adding: usize) -> Result<()> {
        let cap = FlowCap {
            limit: "max_flow_edges",
            things: "edges",
            cap: self.limits.max_flow_edges,
        };
        cap.check(have, adding)
    }

    /// Refuse `adding` members to a flow of `have` past the tenant's cap.
    async fn check_members(&self, tenant: TenantId, have: usize, adding: usize) -> Result<()> {
        let cap = FlowCap {
            limit: "max_flow_members",
            things: "members",
            cap: self.caps(tenant).await?.flow_members,
        };
        cap.check(have, adding)
    }

    /// Up to `limit` of the flow's members with keys after `after`, in key
    /// order. Read from the flow's snapshot, which `max_flow_members` bounds:
    /// the page bounds the response, the cap bounds the read.
    pub async fn flow_members(
        &self,
        tenant: TenantId,
        flow: FlowId,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FlowMemberView>> {
        let mut members = self.backend.get_flow(tenant, flow).await?.members;
        // Byte order, whatever the database's collation: the cursor is
        // compared the same way.
        members.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(members
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.key.as_str() > a))
            .take(limit.clamp(1, 1_000) as usize)
            .collect())
    }

    /// The flow's edges in (from, to) key order; only those out of the
    /// member keyed `from`, and into the member keyed `to`, when given.
    pub async fn flow_edges(
        &self,
        tenant: TenantId,
        flow: FlowId,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<FlowEdgeDetail>> {
        for (field, key) in [("from", from), ("to", to)] {
            if let Some(key) = key {
                self.check_name(field, key)?;
            }
        }
        let filter = EdgeFilter { from, to };
        self.backend.flow_edges(tenant, flow, filter).await
    }

    /// The one edge from the member keyed `from` to the member keyed `to`.
    pub async fn flow_edge(
        &self,
        tenant: TenantId,
        flow: FlowId,
        from: &str,
        to: &str,
    ) -> Result<FlowEdgeDetail> {
        self.flow_edges(tenant, flow, Some(from), Some(to))
            .await?
            .pop()
            .ok_or_else(|| EngineError::not_found("flow edge", format!("{from} -> {to}")))
    }

    pub async fn list_flows(
        &self,
        tenant: TenantId,
        after: Option<FlowId>,
        limit: u32,
    ) -> Result<Vec<FlowSummary>> {
        self.backend
            .list_flows(tenant, Page::new(after, limit))
            .await
    }

    pub async fn cancel_flow(
        &self,
        tenant: TenantId,
        flow: FlowId,
        policy: FlowCancelPolicy,
        reason: &str,
    ) -> Result<u64> {
        let mut reason = reason.to_owned();
        super::truncate_utf8(&mut reason, 1024);
        let cancel = FlowCancel {
            flow,
            policy,
            reason: &reason,
        };
        self.backend.cancel_flow(tenant, cancel).await
    }

    fn check_flow(&self, flow: &NewFlow) -> Result<()> {
        if flow.name.is_empty() || flow.name.len() > self.limits.max_name_len {
            return Err(EngineError::invalid(
                "name",
                format!("must be 1 to {} bytes", self.limits.max_name_len),
            ));
        }
        if flow.tags.len() > self.limits.max_tags {
            return Err(EngineError::invalid(
                "tags",
                format!("at most {} tags", self.limits.max_tags),
            ));
        }
        for key in flow.tags.keys() {
            self.check_name("tag key", key)?;
        }
        Ok(())
    }

    /// Check a graph change; returns the backlog limit its members must respect.
    async fn check_change(&self, tenant: TenantId, change: &GraphChange) -> Result<Option<u32>> {
        let limits = &self.limits;
        if change.members.len() > limits.max_batch {
            return Err(EngineError::invalid(
                "members",
                format!("at most {} per request", limits.max_batch),
            ));
        }
        if change.edges.len() > max_edges(limits) {
            return Err(EngineError::invalid(
                "edges",
                format!("at most {} per request", max_edges(limits)),
            ));
        }
        let mut keys = HashSet::new();
        for (i, member) in change.members.iter().enumerate() {
            self.check_name(&format!("members[{i}].key"), &member.key)?;
            if !keys.insert(member.key.as_str()) {
                return Err(EngineError::invalid(
                    format!("members[{i}].key"),
                    format!("`{}` appears twice", member.key),
                ));
            }
            if member.execution.idempotency_key.is_some() {
                return Err(EngineError::invalid(
                    format!("members[{i}].idempotency_key"),
                    "flow members are keyed by their flow key; idempotency keys are not taken",
                ));
            }
        }
        let incoming = check_edges(self, change)?;
        for (i, member) in change.members.iter().enumerate() {
            let edges = incoming.get(member.key.as_str()).copied().unwrap_or(0);
            check_join(member.join, edges)
                .map_err(|reason| EngineError::invalid(format!("members[{i}].join"), reason))?;
        }
        if change.members.is_empty() {
            return Ok(None);
        }
        let executions: Vec<&NewExecution> = change.members.iter().map(|m| &m.execution).collect();
        self.admit(tenant, &executions, "members").await
    }
}

/// A cap on what one flow holds.
struct FlowCap {
    limit: &'static str,
    things: &'static str,
    cap: u32,
}

impl FlowCap {
    fn check(&self, have: usize, adding: usize) -> Result<()> {
        if have + adding <= self.cap as usize {
            return Ok(());
        }
        let things = self.things;
        Err(EngineError::limit(
            self.limit,
            u64::from(self.cap),
            format!("the flow has {have} {things} and {adding} more would pass it"),
        ))
    }
}

fn max_edges(limits: &Limits) -> usize {
    limits.max_batch * 4
}

/// Edges are well formed, not repeated, and acyclic among themselves; returns
/// the number of incoming edges per `to` key.
fn check_edges<'c>(engine: &Engine, change: &'c GraphChange) -> Result<BTreeMap<&'c str, usize>> {
    let mut seen = HashSet::new();
    let mut passing = HashSet::new();
    let mut incoming: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, edge) in change.edges.iter().enumerate() {
        engine.check_name(&format!("edges[{i}].from"), &edge.from)?;
        engine.check_name(&format!("edges[{i}].to"), &edge.to)?;
        if edge.from == edge.to {
            return Err(EngineError::invalid(
                format!("edges[{i}]"),
                format!("`{}` cannot depend on itself", edge.from),
            ));
        }
        if !seen.insert((edge.from.as_str(), edge.to.as_str())) {
            return Err(EngineError::invalid(
                format!("edges[{i}]"),
                format!("{} -> {} appears twice", edge.from, edge.to),
            ));
        }
        if edge.pass_result && !passing.insert(edge.to.as_str()) {
            return Err(EngineError::invalid(
                format!("edges[{i}].pass_result"),
                format!("`{}` takes its input from at most one upstream", edge.to),
            ));
        }
        *incoming.entry(edge.to.as_str()).or_default() += 1;
    }
    let pairs: Vec<(&str, &str)> = change
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    if let Some(cycle) = find_cycle(&pairs) {
        return Err(EngineError::graph(
            "cycle_detected",
            format!("these edges would form a cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(incoming)
}

/// A join policy needs incoming edges (in the same request, as the member is
/// new) and a `k` it can reach.
fn check_join(join: JoinPolicy, incoming: usize) -> std::result::Result<(), String> {
    match join {
        JoinPolicy::AllOf => Ok(()),
        _ if incoming == 0 => Err(format!(
            "a `{}` join needs incoming edges in the same request",
            join.name()
        )),
        JoinPolicy::Quorum { k, .. } if k == 0 || k as usize > incoming => Err(format!(
            "quorum k must be 1 to the member's {incoming} incoming edges, not {k}"
        )),
        _ => Ok(()),
    }
}
