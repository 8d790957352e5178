//! Signals and suspension over HTTP.
//!
//! `POST /v1/signals` is authorised by a waitpoint token alone (the bearer a
//! guest handed out), so an external system can signal without an API key; the
//! token names the tenant, execution and waitpoint it opens. Listing
//! waitpoints and operator resume are tenant routes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiError, ApiResult, ErrorBody, Json, Path, Query};
use super::payload::decode_input;
use super::AppState;
use crate::engine::{WaitpointWithToken, MAX_SUSPENDED_PAGE};
use crate::model::{ExecutionId, NewSignal, SignalOutcome, SuspendedExecution, WaitpointId};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverSignal {
    pub name: String,
    /// The payload as JSON; or `payload_base64` for bytes.
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// Delivering again with the same key returns the first signal.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The waitpoint token presented as the bearer credential.
pub struct WaitpointToken(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for WaitpointToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(super::auth::bearer_credentials)
            .map(|t| Self(t.to_owned()))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing_token",
                    "missing `authorization: Bearer <waitpoint token>` header",
                )
            })
    }
}

/// Deliver a signal to the waitpoint the bearer token opens. 202 when stored
/// (`resumed` says whether it woke the execution), 200 for a duplicate.
#[utoipa::path(post, path = "/v1/signals", tag = "signals", request_body = DeliverSignal,
    responses(
        (status = 202, body = SignalOutcome), (status = 200, body = SignalOutcome),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody,
            description = "kind: missing_token, invalid_token or token_expired"),
        (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the waitpoint is closed or expired"),
        (status = 413, body = ErrorBody)),
    security(("waitpoint_token" = [])))]
pub async fn deliver(
    State(state): State<Arc<AppState>>,
    WaitpointToken(token): WaitpointToken,
    Json(body): Json<DeliverSignal>,
) -> ApiResult<(StatusCode, Json<SignalOutcome>)> {
    let signal = NewSignal {
        payload: decode_input("payload", body.payload, body.payload_base64)?,
        name: body.name,
        idempotency_key: body.idempotency_key,
    };
    let (_, _, outcome) = state.engine.deliver_signal(&token, signal).await?;
    let status = match outcome {
        SignalOutcome::Accepted { .. } => StatusCode::ACCEPTED,
        SignalOutcome::Duplicate { .. } => StatusCode::OK,
    };
    Ok((status, Json(outcome)))
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct WaitpointList {
    pub items: Vec<WaitpointWithToken>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<WaitpointId>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitpointQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<WaitpointId>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

/// A page of an execution's waitpoints, oldest first, each with the token
/// that signals it.
#[utoipa::path(get, path = "/v1/executions/{id}/waitpoints", tag = "signals",
    params(("id" = Uuid, Path), WaitpointQuery),
    responses((status = 200, body = WaitpointList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn waitpoints(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    Query(query): Query<WaitpointQuery>,
) -> ApiResult<Json<WaitpointList>> {
    let limit = page_limit(query.limit)?;
    let items = state
        .engine
        .list_waitpoints(caller.tenant, id, query.cursor, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|w| w.waitpoint.waitpoint_id))
        .flatten();
    Ok(Json(WaitpointList { items, next_cursor }))
}

/// Resume a suspended execution now, whatever its condition (operator).
#[utoipa::path(post, path = "/v1/executions/{id}/resume", tag = "signals",
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "not suspended")),
    security(("api_key" = [])))]
pub async fn resume(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
) -> ApiResult<StatusCode> {
    state.engine.resume(caller.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuspendedQuery {
    pub kind: Option<String>,
    pub lane: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<ExecutionId>,
    /// 1 to 1000, default 100; a page holds at most 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SuspendedPage {
    pub items: Vec<SuspendedExecution>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub next_cursor: Option<ExecutionId>,
}

/// Suspended executions, oldest first: what resumes each (its condition,
/// the signal names that count, its timeout), why it waits (the engine's
/// `blocking_reason` and the guest's `suspension.reason`) and its
/// waitpoints, without their tokens.
#[utoipa::path(get, path = "/v1/suspended", tag = "signals", params(SuspendedQuery),
    responses((status = 200, body = SuspendedPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn suspended(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<SuspendedQuery>,
) -> ApiResult<Json<SuspendedPage>> {
    let limit = page_limit(query.limit)?.min(MAX_SUSPENDED_PAGE);
    let items = state
        .engine
        .list_suspended(caller.tenant, query.kind, query.lane, query.cursor, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|s| s.execution.execution_id))
        .flatten();
    Ok(Json(SuspendedPage { items, next_cursor }))
}
