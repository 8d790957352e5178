//! Durable steps and timers: what the engine checks before a step reaches
//! the journal (see [`crate::model::JournalEntry`] for what a journal is and
//! its determinism rule).

use chrono::{DateTime, TimeDelta, Utc};

use super::caps::stored_size;
use super::signals::MAX_SUSPEND_MS;
use super::{truncate_utf8, Engine};
use crate::backend::{SleepRequest, StepRecord};
use crate::error::{EngineError, Result};
use crate::model::{
    check_step_name, ExecutionId, JournalEntry, JournalLimits, LeaseHandle, NewStep, Page,
    StepOutcome, StepSummary, TenantId, MAX_STEP_ERROR_BYTES,
};

/// Steps one listing returns at most.
pub const MAX_STEP_PAGE: u32 = 1_000;

impl Engine {
    fn journal_limits(&self) -> JournalLimits {
        JournalLimits {
            max_steps: self.limits.max_steps_per_execution,
            max_bytes: self.limits.max_journal_bytes_per_execution,
        }
    }

    /// The whole journal of the lease's execution, as a run reads it before
    /// its first step.
    pub async fn journal(&self, lease: &LeaseHandle) -> Result<Vec<JournalEntry>> {
        self.backend
            .journal(
                lease.tenant_id,
                lease.execution_id,
                Page::new(None, self.limits.max_steps_per_execution),
            )
            .await
    }

    /// Record a step of the lease's execution. A result over the step cap,
    /// a journal past its caps or a tenant past its storage quota is refused
    /// with nothing written.
    pub async fn record_step(&self, lease: &LeaseHandle, mut step: NewStep) -> Result<()> {
        self.check_step(&mut step)?;
        self.check_storage(lease.tenant_id, stored_size(step.outcome.size(), 1))
            .await?;
        let frame = step_frame(&step);
        let record = StepRecord {
            step: &step,
            frame: &frame,
            limits: self.journal_limits(),
        };
        self.backend.record_step(lease, record).await
    }

    /// Suspend the lease's execution until `wake_at`, recording `step` (a
    /// new sleep) in the same transaction; `None` for a recorded sleep that
    /// was woken early and sleeps on.
    pub async fn sleep(
        &self,
        lease: &LeaseHandle,
        step: Option<NewStep>,
        wake_at: DateTime<Utc>,
    ) -> Result<()> {
        let step = match step {
            Some(mut step) => {
                self.check_step(&mut step)?;
                let frame = step_frame(&step);
                Some((step, frame))
            }
            None => None,
        };
        let request = SleepRequest {
            step: step.as_ref().map(|(s, f)| (s, f.as_slice())),
            wake_at,
            limits: self.journal_limits(),
        };
        self.backend.sleep(lease, request).await
    }

    /// A page of an execution's steps, without their results.
    pub async fn list_steps(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<StepSummary>> {
        // An execution of another tenant is not found, not empty.
        self.state(tenant, id).await?;
        let steps = self
            .backend
            .journal(tenant, id, Page::new(after, limit.clamp(1, MAX_STEP_PAGE)))
            .await?;
        Ok(steps.iter().map(JournalEntry::summary).collect())
    }

    fn check_step(&self, step: &mut NewStep) -> Result<()> {
        check_step_name(&step.name)?;
        if step.position >= self.limits.max_steps_per_execution {
            return Err(EngineError::limit(
                "max_steps_per_execution",
                u64::from(self.limits.max_steps_per_execution),
                "this run has begun more steps than an execution's journal holds",
            ));
        }
        match &mut step.outcome {
            StepOutcome::Completed(output) if output.len() > self.limits.max_step_bytes => {
                Err(EngineError::limit(
                    "max_step_bytes",
                    self.limits.max_step_bytes as u64,
                    format!("step `{}` returned {} bytes", step.name, output.len()),
                ))
            }
            StepOutcome::Failed(message) => {
                truncate_utf8(message, MAX_STEP_ERROR_BYTES);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// When a sleep of `duration_ms` begun now wakes; refused past the longest
/// suspension.
pub fn wake_time(duration_ms: u64) -> Result<DateTime<Utc>> {
    if duration_ms > MAX_SUSPEND_MS {
        return Err(EngineError::invalid(
            "duration_ms",
            format!("must be at most {MAX_SUSPEND_MS} (30 days)"),
        ));
    }
    Ok(Utc::now() + TimeDelta::milliseconds(duration_ms as i64))
}

/// The durable `step` frame announcing a record, for `tail` and SSE.
fn step_frame(step: &NewStep) -> Vec<u8> {
    let mut frame = serde_json::json!({
        "position": step.position,
        "name": step.name,
        "kind": step.outcome.kind(),
        "size": step.outcome.size(),
        "duration_ms": step.duration_ms,
    });
    if let StepOutcome::Sleep { wake_at } = step.outcome {
        frame["wake_at"] = serde_json::json!(wake_at);
    }
    frame.to_string().into_bytes()
}
