//! Signing in and out: a key or the admin token in, a session cookie out.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::session::{self, AnySession, Principal};
use super::view::render;
use super::{UiError, UiResult};
use crate::api::AppState;
use crate::engine::secret_matches;

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    error: Option<String>,
}

pub async fn form() -> Html<String> {
    Html(render(&LoginPage { error: None }))
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
}

/// A cross-site form post carries another `Origin`: refuse it, so no page
/// elsewhere can sign a browser into a session of its choosing.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

pub async fn sign_in(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(body): Form<SignIn>,
) -> UiResult<Response> {
    if !same_origin(&headers) {
        return Err(UiError::new(
            StatusCode::FORBIDDEN,
            "sign-in from another site refused",
        ));
    }
    let ui = state
        .ui
        .as_ref()
        .ok_or_else(|| UiError::not_found("page"))?;
    let token = body.token.trim();
    let principal = if let Ok((tenant, key)) = state.engine.authenticate_key(token).await {
        Some(Principal::Tenant { tenant, key })
    } else {
        state
            .admin_token_sha256
            .as_ref()
            .filter(|sha| secret_matches(token, sha.as_slice()))
            .map(|_| Principal::Operator)
    };
    let Some(principal) = principal else {
        let page = LoginPage {
            error: Some("That key is not valid (or was revoked).".into()),
        };
        return Ok((StatusCode::UNAUTHORIZED, Html(render(&page))).into_response());
    };
    let target = match principal {
        Principal::Tenant { tenant, .. } => {
            tracing::info!(%tenant, "dashboard sign-in");
            "/ui"
        }
        Principal::Operator => {
            tracing::info!("dashboard sign-in as operator");
            "/ui/admin/tenants"
        }
    };
    let cookie = ui.session_key.issue(principal);
    let mut response = Redirect::to(target).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&cookie, session::is_https(&headers)),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

pub async fn sign_out(
    AnySession(session): AnySession,
    Form(body): Form<CsrfForm>,
) -> UiResult<Response> {
    if !session::csrf_matches(&session, &body.csrf) {
        return Err(UiError::csrf());
    }
    let mut response = Redirect::to("/ui/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}
