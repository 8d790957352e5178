//! The executions pages: the list (filters, keyset pages newest first, rows
//! refreshed live), one execution in full, its live frames, and the actions
//! an operator of the tenant takes on it.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::session::{csrf_matches, TenantSession};
use super::view::{self, render, Chrome};
use super::{UiError, UiResult};
use crate::api::error::{Path, Query};
use crate::api::streams::{self, FollowQuery};
use crate::api::AppState;
use crate::model::{AttemptRecord, Execution, ExecutionFilter, ExecutionId, PublicState};

/// Rows on a page of the list.
pub const PAGE_ROWS: u32 = 50;
/// Frames a detail page shows before the live stream takes over.
const PAGE_FRAMES: u32 = 200;
/// Steps a detail page lists.
const PAGE_STEPS: u32 = 200;

/// The list's filters, as the form sends them (empty means any).
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    lane: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    cursor: Option<ExecutionId>,
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

impl ListQuery {
    fn filter(&self) -> UiResult<ExecutionFilter> {
        let state = given(&self.state)
            .map(|s| s.parse::<PublicState>())
            .transpose()
            .map_err(UiError::bad_request)?;
        let tag = match given(&self.tag) {
            None => None,
            Some(t) => Some(
                t.split_once(':')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| UiError::bad_request("tag: expected key:value"))?,
            ),
        };
        Ok(ExecutionFilter {
            state,
            kind: given(&self.kind),
            lane: given(&self.lane),
            tag,
            after: self.cursor,
            limit: PAGE_ROWS,
            newest_first: true,
        })
    }

    /// The query string of these filters (no cursor), for links.
    fn filters_query(&self) -> String {
        let pairs = [
            ("state", &self.state),
            ("kind", &self.kind),
            ("lane", &self.lane),
            ("tag", &self.tag),
        ];
        pairs
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| format!("{k}={}", urlencode(v.trim())))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// One row of the list.
pub struct Row {
    pub id: String,
    pub short_id: String,
    pub kind: String,
    pub lane: String,
    pub state: &'static str,
    pub reason: String,
    pub attempt: i32,
    pub created: String,
    pub tags: String,
}

impl Row {
    pub fn of(e: &Execution) -> Self {
        Self {
            id: e.execution_id.to_string(),
            short_id: view::short_id(e.execution_id),
            kind: e.kind.clone(),
            lane: e.lane.clone(),
            state: e.state.as_str(),
            reason: e.blocking_reason.clone().unwrap_or_default(),
            attempt: e.attempt_index,
            created: view::time(e.created_at),
            tags: view::tags(&e.tags),
        }
    }
}

#[derive(Template)]
#[template(path = "ui/executions.html")]
struct ListPage {
    chrome: Chrome,
    states: Vec<&'static str>,
    state: String,
    kind: String,
    lane: String,
    tag: String,
    rows: Vec<Row>,
    /// Set on the first page only: the rows' URL the live script re-reads.
    live_rows_url: Option<String>,
    next_page_url: Option<String>,
    first_page_url: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/rows.html")]
struct RowsFragment {
    rows: Vec<Row>,
}

async fn page_rows(state: &AppState, tenant: TenantSession, q: &ListQuery) -> UiResult<Vec<Row>> {
    let items = state.engine.list(tenant.tenant, q.filter()?).await?;
    Ok(items.iter().map(Row::of).collect())
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> UiResult<Html<String>> {
    let chrome = Chrome::tenant("Executions", "executions", &session.session);
    let rows = page_rows(&state, session, &q).await?;
    let filters = q.filters_query();
    let next_page_url = (rows.len() == PAGE_ROWS as usize)
        .then(|| rows.last())
        .flatten()
        .map(|last| format!("/ui/executions?{filters}&cursor={}", last.id));
    let page = ListPage {
        chrome,
        states: PublicState::ALL.iter().map(|s| s.as_str()).collect(),
        state: q.state.clone(),
        kind: q.kind.clone(),
        lane: q.lane.clone(),
        tag: q.tag.clone(),
        rows,
        live_rows_url: q
            .cursor
            .is_none()
            .then(|| format!("/ui/executions/rows?{filters}")),
        next_page_url,
        first_page_url: q
            .cursor
            .is_some()
            .then(|| format!("/ui/executions?{filters}")),
    };
    Ok(Html(render(&page)))
}

/// The first page's rows alone, for the live script to swap in.
pub async fn rows(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> UiResult<Html<String>> {
    let rows = page_rows(&state, session, &q).await?;
    Ok(Html(render(&RowsFragment { rows })))
}

/// A frame as the page shows it.
pub struct FrameLine {
    pub id: String,
    pub frame_type: String,
    pub at: String,
    pub text: String,
}

pub struct AttemptLine {
    pub index: i32,
    pub kind: String,
    pub epoch: i64,
    pub worker: String,
    pub state: String,
    pub started: String,
    pub ended: String,
    pub took: String,
    pub failure: String,
}

impl AttemptLine {
    fn of(a: &AttemptRecord) -> Self {
        Self {
            index: a.attempt_index,
            kind: view::name_of(&a.attempt_type),
            epoch: a.lease_epoch,
            worker: a.worker_id.clone(),
            state: view::name_of(&a.state),
            started: view::time(a.started_at),
            ended: view::time_opt(a.ended_at),
            took: view::duration(a.started_at, a.ended_at),
            failure: a.failure.as_ref().map(view::failure).unwrap_or_default(),
        }
    }
}

pub struct StepLine {
    pub position: u32,
    pub name: String,
    pub kind: &'static str,
    pub attempt: i32,
    pub duration_ms: u64,
    pub size: u64,
    pub error: String,
}

#[derive(Template)]
#[template(path = "ui/execution.html")]
struct DetailPage {
    chrome: Chrome,
    id: String,
    kind: String,
    lane: String,
    state: &'static str,
    reason: String,
    /// While suspended: what resumes it, in one line.
    suspension: Option<String>,
    priority: i32,
    attempt: i32,
    created: String,
    started: String,
    finished: String,
    tags: String,
    concurrency_key: String,
    flow: Option<(String, String)>,
    parent: Option<String>,
    terminal: bool,
    attempts: Vec<AttemptLine>,
    leases: Option<super::timeline::Timeline>,
    frames: Vec<FrameLine>,
    /// Where the live stream resumes: `<attempt>:<seq>` of the last frame shown.
    stream_after: String,
    summary: Option<String>,
    steps: Vec<StepLine>,
    input: String,
    result: Option<String>,
    failure: Option<String>,
    cancellation: Option<String>,
}

pub async fn detail(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path(id): Path<ExecutionId>,
) -> UiResult<Html<String>> {
    let engine = &state.engine;
    let tenant = session.tenant;
    let e = engine.get(tenant, id).await?;
    let attempts = engine.attempts(tenant, id).await?;
    let leases = if e.attempt_index > 0 {
        engine.lease_history(tenant, id).await?
    } else {
        Vec::new()
    };
    let frames = if e.attempt_index > 0 {
        engine
            .read_frames(tenant, id, e.attempt_index, 0, PAGE_FRAMES)
            .await?
    } else {
        Vec::new()
    };
    let stream_after = format!("{}:{}", e.attempt_index, frames.last().map_or(0, |f| f.seq));
    let summary = if e.attempt_index > 0 {
        engine
            .read_summary(tenant, id, e.attempt_index)
            .await
            .ok()
            .map(|s| serde_json::to_string_pretty(&s.document).unwrap_or_default())
    } else {
        None
    };
    let steps = engine
        .list_steps(tenant, id, None, PAGE_STEPS)
        .await?
        .into_iter()
        .map(|s| StepLine {
            position: s.position,
            name: s.name,
            kind: s.kind.as_str(),
            attempt: s.attempt_index,
            duration_ms: s.duration_ms,
            size: s.size,
            error: s.error.unwrap_or_default(),
        })
        .collect();
    let page = DetailPage {
        chrome: Chrome::tenant(
            format!("Execution {}", view::short_id(id)),
            "executions",
            &session.session,
        ),
        id: id.to_string(),
        kind: e.kind.clone(),
        lane: e.lane.clone(),
        state: e.state.as_str(),
        reason: e.blocking_reason.clone().unwrap_or_default(),
        suspension: e
            .suspension
            .as_ref()
            .map(|s| view::suspension(s, e.suspension_timeout_at)),
        priority: e.priority,
        attempt: e.attempt_index,
        created: view::time(e.created_at),
        started: view::time_opt(e.started_at),
        finished: view::time_opt(e.finished_at),
        tags: view::tags(&e.tags),
        concurrency_key: e.concurrency_key.clone().unwrap_or_default(),
        flow: e
            .flow_id
            .map(|f| (f.to_string(), e.flow_key.clone().unwrap_or_default())),
        parent: e.parent_id.map(|p| p.to_string()),
        terminal: e.state.is_terminal(),
        attempts: attempts.iter().map(AttemptLine::of).collect(),
        leases: super::timeline::draw(&leases, chrono::Utc::now()),
        frames: frames
            .into_iter()
            .map(|f| FrameLine {
                id: format!("{}:{}", e.attempt_index, f.seq),
                frame_type: f.frame_type,
                at: view::time(f.created_at),
                text: view::preview(&f.payload),
            })
            .collect(),
        stream_after,
        summary,
        steps,
        input: view::preview(&e.input),
        result: e.result.as_deref().map(view::preview),
        failure: e.last_failure.as_ref().map(view::failure),
        cancellation: e.cancellation_reason.clone(),
    };
    Ok(Html(render(&page)))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    after: Option<String>,
}

/// The execution's live stream (the API's, under the session's tenant).
pub async fn stream(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path(id): Path<ExecutionId>,
    axum::extract::Query(q): axum::extract::Query<StreamQuery>,
    headers: HeaderMap,
) -> Response {
    let caller = session.into_caller();
    let query = Query(FollowQuery { after: q.after });
    streams::follow(State(state), caller, Path(id), query, headers)
        .await
        .into_response()
}

#[derive(Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    priority: Option<String>,
    #[serde(default)]
    reason: String,
}

/// Cancel, replay, revoke the lease, or change the priority; then back to
/// the execution's page.
pub async fn act(
    State(state): State<Arc<AppState>>,
    session: TenantSession,
    Path((id, action)): Path<(ExecutionId, String)>,
    Form(form): Form<ActionForm>,
) -> UiResult<Redirect> {
    if !csrf_matches(&session.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    let (engine, tenant) = (&state.engine, session.tenant);
    match action.as_str() {
        "cancel" => {
            let reason =
                given(&form.reason).unwrap_or_else(|| "cancelled from the dashboard".into());
            engine.cancel(tenant, id, &reason).await?;
        }
        "replay" => {
            engine.replay(tenant, id, false).await?;
        }
        "revoke-lease" => {
            engine.revoke_lease(tenant, id).await?;
        }
        "priority" => {
            let priority = form
                .priority
                .as_deref()
                .map(str::trim)
                .and_then(|p| p.parse::<i32>().ok())
                .ok_or_else(|| UiError::bad_request("priority: expected a whole number"))?;
            engine.change_priority(tenant, id, priority).await?;
        }
        _ => return Err(UiError::not_found("action")),
    }
    Ok(Redirect::to(&format!("/ui/executions/{id}")))
}
