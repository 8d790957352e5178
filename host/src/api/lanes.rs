//! `/v1/lanes`: the caller's lanes with executions that have not ended, and
//! how many of them are queued, running and suspended.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiResult, ErrorBody, Json, Query};
use super::AppState;
use crate::model::LaneCounts;
use crate::model::Page;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LaneQuery {
    /// The `next_cursor` of the previous page (a lane name).
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LanePage {
    pub items: Vec<LaneCounts>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's lanes in name order, each with its queued, running and
/// suspended executions; lanes whose executions have all ended are left out.
#[utoipa::path(get, path = "/v1/lanes", tag = "executions", params(LaneQuery),
    responses((status = 200, body = LanePage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<LaneQuery>,
) -> ApiResult<Json<LanePage>> {
    let limit = page_limit(query.limit)?;
    if let Some(cursor) = &query.cursor {
        state.engine.check_name("cursor", cursor)?;
    }
    let items = state
        .engine
        .backend()
        .lane_counts(caller.tenant, Page::new(query.cursor.as_deref(), limit))
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|l| l.lane.clone()))
        .flatten();
    Ok(Json(LanePage { items, next_cursor }))
}
