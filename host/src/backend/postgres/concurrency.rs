//! Concurrency limits per key: the tenant's limits, and the scanner that
//! frees what a limit holds back once its key has room. The claim's side is
//! in `claim.rs`; handing a slot on when its holder stops running is the
//! release trigger (`sql/functions/flowfabric_release_concurrency_slots.sql`).

use std::sync::LazyLock;

use sqlx::FromRow;

use super::rows::{col, transaction};
use super::Connections;
use super::PgBackend;
use crate::backend::held_keys::{HeldGroup, PassEnd};
use crate::backend::shared::concurrency::{
    pg as shared, LIMIT_CHANGE_FREES, LIMIT_CHANGE_LOOKS_AT,
};
use crate::backend::{Fetch, Run, Sweep};
use crate::error::{EngineError, Result};
use crate::model::{ConcurrencyLimit, ConcurrencyScope, TenantId};

/// Make claimable what the tenant's limit for a scope and name held back,
/// as far as [`LIMIT_CHANGE_FREES`] among the tenant's first
/// [`LIMIT_CHANGE_LOOKS_AT`] held executions, off
/// `executions_concurrency_blocked_idx`. The next claims judge each again,
/// under whatever limit applies now. The rows are taken by the update's TID
/// scan: one another transaction changed meanwhile is passed over, and left
/// to the held-keys pass if it is still held.
static UNBLOCK_SCOPE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH freed AS (
            UPDATE executions e SET eligibility_state = 'eligible_now',
                blocking_reason = 'waiting_for_worker', updated_at = now()
            WHERE e.ctid = ANY(ARRAY(
                SELECT h.ctid FROM (
                    SELECT x.ctid, x.kind, x.lane FROM executions x
                    WHERE x.tenant_id = $1
                      AND x.eligibility_state = 'blocked_by_concurrency_key'
                    LIMIT {LIMIT_CHANGE_LOOKS_AT}) h
                WHERE $3 = CASE $2 WHEN 'kind' THEN h.kind ELSE h.lane END
                LIMIT {LIMIT_CHANGE_FREES}))
              AND e.eligibility_state = 'blocked_by_concurrency_key'
            RETURNING 1),
        wake AS (SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM freed))
        SELECT (SELECT count(*) FROM freed) + 0 * (SELECT count(*) FROM wake)"
    )
});

async fn unblock_scope(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    scope: ConcurrencyScope,
    name: &str,
) -> Result<()> {
    sqlx::query(UNBLOCK_SCOPE_SQL.as_str())
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
/// `executions_concurrency_held_groups_idx`, at most `limit` a tenant (so one
/// tenant's many held keys do not crowd another's out of the pass), in key
/// order from where the tenant's last pass stopped (see
/// [`crate::backend::held_keys`]), each with the room its key has now under
/// the limit that applies (all of it when none does), read without locking
/// the slot: making one too many claimable only costs the next claim a
/// re-block, as the claim judges it under the lock.
async fn release_held_keys(db: &PgBackend, sweep: Sweep) -> Result<u64> {
    let op = "release held keys";
    let starts = db.held_cursors.starts(sweep);
    let column = |field: fn(&HeldGroup) -> &str| -> Vec<&str> {
        starts.iter().map(|(_, group)| field(group)).collect()
    };
    let rows: Vec<(i64, Option<PassEnd>)> = sqlx::query(RELEASE_HELD_SQL)
        .bind(i64::from(sweep.limit))
        .bind(sweep.tenant)
        .bind(starts.iter().map(|(tenant, _)| *tenant).collect::<Vec<_>>())
        .bind(column(|g| &g.concurrency_key))
        .bind(column(|g| &g.kind))
        .bind(column(|g| &g.lane))
        .all(&db.pool, op)
        .await?
        .iter()
        .map(|row| {
            let freed: i64 = col(row, "freed")?;
            let tenant: Option<TenantId> = col(row, "tenant_id")?;
            let end = match tenant {
                Some(_) => Some(PassEnd::from_row(row).map_err(EngineError::storage(op))?),
                None => None,
            };
            Ok((freed, end))
        })
        .collect::<Result<_>>()?;
    let freed = rows.first().map_or(0, |(freed, _)| *freed);
    db.held_cursors
        .advance(sweep, rows.into_iter().filter_map(|(_, end)| end).collect());
    Ok(freed.max(0) as u64)
}

/// [`RELEASE_HELD_SQL`]'s plan for a pass over every tenant from the start.
pub(super) async fn explain_release_held(pool: &Connections, per_tenant: u32) -> Result<String> {
    let op = "explain release held keys";
    let none: Vec<&str> = Vec::new();
    let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {RELEASE_HELD_SQL}"))
        .bind(i64::from(per_tenant))
        .bind(None::<TenantId>)
        .bind(Vec::<TenantId>::new())
        .bind(&none)
        .bind(&none)
        .bind(&none)
        .all(pool, op)
        .await?;
    Ok(lines.join("\n"))
}

const RELEASE_HELD_SQL: &str = r#"
WITH starts AS (
    SELECT * FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[])
        AS c(tenant_id, concurrency_key, kind, lane)
),
groups AS (
    -- Each tenant's next groups after its cursor, one probe of
    -- executions_concurrency_held_groups_idx a group (a DISTINCT would read
    -- every held execution of the keys it passes). Keys, kinds and lanes are
    -- never empty, so ('', '', '') is before every group.
    SELECT g.* FROM tenants t
    LEFT JOIN starts c ON c.tenant_id = t.tenant_id
    CROSS JOIN LATERAL (
        WITH RECURSIVE walk AS (
            (SELECT x.tenant_id, x.concurrency_key, x.kind, x.lane, 1 AS n
             FROM executions x
             WHERE x.tenant_id = t.tenant_id
               AND x.eligibility_state = 'blocked_by_concurrency_key'
               AND (x.concurrency_key, x.kind, x.lane)
                   > (coalesce(c.concurrency_key, ''), coalesce(c.kind, ''), coalesce(c.lane, ''))
             ORDER BY x.concurrency_key, x.kind, x.lane
             LIMIT 1)
            UNION ALL
            SELECT nx.tenant_id, nx.concurrency_key, nx.kind, nx.lane, w.n + 1
            FROM walk w
            CROSS JOIN LATERAL (
                SELECT x.tenant_id, x.concurrency_key, x.kind, x.lane FROM executions x
                WHERE x.tenant_id = w.tenant_id
                  AND x.eligibility_state = 'blocked_by_concurrency_key'
                  AND (x.concurrency_key, x.kind, x.lane) > (w.concurrency_key, w.kind, w.lane)
                ORDER BY x.concurrency_key, x.kind, x.lane
                LIMIT 1
            ) nx
            WHERE w.n < $1
        )
        SELECT walk.tenant_id, walk.concurrency_key, walk.kind, walk.lane FROM walk
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
wake AS (SELECT pg_notify('flowfabric_work', '') WHERE EXISTS (SELECT 1 FROM freed)),
ends AS (
    SELECT DISTINCT ON (tenant_id) tenant_id, concurrency_key, kind, lane,
        count(*) OVER (PARTITION BY tenant_id) AS taken
    FROM groups
    ORDER BY tenant_id, concurrency_key DESC, kind DESC, lane DESC
)
SELECT f.freed, e.tenant_id, e.concurrency_key, e.kind, e.lane, e.taken
FROM (SELECT (SELECT count(*) FROM freed) + 0 * (SELECT count(*) FROM wake) AS freed) f
LEFT JOIN ends e ON true
"#;
