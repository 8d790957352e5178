//! Schedules over HTTP: recurring executions of a kind, fired exactly once
//! per fire time by whichever scanner reaches them.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiError, ApiResult, ErrorBody, Json, Path, Query};
use super::payload::{decode_input, Payload};
use super::AppState;
use crate::model::{
    Cadence, Created, ExecutionPolicy, MissedPolicy, NewSchedule, OverlapPolicy, Schedule,
    ScheduleId, ScheduledExecution, DEFAULT_LANE,
};

/// Fire times a schedule's view lists ahead.
const UPCOMING: usize = 5;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Unique within the tenant.
    pub name: String,
    pub cadence: Cadence,
    /// Each fire's execution is due up to this much later, at random.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Fire times that passed unfired: `skip`, `run_once` (default) or
    /// `backfill` up to `max`.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// When the last execution has not ended: `allow` (default), `skip`, or
    /// `cancel_previous`.
    #[serde(default)]
    pub overlap: OverlapPolicy,
    pub execution: ScheduledBody,
}

/// What each fire creates.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduledBody {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_base64: Option<String>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: ExecutionPolicy,
    /// Each fire's execution carries this concurrency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
}

/// A schedule, its input, and its next fire times.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleView {
    #[serde(flatten)]
    pub schedule: Schedule,
    pub input: Payload,
    /// The next fire times (while it is not paused).
    pub upcoming: Vec<DateTime<Utc>>,
}

impl ScheduleView {
    fn of(schedule: Schedule) -> Self {
        let upcoming = match schedule.paused {
            true => Vec::new(),
            false => schedule.upcoming(UPCOMING),
        };
        Self {
            input: Payload::of(&schedule.spec.execution.input),
            schedule,
            upcoming,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub next_cursor: Option<ScheduleId>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScheduleQuery {
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    pub cursor: Option<ScheduleId>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// Create a schedule. A bad cron expression, time zone, interval or policy,
/// or a kind with no component, is a 400 naming the field; nothing is written.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = CreateSchedule,
    responses((status = 201, body = ScheduleView), (status = 400, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "a schedule of that name exists"),
        (status = 422, body = ErrorBody, description = "the tenant has as many schedules as it may")),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateSchedule>,
) -> ApiResult<(StatusCode, Json<ScheduleView>)> {
    let execution = body.execution;
    let spec = NewSchedule {
        name: body.name,
        cadence: body.cadence,
        jitter_ms: body.jitter_ms,
        missed: body.missed,
        overlap: body.overlap,
        execution: ScheduledExecution {
            input: decode_input("execution.input", execution.input, execution.input_base64)?,
            kind: execution.kind,
            lane: execution.lane.unwrap_or_else(|| DEFAULT_LANE.into()),
            priority: execution.priority,
            tags: execution.tags,
            policy: execution.policy,
            concurrency_key: execution.concurrency_key,
        },
    };
    let schedule = state.engine.create_schedule(caller.tenant, spec).await?;
    Ok((StatusCode::CREATED, Json(ScheduleView::of(schedule))))
}

/// The tenant's schedules, oldest first.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ScheduleQuery),
    responses((status = 200, body = ScheduleList), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ScheduleQuery>,
) -> ApiResult<Json<ScheduleList>> {
    let limit = page_limit(query.limit)?;
    let schedules = state
        .engine
        .list_schedules(caller.tenant, query.cursor, limit)
        .await?;
    let next_cursor = (schedules.len() == limit as usize)
        .then(|| schedules.last().map(|s| s.schedule_id))
        .flatten();
    Ok(Json(ScheduleList {
        items: schedules.into_iter().map(ScheduleView::of).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<Json<ScheduleView>> {
    let schedule = state.engine.get_schedule(caller.tenant, id).await?;
    Ok(Json(ScheduleView::of(schedule)))
}

/// Stop firing until resumed.
#[utoipa::path(post, path = "/v1/schedules/{id}/pause", tag = "schedules",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn pause(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<Json<ScheduleView>> {
    let schedule = state.engine.pause_schedule(caller.tenant, id, true).await?;
    Ok(Json(ScheduleView::of(schedule)))
}

/// Fire again from the next fire time to come (times passed while paused
/// are not fired).
#[utoipa::path(post, path = "/v1/schedules/{id}/resume", tag = "schedules",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = ScheduleView), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<Json<ScheduleView>> {
    let schedule = state
        .engine
        .pause_schedule(caller.tenant, id, false)
        .await?;
    Ok(Json(ScheduleView::of(schedule)))
}

/// Create the schedule's execution now; its next fire time stays.
#[utoipa::path(post, path = "/v1/schedules/{id}/trigger", tag = "schedules",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 201, body = Created), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn trigger(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let created = state.engine.trigger_schedule(caller.tenant, id).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Delete a schedule; the executions it created stay.
#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ScheduleId>,
) -> ApiResult<StatusCode> {
    match state.engine.delete_schedule(caller.tenant, id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("schedule")),
    }
}
