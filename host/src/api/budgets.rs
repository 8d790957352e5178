//! `/v1/budgets`: define budgets over the caller's tenant, flows, executions
//! or lanes, read their usage, reset them. Guests spend against them through
//! `report-usage`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiResult, ErrorBody, Json, Path, Query};
use super::AppState;
use crate::model::{Budget, BudgetAdjustment, BudgetId, NewBudget, UsageAdjustment};

/// Create a budget. Each dimension needs a soft limit, a hard limit or both;
/// `on_hard_limit` says what happens to an execution whose report would cross
/// a hard limit (`fail`, the default, or `suspend` until a reset).
#[utoipa::path(post, path = "/v1/budgets", tag = "budgets", request_body = NewBudget,
    responses((status = 201, body = Budget), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the tenant has 1,000 budgets")),
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

/// Delete a budget, its usage and its audit trail. What it held is let go
/// as a reset lets it go: claims blocked on it are claimable again, and
/// executions suspended waiting for it resume.
#[utoipa::path(delete, path = "/v1/budgets/{id}", tag = "budgets",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<BudgetId>,
) -> ApiResult<StatusCode> {
    state.engine.delete_budget(caller.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
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

/// Correct one dimension's usage by hand, without a lease (a negative
/// `delta` lowers it; usage stays within 0..=2^63-1), with a reason kept in
/// the budget's audit trail. Brought back under its hard limit, the
/// dimension stops blocking, and executions suspended on the budget resume
/// once none of its dimensions is exhausted.
#[utoipa::path(post, path = "/v1/budgets/{id}/usage", tag = "budgets",
    params(("id" = Uuid, Path)), request_body = UsageAdjustment,
    responses((status = 200, body = Budget), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "the audit trail is full")),
    security(("api_key" = [])))]
pub async fn adjust(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<BudgetId>,
    Json(body): Json<UsageAdjustment>,
) -> ApiResult<Json<Budget>> {
    Ok(Json(
        state.engine.adjust_usage(caller.tenant, id, &body).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdjustmentsQuery {
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AdjustmentList {
    pub items: Vec<BudgetAdjustment>,
}

/// The budget's hand corrections, newest first: the audit trail.
#[utoipa::path(get, path = "/v1/budgets/{id}/adjustments", tag = "budgets",
    params(("id" = Uuid, Path), AdjustmentsQuery),
    responses((status = 200, body = AdjustmentList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn adjustments(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<BudgetId>,
    Query(query): Query<AdjustmentsQuery>,
) -> ApiResult<Json<AdjustmentList>> {
    let limit = page_limit(query.limit)?;
    let items = state
        .engine
        .list_adjustments(caller.tenant, id, limit)
        .await?;
    Ok(Json(AdjustmentList { items }))
}
