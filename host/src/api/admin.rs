//! Operator routes (`/v1/admin`, admin token) and the tenant's own view of
//! itself (`/v1/tenant`, API key).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Admin, Caller};
use super::error::{ApiResult, ErrorBody, Json, Path};
use super::AppState;
use crate::engine::IssuedKey;
use crate::model::{ApiKey, ApiKeyId, Tenant, TenantId, TenantLimits, TenantUsage};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<TenantLimits>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: Tenant,
    /// The tenant's first API key; its token is shown only here.
    pub api_key: IssuedKey,
}

/// Create a tenant with its first API key.
#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, body = TenantCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create_tenant(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantCreated>)> {
    let engine = &state.engine;
    // Limits are validated before anything is written.
    if let Some(limits) = &body.limits {
        engine.check_limits(limits)?;
    }
    let mut tenant = engine.create_tenant(&body.name).await?;
    if let Some(limits) = body.limits {
        tenant = engine.set_tenant_limits(tenant.tenant_id, limits).await?;
    }
    let api_key = engine.issue_api_key(tenant.tenant_id, "default").await?;
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant, api_key })))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<Tenant>,
}

#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin",
    responses((status = 200, body = TenantList), (status = 401, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_tenants(
    State(state): State<Arc<AppState>>,
    _: Admin,
) -> ApiResult<Json<TenantList>> {
    let items = state.engine.backend().list_tenants().await?;
    Ok(Json(TenantList { items }))
}

/// Replace a tenant's limits (absent fields mean the installation default).
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/limits", tag = "admin",
    params(("tenant" = Uuid, Path)), request_body = TenantLimits,
    responses((status = 200, body = Tenant), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn set_limits(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<TenantId>,
    Json(limits): Json<TenantLimits>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(state.engine.set_tenant_limits(tenant, limits).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
}

/// Issue another API key for a tenant (e.g. to rotate keys).
#[utoipa::path(post, path = "/v1/admin/tenants/{tenant}/keys", tag = "admin",
    params(("tenant" = Uuid, Path)), request_body = CreateKey,
    responses((status = 201, body = IssuedKey), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<TenantId>,
    Json(body): Json<CreateKey>,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    let issued = state.engine.issue_api_key(tenant, &body.name).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<ApiKey>,
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/keys", tag = "admin",
    params(("tenant" = Uuid, Path)),
    responses((status = 200, body = KeyList), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<TenantId>,
) -> ApiResult<Json<KeyList>> {
    state.engine.backend().get_tenant(tenant).await?;
    let items = state.engine.backend().list_api_keys(tenant).await?;
    Ok(Json(KeyList { items }))
}

/// Revoke a key; requests with it are refused from then on. Idempotent.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant}/keys/{key}", tag = "admin",
    params(("tenant" = Uuid, Path), ("key" = Uuid, Path)),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path((tenant, key)): Path<(TenantId, ApiKeyId)>,
) -> ApiResult<Json<ApiKey>> {
    Ok(Json(state.engine.revoke_api_key(tenant, key).await?))
}

/// A tenant as it sees itself: who it is, its limits, what it uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub usage: TenantUsage,
}

/// The calling tenant, its limits and its usage.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    responses((status = 200, body = TenantView), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<TenantView>> {
    let tenant = state.engine.backend().get_tenant(caller.tenant).await?;
    let usage = state.engine.usage(caller.tenant).await?;
    Ok(Json(TenantView { tenant, usage }))
}
