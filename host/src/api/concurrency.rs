//! Concurrency limits over HTTP: at most so many running (and started per
//! window) of each concurrency key, per kind or lane of the caller's tenant.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiResult, ErrorBody, Json, Path};
use super::AppState;
use crate::model::{ConcurrencyLimit, ConcurrencyScope, KeyLimit};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConcurrencyLimitList {
    pub limits: Vec<ConcurrencyLimit>,
}

/// The tenant's limits, by scope and name.
#[utoipa::path(get, path = "/v1/concurrency-limits", tag = "concurrency",
    responses((status = 200, body = ConcurrencyLimitList)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<ConcurrencyLimitList>> {
    let limits = state.engine.list_concurrency_limits(caller.tenant).await?;
    Ok(Json(ConcurrencyLimitList { limits }))
}

/// Create or replace the limit for a kind (`scope` = `kind`) or lane. The
/// kind's limit applies to an execution before its lane's. What the old
/// limit held back is judged again under the new one.
#[utoipa::path(put, path = "/v1/concurrency-limits/{scope}/{name}", tag = "concurrency",
    params(("scope" = ConcurrencyScope, Path), ("name" = String, Path)),
    request_body = KeyLimit,
    responses((status = 200, body = ConcurrencyLimit), (status = 400, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the tenant has as many limits as it may")),
    security(("api_key" = [])))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((scope, name)): Path<(ConcurrencyScope, String)>,
    Json(limit): Json<KeyLimit>,
) -> ApiResult<Json<ConcurrencyLimit>> {
    let limit = ConcurrencyLimit { scope, name, limit };
    let set = state
        .engine
        .set_concurrency_limit(caller.tenant, limit)
        .await?;
    Ok(Json(set))
}

/// Delete a limit; what it held back becomes claimable.
#[utoipa::path(delete, path = "/v1/concurrency-limits/{scope}/{name}", tag = "concurrency",
    params(("scope" = ConcurrencyScope, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((scope, name)): Path<(ConcurrencyScope, String)>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .delete_concurrency_limit(caller.tenant, scope, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
