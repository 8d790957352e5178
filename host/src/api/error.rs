//! Every failure of the API as one JSON shape, `{"error": "...", "kind": "...",
//! "retryable": ...}`, with a status code that tells the client what to do
//! about it (and, when it may retry, a `Retry-After`).
//!
//! Engine errors map by their stable `kind`; request-parsing failures (bad JSON,
//! wrong types, bodies over the route's limit, malformed path or query) are
//! caught by the extractors below instead of axum's plain-text defaults.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::EngineError;

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Human-readable, one line.
    pub error: String,
    /// Stable machine-readable name, e.g. `not_found`, `invalid_input`.
    pub kind: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
}

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, error: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                kind: kind.to_owned(),
                retryable: matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ),
            },
        }
    }

    pub fn invalid(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", error)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The one-line message (never internal details; see `From<EngineError>`).
    pub fn message(&self) -> &str {
        &self.body.error
    }

    /// Say which part of the request the error is about.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.body.error = format!("{prefix}: {}", self.body.error);
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        let status = match &e {
            E::InvalidInput { .. } | E::InvalidComponent(_) => StatusCode::BAD_REQUEST,
            E::Unauthenticated(_) | E::Token { .. } => StatusCode::UNAUTHORIZED,
            E::NotFound { .. } => StatusCode::NOT_FOUND,
            E::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            E::LimitExceeded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::StaleLease { .. }
            | E::NotActive { .. }
            | E::NotRunnable { .. }
            | E::Conflict(_)
            | E::Graph { .. }
            | E::Refused { .. } => StatusCode::CONFLICT,
            E::Storage { cause, .. } if is_unavailable(cause) => StatusCode::SERVICE_UNAVAILABLE,
            E::Storage { .. } | E::Runtime(_) | E::Corrupt(_) => {
                // Details stay in the log: they may name tables or other tenants' ids.
                tracing::error!(error = %e, "internal error serving a request");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the server log has the details",
                );
            }
        };
        if status == StatusCode::SERVICE_UNAVAILABLE {
            tracing::warn!(error = %e, "storage unavailable");
            return Self::new(status, "unavailable", "storage is unavailable; retry later");
        }
        Self::new(status, e.kind(), e.to_string())
    }
}

fn is_unavailable(cause: &sqlx::Error) -> bool {
    matches!(
        cause,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retryable = self.body.retryable;
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if retryable {
            // RFC 9110 §10.2.3: when to try again. Turns and connections
            // free up within moments; a quota may take longer, and a client
            // that retries at this pace is refused cheaply, before any work.
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `content-type: application/json`",
            ),
            JsonRejection::BytesRejection(r) => r.into(),
            // Syntax errors and wrong types alike are the client's input to fix.
            other => ApiError::invalid(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body over this route's limit",
            )
        } else {
            ApiError::invalid(r.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(r.body_text())
    }
}

/// `axum::Json` with errors in our shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with errors in our shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with errors in our shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The raw request body, with errors (over the route's limit) in our shape.
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> ApiResult<Self> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(ApiError::from)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> ApiResult<Self> {
        let RawBody(body) = RawBody::from_request(request, state).await?;
        if body.is_empty() {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::invalid(format!("body: {e}")))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A page size from a query: 1 to 1000, 100 when absent.
pub fn page_limit(limit: Option<u32>) -> ApiResult<u32> {
    let limit = limit.unwrap_or(100);
    if !(1..=1_000).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 1000"));
    }
    Ok(limit)
}
