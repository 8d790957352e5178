//! The engine: the one entry point the API and the worker pool use.
//!
//! It validates every request before storage sees it (so bad input is rejected
//! with the field at fault and nothing is written), then delegates to a
//! [`Backend`]. It owns no state of its own beyond limits, caches and which
//! tenants have an upload under way here; everything durable is in the
//! backend, so any number of engines may share one database.

mod admission;
mod budgets;
mod caps;
mod children;
mod components;
mod concurrency;
mod events;
mod flows;
mod frames;
mod grants;
mod insights;
mod scanners;
mod schedules;
mod signals;
mod steps;
mod tenancy;
mod vault;
mod waitpoint_keys;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::model::{Replay, ReplayOutcome};

pub use caps::GrowthCaps;
pub use components::UploadTurn;
pub use events::{FilteredBatch, Subscription, MAX_EVENT_PAGE};
pub use frames::MAX_FRAMES_PER_BATCH;
pub use insights::OVERVIEW_WINDOW;
pub use scanners::{prune_ended, sweep_tenants, ScannerConfig, Scanners};
pub use schedules::MAX_SCHEDULE_PAGE;
pub use signals::{WaitpointWithToken, MAX_SUSPENDED_PAGE, MAX_WAITPOINT_PAGE};
pub use steps::{wake_time, MAX_STEP_PAGE};
pub use tenancy::{secret_matches, IssuedKey};
pub use vault::SealingKeys;
pub use waitpoint_keys::{
    KeyRefresh, SignalKeys, ACTIVATION_DELAY, KEY_REFRESH_INTERVAL, MAX_GRACE,
};

use crate::backend::Backend;
use crate::error::{EngineError, Result};
use crate::model::{
    ClaimRequest, ClaimedExecution, Completion, Execution, ExecutionFilter, ExecutionId,
    FailOutcome, Failure, LeaseHandle, Progress, TenantId,
};

/// Size and shape limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_input_bytes: usize,
    pub max_result_bytes: usize,
    pub max_batch: usize,
    pub max_claim_batch: u32,
    pub max_tags: usize,
    pub max_name_len: usize,
    pub priority_range: (i32, i32),
    pub max_lease_ttl: Duration,
    pub max_frame_bytes: usize,
    pub max_frames_per_attempt: u32,
    /// Payload bytes of all frames of one attempt.
    pub max_frame_bytes_per_attempt: u64,
    /// Children one execution may spawn.
    pub max_children_per_execution: u32,
    /// Members of one flow, spawned children included.
    pub max_flow_members: u32,
    /// Edges of one flow. A graph of `max_flow_members` members could hold
    /// millions of edges (every pair of them), and a flow's graph is read
    /// and returned whole.
    pub max_flow_edges: u32,
    /// Waitpoints one execution may create.
    pub max_waitpoints_per_execution: u32,
    /// Signals one execution keeps (delivered, buffered or consumed).
    pub max_signals_per_execution: u32,
    /// Steps one execution's journal may hold (sleeps included).
    pub max_steps_per_execution: u32,
    /// Bytes of one step's result.
    pub max_step_bytes: usize,
    /// Result and failure bytes of all steps of one execution's journal.
    pub max_journal_bytes_per_execution: u64,
    /// Bytes one tenant may keep stored (inputs, results, frames), unless
    /// its own quota is lower; `None`: no installation quota.
    pub max_stored_bytes_per_tenant: Option<u64>,
    /// Installation-wide backlog limit per tenant (a tenant's own may be lower).
    pub max_queued: Option<u32>,
    pub max_component_bytes: usize,
    /// Refuse to create executions of a kind with no runnable component (the
    /// worker would only fail them). Off for engine-only embedding and tests.
    pub require_component: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 1 << 20,
            max_result_bytes: 4 << 20,
            max_batch: 1_000,
            max_claim_batch: 1_000,
            max_tags: 32,
            max_name_len: 128,
            priority_range: (-1_000, 1_000),
            max_lease_ttl: Duration::from_secs(3_600),
            max_frame_bytes: 256 << 10,
            max_frames_per_attempt: 10_000,
            max_frame_bytes_per_attempt: 64 << 20,
            max_children_per_execution: 1_000,
            max_flow_members: 10_000,
            max_flow_edges: 100_000,
            max_waitpoints_per_execution: 1_000,
            max_signals_per_execution: 10_000,
            max_steps_per_execution: 1_000,
            max_step_bytes: 1 << 20,
            max_journal_bytes_per_execution: 16 << 20,
            max_stored_bytes_per_tenant: None,
            max_queued: None,
            max_component_bytes: 64 << 20,
            require_component: true,
        }
    }
}

#[derive(Clone)]
pub struct Engine {
    backend: Arc<dyn Backend>,
    limits: Limits,
    signal_keys: waitpoint_keys::KeyRing,
    sealing_keys: Arc<SealingKeys>,
    limits_cache: Arc<caps::LimitsCache>,
    usage_cache: Arc<caps::UsageCache>,
    uploads: Arc<components::Uploads>,
}

impl Engine {
    pub fn new(backend: Arc<dyn Backend>, limits: Limits) -> Self {
        Self {
            backend,
            limits,
            signal_keys: waitpoint_keys::key_ring(SignalKeys::ephemeral()),
            sealing_keys: Arc::new(SealingKeys::ephemeral()),
            limits_cache: Arc::default(),
            usage_cache: Arc::default(),
            uploads: Arc::default(),
        }
    }

    /// The engine with the operator's keys for config values and secrets
    /// (see [`SealingKeys`]); without them, a key valid in this process only.
    pub fn with_sealing_keys(mut self, keys: SealingKeys) -> Self {
        self.sealing_keys = Arc::new(keys);
        self
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn check_name(&self, field: &str, value: &str) -> Result<()> {
        let ok_chars = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
        if value.is_empty() || value.len() > self.limits.max_name_len || !ok_chars {
            return Err(EngineError::invalid(
                field,
                format!(
                    "`{value}` must be 1 to {} characters of [A-Za-z0-9-_.:/]",
                    self.limits.max_name_len
                ),
            ));
        }
        Ok(())
    }

    pub async fn get(&self, tenant: TenantId, id: ExecutionId) -> Result<Execution> {
        self.backend.get_execution(tenant, id).await
    }

    /// State and attempt, without payloads (also: does the tenant own it).
    pub async fn state(
        &self,
        tenant: TenantId,
        id: ExecutionId,
    ) -> Result<crate::model::ExecutionState> {
        self.backend.execution_state(tenant, id).await
    }

    pub async fn list(
        &self,
        tenant: TenantId,
        mut filter: ExecutionFilter,
    ) -> Result<Vec<Execution>> {
        filter.limit = filter.limit.clamp(1, 1_000);
        self.backend.list_executions(tenant, &filter).await
    }

    pub async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedExecution>> {
        if request.limit == 0 || request.limit > self.limits.max_claim_batch {
            return Err(EngineError::invalid(
                "claim limit",
                format!("must be 1 to {}", self.limits.max_claim_batch),
            ));
        }
        if request.lanes.is_empty() {
            return Err(EngineError::invalid("lanes", "name at least one lane"));
        }
        self.check_ttl(request.lease_ttl)?;
        self.backend.claim(request).await
    }

    fn check_ttl(&self, ttl: Duration) -> Result<()> {
        if ttl < Duration::from_millis(100) || ttl > self.limits.max_lease_ttl {
            return Err(EngineError::invalid(
                "lease ttl",
                format!("must be between 100 ms and {:?}", self.limits.max_lease_ttl),
            ));
        }
        Ok(())
    }

    pub async fn renew(&self, lease: &LeaseHandle, ttl: Duration) -> Result<DateTime<Utc>> {
        self.check_ttl(ttl)?;
        self.backend.renew(lease, ttl).await
    }

    pub async fn complete(&self, lease: &LeaseHandle, result: &[u8]) -> Result<()> {
        self.complete_with(&Completion::new(lease, result)).await
    }

    /// Complete an execution, writing the progress its attempt reported
    /// last in the same write (clamped and clipped as
    /// [`Engine::set_progress`] does).
    pub async fn complete_with(&self, completion: &Completion<'_>) -> Result<()> {
        self.check_result(completion.result)?;
        self.backend.complete(&within_limits(completion)).await
    }

    /// Complete several executions in one write; one result per completion, in
    /// order. An oversized result fails alone; the others are still written.
    pub async fn complete_many(
        &self,
        completions: &[(LeaseHandle, &[u8])],
    ) -> Result<Vec<Result<()>>> {
        let completions: Vec<Completion<'_>> = completions
            .iter()
            .map(|(lease, result)| Completion::new(lease, result))
            .collect();
        self.complete_many_with(&completions).await
    }

    /// [`Engine::complete_many`], each completion with the progress it carries.
    pub async fn complete_many_with(
        &self,
        completions: &[Completion<'_>],
    ) -> Result<Vec<Result<()>>> {
        let mut results: Vec<Option<Result<()>>> = completions
            .iter()
            .map(|c| self.check_result(c.result).err().map(Err))
            .collect();
        let valid: Vec<Completion<'_>> = completions
            .iter()
            .zip(&results)
            .filter(|(_, refused)| refused.is_none())
            .map(|(c, _)| within_limits(c))
            .collect();
        let mut written = if valid.is_empty() {
            Vec::new()
        } else {
            self.backend.complete_many(&valid).await?
        }
        .into_iter();
        for slot in results.iter_mut().filter(|r| r.is_none()) {
            *slot = written.next();
        }
        Ok(results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(EngineError::Corrupt(
                        "storage returned fewer results than completions".into(),
                    ))
                })
            })
            .collect())
    }

    /// Refuse a result over the installation's limit.
    pub fn check_result(&self, result: &[u8]) -> Result<()> {
        if result.len() > self.limits.max_result_bytes {
            return Err(EngineError::PayloadTooLarge {
                field: "result",
                size: result.len(),
                limit: self.limits.max_result_bytes,
            });
        }
        Ok(())
    }

    pub async fn fail(&self, lease: &LeaseHandle, mut failure: Failure) -> Result<FailOutcome> {
        truncate_utf8(&mut failure.message, 4_096);
        self.backend.fail(lease, &failure).await
    }

    pub async fn cancel_by_worker(&self, lease: &LeaseHandle, reason: &str) -> Result<()> {
        self.backend.cancel_by_worker(lease, clipped(reason)).await
    }

    pub async fn cancel(&self, tenant: TenantId, id: ExecutionId, reason: &str) -> Result<bool> {
        self.backend.cancel(tenant, id, clipped(reason)).await
    }

    /// Take the lease away from whoever runs the execution: its attempt ends
    /// `revoked` and the execution is claimed again as a `reclaim` attempt.
    pub async fn revoke_lease(&self, tenant: TenantId, id: ExecutionId) -> Result<i32> {
        self.backend.revoke_lease(tenant, id).await
    }

    /// Run an ended execution again. Its journal of steps starts afresh
    /// unless `keep_steps`: then the new run is handed what earlier runs
    /// recorded, and skips those steps.
    pub async fn replay(&self, tenant: TenantId, id: ExecutionId, keep_steps: bool) -> Result<i32> {
        let replay = Replay {
            keep_steps,
            revive_dependents: false,
        };
        Ok(self.replay_with(tenant, id, replay).await?.replay_count)
    }

    /// [`Engine::replay`], optionally bringing back the flow members the
    /// execution's failure skipped (see [`Replay`]).
    pub async fn replay_with(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        replay: Replay,
    ) -> Result<ReplayOutcome> {
        self.backend.replay(tenant, id, replay).await
    }

    pub async fn delay(&self, lease: &LeaseHandle, until: DateTime<Utc>) -> Result<()> {
        self.backend.delay(lease, until).await
    }

    /// A guest parks its own execution for `duration_ms` (1 ms to 30 days).
    /// Each delay starts a new attempt when it ends, so an execution that
    /// already had [`MAX_ATTEMPTS_TO_DELAY`] attempts may not delay again:
    /// a guest looping on `delay` cannot grow its attempt history forever.
    pub async fn delay_by_guest(&self, lease: &LeaseHandle, duration_ms: u64) -> Result<()> {
        if duration_ms == 0 {
            return Err(EngineError::invalid("duration_ms", "must be at least 1"));
        }
        let until = steps::wake_time(duration_ms)?;
        if lease.attempt_index >= MAX_ATTEMPTS_TO_DELAY {
            return Err(EngineError::limit(
                "attempts_per_execution",
                MAX_ATTEMPTS_TO_DELAY as u64,
                format!(
                    "the execution has had {} attempts; it may not delay again",
                    lease.attempt_index
                ),
            ));
        }
        self.backend.delay(lease, until).await
    }

    pub async fn change_priority(
        &self,
        tenant: TenantId,
        id: ExecutionId,
        priority: i32,
    ) -> Result<()> {
        let (lo, hi) = self.limits.priority_range;
        if !(lo..=hi).contains(&priority) {
            return Err(EngineError::invalid(
                "priority",
                format!("must be between {lo} and {hi}"),
            ));
        }
        self.backend.change_priority(tenant, id, priority).await
    }

    pub async fn revocations(&self) -> Result<tokio::sync::broadcast::Receiver<ExecutionId>> {
        self.backend.revocations().await
    }

    /// Wake-ups for followers of one execution: a frame, or its end. Only
    /// the tenant's own executions may be followed (following marks the
    /// execution in storage, see the Postgres backend's wake-ups); another
    /// is `not_found`.
    pub async fn updates(
        &self,
        tenant: TenantId,
        execution: ExecutionId,
    ) -> Result<tokio::sync::broadcast::Receiver<()>> {
        self.state(tenant, execution).await?;
        self.backend
            .updates(crate::model::ExecutionUpdate {
                tenant_id: tenant,
                execution_id: execution,
            })
            .await
    }

    pub async fn work_signal(&self) -> Result<watch::Receiver<u64>> {
        self.backend.work_signal().await
    }
}

/// Attempts past which a guest may no longer delay its execution.
pub const MAX_ATTEMPTS_TO_DELAY: i32 = 1_000;

/// How far from now a time given by a client may lie, either way.
pub const MAX_TIME_OFFSET: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// Refuse a time more than [`MAX_TIME_OFFSET`] before or after now: a year-0
/// or year-9999 timestamp is a mistake, and far-off times are where
/// timestamp arithmetic overflows in storage.
pub(crate) fn check_time_near_now(field: &str, at: DateTime<Utc>) -> Result<()> {
    let now = Utc::now();
    if at < now - MAX_TIME_OFFSET || at > now + MAX_TIME_OFFSET {
        return Err(EngineError::invalid(
            field,
            format!(
                "must be within {} days of now ({} to {})",
                MAX_TIME_OFFSET.num_days(),
                (now - MAX_TIME_OFFSET).format("%Y-%m-%dT%H:%M:%SZ"),
                (now + MAX_TIME_OFFSET).format("%Y-%m-%dT%H:%M:%SZ"),
            ),
        ));
    }
    Ok(())
}

/// The installation's limit, or the tenant's where that is lower.
fn tighter(installation: usize, tenant: Option<u32>) -> usize {
    tenant.map_or(installation, |t| installation.min(t as usize))
}

/// Prefix an invalid field with its place in a list: `executions[3].priority`.
/// A lone execution (single create) keeps the bare field name.
fn at_index(e: EngineError, list: &str, i: usize, len: usize) -> EngineError {
    match e {
        EngineError::InvalidInput { field, reason } if len > 1 || list != "executions" => {
            EngineError::InvalidInput {
                field: format!("{list}[{i}].{field}"),
                reason,
            }
        }
        other => other,
    }
}

/// Most bytes of a free-form message (a progress message, a reason) kept.
pub const MAX_MESSAGE_BYTES: usize = 1_024;

/// Cut `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    let cut = utf8_cut(s, max);
    s.truncate(cut);
}

/// The longest prefix of `s` of at most `max` bytes that ends at a
/// character boundary, as a length.
fn utf8_cut(s: &str, max: usize) -> usize {
    (0..=max.min(s.len()))
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// A completion with its progress as storage keeps it: at most 100 %, the
/// message clipped.
fn within_limits<'a>(completion: &Completion<'a>) -> Completion<'a> {
    Completion {
        progress: completion.progress.map(|p| Progress {
            percent: p.percent.min(100),
            message: clipped(p.message),
        }),
        ..*completion
    }
}

fn clipped(reason: &str) -> &str {
    &reason[..utf8_cut(reason, MAX_MESSAGE_BYTES)]
}
