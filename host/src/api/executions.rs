//! `/v1/executions`: create (single and bulk), read, list, result, cancel,
//! priority. Every handler scopes to the caller's tenant, so another tenant's
//! id is simply not found.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiResult, ErrorBody, Json, OptionalJson, Path, Query};
use super::payload::{decode_input, Payload};
use super::AppState;
use crate::model::{
    Created, Execution, ExecutionFilter, ExecutionId, ExecutionPolicy, NewExecution, PublicState,
    Replay, DEFAULT_LANE,
};

/// A new execution. Give the input as `input` (any JSON) or `input_base64`.
// Serialize too: the CLI sends this struct, so the two cannot drift apart.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecution {
    /// The component kind that runs it.
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
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: ExecutionPolicy,
    /// Creating twice with one key (within the policy's dedup window) returns
    /// the first execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The tenant's concurrency limit for the kind (else the lane) applies
    /// per value of this key: a customer id, say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_until: Option<DateTime<Utc>>,
}

impl CreateExecution {
    pub fn into_new(self) -> ApiResult<NewExecution> {
        Ok(NewExecution {
            input: decode_input("input", self.input, self.input_base64)?,
            kind: self.kind,
            lane: self.lane.unwrap_or_else(|| DEFAULT_LANE.into()),
            priority: self.priority,
            required_capabilities: self.required_capabilities,
            tags: self.tags,
            policy: self.policy,
            idempotency_key: self.idempotency_key,
            concurrency_key: self.concurrency_key,
            delay_until: self.delay_until,
        })
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    pub executions: Vec<CreateExecution>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchCreated {
    /// One entry per requested execution, in request order.
    pub results: Vec<Created>,
}

/// Create one execution: 201 when new, 200 when an idempotency key found an
/// existing one.
#[utoipa::path(post, path = "/v1/executions", tag = "executions",
    request_body = CreateExecution,
    responses(
        (status = 201, body = Created), (status = 200, body = Created),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateExecution>,
) -> ApiResult<(StatusCode, Json<Created>)> {
    let created = state.engine.create(caller.tenant, body.into_new()?).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(created)))
}

/// Create up to the installation's batch limit in one transaction: all or none.
#[utoipa::path(post, path = "/v1/executions/batch", tag = "executions",
    request_body = CreateBatch,
    responses(
        (status = 200, body = BatchCreated), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateBatch>,
) -> ApiResult<Json<BatchCreated>> {
    let batch = body
        .executions
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            e.into_new()
                .map_err(|err| err.with_prefix(&format!("executions[{i}]")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let results = state.engine.create_batch(caller.tenant, &batch).await?;
    Ok(Json(BatchCreated { results }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    pub state: Option<PublicState>,
    pub kind: Option<String>,
    pub lane: Option<String>,
    /// `key:value`
    pub tag: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<ExecutionId>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    pub order: Option<ListOrder>,
}

/// Which end of a listing comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListOrder {
    Asc,
    Desc,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionPage {
    pub items: Vec<Execution>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<ExecutionId>,
}

/// List the caller's executions, oldest first (or newest, `order=desc`), by
/// keyset pagination.
#[utoipa::path(get, path = "/v1/executions", tag = "executions", params(ListQuery),
    responses((status = 200, body = ExecutionPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<ExecutionPage>> {
    let limit = page_limit(query.limit)?;
    let tag = match query.tag {
        None => None,
        Some(tag) => Some(
            tag.split_once(':')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| super::error::ApiError::invalid("tag: expected `key:value`"))?,
        ),
    };
    let filter = ExecutionFilter {
        state: query.state,
        kind: query.kind,
        lane: query.lane,
        tag,
        after: query.cursor,
        limit,
        newest_first: query.order == Some(ListOrder::Desc),
    };
    let items = state.engine.list(caller.tenant, filter).await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.execution_id))
        .flatten();
    Ok(Json(ExecutionPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/v1/executions/{id}", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Execution), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<Json<Execution>> {
    Ok(Json(state.engine.get(caller.tenant, id).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutionResult {
    #[schema(value_type = Uuid)]
    pub execution_id: ExecutionId,
    pub state: PublicState,
    /// Present once the execution completed.
    pub result: Option<Payload>,
    pub last_failure: Option<crate::model::Failure>,
}

/// The result (or the failure) of an execution.
#[utoipa::path(get, path = "/v1/executions/{id}/result", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ExecutionResult), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn result(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<Json<ExecutionResult>> {
    let execution = state.engine.get(caller.tenant, id).await?;
    Ok(Json(result_of(&execution)))
}

pub fn result_of(execution: &Execution) -> ExecutionResult {
    ExecutionResult {
        execution_id: execution.execution_id,
        state: execution.state,
        result: execution.result.as_deref().map(Payload::of),
        last_failure: execution.last_failure.clone(),
    }
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Cancelled {
    /// False when it was already cancelled (cancel is idempotent).
    pub cancelled: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LeaseRevoked {
    /// The attempt whose lease was revoked.
    pub attempt_index: i32,
}

/// Revoke the lease of an active execution: its running guest is stopped,
/// the attempt ends `revoked`, and the execution is claimed again as a new
/// (`reclaim`) attempt. 409 when it is not active.
#[utoipa::path(post, path = "/v1/executions/{id}/revoke-lease", tag = "executions",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = LeaseRevoked), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn revoke_lease(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<Json<LeaseRevoked>> {
    let attempt_index = state.engine.revoke_lease(caller.tenant, id).await?;
    Ok(Json(LeaseRevoked { attempt_index }))
}

/// Cancel a non-terminal execution; a running guest is stopped.
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", tag = "executions",
    params(("id" = Uuid, Path)), request_body(content = Option<CancelBody>),
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    OptionalJson(body): OptionalJson<CancelBody>,
) -> ApiResult<Json<Cancelled>> {
    let reason = body
        .reason
        .unwrap_or_else(|| "cancelled through the API".into());
    let cancelled = state.engine.cancel(caller.tenant, id, &reason).await?;
    Ok(Json(Cancelled { cancelled }))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    pub priority: i32,
}

/// Change the priority of a waiting execution.
#[utoipa::path(put, path = "/v1/executions/{id}/priority", tag = "executions",
    params(("id" = Uuid, Path)), request_body = PriorityBody,
    responses((status = 200, body = PriorityBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn priority(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    Json(body): Json<PriorityBody>,
) -> ApiResult<Json<PriorityBody>> {
    state
        .engine
        .change_priority(caller.tenant, id, body.priority)
        .await?;
    Ok(Json(body))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    /// Times the execution has now been replayed.
    pub replay_count: i32,
    /// Flow members brought back from `skipped` (with `revive_dependents`).
    #[serde(default)]
    pub revived: Vec<ExecutionId>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Keep the journal of durable steps, so the new run skips the steps
    /// earlier runs recorded. By default the replay starts a fresh journal.
    #[serde(default)]
    pub keep_steps: bool,
    /// For a flow member: bring back the dependents its failure skipped
    /// (and theirs), re-evaluating their joins, in the same transaction.
    /// Refused (400) for an execution outside a flow, and for a cancelled
    /// flow (409 `flow_cancelled`).
    #[serde(default)]
    pub revive_dependents: bool,
}

/// Run an execution that ended (completed, failed, cancelled, expired) again,
/// as a new attempt; refused past the policy's `max_replays` (default 10).
#[utoipa::path(post, path = "/v1/executions/{id}/replay", tag = "executions",
    params(("id" = Uuid, Path), ReplayQuery),
    responses((status = 200, body = Replayed), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn replay(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    Query(query): Query<ReplayQuery>,
) -> ApiResult<Json<Replayed>> {
    let replay = Replay {
        keep_steps: query.keep_steps,
        revive_dependents: query.revive_dependents,
    };
    let outcome = state.engine.replay_with(caller.tenant, id, replay).await?;
    Ok(Json(Replayed {
        replay_count: outcome.replay_count,
        revived: outcome.revived,
    }))
}
