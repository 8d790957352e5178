//! Waitpoints, suspension and signals at the engine level, and the waitpoint
//! tokens that authorise signal delivery.
//!
//! A token is `wpt_<kid>_<tenant>_<execution>_<waitpoint>_<mac>`, where `mac` is
//! HMAC-SHA256 under the key `kid` over all four, so one token opens exactly one
//! waitpoint of one execution of one tenant, and an external system needs no
//! API key to signal. Keys rotate: the first configured key signs, older keys
//! still verify until their retirement time (the grace window), and a token
//! signed by a retired or removed key is refused with a clear kind.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use super::Engine;
use crate::error::{EngineError, Result};
use crate::model::WaitpointId;
use crate::model::{
    ExecutionFilter, ExecutionId, LeaseHandle, NewSignal, PublicState, ResumeCondition, Signal,
    SignalOutcome, SuspendOutcome, SuspendedExecution, Suspension, TenantId, TimeoutBehavior,
    Waitpoint, MAX_SIGNAL_NAMES,
};

const TOKEN_PREFIX: &str = "wpt_";

/// Largest page of [`Engine::list_suspended`]: each entry costs a read of
/// its waitpoints.
pub const MAX_SUSPENDED_PAGE: u32 = 100;

/// Waitpoints shown per suspended execution.
const WAITPOINTS_LISTED: u32 = 64;
pub(super) const MAX_SUSPEND_MS: u64 = 30 * 24 * 3600 * 1000;
const MAX_SIGNAL_BYTES: usize = 256 << 10;

#[derive(Clone)]
struct SignalKey {
    kid: String,
    secret: Vec<u8>,
    /// Verifies until then; `None` for a key that never retires.
    retires_at: Option<DateTime<Utc>>,
}

/// The keys that sign and verify waitpoint tokens.
#[derive(Clone)]
pub struct SignalKeys(Vec<SignalKey>);

impl std::fmt::Debug for SignalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.0.iter().map(|k| k.kid.as_str()).collect();
        f.debug_tuple("SignalKeys").field(&kids).finish()
    }
}

impl SignalKeys {
    /// `kid=secret[@retire-time],…`; the first key signs. Secrets are at least
    /// 32 bytes; retire times are RFC 3339.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason: String| EngineError::invalid("signal keys", reason);
        let mut keys = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kid, rest) = part
                .split_once('=')
                .ok_or_else(|| invalid("expected `kid=secret[@retire-time]`".into()))?;
            if kid.is_empty() || !kid.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(invalid(format!(
                    "key id `{kid}` must be letters and digits"
                )));
            }
            let (secret, retires_at) = match rest.split_once('@') {
                Some((secret, at)) => {
                    let at = DateTime::parse_from_rfc3339(at)
                        .map_err(|e| invalid(format!("retire time of `{kid}`: {e}")))?;
                    (secret, Some(at.with_timezone(&Utc)))
                }
                None => (rest, None),
            };
            if secret.len() < 32 {
                return Err(invalid(format!("the secret of `{kid}` is under 32 bytes")));
            }
            keys.push(SignalKey {
                kid: kid.to_owned(),
                secret: secret.as_bytes().to_vec(),
                retires_at,
            });
        }
        if keys.is_empty() {
            return Err(invalid("no keys given".into()));
        }
        Ok(Self(keys))
    }

    /// A random key for this process only: tokens die with it, and other hosts
    /// cannot verify them. For tests and single-process development.
    pub fn ephemeral() -> Self {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Self(vec![SignalKey {
            kid: "ephemeral".into(),
            secret: hex::encode(secret).into_bytes(),
            retires_at: None,
        }])
    }

    fn mac(
        key: &SignalKey,
        tenant: TenantId,
        id: ExecutionId,
        waitpoint: WaitpointId,
    ) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&key.secret).expect("HMAC takes any key");
        let message = format!(
            "flowfabric-waitpoint:v1:{}:{}:{}:{}",
            key.kid,
            tenant.simple(),
            id.simple(),
            waitpoint.simple()
        );
        mac.update(message.as_bytes());
        mac
    }

    pub fn sign(&self, tenant: TenantId, id: ExecutionId, waitpoint: WaitpointId) -> String {
        let key = &self.0[0];
        let mac = Self::mac(key, tenant, id, waitpoint)
            .finalize()
            .into_bytes();
        format!(
            "{TOKEN_PREFIX}{}_{}_{}_{}_{}",
            key.kid,
            tenant.simple(),
            id.simple(),
            waitpoint.simple(),
            hex::encode(mac)
        )
    }

    /// The (tenant, execution, waitpoint) a token opens.
    pub fn verify(&self, token: &str) -> Result<(TenantId, ExecutionId, WaitpointId)> {
        let invalid = || {
            token_error(
                "invalid_token",
                "the waitpoint token is malformed or forged",
            )
        };
        let parts: Vec<&str> = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(invalid)?
            .split('_')
            .collect();
        let [kid, tenant, id, waitpoint, mac] = parts[..] else {
            return Err(invalid());
        };
        let parse = |s: &str| Uuid::try_parse(s).map_err(|_| invalid());
        let (tenant, id, waitpoint) = (
            TenantId(parse(tenant)?),
            ExecutionId(parse(id)?),
            WaitpointId(parse(waitpoint)?),
        );
        let mac = hex::decode(mac).map_err(|_| invalid())?;
        let key = self.0.iter().find(|k| k.kid == kid).ok_or_else(|| {
            token_error(
                "token_expired",
                "the waitpoint token was signed with a key that is no longer accepted",
            )
        })?;
        Self::mac(key, tenant, id, waitpoint)
            .verify_slice(&mac)
            .map_err(|_| invalid())?;
        if key.retires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(token_error(
                "token_expired",
                "the waitpoint token was signed with a retired key",
            ));
        }
        Ok((tenant, id, waitpoint))
    }
}

fn token_error(kind: &'static str, message: &'static str) -> EngineError {
    EngineError::Token { kind, message }
}

/// A waitpoint with the token that signals it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WaitpointWithToken {
    #[serde(flatten)]
    pub waitpoint: Waitpoint,
    pub token: String,
}

impl Engine {
    pub fn with_signal_keys(mut self, keys: SignalKeys) -> Self {
        self.signal_keys = std::sync::Arc::new(keys);
        self
    }

    fn with_token(&self, tenant: TenantId, id: ExecutionId, w: Waitpoint) -> WaitpointWithToken {
        WaitpointWithToken {
            token: self.signal_keys.sign(tenant, id, w.waitpoint_id),
            waitpoint: w,
        }
    }

    pub async fn create_waitpoint(
        &self,
        lease: &LeaseHandle,
        key: &str,
        timeout_ms: Option<u64>,
    ) -> Result<WaitpointWithToken> {
        self.check_name("waitpoint key", key)?;
        check_timeout(timeout_ms)?;
        let max = self.caps(lease.tenant_id).await?.waitpoints_per_execution;
        let waitpoint = self
            .backend
            .create_waitpoint(
                lease,
                key,
                timeout_ms.map(std::time::Duration::from_millis),
                max,
            )
            .await?;
        Ok(self.with_token(lease.tenant_id, lease.execution_id, waitpoint))
    }

    pub async fn suspend(
        &self,
        lease: &LeaseHandle,
        condition: ResumeCondition,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<SuspendOutcome> {
        let suspension = Suspension::new(condition, on_timeout);
        self.suspend_with(lease, suspension, timeout_ms).await
    }

    /// Suspended executions (of `kind`, in `lane`, when given) after `after`,
    /// oldest first, each with its suspension and its waitpoints.
    pub async fn list_suspended(
        &self,
        tenant: TenantId,
        kind: Option<String>,
        lane: Option<String>,
        after: Option<ExecutionId>,
        limit: u32,
    ) -> Result<Vec<SuspendedExecution>> {
        let filter = ExecutionFilter {
            state: Some(PublicState::Suspended),
            kind,
            lane,
            tag: None,
            after,
            limit: limit.clamp(1, MAX_SUSPENDED_PAGE),
            newest_first: false,
        };
        let executions = self.list(tenant, filter).await?;
        let mut listed = Vec::with_capacity(executions.len());
        for execution in executions {
            let waitpoints = self
                .backend
                .list_waitpoints(tenant, execution.execution_id, None, WAITPOINTS_LISTED)
                .await?;
            listed.push(SuspendedExecution {
                execution,
                waitpoints,
            });
        }
        Ok(listed)
    }

    /// [`Engine::suspend`] with the guest's reason code and the signal names
    /// that count toward the condition.
    pub async fn suspend_with(
        &self,
        lease: &LeaseHandle,
        suspension: Suspension,
        timeout_ms: Option<u64>,
    ) -> Result<SuspendOutcome> {
        let condition = &suspension.condition;
        condition.validate()?;
        if matches!(
            condition,
            ResumeCondition::Children | ResumeCondition::Budget { .. } | ResumeCondition::Timer
        ) {
            return Err(EngineError::invalid(
                "condition",
                "children, budgets and timers are waited on by wait_children, report_usage \
                 and sleep",
            ));
        }
        for key in condition.keys() {
            self.check_name("waitpoint key", key)?;
        }
        check_timeout(timeout_ms)?;
        if *condition == ResumeCondition::TimeoutOnly && timeout_ms.is_none() {
            return Err(EngineError::invalid(
                "timeout_ms",
                "a timeout-only suspension needs a timeout",
            ));
        }
        if let Some(reason) = &suspension.reason {
            check_reason_code(reason)?;
        }
        if suspension.signal_names.len() > MAX_SIGNAL_NAMES {
            return Err(EngineError::invalid(
                "signal_names",
                format!("at most {MAX_SIGNAL_NAMES}"),
            ));
        }
        for name in &suspension.signal_names {
            self.check_name("signal name", name)?;
        }
        let max_waitpoints = self.caps(lease.tenant_id).await?.waitpoints_per_execution;
        self.backend
            .suspend(
                lease,
                &suspension,
                timeout_ms.map(std::time::Duration::from_millis),
                max_waitpoints,
            )
            .await
    }

    /// Deliver a signal to the waitpoint `token` opens.
    pub async fn deliver_signal(
        &self,
        token: &str,
        signal: NewSignal,
    ) -> Result<(TenantId, ExecutionId, SignalOutcome)> {
        let (tenant, id, waitpoint) = self.signal_keys.verify(token)?;
        self.check_name("signal name", &signal.name)?;
        if signal.payload.len() > MAX_SIGNAL_BYTES {
            return Err(EngineError::PayloadTooLarge {
                field: "signal payload",
                size: signal.payload.len(),
                limit: MAX_SIGNAL_BYTES,
            });
        }
        if let Some(key) = &signal.idempotency_key {
            if key.is_empty() || key.len() > 256 {
                return Err(EngineError::invalid(
                    "idempotency_key",
                    "must be 1 to 256 bytes",
                ));
            }
        }
        let outcome = self
            .backend
            .deliver_signal(tenant, id, waitpoint, &signal)
            .await?;
        Ok((tenant, id, outcome))
    }

    pub async fn resume(&self, tenant: TenantId, id: ExecutionId) -> Result<()> {
        self.backend.resume(tenant, id).await
    }

    pub async fn resume_signals(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        seq: i32,
    ) -> Result<Vec<Signal>> {
        self.backend.resume_signals(tenant, id, seq).await
    }

    /// An execution's waitpoints, each with its token (for the tenant to hand
    /// to whoever should signal).
    /// A page of them: up to `limit` (1 to [`MAX_WAITPOINT_PAGE`]) after the
    /// waitpoint id `after`.
    pub async fn list_waitpoints(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        after: Option<WaitpointId>,
        limit: u32,
    ) -> Result<Vec<WaitpointWithToken>> {
        self.backend.execution_state(tenant, id).await?;
        let limit = limit.clamp(1, MAX_WAITPOINT_PAGE);
        let waitpoints = self
            .backend
            .list_waitpoints(tenant, id, after, limit)
            .await?;
        Ok(waitpoints
            .into_iter()
            .map(|w| self.with_token(tenant, id, w))
            .collect())
    }
}

/// The most waitpoints one page lists.
pub const MAX_WAITPOINT_PAGE: u32 = 1_000;

pub(super) fn check_timeout(timeout_ms: Option<u64>) -> Result<()> {
    if timeout_ms.is_some_and(|ms| ms == 0 || ms > MAX_SUSPEND_MS) {
        return Err(EngineError::invalid(
            "timeout_ms",
            format!("must be 1 to {MAX_SUSPEND_MS}"),
        ));
    }
    Ok(())
}

/// A guest's reason code: 1 to 64 of `a-z 0-9 _ . : -`, so it reads as a
/// code (and filters as one), never as free text.
fn check_reason_code(reason: &str) -> Result<()> {
    let ok = (1..=64).contains(&reason.len())
        && reason
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if !ok {
        return Err(EngineError::invalid(
            "reason",
            format!("`{reason}` must be 1 to 64 characters of [a-z0-9_.:-]"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_one_waitpoint_and_keys_rotate() {
        let old = SignalKeys::parse(&format!("k1={}", "a".repeat(32))).unwrap();
        let (t, e, w) = (TenantId::new(), ExecutionId::new(), WaitpointId::new());
        let token = old.sign(t, e, w);
        assert_eq!(old.verify(&token).unwrap(), (t, e, w));

        // Rotated: k2 signs, k1 verifies during its grace window.
        let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let rotated = SignalKeys::parse(&format!(
            "k2={},k1={}@{future}",
            "b".repeat(32),
            "a".repeat(32)
        ))
        .unwrap();
        assert_eq!(rotated.verify(&token).unwrap(), (t, e, w));
        assert!(rotated.sign(t, e, w).starts_with("wpt_k2_"));
        let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
        let retired = SignalKeys::parse(&format!(
            "k2={},k1={}@{past}",
            "b".repeat(32),
            "a".repeat(32)
        ))
        .unwrap();
        let kind = |r: Result<_>| match r {
            Err(EngineError::Token { kind, .. }) => kind,
            other => panic!("{other:?}"),
        };
        assert_eq!(kind(retired.verify(&token)), "token_expired");
        let removed = SignalKeys::parse(&format!("k2={}", "b".repeat(32))).unwrap();
        assert_eq!(kind(removed.verify(&token)), "token_expired");

        // Any other waitpoint, execution or tenant: forged.
        let swapped = token.replace(
            &w.simple().to_string(),
            &Uuid::now_v7().simple().to_string(),
        );
        assert_eq!(kind(old.verify(&swapped)), "invalid_token");
        assert_eq!(kind(old.verify("wpt_k1_nonsense")), "invalid_token");
        assert_eq!(kind(old.verify("")), "invalid_token");
        assert!(SignalKeys::parse("k1=short").is_err());
    }
}
