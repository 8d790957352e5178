//! `/v1/budgets`: define budgets over the caller's tenant, flows, executions
//! or lanes, read their usage, reset them. Guests spend against them through
//! `report-usage`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use super::auth::Caller;
use super::error::{ApiResult, ErrorBody, Json, Path};
use super::AppState;
use crate::model::{Budget, BudgetId, NewBudget};

/// Create a budget. Each dimension needs a soft limit, a hard limit or both;
/// `on_hard_limit` says what happens to an execution whose report would cross
/// a hard limit (`fail`, the default, or `suspend` until a reset).
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", request_body = NewBudget,
    responses((status = 201, body = Budget), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<NewBudget>,
) -> ApiResult<(StatusCode, Json<Budget>)> {
    let budget = state.engine.create_budget(caller.tenant, body).await?;
    Ok((StatusCode::CREATED, Json(budget)))
}

/// The caller's budgets with their usage, oldest first.
#[utoipa::path(get, path = "/v1/budgets", tag = "budgets",
    responses((status = 200, body = Vec<Budget>), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<Budget>>> {
    Ok(Json(
        state.engine.backend().list_budgets(caller.tenant).await?,
    ))
}

#[utoipa::path(get, path = "/v1/budgets/{id}", tag = "budgets", params(("id" = Uuid, Path)),
    responses((status = 200, body = Budget), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<BudgetId>,
) -> ApiResult<Json<Budget>> {
    Ok(Json(
        state.engine.backend().get_budget(caller.tenant, id).await?,
    ))
}

/// Usage back to zero; executions suspended on this budget resume.
#[utoipa::path(post, path = "/v1/budgets/{id}/reset", tag = "budgets",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Budget), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn reset(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<BudgetId>,
) -> ApiResult<Json<Budget>> {
    Ok(Json(state.engine.reset_budget(caller.tenant, id).await?))
}
