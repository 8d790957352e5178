//! The operator's pages: tenants, their limits and their API keys (create,
//! rotate, revoke). A new key's token is shown once, on the page that
//! created it, as the API returns it once; it is never stored or shown again.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::session::{csrf_matches, OperatorSession};
use super::view::{self, render, Chrome};
use super::{UiError, UiResult};
use crate::api::error::Path;
use crate::api::AppState;
use crate::model::{ApiKeyId, TenantId};

pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub created: String,
    /// Limits set on the tenant, as `name=value`.
    pub limits: String,
}

/// A tenant's limits that are set, as `name=value` pairs.
fn limits_text(limits: &crate::model::TenantLimits) -> String {
    match serde_json::to_value(limits) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

#[derive(Template)]
#[template(path = "ui/tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
}

pub async fn tenants(
    State(state): State<Arc<AppState>>,
    op: OperatorSession,
) -> UiResult<Html<String>> {
    let tenants = state
        .engine
        .backend()
        .list_tenants()
        .await?
        .into_iter()
        .map(|t| TenantRow {
            id: t.tenant_id.to_string(),
            name: t.name,
            created: view::time(t.created_at),
            limits: limits_text(&t.limits),
        })
        .collect();
    let page = TenantsPage {
        chrome: Chrome::operator("Tenants", "tenants", &op.session),
        tenants,
    };
    Ok(Html(render(&page)))
}

#[derive(Deserialize)]
pub struct NameForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

pub async fn create_tenant(
    State(state): State<Arc<AppState>>,
    op: OperatorSession,
    Form(form): Form<NameForm>,
) -> UiResult<Response> {
    if !csrf_matches(&op.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    let engine = &state.engine;
    let tenant = engine.create_tenant(form.name.trim()).await?;
    let issued = engine.issue_api_key(tenant.tenant_id, "default").await?;
    tenant_page(
        &state,
        &op,
        tenant.tenant_id,
        Some(issued.token),
        StatusCode::CREATED,
    )
    .await
}

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub created: String,
    pub revoked: String,
}

#[derive(Template)]
#[template(path = "ui/tenant.html")]
struct TenantPage {
    chrome: Chrome,
    tenant: TenantRow,
    keys: Vec<KeyRow>,
    /// A token just issued: shown on this response only.
    new_token: Option<String>,
}

async fn tenant_page(
    state: &AppState,
    op: &OperatorSession,
    id: TenantId,
    new_token: Option<String>,
    status: StatusCode,
) -> UiResult<Response> {
    let backend = state.engine.backend();
    let t = backend.get_tenant(id).await?;
    let keys = backend
        .list_api_keys(id)
        .await?
        .into_iter()
        .map(|k| KeyRow {
            id: k.key_id.to_string(),
            name: k.name,
            created: view::time(k.created_at),
            revoked: view::time_opt(k.revoked_at),
        })
        .collect();
    let page = TenantPage {
        chrome: Chrome::operator(format!("Tenant {}", t.name), "tenants", &op.session),
        tenant: TenantRow {
            id: t.tenant_id.to_string(),
            name: t.name,
            created: view::time(t.created_at),
            limits: limits_text(&t.limits),
        },
        keys,
        new_token,
    };
    Ok((status, Html(render(&page))).into_response())
}

pub async fn tenant(
    State(state): State<Arc<AppState>>,
    op: OperatorSession,
    Path(id): Path<TenantId>,
) -> UiResult<Response> {
    tenant_page(&state, &op, id, None, StatusCode::OK).await
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    op: OperatorSession,
    Path(id): Path<TenantId>,
    Form(form): Form<NameForm>,
) -> UiResult<Response> {
    if !csrf_matches(&op.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    let name = if form.name.trim().is_empty() {
        "dashboard"
    } else {
        form.name.trim()
    };
    state.engine.backend().get_tenant(id).await?;
    let issued = state.engine.issue_api_key(id, name).await?;
    tenant_page(&state, &op, id, Some(issued.token), StatusCode::CREATED).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// `revoke` a key, or `rotate` it: issue a new one under the same name,
/// then revoke the old.
pub async fn key_action(
    State(state): State<Arc<AppState>>,
    op: OperatorSession,
    Path((id, key, action)): Path<(TenantId, ApiKeyId, String)>,
    Form(form): Form<CsrfOnly>,
) -> UiResult<Response> {
    if !csrf_matches(&op.session, &form.csrf) {
        return Err(UiError::csrf());
    }
    let engine = &state.engine;
    match action.as_str() {
        "revoke" => {
            engine.revoke_api_key(id, key).await?;
            Ok(Redirect::to(&format!("/ui/admin/tenants/{id}")).into_response())
        }
        "rotate" => {
            let old = engine
                .backend()
                .list_api_keys(id)
                .await?
                .into_iter()
                .find(|k| k.key_id == key)
                .ok_or_else(|| UiError::not_found("key"))?;
            let issued = engine.issue_api_key(id, &old.name).await?;
            engine.revoke_api_key(id, key).await?;
            tenant_page(&state, &op, id, Some(issued.token), StatusCode::CREATED).await
        }
        _ => Err(UiError::not_found("action")),
    }
}
