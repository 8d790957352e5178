//! The web dashboard at `/ui`: server-rendered pages over the same engine
//! calls as the JSON API, for people who would otherwise run five commands
//! and read JSON to find out why a flow failed.
//!
//! Why it is built this way:
//! - **Server-rendered** (askama templates, compiled into the binary): no
//!   Node or bundler to build or run the host, and every value a tenant
//!   wrote (kinds, tags, inputs, frames, error messages) goes through the
//!   templates' HTML escaping. The few live parts are one small script of
//!   our own (`assets/app.js`) that only ever inserts text.
//! - **Sessions, not keys, in the browser** ([`session`]): signing in trades
//!   the key for a signed HttpOnly cookie; changes need the CSRF token.
//! - **A strict Content-Security-Policy** on every response: scripts and
//!   styles from this origin only, none inline, no framing.
//! - Tenant pages scope every read to the session's tenant, as the API
//!   does, so another tenant's id is simply not found.

mod admin;
mod assets;
mod executions;
mod flows;
mod live;
mod pages;
pub mod session;
mod signin;
mod timeline;
mod view;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::error::ApiError;
use super::AppState;
use crate::error::EngineError;
pub use session::SessionKey;

/// What the dashboard needs from the server's configuration.
#[derive(Clone)]
pub struct UiConfig {
    /// Signs session cookies.
    pub session_key: SessionKey,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            session_key: SessionKey::random(),
        }
    }
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The `/ui` routes.
pub fn router(max_component_bytes: usize) -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(signin::form).post(signin::sign_in))
        .route("/logout", post(signin::sign_out))
        .route("/assets/{name}", get(assets::serve))
        .route("/live/changes", get(live::changes))
        .route("/executions", get(executions::list))
        .route("/executions/rows", get(executions::rows))
        .route("/executions/{id}", get(executions::detail))
        .route("/executions/{id}/stream", get(executions::stream))
        .route("/executions/{id}/{action}", post(executions::act))
        .route("/flows", get(flows::list))
        .route("/flows/{id}", get(flows::detail))
        .route("/components", get(pages::components))
        .route(
            "/components/{kind}",
            post(pages::upload).layer(DefaultBodyLimit::max(max_component_bytes)),
        )
        .route(
            "/components/{kind}/versions/{version}/{action}",
            post(pages::version_action),
        )
        .route("/budgets", get(pages::budgets))
        .route("/budgets/{id}/delete", post(pages::delete_budget))
        .route("/schedules", get(pages::schedules))
        .route(
            "/admin/tenants",
            get(admin::tenants).post(admin::create_tenant),
        )
        .route("/admin/tenants/{tenant}", get(admin::tenant))
        .route("/admin/tenants/{tenant}/keys", post(admin::create_key))
        .route(
            "/admin/tenants/{tenant}/keys/{key}/{action}",
            post(admin::key_action),
        )
        .fallback(|| async { UiError::not_found("page") })
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A page that could not be shown: its status and one line, as HTML.
#[derive(Debug)]
pub struct UiError {
    status: StatusCode,
    message: String,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A changing request without the session's CSRF token.
    pub fn csrf() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "this action needs the page's CSRF token; reload the page and try again",
        )
    }
}

impl From<EngineError> for UiError {
    fn from(e: EngineError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let page = view::ErrorPage {
            status: self.status.as_u16(),
            message: self.message,
        };
        let mut response = (self.status, Html(view::render(&page))).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            // As the API says it (`api::error`).
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub type UiResult<T> = Result<T, UiError>;
