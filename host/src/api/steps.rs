//! An execution's journal of durable steps over HTTP: what its runs
//! recorded, without the results themselves.

use std::sync::Arc;

use axum::extract::State;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiResult, ErrorBody, Json, Path, Query};
use super::AppState;
use crate::model::{ExecutionId, StepSummary};

#[derive(Debug, serde::Serialize, serde::Deserialize, ToSchema)]
pub struct StepList {
    pub items: Vec<StepSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StepQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<u32>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// A page of an execution's recorded steps in position order: each step's
/// name, kind, the attempt that recorded it, how long it ran and its size.
#[utoipa::path(get, path = "/v1/executions/{id}/steps", tag = "executions",
    params(("id" = Uuid, Path), StepQuery),
    responses((status = 200, body = StepList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    Query(query): Query<StepQuery>,
) -> ApiResult<Json<StepList>> {
    let limit = page_limit(query.limit)?;
    let items = state
        .engine
        .list_steps(caller.tenant, id, query.cursor, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|s| s.position))
        .flatten();
    Ok(Json(StepList { items, next_cursor }))
}
