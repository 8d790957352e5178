//! Tenants, their limits and their API keys.

use sqlx::postgres::PgRow;
use uuid::Uuid;

use super::rows::col;
use super::PgBackend;
use crate::backend::refusals::unknown_tenant;
use crate::backend::Fetch;
use crate::backend::{stored_i32, stored_i64};
use crate::error::{EngineError, Result};
use crate::model::{Tenant, TenantId, TenantLimits};

crate::backend::traits::implement_tenancy!(PgBackend, pg);

async fn create_tenant(db: &PgBackend, name: &str) -> Result<Tenant> {
    let pool = &db.pool;
    let row = sqlx::query(&format!(
        "INSERT INTO tenants (tenant_id, name) VALUES ($1, $2) \
         ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(name)
    .optional(pool, "create tenant")
    .await?
    .ok_or_else(|| EngineError::Conflict(format!("a tenant named `{name}` already exists")))?;
    tenant(&row)
}

async fn list_tenants(db: &PgBackend) -> Result<Vec<Tenant>> {
    let pool = &db.pool;
    let rows = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
    ))
    .all(pool, "list tenants")
    .await?;
    rows.iter().map(tenant).collect()
}

const TENANT_COLUMNS: &str = "tenant_id, name, created_at, max_running, max_queued, \
    max_input_bytes, max_component_bytes, max_task_timeout_ms, max_memory_mib, \
    max_starts_per_window, start_window_ms, max_result_bytes, max_frame_bytes_per_attempt, \
    max_children_per_execution, max_flow_members, max_waitpoints_per_execution, max_stored_bytes";

async fn get_tenant(db: &PgBackend, id: TenantId) -> Result<Tenant> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = $1"
    ))
    .bind(id)
    .optional(&db.pool, "get tenant")
    .await?
    .ok_or_else(|| unknown_tenant(id))?;
    tenant(&row)
}

/// The tenant's limits and the kinds among `kinds` without a non-deprecated
/// component (each a probe of the components primary key).
async fn admission(
    db: &PgBackend,
    id: TenantId,
    kinds: &[&str],
) -> Result<(TenantLimits, Vec<String>)> {
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS}, ARRAY( \
             SELECT k FROM unnest($2::text[]) AS k WHERE NOT EXISTS ( \
                 SELECT 1 FROM components c \
                 WHERE c.tenant_id = t.tenant_id AND c.kind = k AND NOT c.deprecated)) \
             AS missing_kinds \
         FROM tenants t WHERE tenant_id = $1"
    ))
    .bind(id)
    .bind(kinds)
    .optional(&db.pool, "admission")
    .await?
    .ok_or_else(|| unknown_tenant(id))?;
    Ok((tenant(&row)?.limits, col(&row, "missing_kinds")?))
}

async fn set_tenant_limits(db: &PgBackend, id: TenantId, limits: &TenantLimits) -> Result<Tenant> {
    let row = sqlx::query(&format!(
        "UPDATE tenants SET max_running = $2, max_queued = $3, max_input_bytes = $4, \
             max_component_bytes = $5, max_task_timeout_ms = $6, max_memory_mib = $7, \
             max_starts_per_window = $8, start_window_ms = $9, max_result_bytes = $10, \
             max_frame_bytes_per_attempt = $11, max_children_per_execution = $12, \
             max_flow_members = $13, max_waitpoints_per_execution = $14, \
             max_stored_bytes = $15 \
         WHERE tenant_id = $1 RETURNING {TENANT_COLUMNS}"
    ))
    .bind(id)
    .bind(limits.max_running.map(stored_i32))
    .bind(limits.max_queued.map(stored_i32))
    .bind(limits.max_input_bytes.map(stored_i32))
    .bind(limits.max_component_bytes.map(stored_i32))
    .bind(limits.max_task_timeout_ms.map(stored_i64))
    .bind(limits.max_memory_mib.map(stored_i32))
    .bind(limits.max_starts_per_window.map(stored_i32))
    .bind(limits.start_window_ms.map(stored_i64))
    .bind(limits.max_result_bytes.map(stored_i32))
    .bind(limits.max_frame_bytes_per_attempt.map(stored_i64))
    .bind(limits.max_children_per_execution.map(stored_i32))
    .bind(limits.max_flow_members.map(stored_i32))
    .bind(limits.max_waitpoints_per_execution.map(stored_i32))
    .bind(limits.max_stored_bytes.map(stored_i64))
    .optional(&db.pool, "set tenant limits")
    .await?
    .ok_or_else(|| unknown_tenant(id))?;
    tenant(&row)
}

fn tenant(row: &PgRow) -> Result<Tenant> {
    let limit = |name: &str| -> Result<Option<u32>> {
        Ok(col::<Option<i32>>(row, name)?.map(|v| v.max(0) as u32))
    };
    Ok(Tenant {
        tenant_id: col(row, "tenant_id")?,
        name: col(row, "name")?,
        created_at: col(row, "created_at")?,
        limits: TenantLimits {
            max_running: limit("max_running")?,
            max_queued: limit("max_queued")?,
            max_input_bytes: limit("max_input_bytes")?,
            max_component_bytes: limit("max_component_bytes")?,
            max_task_timeout_ms: col::<Option<i64>>(row, "max_task_timeout_ms")?
                .map(|v| v.max(0) as u64),
            max_memory_mib: limit("max_memory_mib")?,
            max_starts_per_window: limit("max_starts_per_window")?,
            start_window_ms: col::<Option<i64>>(row, "start_window_ms")?.map(|v| v.max(0) as u64),
            max_result_bytes: limit("max_result_bytes")?,
            max_frame_bytes_per_attempt: col::<Option<i64>>(row, "max_frame_bytes_per_attempt")?
                .map(|v| v.max(0) as u64),
            max_children_per_execution: limit("max_children_per_execution")?,
            max_flow_members: limit("max_flow_members")?,
            max_waitpoints_per_execution: limit("max_waitpoints_per_execution")?,
            max_stored_bytes: col::<Option<i64>>(row, "max_stored_bytes")?.map(|v| v.max(0) as u64),
        },
    })
}
