//! Tenants, their API keys and their components.

use sqlx::types::Json;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::time::{at, now, Millis};
use super::SqliteBackend;
use crate::backend::{Fetch, Run};
use crate::error::{EngineError, Result};
use crate::model::{Tenant, TenantId, TenantLimits};

crate::backend::traits::implement_tenancy!(SqliteBackend, sqlite);

async fn create_tenant(db: &SqliteBackend, name: &str) -> Result<Tenant> {
    db.write("create tenant", async |conn, _| {
        let row: Option<TenantRow> = sqlx::query_as(&format!(
            "INSERT INTO tenants (tenant_id, name, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO NOTHING RETURNING {TENANT_COLUMNS}"
        ))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(now())
        .optional(conn, "create tenant")
        .await?;
        row.map(Tenant::from)
            .ok_or_else(|| EngineError::Conflict(format!("a tenant named `{name}` already exists")))
    })
    .await
}

async fn list_tenants(db: &SqliteBackend) -> Result<Vec<Tenant>> {
    sqlx::query_as::<_, TenantRow>(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants ORDER BY name"
    ))
    .all_mapped(db.reader(), "list tenants", Tenant::from)
    .await
}

async fn get_tenant(db: &SqliteBackend, tenant: TenantId) -> Result<Tenant> {
    db.read("get tenant", async |conn| read_tenant(conn, tenant).await)
        .await
}

async fn set_tenant_limits(
    db: &SqliteBackend,
    tenant: TenantId,
    limits: &TenantLimits,
) -> Result<Tenant> {
    db.write("set tenant limits", async |conn, effects| {
        let done = sqlx::query("UPDATE tenants SET limits = ? WHERE tenant_id = ?")
            .bind(Json(limits))
            .bind(tenant)
            .run(&mut *conn, "set tenant limits")
            .await?;
        if done.rows_affected() == 0 {
            return Err(unknown_tenant(tenant));
        }
        // A loosened limit may free claimable work.
        effects.work = true;
        read_tenant(conn, tenant).await
    })
    .await
}

/// The tenant's limits and the kinds among `kinds` without a non-deprecated
/// component.
async fn admission(
    db: &SqliteBackend,
    tenant: TenantId,
    kinds: &[&str],
) -> Result<(TenantLimits, Vec<String>)> {
    db.read("admission", async |conn| {
        let limits = read_tenant(conn, tenant).await?.limits;
        let mut missing = Vec::new();
        for kind in kinds {
            let runnable: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM components \
             WHERE tenant_id = ? AND kind = ? AND NOT deprecated)",
            )
            .bind(tenant)
            .bind(kind)
            .one(&mut *conn, "admission")
            .await?;
            if !runnable {
                missing.push((*kind).to_owned());
            }
        }
        Ok((limits, missing))
    })
    .await
}

#[derive(sqlx::FromRow)]
struct TenantRow {
    tenant_id: TenantId,
    name: String,
    created_at: Millis,
    limits: Json<TenantLimits>,
}

impl From<TenantRow> for Tenant {
    fn from(r: TenantRow) -> Self {
        Tenant {
            tenant_id: r.tenant_id,
            name: r.name,
            created_at: at(r.created_at),
            limits: r.limits.0,
        }
    }
}

const TENANT_COLUMNS: &str = "tenant_id, name, created_at, limits";

use crate::backend::refusals::unknown_tenant;

pub(super) async fn read_tenant(conn: &mut SqliteConnection, id: TenantId) -> Result<Tenant> {
    let row: Option<TenantRow> = sqlx::query_as(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE tenant_id = ?"
    ))
    .bind(id)
    .optional(conn, "get tenant")
    .await?;
    row.map(Tenant::from).ok_or_else(|| unknown_tenant(id))
}
