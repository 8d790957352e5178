//! Concurrency limit statements that are the same on both drivers.

use chrono::Utc;

use super::caps::Named;
use super::stamp::Stamp;
use crate::backend::{stored_i32, stored_i64};
use crate::backend::{Fetch, Run};
use crate::error::Result;
use crate::model::{ConcurrencyLimit, ConcurrencyScope, TenantId};

/// Scope, name, max running, max starts, window (ms); the counts cast to
/// `bigint` so that both drivers decode them alike.
type LimitRow = (String, String, i64, Option<i64>, Option<i64>);

/// The most of what a limit held back that setting or deleting it frees at
/// once, picked among the tenant's first [`LIMIT_CHANGE_LOOKS_AT`] held
/// executions (in the held index's order): a tenant holding back a great
/// many does not turn one API call into one unbounded update. The held-keys
/// pass frees the rest, group by group, under the limit that applies now.
pub(crate) const LIMIT_CHANGE_FREES: i64 = 1_000;
pub(crate) const LIMIT_CHANGE_LOOKS_AT: i64 = 10_000;

fn limit((scope, name, max_running, max_starts, window_ms): LimitRow) -> Result<ConcurrencyLimit> {
    ConcurrencyLimit::from_stored(&scope, name, max_running, max_starts, window_ms)
}

for_both_drivers! {
    /// Create or replace a limit, refusing a new one past `max_limits` (the
    /// cap holds the tenant's limits still until commit). The caller makes
    /// claimable what the new limit no longer holds back.
    async fn put_concurrency_limit(conn, tenant: TenantId, limit: &ConcurrencyLimit, max_limits: u32)
        -> Result<()>
    {
        let op = "set concurrency limit";
        let key = [("scope", limit.scope.as_str()), ("name", limit.name.as_str())];
        let named = Named { table: "concurrency_limits", key: &key, max: max_limits, what: "concurrency limits" };
        caps::check_named_cap(conn, tenant, named, op).await?;
        let key = &limit.limit;
        sqlx::query(
            "INSERT INTO concurrency_limits \
                 (tenant_id, scope, name, max_running, max_starts, window_ms, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, scope, name) DO UPDATE SET \
                 max_running = excluded.max_running, max_starts = excluded.max_starts, \
                 window_ms = excluded.window_ms, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(limit.scope.as_str())
        .bind(&limit.name)
        .bind(stored_i32(key.max_running))
        .bind(key.max_starts.map(stored_i32))
        .bind(key.window_ms.map(stored_i64))
        .bind(Stamp(Utc::now()))
        .run(&mut *conn, op)
        .await?;
        Ok(())
    }

    /// Delete a limit; whether there was one. The caller makes claimable
    /// what it held back.
    async fn delete_concurrency_limit(conn, tenant: TenantId, scope: ConcurrencyScope, name: &str)
        -> Result<bool>
    {
        let deleted = sqlx::query(
            "DELETE FROM concurrency_limits WHERE tenant_id = $1 AND scope = $2 AND name = $3",
        )
        .bind(tenant)
        .bind(scope.as_str())
        .bind(name)
        .run(&mut *conn, "delete concurrency limit")
        .await?
        .rows_affected();
        Ok(deleted == 1)
    }

    /// The tenant's limits by scope and name (their primary key).
    async fn list_concurrency_limits(conn, tenant: TenantId) -> Result<Vec<ConcurrencyLimit>> {
        let rows: Vec<LimitRow> = sqlx::query_as(
            "SELECT scope, name, CAST(max_running AS BIGINT), CAST(max_starts AS BIGINT), \
                    window_ms \
             FROM concurrency_limits WHERE tenant_id = $1 ORDER BY scope, name",
        )
        .bind(tenant)
        .all(&mut *conn, "list concurrency limits")
        .await?;
        rows.into_iter().map(limit).collect()
    }
}
