//! Dashboard sessions: a signed, expiring cookie in place of the API key.
//!
//! Signing in exchanges an API key (or the admin token) for a session
//! cookie, so the key itself never travels again, never sits in a page, a
//! URL or browser storage, and is out of reach of script (`HttpOnly`).
//! `SameSite=Strict` keeps other sites from sending it; on top of that,
//! every request that changes anything must echo the session's CSRF token
//! (a form field or the `x-csrf-token` header), compared in constant time.
//!
//! The cookie carries no secret: who (operator, or tenant and key id), until
//! when, and the CSRF token, under an HMAC-SHA256 with the server's session
//! key. A tenant session is checked against its key on every request, so
//! revoking the key ends the session too.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::super::auth::Caller;
use super::super::error::ApiError;
use super::super::turns::Turn;
use super::super::AppState;
use super::UiError;
use crate::model::{ApiKeyId, TenantId};

/// The session cookie's name.
pub const COOKIE: &str = "ff_session";
/// How long a session lasts after signing in.
pub const LIFETIME_SECS: i64 = 8 * 3600;

/// Who a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    Tenant { tenant: TenantId, key: ApiKeyId },
    Operator,
}

/// A verified session.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    pub expires_at: i64,
    /// Echoed by every changing request.
    pub csrf: String,
}

/// The server's key for signing sessions: random per process unless the
/// operator gives one (so that several `serve` processes accept each
/// other's sessions).
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text.trim()).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    fn mac(&self, body: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(b"flowfabric-ui-session\0");
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// A new session for `principal`, as a cookie value.
    pub fn issue(&self, principal: Principal) -> String {
        let mut csrf = [0u8; 16];
        rand::rng().fill_bytes(&mut csrf);
        let session = Session {
            principal,
            expires_at: Utc::now().timestamp() + LIFETIME_SECS,
            csrf: hex::encode(csrf),
        };
        self.seal(&session)
    }

    fn seal(&self, session: &Session) -> String {
        let (who, tenant, key) = match session.principal {
            Principal::Tenant { tenant, key } => {
                ("t", tenant.simple().to_string(), key.simple().to_string())
            }
            Principal::Operator => ("o", "-".into(), "-".into()),
        };
        let body = format!(
            "v1.{who}.{tenant}.{key}.{}.{}",
            session.expires_at, session.csrf
        );
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&body));
        format!("{body}.{sig}")
    }

    /// The session a cookie value holds, if it is ours, intact and unexpired.
    pub fn open(&self, value: &str) -> Option<Session> {
        let (body, sig) = value.rsplit_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        if !bool::from(self.mac(body).ct_eq(&sig)) {
            return None;
        }
        let mut parts = body.split('.');
        let (version, who, tenant, key, expires, csrf) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if version != "v1" || parts.next().is_some() {
            return None;
        }
        let principal = match who {
            "t" => Principal::Tenant {
                tenant: tenant.parse().ok()?,
                key: key.parse().ok()?,
            },
            "o" => Principal::Operator,
            _ => return None,
        };
        let expires_at: i64 = expires.parse().ok()?;
        (expires_at > Utc::now().timestamp()).then(|| Session {
            principal,
            expires_at,
            csrf: csrf.to_owned(),
        })
    }
}

/// The `Set-Cookie` value that starts a session. `Secure` when the request
/// reached us over HTTPS (as a proxy in front says).
pub fn set_cookie(value: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={LIFETIME_SECS}{secure}"
    ))
    .expect("a session cookie is a valid header")
}

/// The `Set-Cookie` value that ends one.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("ff_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub fn is_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether `presented` is the session's CSRF token.
pub fn csrf_matches(session: &Session, presented: &str) -> bool {
    !presented.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(presented.as_bytes()))
}

/// Not signed in (or no longer): pages send the browser to the sign-in
/// page, live and script routes answer 401.
#[derive(Debug)]
pub struct SignedOut;

impl IntoResponse for SignedOut {
    fn into_response(self) -> Response {
        let mut response = Redirect::to("/ui/login").into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, clear_cookie());
        response
    }
}

/// A tenant's session, checked against its key, holding one of the
/// tenant's turns (see `api::turns`) while its handler runs: a script
/// driving the dashboard with a session cookie waits on its own tenant's
/// turns, as one calling the API does.
#[derive(Debug)]
pub struct TenantSession {
    pub tenant: TenantId,
    pub session: Session,
    turn: Turn,
}

impl TenantSession {
    /// The session's tenant as an API caller, with the turn this request
    /// already holds (taking a second one could wait on the first).
    pub fn into_caller(self) -> Caller {
        Caller::with_turn(self.tenant, self.turn)
    }
}

/// The operator's session.
#[derive(Debug, Clone)]
pub struct OperatorSession {
    pub session: Session,
}

/// Any verified session.
#[derive(Debug, Clone)]
pub struct AnySession(pub Session);

fn session_of(parts: &Parts, state: &AppState) -> Option<Session> {
    let ui = state.ui.as_ref()?;
    ui.session_key.open(cookie(&parts.headers, COOKIE)?)
}

impl FromRequestParts<Arc<AppState>> for AnySession {
    type Rejection = SignedOut;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        session_of(parts, state).map(Self).ok_or(SignedOut)
    }
}

/// Why a tenant page was not shown: no valid session, or the tenant's
/// turns stayed taken.
#[derive(Debug)]
pub enum TenantRefusal {
    SignedOut,
    Busy(UiError),
}

impl IntoResponse for TenantRefusal {
    fn into_response(self) -> Response {
        match self {
            Self::SignedOut => SignedOut.into_response(),
            Self::Busy(error) => error.into_response(),
        }
    }
}

impl From<SignedOut> for TenantRefusal {
    fn from(_: SignedOut) -> Self {
        Self::SignedOut
    }
}

impl FromRequestParts<Arc<AppState>> for TenantSession {
    type Rejection = TenantRefusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let session = session_of(parts, state).ok_or(SignedOut)?;
        let Principal::Tenant { tenant, key } = session.principal else {
            return Err(TenantRefusal::SignedOut);
        };
        // A revoked key ends its sessions.
        match state.engine.api_key_tenant(key).await {
            Ok(Some(owner)) if owner == tenant => {
                tracing::Span::current().record("tenant", tracing::field::display(tenant));
                let turn = state.turns.take(tenant).await.map_err(|refused| {
                    TenantRefusal::Busy(UiError::from(ApiError::from(refused)))
                })?;
                Ok(Self {
                    tenant,
                    session,
                    turn,
                })
            }
            _ => Err(TenantRefusal::SignedOut),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for OperatorSession {
    type Rejection = SignedOut;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let session = session_of(parts, state).ok_or(SignedOut)?;
        // Only while the server still has an admin token.
        if session.principal == Principal::Operator && state.admin_token_sha256.is_some() {
            Ok(Self { session })
        } else {
            Err(SignedOut)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_intact_and_under_its_key() {
        let key = SessionKey::random();
        let tenant = TenantId::new();
        let api_key = ApiKeyId::new();
        let value = key.issue(Principal::Tenant {
            tenant,
            key: api_key,
        });
        let opened = key.open(&value).expect("opens");
        assert_eq!(
            opened.principal,
            Principal::Tenant {
                tenant,
                key: api_key
            }
        );
        assert_eq!(opened.csrf.len(), 32);
        assert!(SessionKey::random().open(&value).is_none(), "another key");
        let forged = value.replacen(".t.", ".o.", 1);
        assert!(key.open(&forged).is_none(), "an edited body");
        assert!(key.open("v1.o.-.-.99999999999.x").is_none(), "unsigned");
        let expired = key.seal(&Session {
            principal: Principal::Operator,
            expires_at: Utc::now().timestamp() - 1,
            csrf: "c".into(),
        });
        assert!(key.open(&expired).is_none(), "expired");
    }
}
