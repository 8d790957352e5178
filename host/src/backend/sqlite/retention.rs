//! Retention: deleting a tenant's executions (and whole flows) ended before
//! the cutoff. What is deleted is chosen in `shared::retention`; here it
//! goes, in one write.
//!
//! The one writer runs the search and the deletes in one transaction, so
//! nothing changes in between. The foreign keys cascade to most of what is
//! recorded of an execution; its frames, its stream summaries, its
//! idempotency key and the budgets scoped to it (or to its flow) have none,
//! and are deleted beside it.

use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;

use super::SqliteBackend;
use crate::backend::shared::retention::sqlite::prunable;
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{ExecutionId, TenantId};

/// What an execution leaves that its row's foreign keys do not take with
/// it, then the row (while it is still ended).
const DELETE_EXECUTION: [&str; 4] = [
    "DELETE FROM frames WHERE tenant_id = $1 AND execution_id = $2",
    "DELETE FROM stream_summaries WHERE tenant_id = $1 AND execution_id = $2",
    "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND execution_id = $2 \
       AND key = (SELECT idempotency_key FROM executions \
                  WHERE tenant_id = $1 AND execution_id = $2)",
    "DELETE FROM executions WHERE tenant_id = $1 AND execution_id = $2 \
       AND lifecycle_phase = 'terminal'",
];

pub(super) async fn prune_executions(
    db: &SqliteBackend,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    limit: u32,
) -> Result<u64> {
    db.write("prune executions", async |conn, _| {
        let found = prunable(conn, tenant, cutoff, limit).await?;
        let mut doomed = found.executions;
        for flow in found.flows {
            let members: Vec<ExecutionId> = sqlx::query_scalar(
                "SELECT execution_id FROM executions WHERE tenant_id = $1 AND flow_id = $2",
            )
            .bind(tenant)
            .bind(flow)
            .all(&mut *conn, "find a flow's members")
            .await?;
            doomed.extend(members);
            sqlx::query("DELETE FROM flows WHERE tenant_id = $1 AND flow_id = $2")
                .bind(tenant)
                .bind(flow)
                .run(&mut *conn, "prune flows")
                .await?;
            delete_scoped_budgets(conn, tenant, "flow", flow.to_string()).await?;
        }
        let mut deleted = 0;
        for id in doomed {
            deleted += delete_execution(conn, tenant, id).await?;
        }
        Ok(deleted)
    })
    .await
}

async fn delete_execution(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    id: ExecutionId,
) -> Result<u64> {
    let mut deleted = 0;
    for sql in DELETE_EXECUTION {
        deleted = sqlx::query(sql)
            .bind(tenant)
            .bind(id)
            .run(&mut *conn, "prune executions")
            .await?
            .rows_affected();
    }
    delete_scoped_budgets(conn, tenant, "execution", id.to_string()).await?;
    Ok(deleted)
}

/// The budgets scoped to a deleted execution or flow (off
/// `budgets_scope_idx`; their dimensions and audit trails cascade).
async fn delete_scoped_budgets(
    conn: &mut SqliteConnection,
    tenant: TenantId,
    scope: &str,
    key: String,
) -> Result<()> {
    sqlx::query("DELETE FROM budgets WHERE tenant_id = $1 AND scope = $2 AND scope_key = $3")
        .bind(tenant)
        .bind(scope)
        .bind(key)
        .run(&mut *conn, "prune scoped budgets")
        .await?;
    Ok(())
}
