//! Concurrency limits per key: the tenant's limits, and the scanner that
//! frees what a limit holds back once its key has room. The claim's side is
//! in `claim.rs`; handing a slot on when its holder stops running is the
//! release trigger (`sql/functions/flowfabric_release_concurrency_slots.sql`).

use super::rows::transaction;
use super::scanners::count_pass;
use super::PgBackend;
use crate::backend::shared::concurrency::pg as shared;
use crate::backend::{Run, Sweep};
use crate::error::Result;
use crate::model::{ConcurrencyLimit, ConcurrencyScope, TenantId};

/// Make claimable what the tenant's limit for a scope and name held back,
/// off `executions_concurrency_blocked_idx`. The next claim judges each
/// again, under whatever limit applies now.
const UNBLOCK_SCOPE_SQL: &str = "\
    WITH freed AS (
        UPDATE executions SET eligibility_state = 'eligible_now',
            blocking_reason = 'waiting_for_worker', updated_at = now()
        WHERE tenant_id = $1 AND eligibility_state = 'blocked_by_concurrency_key'
          AND $3 = CASE $2 WHEN 'kind' THEN kind ELSE lane END
        RETURNING 1),
    wake AS (SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM freed))
    SELECT (SELECT count(*) FROM freed) + 0 * (SELECT count(*) FROM wake)";

async fn unblock_scope(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    scope: ConcurrencyScope,
    name: &str,
) -> Result<()> {
    sqlx::query(UNBLOCK_SCOPE_SQL)
        .bind(tenant)
        .bind(scope.as_str())
        .bind(name)
        .run(conn, "release held executions")
        .await?;
    Ok(())
}

crate::backend::configuration::implement_concurrency!(PgBackend, pg);

async fn set_concurrency_limit(
    db: &PgBackend,
    tenant: TenantId,
    limit: &ConcurrencyLimit,
    max_limits: u32,
) -> Result<()> {
    transaction(&db.pool, "set concurrency limit", async |tx| {
        shared::put_concurrency_limit(tx, tenant, limit, max_limits).await?;
        unblock_scope(tx, tenant, limit.scope, &limit.name).await
    })
    .await
}

async fn delete_concurrency_limit(
    db: &PgBackend,
    tenant: TenantId,
    scope: ConcurrencyScope,
    name: &str,
) -> Result<bool> {
    transaction(&db.pool, "delete concurrency limit", async |tx| {
        let deleted = shared::delete_concurrency_limit(tx, tenant, scope, name).await?;
        unblock_scope(tx, tenant, scope, name).await?;
        Ok(deleted)
    })
    .await
}

/// Groups of held-back executions (tenant, key, kind, lane) off
/// `executions_concurrency_blocked_idx`, at most `limit` a tenant (so one
/// tenant's many held keys do not crowd another's out of the pass), each
/// with the room its key has now under the limit that applies (all of it
/// when none does), read without locking the slot: making one too many
/// claimable only costs the next claim a re-block, as the claim judges it
/// under the lock.
async fn release_held_keys(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    count_pass(&db.pool, RELEASE_HELD_SQL, sweep, "release held keys").await
}

const RELEASE_HELD_SQL: &str = r#"
WITH groups AS (
    SELECT g.* FROM tenants t
    CROSS JOIN LATERAL (
        SELECT DISTINCT x.tenant_id, x.concurrency_key, x.kind, x.lane FROM executions x
        WHERE x.tenant_id = t.tenant_id
          AND x.eligibility_state = 'blocked_by_concurrency_key'
        LIMIT $1
    ) g
    WHERE $2::uuid IS NULL OR t.tenant_id = $2
),
judged AS (
    SELECT g.*, CASE WHEN rule.scope IS NULL THEN $1
        ELSE greatest(0, least(rule.max_running - coalesce(s.running, 0),
            CASE WHEN rule.max_starts IS NULL THEN rule.max_running
                 WHEN s.window_started_at > now()
                      - coalesce(rule.window_ms, 1000) * interval '1 millisecond'
                 THEN rule.max_starts - s.window_starts
                 ELSE rule.max_starts END)) END AS room
    FROM groups g
    LEFT JOIN LATERAL (
        SELECT cl.scope, cl.name, cl.max_running, cl.max_starts, cl.window_ms
        FROM concurrency_limits cl
        WHERE cl.tenant_id = g.tenant_id
          AND ((cl.scope = 'kind' AND cl.name = g.kind)
               OR (cl.scope = 'lane' AND cl.name = g.lane))
        ORDER BY cl.scope
        LIMIT 1
    ) rule ON true
    LEFT JOIN concurrency_slots s ON s.tenant_id = g.tenant_id AND s.scope = rule.scope
        AND s.name = rule.name AND s.key = g.concurrency_key
),
freed AS (
    UPDATE executions e SET eligibility_state = 'eligible_now',
        blocking_reason = 'waiting_for_worker', updated_at = now()
    WHERE e.ctid = ANY(ARRAY(
        SELECT q.ctid FROM judged j
        CROSS JOIN LATERAL (
            SELECT x.ctid FROM executions x
            WHERE x.tenant_id = j.tenant_id AND x.concurrency_key = j.concurrency_key
              AND x.kind = j.kind AND x.lane = j.lane
              AND x.eligibility_state = 'blocked_by_concurrency_key'
            ORDER BY x.priority DESC, x.eligible_at, x.execution_id
            LIMIT j.room
            FOR UPDATE SKIP LOCKED
        ) q
        WHERE j.room > 0))
    RETURNING 1
),
wake AS (SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM freed))
SELECT (SELECT count(*) FROM freed) + 0 * (SELECT count(*) FROM wake)
"#;
