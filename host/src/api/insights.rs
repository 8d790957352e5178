//! What the lifecycle recorded, over HTTP: an execution's attempts (one
//! lease each: worker, epoch, how it ended), its lease history, and the
//! tenant's overview.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiResult, ErrorBody, Json, Path};
use super::AppState;
use crate::model::{AttemptRecord, ExecutionId, LeaseEvent, Overview};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptList {
    /// Newest first, at most 200.
    pub items: Vec<AttemptRecord>,
}

/// An execution's attempts, newest first: the lease epoch and worker of
/// each, its type (initial, retry, reclaim, …), how it ended and why.
#[utoipa::path(get, path = "/v1/executions/{id}/attempts", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = AttemptList), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn attempts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<Json<AttemptList>> {
    let items = state.engine.attempts(caller.tenant, id).await?;
    Ok(Json(AttemptList { items }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseHistory {
    /// Oldest first: the newest 500 at most.
    pub items: Vec<LeaseEvent>,
}

/// An execution's lease history: each lease acquired, renewed, released,
/// expired, revoked or reclaimed, with its attempt and epoch.
#[utoipa::path(get, path = "/v1/executions/{id}/leases", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeaseHistory), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn leases(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<Json<LeaseHistory>> {
    let items = state.engine.lease_history(caller.tenant, id).await?;
    Ok(Json(LeaseHistory { items }))
}

/// The caller's executions by state, and how attempts ended over the last
/// hour (by minute, and the kinds failing most).
#[utoipa::path(get, path = "/v1/overview", tag = "executions",
    responses((status = 200, body = Overview), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn overview(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Overview>> {
    Ok(Json(state.engine.overview(caller.tenant).await?))
}
