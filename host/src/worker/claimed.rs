//! The guest's view of one claimed execution: [`TaskImports`] over the engine,
//! every call fenced by the lease this attempt holds.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use async_trait::async_trait;

use super::progress;
use super::steps::StepCursor;
use crate::engine::{Engine, MAX_FRAMES_PER_BATCH};
use crate::error::EngineError;
use crate::model::{
    self, AttemptType as ModelAttemptType, ChildrenOutcome, ClaimedExecution, JournalEntry,
    LeaseHandle, NewExecution, StreamMode, SuspendOutcome, UsageOutcome,
};
use crate::runtime::{
    AttemptType, Breach, CancelFlag, Child, GuestStepOutcome, GuestStreamMode, HostError,
    HostReply, LogLevel, Release, ResumeCondition, Signal, StepStart, StoredFrame, TaskImports,
    TaskInfo, TimeoutBehavior, UsageResult, Waitpoint,
};

/// Frames one `read-frames` call returns at most.
const MAX_FRAMES_READ: u32 = 100;

/// Renewals failing in a row past which the lease is no longer called
/// healthy: by then it may have expired and another worker may hold it.
const UNHEALTHY_AFTER_FAILED_RENEWALS: u32 = 3;

pub(super) struct ClaimedTask {
    pub(super) engine: Engine,
    pub(super) claimed: ClaimedExecution,
    pub(super) cancel: CancelFlag,
    /// When it was claimed: its lease counts from here.
    pub(super) claimed_at: Instant,
    lease_lost: AtomicBool,
    /// Renewals that failed in a row since the last that succeeded.
    renewal_failures: AtomicU32,
    frames: AtomicU32,
    /// `spawn-child` calls so far in this run, for default child keys.
    spawned: AtomicU32,
    /// Progress reported and not yet written, and its writer.
    pub(super) progress: progress::Reports,
    /// This task, for the progress writer (which must not keep it alive).
    me: Weak<ClaimedTask>,
    /// What resumed this attempt (set before the run, when it is a resume).
    resume_signals: Mutex<Vec<Signal>>,
    /// The execution's journal, read at this run's first step.
    pub(super) journal: tokio::sync::OnceCell<Vec<JournalEntry>>,
    pub(super) steps: Mutex<StepCursor>,
}

impl ClaimedTask {
    /// A claimed execution's task; call on the host's runtime.
    pub(super) fn new(engine: Engine, claimed: ClaimedExecution, cancel: CancelFlag) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            engine,
            claimed,
            cancel,
            claimed_at: Instant::now(),
            lease_lost: AtomicBool::new(false),
            renewal_failures: AtomicU32::new(0),
            frames: AtomicU32::new(0),
            spawned: AtomicU32::new(0),
            progress: progress::Reports::new(),
            me: me.clone(),
            resume_signals: Mutex::new(Vec::new()),
            journal: tokio::sync::OnceCell::new(),
            steps: Mutex::new(StepCursor::default()),
        })
    }

    /// Load the signals that resumed this attempt, if it is a resume.
    pub(super) async fn load_resume_signals(&self) -> Result<(), EngineError> {
        let Some(seq) = self.claimed.resumed_from else {
            return Ok(());
        };
        let lease = self.lease();
        let signals = self
            .engine
            .resume_signals(lease.tenant_id, lease.execution_id, seq)
            .await?;
        *self.resume_signals.lock().expect("resume signals lock") =
            signals.into_iter().map(guest_signal).collect();
        Ok(())
    }

    pub(super) fn lease(&self) -> &LeaseHandle {
        &self.claimed.lease
    }

    /// The lease is gone: remember it, and stop the guest at its next tick.
    pub(super) fn mark_lease_lost(&self) {
        self.lease_lost.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    pub(super) fn is_lease_lost(&self) -> bool {
        self.lease_lost.load(Ordering::Acquire)
    }

    /// Count a renewal's outcome: a success clears the run of failures.
    pub(super) fn renewal_outcome(&self, renewed: bool) {
        if renewed {
            self.renewal_failures.store(0, Ordering::Release);
        } else {
            self.renewal_failures.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(super) fn host_error(&self, e: EngineError) -> HostError {
        match e {
            EngineError::StaleLease { .. }
            | EngineError::NotActive { .. }
            | EngineError::NotFound { .. } => {
                self.mark_lease_lost();
                HostError::LeaseLost
            }
            EngineError::InvalidInput { .. }
            | EngineError::PayloadTooLarge { .. }
            | EngineError::Graph { .. } => HostError::Invalid(e.to_string()),
            EngineError::Refused { kind, .. } => HostError::Invalid(format!("{kind}: {e}")),
            EngineError::QuotaExceeded { .. } | EngineError::LimitExceeded { .. } => {
                HostError::LimitExceeded(e.to_string())
            }
            other => HostError::Unavailable(other.to_string()),
        }
    }

    /// Append captured output or a log line as a frame, within the frame budget.
    pub(super) async fn frame(&self, frame_type: &str, payload: &[u8]) -> Result<u64, HostError> {
        self.frame_in(frame_type, payload, StreamMode::Durable)
            .await
    }

    /// Append durable frames of one type in as few writes as the engine
    /// allows: as many of them as the attempt's frame count has room for.
    /// Returns how many were written.
    pub(super) async fn frames(
        &self,
        frame_type: &str,
        payloads: &[Vec<u8>],
    ) -> Result<usize, HostError> {
        let room = self.frame_room(payloads.len())?;
        for batch in payloads[..room].chunks(MAX_FRAMES_PER_BATCH) {
            self.engine
                .append_frames(self.lease(), frame_type, batch)
                .await
                .map_err(|e| self.host_error(e))?;
        }
        Ok(room)
    }

    /// Take up to `wanted` of the attempt's frame count (the lease still
    /// held); how many were free, at least one.
    fn frame_room(&self, wanted: usize) -> Result<usize, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        let max = self.engine.limits().max_frames_per_attempt;
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        let before = self.frames.fetch_add(wanted, Ordering::AcqRel);
        match max.saturating_sub(before).min(wanted) {
            0 => Err(HostError::LimitExceeded(format!(
                "at most {max} frames per attempt"
            ))),
            room => Ok(room as usize),
        }
    }

    async fn frame_in(
        &self,
        frame_type: &str,
        payload: &[u8],
        mode: StreamMode,
    ) -> Result<u64, HostError> {
        self.frame_room(1)?;
        self.engine
            .append_frame(self.lease(), frame_type, mode, payload)
            .await
            .map(|seq| seq as u64)
            .map_err(|e| self.host_error(e))
    }

    /// The attempt a guest may read back: 0 is the current one; others must
    /// be this execution's earlier attempts.
    fn readable_attempt(&self, attempt: u32) -> Result<i32, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        let current = self.lease().attempt_index;
        match i32::try_from(attempt) {
            Ok(0) => Ok(current),
            Ok(n) if n <= current => Ok(n),
            _ => Err(HostError::Invalid(format!(
                "attempt must be 0 (the current one) or 1 to {current}"
            ))),
        }
    }

    /// The lease went with a suspension: nothing more is written.
    pub(super) fn suspended<T>(&self) -> HostReply<T> {
        self.released(Release::Suspended)
    }

    /// The lease went with the execution (suspended, delayed or cancelled):
    /// nothing more is written by this run.
    fn released<T>(&self, release: Release) -> HostReply<T> {
        self.lease_lost.store(true, Ordering::Release);
        HostReply::Released(release)
    }

    /// Write progress held back by the throttle, if any: the run is
    /// ending other than by completing.
    pub(super) async fn flush_progress(&self) {
        if let Some(report) = self.progress.take() {
            if !self.is_lease_lost() {
                let _ = self
                    .engine
                    .set_progress(self.lease(), report.percent, &report.message)
                    .await;
            }
        }
    }
}

#[async_trait]
impl TaskImports for ClaimedTask {
    fn info(&self) -> TaskInfo {
        let c = &self.claimed;
        TaskInfo {
            execution_id: c.lease.execution_id.to_string(),
            kind: c.kind.clone(),
            lane: c.lane.clone(),
            attempt: u32::try_from(c.lease.attempt_index).unwrap_or(0),
            attempt_type: match c.attempt_type {
                ModelAttemptType::Initial => AttemptType::Initial,
                ModelAttemptType::Retry => AttemptType::Retry,
                ModelAttemptType::Reclaim => AttemptType::Reclaim,
                ModelAttemptType::Replay => AttemptType::Replay,
                ModelAttemptType::Delayed => AttemptType::Delayed,
                ModelAttemptType::Resume => AttemptType::Resumed,
            },
            retry_count: u32::try_from(c.retry_count).unwrap_or(0),
            priority: c.priority,
            tags: c.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }

    async fn progress(&self, percent: u8, message: String) -> Result<(), HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        self.progress.report(&self.me, percent, message);
        Ok(())
    }

    async fn append_frame(
        &self,
        frame_type: String,
        payload: Vec<u8>,
        mode: GuestStreamMode,
    ) -> Result<u64, HostError> {
        let mode = match mode {
            GuestStreamMode::Durable => StreamMode::Durable,
            GuestStreamMode::Summary => StreamMode::Summary,
            GuestStreamMode::BestEffort => StreamMode::BestEffort,
        };
        self.frame_in(&frame_type, &payload, mode).await
    }

    async fn report_usage(
        &self,
        dimension: String,
        delta: u64,
        dedup_key: Option<String>,
    ) -> Result<UsageResult, HostError> {
        self.report_usage_many(vec![(dimension, delta)], dedup_key)
            .await
    }

    async fn usage_limited(&self, dimension: &str) -> Result<bool, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        self.engine
            .budget_limits(self.lease().tenant_id, dimension)
            .await
            .map_err(|e| self.host_error(e))
    }

    async fn report_usage_many(
        &self,
        report: Vec<(String, u64)>,
        dedup_key: Option<String>,
    ) -> Result<UsageResult, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        let report = report
            .into_iter()
            .map(|(dimension, delta)| model::UsageEntry { dimension, delta })
            .collect();
        let outcome = self
            .engine
            .report_usage_many(self.lease(), report, dedup_key.as_deref())
            .await;
        let counted = match &outcome {
            Ok(UsageOutcome::Ok) => "ok",
            Ok(UsageOutcome::SoftBreach(_)) => "soft_breach",
            Ok(UsageOutcome::HardBreach(_)) => "hard_breach",
            Ok(UsageOutcome::AlreadyApplied) => "already_applied",
            Err(_) => "refused",
        };
        metrics::counter!("flowfabric_usage_reports_total", "outcome" => counted).increment(1);
        let outcome = outcome.map_err(|e| self.host_error(e))?;
        let breach = |b: model::Breach| Breach {
            dimension: b.dimension,
            current: b.current,
            limit: b.limit,
        };
        Ok(match outcome {
            UsageOutcome::Ok => UsageResult::Ok,
            UsageOutcome::SoftBreach(b) => UsageResult::SoftBreach(breach(b)),
            UsageOutcome::AlreadyApplied => UsageResult::AlreadyApplied,
            UsageOutcome::HardBreach(b) => {
                // Storage failed or suspended the execution with the breach:
                // the guest is told, then stopped at its next tick.
                self.mark_lease_lost();
                UsageResult::HardBreach(breach(b))
            }
        })
    }

    async fn create_waitpoint(
        &self,
        key: String,
        timeout_ms: Option<u64>,
    ) -> Result<Waitpoint, HostError> {
        let created = self
            .engine
            .create_waitpoint(self.lease(), &key, timeout_ms)
            .await
            .map_err(|e| self.host_error(e))?;
        Ok(Waitpoint {
            id: created.waitpoint.waitpoint_id.to_string(),
            key: created.waitpoint.key,
            token: created.token,
        })
    }

    async fn suspend(
        &self,
        condition: ResumeCondition,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError> {
        self.suspend_with(condition, None, Vec::new(), timeout_ms, on_timeout)
            .await
    }

    async fn suspend_with(
        &self,
        condition: ResumeCondition,
        reason: Option<String>,
        signal_names: Vec<String>,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError> {
        let suspension = model::Suspension {
            reason,
            signal_names,
            ..model::Suspension::new(model_condition(condition), model_timeout(on_timeout))
        };
        let outcome = self
            .engine
            .suspend_with(self.lease(), suspension, timeout_ms)
            .await
            .map_err(|e| self.host_error(e))?;
        Ok(match outcome {
            SuspendOutcome::AlreadySatisfied(signals) => {
                HostReply::Continue(signals.into_iter().map(guest_signal).collect())
            }
            SuspendOutcome::Suspended => self.suspended(),
        })
    }

    async fn spawn_child(
        &self,
        kind: String,
        input: Vec<u8>,
        key: Option<String>,
    ) -> Result<String, HostError> {
        let n = self.spawned.fetch_add(1, Ordering::AcqRel) + 1;
        let key = match &key {
            Some(key) => model::ChildKey::Named(key),
            None => model::ChildKey::Nth(n),
        };
        let mut child = NewExecution::new(kind, input);
        child.lane = self.claimed.lane.clone();
        child.priority = self.claimed.priority;
        let spawned = self
            .engine
            .spawn_child(self.lease(), child, key)
            .await
            .map_err(|e| self.host_error(e))?;
        Ok(spawned.execution_id.to_string())
    }

    async fn wait_children(
        &self,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Child>>, HostError> {
        let outcome = self
            .engine
            .wait_children(self.lease(), timeout_ms, model_timeout(on_timeout))
            .await
            .map_err(|e| self.host_error(e))?;
        Ok(match outcome {
            ChildrenOutcome::Done(children) => {
                HostReply::Continue(children.into_iter().map(guest_child).collect())
            }
            ChildrenOutcome::Suspended => self.suspended(),
        })
    }

    async fn step_begin(&self, name: String) -> Result<HostReply<StepStart>, HostError> {
        self.begin_step(name).await
    }

    async fn step_record(
        &self,
        position: u32,
        outcome: GuestStepOutcome,
    ) -> Result<HostReply<()>, HostError> {
        self.record_step(position, outcome).await
    }

    async fn sleep(&self, duration_ms: u64) -> Result<HostReply<()>, HostError> {
        self.sleep_until_due(duration_ms).await
    }

    async fn delay(&self, duration_ms: u64) -> Result<HostReply<()>, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        self.flush_progress().await;
        self.engine
            .delay_by_guest(self.lease(), duration_ms)
            .await
            .map_err(|e| self.host_error(e))?;
        tracing::debug!(duration_ms, "the guest delayed its execution");
        Ok(self.released(Release::Delayed))
    }

    async fn cancel(&self, reason: String) -> Result<HostReply<()>, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        self.flush_progress().await;
        self.engine
            .cancel_by_worker(self.lease(), &reason)
            .await
            .map_err(|e| self.host_error(e))?;
        tracing::debug!("the guest cancelled its execution");
        Ok(self.released(Release::Cancelled))
    }

    async fn read_frames(
        &self,
        attempt: u32,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredFrame>, HostError> {
        let attempt = self.readable_attempt(attempt)?;
        if !(1..=MAX_FRAMES_READ).contains(&limit) {
            return Err(HostError::Invalid(format!(
                "limit must be 1 to {MAX_FRAMES_READ}"
            )));
        }
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let lease = self.lease();
        let frames = self
            .engine
            .read_frames(lease.tenant_id, lease.execution_id, attempt, after, limit)
            .await
            .map_err(|e| self.host_error(e))?;
        Ok(frames
            .into_iter()
            .map(|f| StoredFrame {
                seq: u64::try_from(f.seq).unwrap_or(0),
                frame_type: f.frame_type,
                payload: f.payload,
            })
            .collect())
    }

    async fn read_summary(&self, attempt: u32) -> Result<Option<Vec<u8>>, HostError> {
        let attempt = self.readable_attempt(attempt)?;
        let lease = self.lease();
        match self
            .engine
            .read_summary(lease.tenant_id, lease.execution_id, attempt)
            .await
        {
            Ok(summary) => Ok(Some(summary.document.to_string().into_bytes())),
            Err(EngineError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.host_error(e)),
        }
    }

    fn resume_signals(&self) -> Vec<Signal> {
        self.resume_signals
            .lock()
            .expect("resume signals lock")
            .clone()
    }

    fn lease_healthy(&self) -> bool {
        !self.is_lease_lost() && self.renewal_failures() < UNHEALTHY_AFTER_FAILED_RENEWALS
    }

    fn renewal_failures(&self) -> u32 {
        self.renewal_failures.load(Ordering::Acquire)
    }

    async fn log(&self, level: LogLevel, message: String) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        tracing::debug!(execution = %self.lease().execution_id, level, %message, "guest log");
        let payload = serde_json::json!({ "level": level, "message": message }).to_string();
        // Logging never fails the guest; a lost lease shows up on its next real call.
        let _ = self.frame("log", payload.as_bytes()).await;
    }
}

fn guest_signal(signal: model::Signal) -> Signal {
    Signal {
        id: signal.signal_id.to_string(),
        waitpoint_key: signal.waitpoint_key,
        name: signal.name,
        payload: signal.payload,
    }
}

fn guest_child(child: model::ChildOutcome) -> Child {
    Child {
        execution_id: child.execution_id.to_string(),
        key: child.key,
        kind: child.kind,
        state: child.state.to_string(),
        output: child.result,
        error: child.error,
    }
}

fn model_condition(condition: ResumeCondition) -> model::ResumeCondition {
    match condition {
        ResumeCondition::Waitpoint(key) => model::ResumeCondition::Waitpoint { key },
        ResumeCondition::Count((n, keys)) => model::ResumeCondition::Count { n, keys },
        ResumeCondition::AllOf(keys) => model::ResumeCondition::AllOf { keys },
        ResumeCondition::OperatorOnly => model::ResumeCondition::OperatorOnly,
        ResumeCondition::TimeoutOnly => model::ResumeCondition::TimeoutOnly,
    }
}

fn model_timeout(behavior: TimeoutBehavior) -> model::TimeoutBehavior {
    match behavior {
        TimeoutBehavior::Fail => model::TimeoutBehavior::Fail,
        TimeoutBehavior::Cancel => model::TimeoutBehavior::Cancel,
        TimeoutBehavior::Expire => model::TimeoutBehavior::Expire,
        TimeoutBehavior::AutoResume => model::TimeoutBehavior::AutoResume,
    }
}
