//! Cancelling a flow: closed to new members, and the members the policy
//! names cancelled, in one write (SQLite has no other writer to wait for).

use super::executions::cancel_row;
use super::record::Exec;
use super::time::now;
use super::SqliteBackend;
use crate::backend::{refusals, FlowCancel};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{ExecutionId, TenantId};

/// Close the flow to new members and cancel the members `policy` names,
/// newest first (so downstreams end `cancelled`, not `skipped`).
pub(super) async fn cancel_flow(
    db: &SqliteBackend,
    tenant: TenantId,
    cancel: FlowCancel<'_>,
) -> Result<u64> {
    let (flow_id, reason, phases) = (cancel.flow, cancel.reason, cancel.policy.phases());
    db.write("cancel flow", async |conn, effects| {
        let found = sqlx::query(
            "UPDATE flows SET cancelled_at = coalesce(cancelled_at, ?), \
             cancellation_reason = coalesce(cancellation_reason, ?) \
             WHERE tenant_id = ? AND flow_id = ?",
        )
        .bind(now())
        .bind(reason)
        .bind(tenant)
        .bind(flow_id)
        .run(&mut *conn, "cancel flow")
        .await?;
        if found.rows_affected() == 0 {
            return Err(refusals::flow_not_found(flow_id));
        }
        let members: Vec<ExecutionId> = sqlx::query_scalar(
            "SELECT execution_id FROM executions WHERE tenant_id = ? AND flow_id = ? \
             AND lifecycle_phase IN (SELECT value FROM json_each(?)) \
             ORDER BY execution_id DESC",
        )
        .bind(tenant)
        .bind(flow_id)
        .bind(serde_json::to_string(phases).expect("strings serialise"))
        .all(&mut *conn, "cancel flow")
        .await?;
        let mut cancelled = 0;
        for id in members {
            let mut row = Exec::get(conn, tenant, id).await?;
            // An earlier cancel's cascade may have ended it already.
            if row.is_terminal() {
                continue;
            }
            cancel_row(conn, &mut row, reason, effects).await?;
            // Resolve as each member ends, as Postgres does per statement.
            super::settle(&mut super::tx::Tx::Sqlx(conn), effects).await?;
            cancelled += 1;
        }
        Ok(cancelled)
    })
    .await
}
