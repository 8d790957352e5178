//! Retention: deleting a tenant's executions (and whole flows) ended before
//! the cutoff. What is deleted is chosen in `shared::retention`; here it
//! goes, in one transaction.
//!
//! The rows the search chose are deleted only while they are still ended
//! (a replay since the search keeps its execution), and a flow only while
//! none of its members is running or ended late: each statement re-checks
//! under its own snapshot. A member a concurrent `extend_flow` adds after
//! that check keeps the flow's row (its foreign key refuses the delete, the
//! transaction is undone, and the next pass finds the flow running).
//! Everything recorded of an execution goes with its row (the foreign keys
//! cascade); its attempts (whose key the claim no longer checks, migration
//! 0036), its idempotency key and the budgets scoped to it (or to its flow)
//! are deleted beside it.

use chrono::{DateTime, Utc};

use super::rows::transaction;
use super::PgBackend;
use crate::backend::shared::retention::pg::prunable;
use crate::backend::Fetch;
use crate::error::Result;
use crate::model::{ExecutionId, FlowId, TenantId};

/// The executions `gone` deleted: their attempts (off the attempts' primary
/// key), idempotency keys and the budgets scoped to them (off
/// `budgets_scope_idx`) go too.
const GONE_AND_KEYS: &str = "attempts_gone AS ( \
         DELETE FROM attempts a USING gone g \
         WHERE a.tenant_id = $1 AND a.execution_id = g.execution_id), \
     keys AS ( \
         DELETE FROM idempotency_keys k USING gone g \
         WHERE k.tenant_id = $1 AND k.key = g.idempotency_key \
           AND k.execution_id = g.execution_id), \
     scoped AS ( \
         DELETE FROM budgets b USING gone g \
         WHERE b.tenant_id = $1 AND b.scope = 'execution' \
           AND b.scope_key = g.execution_id::text) \
     SELECT count(*) FROM gone";

pub(super) async fn prune_executions(
    db: &PgBackend,
    tenant: TenantId,
    cutoff: DateTime<Utc>,
    limit: u32,
) -> Result<u64> {
    transaction(&db.pool, "prune executions", async |tx| {
        let found = prunable(tx, tenant, cutoff, limit).await?;
        Ok(delete_executions(tx, tenant, &found.executions).await?
            + delete_flows(tx, tenant, &found.flows, cutoff).await?)
    })
    .await
}

async fn delete_executions(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    ids: &[ExecutionId],
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(&format!(
        "WITH gone AS ( \
             DELETE FROM executions WHERE tenant_id = $1 AND execution_id = ANY($2) \
               AND lifecycle_phase = 'terminal' \
             RETURNING execution_id, idempotency_key), \
         {GONE_AND_KEYS}"
    ))
    .bind(tenant)
    .bind(ids)
    .one(&mut *tx, "prune executions")
    .await?;
    Ok(n as u64)
}

async fn delete_flows(
    tx: &mut sqlx::PgConnection,
    tenant: TenantId,
    ids: &[FlowId],
    cutoff: DateTime<Utc>,
) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let n: i64 = sqlx::query_scalar(&format!(
        "WITH still AS ( \
             SELECT f.flow_id FROM flows f WHERE f.tenant_id = $1 AND f.flow_id = ANY($2) \
               AND NOT EXISTS (SELECT 1 FROM executions m \
                   WHERE m.tenant_id = $1 AND m.flow_id = f.flow_id \
                     AND (m.lifecycle_phase <> 'terminal' \
                          OR coalesce(m.finished_at, m.updated_at) >= $3))), \
         gone AS ( \
             DELETE FROM executions e USING still s \
             WHERE e.tenant_id = $1 AND e.flow_id = s.flow_id \
             RETURNING e.execution_id, e.idempotency_key), \
         flows_gone AS ( \
             DELETE FROM flows f USING still s WHERE f.tenant_id = $1 AND f.flow_id = s.flow_id), \
         flow_scoped AS ( \
             DELETE FROM budgets b USING still s \
             WHERE b.tenant_id = $1 AND b.scope = 'flow' AND b.scope_key = s.flow_id::text), \
         {GONE_AND_KEYS}"
    ))
    .bind(tenant)
    .bind(ids)
    .bind(cutoff)
    .one(&mut *tx, "prune flows")
    .await?;
    Ok(n as u64)
}
