//! Capabilities: the operator's ceiling per tenant (`/v1/admin/tenants/{id}/
//! capabilities`), the tenant's grant per component kind (`/v1/grants`), and
//! the tenant's config values and secrets (`/v1/config`). A secret's value is
//! accepted here and never returned by any route.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{Admin, Caller};
use super::error::{ApiError, ApiResult, ErrorBody, Json};
use super::AppState;
use crate::model::{CapabilityCeiling, ComponentGrant, ConfigEntry, StoredGrant, TenantId};

/// Replace a tenant's capability ceiling: what it may grant its components
/// (default: nothing).
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant}/capabilities", tag = "admin",
    params(("tenant" = Uuid, Path)), request_body = CapabilityCeiling,
    responses((status = 200, body = CapabilityCeiling), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn set_ceiling(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<TenantId>,
    Json(ceiling): Json<CapabilityCeiling>,
) -> ApiResult<Json<CapabilityCeiling>> {
    state.engine.set_ceiling(tenant, &ceiling).await?;
    Ok(Json(ceiling))
}

#[utoipa::path(get, path = "/v1/admin/tenants/{tenant}/capabilities", tag = "admin",
    params(("tenant" = Uuid, Path)),
    responses((status = 200, body = CapabilityCeiling), (status = 404, body = ErrorBody)),
    security(("admin_token" = [])))]
pub async fn get_ceiling(
    State(state): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<TenantId>,
) -> ApiResult<Json<CapabilityCeiling>> {
    state.engine.backend().get_tenant(tenant).await?;
    Ok(Json(state.engine.backend().ceiling(tenant).await?))
}

/// The caller's capability ceiling, as the operator set it.
#[utoipa::path(get, path = "/v1/capabilities", tag = "grants",
    responses((status = 200, body = CapabilityCeiling), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn own_ceiling(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<CapabilityCeiling>> {
    Ok(Json(state.engine.backend().ceiling(caller.tenant).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub items: Vec<StoredGrant>,
}

#[utoipa::path(get, path = "/v1/grants", tag = "grants",
    responses((status = 200, body = GrantList), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<GrantList>> {
    let items = state.engine.backend().list_grants(caller.tenant).await?;
    Ok(Json(GrantList { items }))
}

/// Create or replace what components of `kind` may use; it must fit under
/// the tenant's ceiling. Running guests see it from their next attempt.
#[utoipa::path(put, path = "/v1/grants/{kind}", tag = "grants",
    params(("kind" = String, Path)), request_body = ComponentGrant,
    responses((status = 200, body = StoredGrant), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    Json(grant): Json<ComponentGrant>,
) -> ApiResult<Json<StoredGrant>> {
    Ok(Json(
        state.engine.put_grant(caller.tenant, &kind, &grant).await?,
    ))
}

#[utoipa::path(get, path = "/v1/grants/{kind}", tag = "grants",
    params(("kind" = String, Path)),
    responses((status = 200, body = StoredGrant), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
) -> ApiResult<Json<StoredGrant>> {
    state.engine.check_name("kind", &kind)?;
    state
        .engine
        .backend()
        .grant(caller.tenant, &kind)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("grant"))
}

#[utoipa::path(delete, path = "/v1/grants/{kind}", tag = "grants",
    params(("kind" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.check_name("kind", &kind)?;
    if state
        .engine
        .backend()
        .delete_grant(caller.tenant, &kind)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("grant"))
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigList {
    /// Plain values with their value; secrets by name only.
    pub items: Vec<ConfigEntry>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    pub value: String,
    /// A secret's value is never shown again.
    #[serde(default)]
    pub secret: bool,
}

#[utoipa::path(get, path = "/v1/config", tag = "grants",
    responses((status = 200, body = ConfigList), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_config(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<ConfigList>> {
    let items = state.engine.list_config(caller.tenant).await?;
    Ok(Json(ConfigList { items }))
}

/// Set a config value or secret (sealed at rest). The answer carries a
/// plain value back, never a secret's.
#[utoipa::path(put, path = "/v1/config/{name}", tag = "grants",
    params(("name" = String, Path)), request_body = SetConfig,
    responses((status = 200, body = ConfigEntry), (status = 400, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn set_config(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<SetConfig>,
) -> ApiResult<Json<ConfigEntry>> {
    let entry = state
        .engine
        .put_config(caller.tenant, &name, &body.value, body.secret)
        .await?;
    Ok(Json(entry))
}

#[utoipa::path(delete, path = "/v1/config/{name}", tag = "grants",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_config(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.engine.delete_config(caller.tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
