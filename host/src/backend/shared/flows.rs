//! Flow operations that are the same on both drivers.

use crate::backend::refusals;
use crate::error::{EngineError, Result};
use crate::model::{find_cycle, FlowId, TenantId};

for_both_drivers! {
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
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage("read flow edges"))?;
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
        .fetch_one(&mut *conn)
        .await
        .map_err(EngineError::storage("bump graph revision"))
    }
}
