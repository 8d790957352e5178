//! Who is calling: a tenant (by API key) or the operator (by admin token).
//!
//! Handlers take [`Caller`] or [`Admin`] as an argument, so a route cannot be
//! written without deciding whose it is; every tenant route passes
//! `caller.tenant` to the engine, which filters every query by it.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::turns::Turn;
use super::AppState;
use crate::engine::secret_matches;
use crate::model::TenantId;

/// An authenticated tenant, holding one of its turns (see `turns`) until
/// the handler is done with it.
#[derive(Debug)]
pub struct Caller {
    pub tenant: TenantId,
    _turn: Turn,
}

/// The operator, holding the installation's admin token.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing `authorization: Bearer <key>` header"))?;
    bearer_credentials(value)
        .ok_or_else(|| unauthenticated("the authorization header is not `Bearer <key>`"))
}

/// The credentials of a `Bearer` authorization header (RFC 9110 §11.4,
/// RFC 6750 §2.1): the scheme matched case-insensitively, then one or more
/// spaces, then one token with no white space in or after it.
pub(super) fn bearer_credentials(value: &header::HeaderValue) -> Option<&str> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    let token = rest.trim_start_matches(' ');
    let well_formed = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.contains(|c: char| c.is_ascii_whitespace());
    well_formed.then_some(token)
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

impl Caller {
    /// The tenant as a caller, with a turn already taken for it (by a
    /// dashboard session, which authenticated otherwise).
    pub(super) fn with_turn(tenant: TenantId, turn: Turn) -> Self {
        Self {
            tenant,
            _turn: turn,
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let tenant = state.engine.authenticate(token).await?;
        tracing::Span::current().record("tenant", tracing::field::display(tenant));
        Ok(Self::with_turn(tenant, state.turns.take(tenant).await?))
    }
}

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = &state.admin_token_sha256 else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin routes are disabled: the server has no admin token configured",
            ));
        };
        if secret_matches(bearer(parts)?, expected) {
            Ok(Admin)
        } else {
            Err(unauthenticated("invalid admin token"))
        }
    }
}

/// Who may read `/metrics`: the operator, when the server has an admin
/// token. The metrics name tenants (`flowfabric_tenant_stored_bytes`) and
/// show the whole installation's activity, which no tenant may see of
/// another. A server without an admin token has no operator to ask, and
/// serves them to anyone who can reach it.
#[derive(Debug, Clone, Copy)]
pub struct MetricsReader;

impl FromRequestParts<Arc<AppState>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.admin_token_sha256.is_none() {
            return Ok(MetricsReader);
        }
        Admin::from_request_parts(parts, state)
            .await
            .map(|Admin| MetricsReader)
    }
}

/// What the server keeps of the admin token.
pub fn hash_admin_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::bearer_credentials;
    use axum::http::HeaderValue;

    fn parse(value: &str) -> Option<String> {
        bearer_credentials(&HeaderValue::from_str(value).unwrap()).map(str::to_owned)
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_one_word() {
        assert_eq!(parse("Bearer ffk_1").as_deref(), Some("ffk_1"));
        assert_eq!(parse("bearer ffk_1").as_deref(), Some("ffk_1"));
        assert_eq!(parse("BEARER  ffk_1").as_deref(), Some("ffk_1"), "1*SP");
        assert_eq!(parse("Bearer ffk_1 "), None, "trailing space");
        assert_eq!(parse("Bearer ffk 1"), None, "two words");
        assert_eq!(parse("Bearer "), None);
        assert_eq!(parse("Basic ffk_1"), None);
        assert_eq!(parse("Bearerffk_1"), None);
    }
}
