//! `/v1/flows`: create a flow with its first members and edges, add more,
//! read its graph, list, cancel. Each change is one transaction: all or nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::Caller;
use super::error::{page_limit, ApiResult, ErrorBody, Json, OptionalJson, Path, Query};
use super::executions::CreateExecution;
use super::AppState;
use crate::model::{
    FlowCancelPolicy, FlowEdge, FlowEdgeDetail, FlowId, FlowMember, FlowMemberView, FlowSnapshot,
    FlowSummary, GraphApplied, GraphChange, JoinPolicy, NewFlow,
};

/// A member: a key unique in its flow, the execution, and (when it has
/// incoming edges) how many upstreams must succeed.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    pub key: String,
    pub execution: CreateExecution,
    #[serde(default)]
    pub join: JoinPolicy,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateFlow {
    pub name: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub members: Vec<MemberBody>,
    #[serde(default)]
    pub edges: Vec<FlowEdge>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendFlow {
    /// Refuse the change (409 `graph_revision_conflict`) unless the flow is
    /// still at this revision.
    #[serde(default)]
    pub expected_revision: Option<i32>,
    #[serde(default)]
    pub members: Vec<MemberBody>,
    #[serde(default)]
    pub edges: Vec<FlowEdge>,
}

fn change(
    expected_revision: Option<i32>,
    members: Vec<MemberBody>,
    edges: Vec<FlowEdge>,
) -> ApiResult<GraphChange> {
    let members = members
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(FlowMember {
                execution: m
                    .execution
                    .into_new()
                    .map_err(|e| e.with_prefix(&format!("members[{i}].execution")))?,
                key: m.key,
                join: m.join,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(GraphChange {
        expected_revision,
        members,
        edges,
    })
}

/// Create a flow, optionally with members and edges.
#[utoipa::path(post, path = "/v1/flows", tag = "flows", request_body = CreateFlow,
    responses((status = 201, body = GraphApplied), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CreateFlow>,
) -> ApiResult<(StatusCode, Json<GraphApplied>)> {
    let flow = NewFlow {
        name: body.name,
        tags: body.tags,
    };
    let change = change(None, body.members, body.edges)?;
    let applied = state
        .engine
        .create_flow(caller.tenant, flow, change)
        .await?;
    Ok((StatusCode::CREATED, Json(applied)))
}

/// Add members and edges to a running flow. An edge may only point at a
/// member that is still waiting (409 `member_started`) and must not close a
/// cycle (409 `cycle_detected`).
#[utoipa::path(post, path = "/v1/flows/{id}/members", tag = "flows",
    params(("id" = Uuid, Path)), request_body = ExtendFlow,
    responses((status = 200, body = GraphApplied), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn extend(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<FlowId>,
    Json(body): Json<ExtendFlow>,
) -> ApiResult<Json<GraphApplied>> {
    let change = change(body.expected_revision, body.members, body.edges)?;
    Ok(Json(
        state.engine.extend_flow(caller.tenant, id, change).await?,
    ))
}

/// A flow with its members, their states and joins, and its edges.
#[utoipa::path(get, path = "/v1/flows/{id}", tag = "flows", params(("id" = Uuid, Path)),
    responses((status = 200, body = FlowSnapshot), (status = 404, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<FlowId>,
) -> ApiResult<Json<FlowSnapshot>> {
    Ok(Json(
        state.engine.backend().get_flow(caller.tenant, id).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// The `next_cursor` of the previous page (a member key).
    pub cursor: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    pub items: Vec<FlowMemberView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A page of a flow's members, by key: what `GET /v1/flows/{id}` returns
/// whole, for flows too large to take in one response.
#[utoipa::path(get, path = "/v1/flows/{id}/members", tag = "flows",
    params(("id" = Uuid, Path), MembersQuery),
    responses((status = 200, body = MemberPage), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn members(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<FlowId>,
    Query(query): Query<MembersQuery>,
) -> ApiResult<Json<MemberPage>> {
    let limit = page_limit(query.limit)?;
    let items = state
        .engine
        .flow_members(caller.tenant, id, query.cursor.as_deref(), limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|m| m.key.clone()))
        .flatten();
    Ok(Json(MemberPage { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EdgesQuery {
    /// Only the edges out of the member with this key.
    pub from: Option<String>,
    /// Only the edges into the member with this key.
    pub to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EdgeList {
    pub items: Vec<FlowEdgeDetail>,
}

/// The flow's edges in (from, to) key order, each with both ends'
/// executions; `from=` lists a member's outgoing edges, `to=` its incoming.
#[utoipa::path(get, path = "/v1/flows/{id}/edges", tag = "flows",
    params(("id" = Uuid, Path), EdgesQuery),
    responses((status = 200, body = EdgeList), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn edges(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<FlowId>,
    Query(query): Query<EdgesQuery>,
) -> ApiResult<Json<EdgeList>> {
    let items = state
        .engine
        .flow_edges(
            caller.tenant,
            id,
            query.from.as_deref(),
            query.to.as_deref(),
        )
        .await?;
    Ok(Json(EdgeList { items }))
}

/// One edge, named by its two members' keys.
#[utoipa::path(get, path = "/v1/flows/{id}/edges/{from}/{to}", tag = "flows",
    params(("id" = Uuid, Path), ("from" = String, Path), ("to" = String, Path)),
    responses((status = 200, body = FlowEdgeDetail), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn edge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((id, from, to)): Path<(FlowId, String, String)>,
) -> ApiResult<Json<FlowEdgeDetail>> {
    Ok(Json(
        state
            .engine
            .flow_edge(caller.tenant, id, &from, &to)
            .await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next_cursor` of the previous page.
    pub cursor: Option<FlowId>,
    /// 1 to 1000, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowPage {
    pub items: Vec<FlowSummary>,
    pub next_cursor: Option<FlowId>,
}

/// The caller's flows, oldest first.
#[utoipa::path(get, path = "/v1/flows", tag = "flows", params(ListQuery),
    responses((status = 200, body = FlowPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<FlowPage>> {
    let limit = page_limit(query.limit)?;
    let items = state
        .engine
        .list_flows(caller.tenant, query.cursor, limit)
        .await?;
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|f| f.flow_id))
        .flatten();
    Ok(Json(FlowPage { items, next_cursor }))
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelFlowBody {
    #[serde(default)]
    pub policy: FlowCancelPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FlowCancelled {
    /// Members this call cancelled (0 when repeated).
    pub cancelled: u64,
}

/// Close a flow to new members and cancel members per `policy`
/// (`cancel_all`, the default; `cancel_pending`; `flow_only`).
#[utoipa::path(post, path = "/v1/flows/{id}/cancel", tag = "flows",
    params(("id" = Uuid, Path)), request_body(content = Option<CancelFlowBody>),
    responses((status = 200, body = FlowCancelled), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<FlowId>,
    OptionalJson(body): OptionalJson<CancelFlowBody>,
) -> ApiResult<Json<FlowCancelled>> {
    let reason = body
        .reason
        .unwrap_or_else(|| "flow cancelled through the API".into());
    let cancelled = state
        .engine
        .cancel_flow(caller.tenant, id, body.policy, &reason)
        .await?;
    Ok(Json(FlowCancelled { cancelled }))
}
