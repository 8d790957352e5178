//! `/v1/events`: the tenant's durable event streams, read by cursor or
//! followed live. Three streams: completions (`/v1/events`, an execution
//! ended), lease history (`/v1/events/leases`) and signal delivery
//! (`/v1/events/signals`).
//!
//! The outbox tables are the durable record, so a subscriber that was away
//! resumes from the last cursor it saw and misses nothing; the live stream is
//! the same read, woken by the backend's event broadcast instead of polling.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiError, ApiResult, ErrorBody, Json, Query};
use super::{live, AppState};
use crate::engine::Subscription;
use crate::model::{
    CompletionEvent, EventCursor, EventFilter, ExecutionId, LeaseEvent, SignalEvent, TenantId,
};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events after this cursor (`0`, or absent, for all).
    pub after: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
    /// Only events about this execution.
    pub execution: Option<ExecutionId>,
    /// Only events about executions of this kind.
    pub kind: Option<String>,
    /// Only events about executions in this lane.
    pub lane: Option<String>,
    /// Only events with this outcome: a completion's `outcome` (`success`,
    /// `failed`, `cancelled`, `expired`, `skipped`), a lease event's `kind`
    /// (`acquired`, `reclaimed`, `renewed`, `released`, `expired`,
    /// `revoked`) or a signal's `effect` (`resumed`, `buffered`,
    /// `duplicate`).
    pub outcome: Option<String>,
}

impl EventsQuery {
    fn filter(&self) -> EventFilter {
        EventFilter {
            execution: self.execution,
            kind: self.kind.clone(),
            lane: self.lane.clone(),
            outcome: self.outcome.clone(),
        }
    }
}

/// A page of events, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(bound(deserialize = "E: serde::de::DeserializeOwned"))]
pub struct EventPage<E: ToSchema> {
    pub items: Vec<E>,
    /// Pass as `after` for the next page (the last event's cursor, or `after`
    /// when there were none).
    pub next_cursor: String,
    /// Events exist past this page that a still-running older transaction
    /// holds back (they are delivered in commit-safe order): read again soon.
    pub pending: bool,
    /// The read stopped before the newest event (the page filled, or a
    /// filtered read scanned its window of 1,000 events): read again from
    /// `next_cursor` at once. A filtered page may be empty and still have
    /// `more`.
    pub more: bool,
}

fn cursor(text: &str, field: &str) -> ApiResult<EventCursor> {
    text.parse()
        .map_err(|e: String| ApiError::invalid(format!("{field}: {e}")))
}

fn checked(query: &EventsQuery) -> ApiResult<(EventCursor, u32)> {
    let limit = page_limit(query.limit)?;
    let after = match &query.after {
        Some(after) => cursor(after, "after")?,
        None => EventCursor::START,
    };
    Ok((after, limit))
}

async fn page<E: Subscription + ToSchema>(
    state: &AppState,
    caller: &Caller,
    query: &EventsQuery,
) -> ApiResult<Json<EventPage<E>>> {
    let (after, limit) = checked(query)?;
    let batch = state
        .engine
        .read_events::<E>(caller.tenant, after, limit, &query.filter())
        .await?;
    Ok(Json(EventPage {
        items: batch.events,
        next_cursor: batch.next.to_string(),
        pending: batch.pending,
        more: batch.more,
    }))
}

/// Completion events after a cursor, oldest first.
#[utoipa::path(get, path = "/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage<CompletionEvent>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn completions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventPage<CompletionEvent>>> {
    page(&state, &caller, &query).await
}

/// Lease-history events after a cursor, oldest first.
#[utoipa::path(get, path = "/v1/events/leases", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage<LeaseEvent>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn leases(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventPage<LeaseEvent>>> {
    page(&state, &caller, &query).await
}

/// Signal-delivery events after a cursor, oldest first.
#[utoipa::path(get, path = "/v1/events/signals", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage<SignalEvent>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn signals(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Json<EventPage<SignalEvent>>> {
    page(&state, &caller, &query).await
}

/// Follow completion events live (Server-Sent Events `completion`, id = the
/// cursor, so `Last-Event-ID` resumes). The stream stays open.
#[utoipa::path(get, path = "/v1/events/stream", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn follow_completions(
    state: State<Arc<AppState>>,
    caller: Caller,
    query: Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    follow::<CompletionEvent>(state, caller, query, headers).await
}

/// Follow lease-history events live (Server-Sent Events `lease`).
#[utoipa::path(get, path = "/v1/events/leases/stream", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn follow_leases(
    state: State<Arc<AppState>>,
    caller: Caller,
    query: Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    follow::<LeaseEvent>(state, caller, query, headers).await
}

/// Follow signal-delivery events live (Server-Sent Events `signal`).
#[utoipa::path(get, path = "/v1/events/signals/stream", tag = "events", params(EventsQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn follow_signals(
    state: State<Arc<AppState>>,
    caller: Caller,
    query: Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    follow::<SignalEvent>(state, caller, query, headers).await
}

async fn follow<E: Subscription>(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (mut after, _) = checked(&query)?;
    let filter = query.filter();
    // Refuse a filter the stream can never meet now, not in the stream.
    state.engine.check_filter::<E>(&filter)?;
    if let Some(last) = headers.get("last-event-id") {
        let last = last
            .to_str()
            .map_err(|_| ApiError::invalid("last-event-id: expected an event cursor"))?;
        after = cursor(last, "last-event-id")?;
    }
    let open = state.streams.take_now(caller.tenant)?;
    // Subscribe before the first read, so nothing written after it is missed.
    let wakeups = state.engine.event_wakeups(caller.tenant).await?;
    let state = state.clone();
    Ok(live::sse(open, move |tx| {
        forward::<E>(state, caller.tenant, after, filter, wakeups, tx)
    }))
}

/// How soon a follower reads again while the outbox withholds events that a
/// still-running older transaction may yet precede.
const PENDING_RETRY: Duration = Duration::from_millis(20);

async fn forward<E: Subscription>(
    state: Arc<AppState>,
    tenant: TenantId,
    mut after: EventCursor,
    filter: EventFilter,
    mut wakeups: broadcast::Receiver<()>,
    tx: mpsc::Sender<Event>,
) {
    loop {
        let mut pending = false;
        match state
            .engine
            .read_events::<E>(tenant, after, 500, &filter)
            .await
        {
            Ok(batch) => {
                pending = batch.pending || batch.more;
                after = batch.next;
                for event in batch.events {
                    let sse = Event::default()
                        .event(E::NAME)
                        .id(event.cursor().to_string())
                        .json_data(&event)
                        .expect("events serialise");
                    if tx.send(sse).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, stream = E::NAME, "reading events for a subscriber")
            }
        }
        let woken = if pending {
            tokio::select! {
                _ = tx.closed() => false,
                _ = tokio::time::sleep(PENDING_RETRY) => true,
            }
        } else {
            live::wait(&mut wakeups, &tx).await
        };
        if !woken {
            return;
        }
    }
}
