//! Concurrency limit reads that are the same on both drivers.

use crate::error::{EngineError, Result};
use crate::model::{ConcurrencyLimit, TenantId};

/// Scope, name, max running, max starts, window (ms); the counts cast to
/// `bigint` so that both drivers decode them alike.
type LimitRow = (String, String, i64, Option<i64>, Option<i64>);

fn limit((scope, name, max_running, max_starts, window_ms): LimitRow) -> Result<ConcurrencyLimit> {
    ConcurrencyLimit::from_stored(&scope, name, max_running, max_starts, window_ms)
}

for_both_drivers! {
    /// The tenant's limits by scope and name (their primary key).
    async fn list_concurrency_limits(conn, tenant: TenantId) -> Result<Vec<ConcurrencyLimit>> {
        let rows: Vec<LimitRow> = sqlx::query_as(
            "SELECT scope, name, CAST(max_running AS BIGINT), CAST(max_starts AS BIGINT), \
                    window_ms \
             FROM concurrency_limits WHERE tenant_id = $1 ORDER BY scope, name",
        )
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await
        .map_err(EngineError::storage("list concurrency limits"))?;
        rows.into_iter().map(limit).collect()
    }
}

// ConcurrencyLimits: every write (which may free held work) is the backend's own.
storage_methods! { $ impl ConcurrencyLimits in concurrency {
    read {
        "list concurrency limits" list_concurrency_limits(tenant: TenantId) -> Vec<ConcurrencyLimit>;
    }
    write {}
    own {
        set_concurrency_limit(tenant: TenantId, limit: &ConcurrencyLimit, max: u32) -> ();
        delete_concurrency_limit(tenant: TenantId, scope: ConcurrencyScope, name: &str) -> bool;
        release_held_keys(limit: u32) -> u64;
    }
} }
