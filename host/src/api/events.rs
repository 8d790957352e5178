//! `/v1/events`: the tenant's completion events (an execution ended: completed,
//! failed, cancelled, expired), read by cursor or followed live.
//!
//! The outbox table is the durable record, so a subscriber that was away
//! resumes from the last event id it saw and misses nothing; the live stream
//! is the same read, woken by the shared update broadcast instead of polling.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiError, ApiResult, ErrorBody, Json, Query};
use super::{live, AppState};
use crate::model::{CompletionEvent, ExecutionUpdate, TenantId};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this event id (0, or absent, for all).
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<CompletionEvent>,
    /// Pass as `after` for the next page (the last event id, or `after` when
    /// there were none).
    pub next_cursor: i64,
}

fn checked(query: &EventsQuery) -> ApiResult<(i64, u32)> {
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid("after: must not be negative"));
    }
    Ok((after, limit))
}

/// Completion events after a cursor, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventPage>> {
    let (after, limit) = checked(&query)?;
    let items = state
        .engine
        .completion_events(caller.tenant, after, limit)
        .await?;
    let next_cursor = items.last().map_or(after, |e| e.event_id);
    Ok(Json(EventPage { items, next_cursor }))
}

/// Follow completion events live (Server-Sent Events `completion`, id = the
/// event id, so `Last-Event-ID` resumes). The stream stays open.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn follow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (mut after, _) = checked(&query)?;
    if let Some(last) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        after = last
            .parse()
            .map_err(|_| ApiError::invalid("last-event-id: expected an event id"))?;
    }
    let updates = state.engine.updates().await?;
    let state = state.clone();
    Ok(live::sse(move |tx| {
        forward(state, caller.tenant, after, updates, tx)
    }))
}

async fn forward(
    state: Arc<AppState>,
    tenant: TenantId,
    mut after: i64,
    mut updates: broadcast::Receiver<ExecutionUpdate>,
    tx: mpsc::Sender<Event>,
) {
    loop {
        match state.engine.completion_events(tenant, after, 500).await {
            Ok(events) => {
                for event in events {
                    after = event.event_id;
                    let sse = Event::default()
                        .event("completion")
                        .id(event.event_id.to_string())
                        .json_data(&event)
                        .expect("events serialise");
                    if tx.send(sse).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading completion events for a subscriber"),
        }
        if !live::wait(&mut updates, &tx, |u| u.tenant_id == tenant).await {
            return;
        }
    }
}
