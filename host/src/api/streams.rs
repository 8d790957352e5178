//! Frames of an execution: read by cursor, or followed live over Server-Sent
//! Events until the execution ends.
//!
//! A follower holds no database connection while it waits: it sleeps on the
//! backend's shared update broadcast (one LISTEN connection per process) and
//! re-reads only when its execution changed, with a slow poll as the fallback
//! for a lost notification.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody, Json, Path, Query};
use super::executions::result_of;
use super::payload::Payload;
use super::AppState;
use crate::engine::Engine;
use crate::model::{ExecutionUpdate, Frame, PublicState, StreamMode, TenantId};

/// How often a follower re-reads without a wake-up.
const FALLBACK_POLL: Duration = Duration::from_secs(2);
const PAGE: u32 = 500;

#[derive(Debug, Serialize, ToSchema)]
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
    Path((id, attempt)): Path<(Uuid, i32)>,
    Query(query): Query<FramesQuery>,
) -> ApiResult<Json<FramePage>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 1000"));
    }
    // Not found unless the caller owns the execution.
    state.engine.get(caller.tenant, id).await?;
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
    Path(id): Path<Uuid>,
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
    let updates = state.engine.updates().await?;
    state.engine.get(caller.tenant, id).await?;
    let (tx, rx) = mpsc::channel(64);
    let follower = Follower {
        engine: state.engine.clone(),
        tenant: caller.tenant,
        id,
        cursor,
        tx,
    };
    tokio::spawn(follower.run(updates));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
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
    id: Uuid,
    cursor: Cursor,
    tx: mpsc::Sender<Event>,
}

/// The client went away.
struct Gone;

impl Follower {
    async fn run(mut self, mut updates: broadcast::Receiver<ExecutionUpdate>) {
        let mut last_state: Option<(PublicState, i32)> = None;
        loop {
            match self.step(&mut last_state).await {
                Ok(true) | Err(Gone) => return,
                Ok(false) => {}
            }
            tokio::select! {
                _ = self.tx.closed() => return,
                _ = wait_for(&mut updates, self.tenant, self.id) => {}
                _ = tokio::time::sleep(FALLBACK_POLL) => {}
            }
        }
    }

    /// Send what is new; `Ok(true)` once the execution has ended.
    async fn step(&mut self, last_state: &mut Option<(PublicState, i32)>) -> Result<bool, Gone> {
        let execution = match self.engine.get(self.tenant, self.id).await {
            Ok(e) => e,
            Err(e) => {
                let body = serde_json::json!({ "error": e.to_string(), "kind": e.kind() });
                self.send(Event::default().event("error").json_data(body))
                    .await?;
                return Ok(true);
            }
        };
        let now = (execution.state, execution.attempt_index);
        if *last_state != Some(now) {
            *last_state = Some(now);
            let body = serde_json::json!({ "state": now.0, "attempt": now.1 });
            self.send(Event::default().event("state").json_data(body))
                .await?;
        }
        // Terminal executions take no more frames, so reading after the state
        // read cannot miss any.
        self.send_frames_through(execution.attempt_index).await?;
        if execution.state.is_terminal() {
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

    async fn send(&self, event: Result<Event, axum::Error>) -> Result<(), Gone> {
        let event = event.expect("stream events serialise to JSON");
        self.tx.send(event).await.map_err(|_| Gone)
    }
}

/// Until an update for this execution arrives (or updates were lost, which
/// might have included one).
async fn wait_for(updates: &mut broadcast::Receiver<ExecutionUpdate>, tenant: TenantId, id: Uuid) {
    loop {
        match updates.recv().await {
            Ok(u) if u.tenant_id == tenant && u.execution_id == id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => {
                // No more wake-ups: fall back to polling alone.
                std::future::pending::<()>().await;
            }
        }
    }
}
