//! `/v1/components`: upload a wasm component as the next version of a kind,
//! list, read and deprecate versions.

use std::sync::Arc;

use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiResult, ErrorBody, Json, Path, RawBody};
use super::AppState;
use crate::model::{ComponentImport, ComponentVersion};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Uploaded {
    #[serde(flatten)]
    pub version: ComponentVersion,
    /// False when these bytes already were the newest version.
    pub created: bool,
    /// The interfaces it imports, and which of them the kind's grant covers.
    #[serde(default)]
    pub imports: Vec<ComponentImport>,
}

/// Upload a component (the raw `.wasm` bytes as the body). It is validated
/// against the `flowfabric:task` world and compiled before it is stored.
#[utoipa::path(post, path = "/v1/components/{kind}", tag = "components",
    params(("kind" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/wasm"),
    responses(
        (status = 201, body = Uploaded), (status = 200, body = Uploaded),
        (status = 400, body = ErrorBody, description = "not a valid task component"),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 429, body = ErrorBody,
            description = "another upload of the tenant is under way, or its storage quota is full")),
    security(("api_key" = [])))]
pub async fn upload(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
    request: Request,
) -> ApiResult<(StatusCode, Json<Uploaded>)> {
    // The turn before the body: a tenant's second upload at once is refused
    // before its bytes are read.
    let turn = state.engine.begin_upload(caller.tenant)?;
    let RawBody(wasm) = RawBody::from_request(request, &state).await?;
    let (version, created) =
        crate::components::register_to_end(&state.engine, &state.runtime, turn, &kind, wasm)
            .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let imports = crate::components::imports(
        &state.engine,
        &state.runtime,
        caller.tenant,
        &kind,
        &version.digest,
    )
    .await?;
    Ok((
        status,
        Json(Uploaded {
            version,
            created,
            imports,
        }),
    ))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComponentList {
    pub items: Vec<ComponentVersion>,
}

/// Every version of every kind the caller uploaded.
#[utoipa::path(get, path = "/v1/components", tag = "components",
    responses((status = 200, body = ComponentList), (status = 401, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<ComponentList>> {
    let items = state
        .engine
        .backend()
        .list_components(caller.tenant)
        .await?;
    Ok(Json(ComponentList { items }))
}

/// The versions of one kind.
#[utoipa::path(get, path = "/v1/components/{kind}", tag = "components",
    params(("kind" = String, Path)),
    responses((status = 200, body = ComponentList), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn versions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(kind): Path<String>,
) -> ApiResult<Json<ComponentList>> {
    let items: Vec<_> = state
        .engine
        .backend()
        .list_components(caller.tenant)
        .await?
        .into_iter()
        .filter(|v| v.kind == kind)
        .collect();
    if items.is_empty() {
        return Err(super::error::ApiError::not_found(&format!(
            "component {kind}"
        )));
    }
    Ok(Json(ComponentList { items }))
}

#[utoipa::path(get, path = "/v1/components/{kind}/versions/{version}", tag = "components",
    params(("kind" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = ComponentVersion), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((kind, version)): Path<(String, i32)>,
) -> ApiResult<Json<ComponentVersion>> {
    Ok(Json(
        state
            .engine
            .backend()
            .get_component(caller.tenant, &kind, version)
            .await?,
    ))
}

/// Remove a deprecated version, and its bytes unless another version has
/// the same: how a tenant makes room under its storage quota. The newest
/// version of a kind stays (the next upload is numbered after it).
#[utoipa::path(post, path = "/v1/components/{kind}/versions/{version}/purge",
    tag = "components",
    params(("kind" = String, Path), ("version" = i32, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody,
            description = "the version is not deprecated, or is its kind's newest")),
    security(("api_key" = [])))]
pub async fn purge(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((kind, version)): Path<(String, i32)>,
) -> ApiResult<StatusCode> {
    state
        .engine
        .purge_component(caller.tenant, &kind, version)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deprecate a version: new attempts run the newest version that is not
/// deprecated. The bytes are kept, so running attempts are unaffected.
#[utoipa::path(delete, path = "/v1/components/{kind}/versions/{version}", tag = "components",
    params(("kind" = String, Path), ("version" = i32, Path)),
    responses((status = 200, body = ComponentVersion), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn deprecate(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path((kind, version)): Path<(String, i32)>,
) -> ApiResult<Json<ComponentVersion>> {
    Ok(Json(
        state
            .engine
            .deprecate_component(caller.tenant, &kind, version)
            .await?,
    ))
}
