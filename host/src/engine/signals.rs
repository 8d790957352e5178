//! Waitpoints, suspension and signals at the engine level. The tokens that
//! authorise signal delivery, and their keys, are in `waitpoint_keys`.

use super::caps::stored_size;
use super::Engine;
use crate::backend::{NewWaitpoint, SignalDelivery, SuspendRequest};
use crate::error::{EngineError, Result};
use crate::model::{
    ExecutionFilter, ExecutionId, LeaseHandle, NewSignal, Page, PublicState, ResumeCondition,
    Signal, SignalOutcome, SuspendOutcome, SuspendedExecution, Suspension, TenantId,
    TimeoutBehavior, Waitpoint, MAX_SIGNAL_NAMES,
};
use crate::model::{WaitpointId, WaitpointRef};

/// Largest page of [`Engine::list_suspended`]: each entry costs a read of
/// its waitpoints.
pub const MAX_SUSPENDED_PAGE: u32 = 100;

/// Waitpoints shown per suspended execution.
const WAITPOINTS_LISTED: u32 = 64;
pub(super) const MAX_SUSPEND_MS: u64 = 30 * 24 * 3600 * 1000;
const MAX_SIGNAL_BYTES: usize = 256 << 10;

/// A waitpoint with the token that signals it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct WaitpointWithToken {
    #[serde(flatten)]
    pub waitpoint: Waitpoint,
    pub token: String,
}

impl Engine {
    fn with_token(&self, tenant: TenantId, id: ExecutionId, w: Waitpoint) -> WaitpointWithToken {
        WaitpointWithToken {
            token: self.signal_keys().sign(tenant, id, w.waitpoint_id),
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
        let waitpoint = NewWaitpoint {
            key,
            expires_in: timeout_ms.map(std::time::Duration::from_millis),
            max_waitpoints: max,
        };
        let waitpoint = self.backend.create_waitpoint(lease, waitpoint).await?;
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
                .list_waitpoints(
                    tenant,
                    execution.execution_id,
                    Page::new(None, WAITPOINTS_LISTED),
                )
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
        let request = SuspendRequest {
            suspension: &suspension,
            timeout: timeout_ms.map(std::time::Duration::from_millis),
            max_waitpoints,
        };
        self.backend.suspend(lease, request).await
    }

    /// Deliver a signal to the waitpoint `token` opens.
    pub async fn deliver_signal(
        &self,
        token: &str,
        signal: NewSignal,
    ) -> Result<(TenantId, ExecutionId, SignalOutcome)> {
        let (tenant, id, waitpoint) = self.signal_keys().verify(token)?;
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
        // At the quota, a signal with a key may still be a resend of one
        // already kept: storage is asked with room for no new signal, so it
        // answers a duplicate as usual and refuses anything else.
        let at_quota = match self
            .check_storage(tenant, stored_size(signal.payload.len(), 1))
            .await
        {
            Ok(()) => None,
            Err(quota @ EngineError::QuotaExceeded { .. }) if signal.idempotency_key.is_some() => {
                Some(quota)
            }
            Err(e) => return Err(e),
        };
        let to = WaitpointRef {
            execution: id,
            waitpoint,
        };
        let delivery = SignalDelivery {
            to,
            signal: &signal,
            max_signals: match at_quota {
                Some(_) => 0,
                None => self.limits.max_signals_per_execution,
            },
        };
        let delivered = self.backend.deliver_signal(tenant, delivery).await;
        let outcome = match (at_quota, delivered) {
            (Some(_), Ok(duplicate @ SignalOutcome::Duplicate { .. })) => duplicate,
            (Some(quota), _) => return Err(quota),
            (None, delivered) => delivered?,
        };
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
            .list_waitpoints(tenant, id, Page::new(after, limit))
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
