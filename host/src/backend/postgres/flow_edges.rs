//! Reading a flow's edges on their own (`Flows::flow_edges`).
//!
//! Starting from the flow's row makes "no such flow" (no row) and "no such
//! edges" (one row of nulls) one query. The edges come by
//! `flow_edges_flow_idx`, bounded by the flow's member cap, and each end's key
//! by the executions primary key.

use super::PgBackend;

use super::rows::col;
use crate::backend::{refusals, EdgeFilter};
use crate::error::{EngineError, Result};
use crate::model::{EdgeState, FlowEdgeDetail, FlowId, TenantId};

const EDGES_SQL: &str = "\
    SELECT ed.upstream_id, ed.downstream_id, u.flow_key AS from_key, d.flow_key AS to_key, \
           ed.pass_result, ed.state, ed.created_at \
    FROM flows f \
    LEFT JOIN (flow_edges ed \
        JOIN executions u ON u.tenant_id = ed.tenant_id AND u.execution_id = ed.upstream_id \
        JOIN executions d ON d.tenant_id = ed.tenant_id AND d.execution_id = ed.downstream_id) \
      ON ed.tenant_id = f.tenant_id AND ed.flow_id = f.flow_id \
     AND ($3::text IS NULL OR u.flow_key = $3) AND ($4::text IS NULL OR d.flow_key = $4) \
    WHERE f.tenant_id = $1 AND f.flow_id = $2 \
    ORDER BY from_key, to_key";

pub(super) async fn flow_edges(
    db: &PgBackend,
    tenant: TenantId,
    flow: FlowId,
    filter: EdgeFilter<'_>,
) -> Result<Vec<FlowEdgeDetail>> {
    let pool = &db.pool;
    let rows = sqlx::query(EDGES_SQL)
        .bind(tenant)
        .bind(flow)
        .bind(filter.from)
        .bind(filter.to)
        .fetch_all(pool)
        .await
        .map_err(EngineError::storage("read flow edges"))?;
    if rows.is_empty() {
        return Err(refusals::flow_not_found(flow));
    }
    let mut edges = Vec::with_capacity(rows.len());
    for row in &rows {
        if col::<Option<uuid::Uuid>>(row, "upstream_id")?.is_none() {
            continue; // the flow's row, with no edge matching
        }
        edges.push(FlowEdgeDetail {
            from: col(row, "from_key")?,
            to: col(row, "to_key")?,
            from_execution_id: col(row, "upstream_id")?,
            to_execution_id: col(row, "downstream_id")?,
            pass_result: col(row, "pass_result")?,
            state: EdgeState::from_stored(&col::<String>(row, "state")?),
            created_at: col(row, "created_at")?,
        });
    }
    Ok(edges)
}
