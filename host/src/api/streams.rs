//! Frames of an execution: read by cursor, or followed live over Server-Sent
//! Events until the execution ends.
//!
//! A follower holds no database connection while it waits: it sleeps on the
//! backend's shared update broadcast (one LISTEN connection per process) and
//! re-reads only when its execution changed, with a slow poll as the fallback
//! for a lost notification.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiError, ApiResult, ErrorBody, Json, Path, Query};
use super::executions::result_of;
use super::payload::Payload;
use super::{live, AppState};
use crate::engine::Engine;
use crate::model::{
    ExecutionId, ExecutionState, Frame, PublicState, StreamMode, StreamSummary, TenantId,
};

const PAGE: u32 = 500;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FrameView {
    pub attempt: i32,
    pub seq: i64,
    pub frame_type: String,
    pub mode: StreamMode,
    pub created_at: DateTime<Utc>,
    pub payload: Payload,
}

impl FrameView {
    fn new(attempt: i32, frame: Frame) -> Self {
        Self {
            attempt,
            seq: frame.seq,
            frame_type: frame.frame_type,
            mode: frame.mode,
            created_at: frame.created_at,
            payload: Payload::of(&frame.payload),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FramesQuery {
    /// Only frames with a larger sequence number.
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FramePage {
    pub items: Vec<FrameView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<i64>,
}

/// Frames of one attempt, in sequence order.
#[utoipa::path(get, path = "/v1/executions/{id}/attempts/{attempt}/frames", tag = "streams",
    params(("id" = Uuid, Path), ("attempt" = i32, Path), FramesQuery),
    responses((status = 200, body = FramePage), (status = 404, body = ErrorBody),
        (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn frames(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, attempt)): Path<(ExecutionId, i32)>,
    Query(query): Query<FramesQuery>,
) -> ApiResult<Json<FramePage>> {
    let limit = page_limit(query.limit)?;
    // Not found unless the caller owns the execution.
    state.engine.state(caller.tenant, id).await?;
    let frames = state
        .engine
        .read_frames(caller.tenant, id, attempt, query.after.unwrap_or(0), limit)
        .await?;
    let next_cursor = (frames.len() == limit as usize)
        .then(|| frames.last().map(|f| f.seq))
        .flatten();
    let items = frames
        .into_iter()
        .map(|f| FrameView::new(attempt, f))
        .collect();
    Ok(Json(FramePage { items, next_cursor }))
}

/// The attempt's rolling summary: its `summary` frames merged as JSON merge
/// patches. 404 until the attempt appends one.
#[utoipa::path(get, path = "/v1/executions/{id}/attempts/{attempt}/summary", tag = "streams",
    params(("id" = Uuid, Path), ("attempt" = i32, Path)),
    responses((status = 200, body = StreamSummary), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn summary(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, attempt)): Path<(ExecutionId, i32)>,
) -> ApiResult<Json<StreamSummary>> {
    Ok(Json(
        state
            .engine
            .read_summary(caller.tenant, id, attempt)
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FollowQuery {
    /// Resume after this event id (`<attempt>:<seq>`); the `Last-Event-ID`
    /// header does the same.
    pub after: Option<String>,
}

/// Follow an execution live (Server-Sent Events). Events: `frame` (a
/// `FrameView`, id `<attempt>:<seq>`), `state` (`{state, attempt}` on every
/// change) and finally `end` (the `ExecutionResult`), after which the stream
/// closes.
#[utoipa::path(get, path = "/v1/executions/{id}/stream", tag = "streams",
    params(("id" = Uuid, Path), FollowQuery),
    responses((status = 200, content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn follow(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<ExecutionId>,
    Query(query): Query<FollowQuery>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let resume = query.after.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let cursor = match resume {
        None => Cursor::default(),
        Some(text) => Cursor::parse(&text)
            .ok_or_else(|| ApiError::invalid("after: expected `<attempt>:<seq>`"))?,
    };
    // Subscribe before the first read, so nothing written in between is missed.
    let open = state.streams.take_now(caller.tenant)?;
    // Another tenant's or a missing execution is `not_found` here.
    let updates = state.engine.updates(caller.tenant, id).await?;
    let engine = state.engine.clone();
    Ok(live::sse(open, move |tx| {
        let follower = Follower {
            engine,
            tenant: caller.tenant,
            id,
            cursor,
            tx,
        };
        follower.run(updates)
    }))
}

/// The `state` event of an execution's stream: its state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StateChange {
    pub state: PublicState,
    /// The current (or last) attempt; 0 before the first claim.
    pub attempt: i32,
}

/// Position in an execution's stream: the last frame sent.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    attempt: i32,
    seq: i64,
}

impl Cursor {
    fn parse(text: &str) -> Option<Self> {
        let (attempt, seq) = text.split_once(':')?;
        Some(Self {
            attempt: attempt.parse().ok().filter(|a| *a >= 0)?,
            seq: seq.parse().ok().filter(|s| *s >= 0)?,
        })
    }
}

struct Follower {
    engine: Engine,
    tenant: TenantId,
    id: ExecutionId,
    cursor: Cursor,
    tx: mpsc::Sender<Event>,
}

/// The client went away.
struct Gone;

impl Follower {
    async fn run(mut self, mut updates: broadcast::Receiver<()>) {
        let mut last_state: Option<ExecutionState> = None;
        loop {
            match self.step(&mut last_state).await {
                Ok(true) | Err(Gone) => return,
                Ok(false) => {}
            }
            if !live::wait(&mut updates, &self.tx).await {
                return;
            }
        }
    }

    /// Send what is new; `Ok(true)` once the execution has ended. Each wake-up
    /// reads the state alone; the full row (with the result) only at the end.
    async fn step(&mut self, last_state: &mut Option<ExecutionState>) -> Result<bool, Gone> {
        let current = match self.engine.state(self.tenant, self.id).await {
            Ok(s) => s,
            Err(e) => return self.send_error(e).await,
        };
        if *last_state != Some(current) {
            *last_state = Some(current);
            let change = StateChange {
                state: current.state,
                attempt: current.attempt_index,
            };
            self.send(Event::default().event("state").json_data(change))
                .await?;
        }
        // Terminal executions take no more frames, so reading after the state
        // read cannot miss any.
        self.send_frames_through(current.attempt_index).await?;
        if current.state.is_terminal() {
            let execution = match self.engine.get(self.tenant, self.id).await {
                Ok(e) => e,
                Err(e) => return self.send_error(e).await,
            };
            self.send(
                Event::default()
                    .event("end")
                    .json_data(result_of(&execution)),
            )
            .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn send_frames_through(&mut self, current_attempt: i32) -> Result<(), Gone> {
        let first = self.cursor.attempt.max(1);
        for attempt in first..=current_attempt {
            let mut after = if attempt == self.cursor.attempt {
                self.cursor.seq
            } else {
                0
            };
            loop {
                let frames = match self
                    .engine
                    .read_frames(self.tenant, self.id, attempt, after, PAGE)
                    .await
                {
                    Ok(frames) => frames,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading frames for a follower");
                        return Ok(());
                    }
                };
                let full = frames.len() == PAGE as usize;
                for frame in frames {
                    after = frame.seq;
                    let id = format!("{attempt}:{}", frame.seq);
                    let event = Event::default()
                        .event("frame")
                        .id(id)
                        .json_data(FrameView::new(attempt, frame));
                    self.send(event).await?;
                    self.cursor = Cursor {
                        attempt,
                        seq: after,
                    };
                }
                if !full {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Report a failed read to the client and end the stream.
    async fn send_error(&self, e: crate::error::EngineError) -> Result<bool, Gone> {
        let body = serde_json::json!({ "error": e.to_string(), "kind": e.kind() });
        self.send(Event::default().event("error").json_data(body))
            .await?;
        Ok(true)
    }

    async fn send(&self, event: Result<Event, axum::Error>) -> Result<(), Gone> {
        let event = event.expect("stream events serialise to JSON");
        self.tx.send(event).await.map_err(|_| Gone)
    }
}
