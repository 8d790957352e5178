//! Reading a flow's edges on their own (`Flows::flow_edges`).
//!
//! Starting from the flow's row makes "no such flow" (no row) and "no such
//! edges" (one row of nulls) one query. The edges come by
//! `flow_edges_flow_idx`, bounded by the flow's member cap, and each end's key
//! by the executions primary key.

use super::time::{at, Millis};
use super::SqliteBackend;
use crate::backend::{refusals, EdgeFilter};
use crate::error::{EngineError, Result};
use crate::model::{EdgeState, ExecutionId, FlowEdgeDetail, FlowId, TenantId};

const EDGES_SQL: &str = "\
    SELECT ed.upstream_id, ed.downstream_id, u.flow_key, d.flow_key, ed.pass_result, ed.state, \
           ed.created_at \
    FROM flows f \
    LEFT JOIN (flow_edges ed \
        JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
        JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id) \
      ON ed.tenant_id = f.tenant_id AND ed.flow_id = f.flow_id \
     AND (?3 IS NULL OR u.flow_key = ?3) AND (?4 IS NULL OR d.flow_key = ?4) \
    WHERE f.tenant_id = ?1 AND f.flow_id = ?2 \
    ORDER BY 3, 4";

type Row = (
    Option<ExecutionId>,
    Option<ExecutionId>,
    Option<String>,
    Option<String>,
    Option<bool>,
    Option<String>,
    Option<Millis>,
);

pub(super) async fn flow_edges(
    db: &SqliteBackend,
    tenant: TenantId,
    flow: FlowId,
    filter: EdgeFilter<'_>,
) -> Result<Vec<FlowEdgeDetail>> {
    let rows: Vec<Row> = sqlx::query_as(EDGES_SQL)
        .bind(tenant)
        .bind(flow)
        .bind(filter.from)
        .bind(filter.to)
        .fetch_all(db.reader())
        .await
        .map_err(EngineError::storage("read flow edges"))?;
    if rows.is_empty() {
        return Err(refusals::flow_not_found(flow));
    }
    Ok(rows.into_iter().filter_map(edge).collect())
}

/// An edge, or `None` for the flow's row with no edge matching.
fn edge(row: Row) -> Option<FlowEdgeDetail> {
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
        created_at: at(created),
    })
}
