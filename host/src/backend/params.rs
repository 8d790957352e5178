//! What a storage call takes when it takes more than a few things.
//!
//! A trait method with a long row of positional arguments invites swapped
//! arguments of one type (two `&str`s, two limits) and repeats that row in
//! the trait and in both backends. A call that needs more than three things
//! besides its tenant or lease takes one of these instead: named fields
//! where the engine builds it, one short line in every signature.
//!
//! They borrow what the engine already holds and are built fresh for each
//! call, so they are `Copy` where their fields allow.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::model::{
    ApiKeyId, BudgetId, ChildKey, FlowCancelPolicy, FlowId, GraphChange, JournalLimits,
    NewExecution, NewSchedule, NewSignal, NewStep, ResumeCondition, SpawnLimits, StreamMode,
    Suspension, TenantId, TimeoutBehavior, UsageAdjustment, WaitpointRef,
};

/// An API key to store; only the hash of its secret is kept.
#[derive(Clone, Copy, Debug)]
pub struct NewApiKey<'a> {
    pub id: ApiKeyId,
    pub name: &'a str,
    pub secret_sha256: &'a [u8],
}

/// A frame for the lease's attempt, and the cap on all of the attempt's
/// frame payloads together.
#[derive(Clone, Copy, Debug)]
pub struct NewFrame<'a> {
    pub frame_type: &'a str,
    pub mode: StreamMode,
    pub payload: &'a [u8],
    pub max_attempt_bytes: u64,
}

/// Durable frames of one type, appended together (see
/// `Output::append_frames`).
#[derive(Clone, Copy, Debug)]
pub struct FrameBatch<'a> {
    pub frame_type: &'a str,
    pub payloads: &'a [Vec<u8>],
    pub max_attempt_bytes: u64,
}

impl FrameBatch<'_> {
    /// The payloads' bytes in all.
    pub fn bytes(&self) -> u64 {
        self.payloads.iter().map(|p| p.len() as u64).sum()
    }
}

/// A component version's bytes, under `kind`, with what the runtime found it
/// imports.
#[derive(Clone, Copy, Debug)]
pub struct NewComponent<'a> {
    pub kind: &'a str,
    /// The hex SHA-256 of `wasm`.
    pub digest: &'a str,
    pub wasm: &'a [u8],
    pub imports: &'a [String],
}

/// A waitpoint the lease's execution opens, within `max_waitpoints` for it.
#[derive(Clone, Copy, Debug)]
pub struct NewWaitpoint<'a> {
    pub key: &'a str,
    pub expires_in: Option<Duration>,
    pub max_waitpoints: u32,
}

/// A signal for a waitpoint, within `max_signals` kept for its execution.
#[derive(Clone, Copy, Debug)]
pub struct SignalDelivery<'a> {
    pub to: WaitpointRef,
    pub signal: &'a NewSignal,
    pub max_signals: u32,
}

/// What the lease's execution waits for, for how long, and how many
/// waitpoints it may have in all.
#[derive(Clone, Copy, Debug)]
pub struct SuspendRequest<'a> {
    pub suspension: &'a Suspension,
    pub timeout: Option<Duration>,
    pub max_waitpoints: u32,
}

/// A step to record in the lease's execution's journal, with the durable
/// frame that announces it, within the journal's limits.
#[derive(Clone, Copy, Debug)]
pub struct StepRecord<'a> {
    pub step: &'a NewStep,
    pub frame: &'a [u8],
    pub limits: JournalLimits,
}

/// A durable sleep until `wake_at`: a new one records `step` (with its
/// frame); a sleep already in the journal, woken early, has none.
#[derive(Clone, Copy, Debug)]
pub struct SleepRequest<'a> {
    pub step: Option<(&'a NewStep, &'a [u8])>,
    pub wake_at: DateTime<Utc>,
    pub limits: JournalLimits,
}

impl<'a> SleepRequest<'a> {
    /// The step a new sleep records in the same transaction; `None` for a
    /// sleep already in the journal.
    pub fn record(&self) -> Option<StepRecord<'a>> {
        self.step.map(|(step, frame)| StepRecord {
            step,
            frame,
            limits: self.limits,
        })
    }

    /// What the execution suspends on: a timer that resumes it by itself,
    /// due when the sleep ends (at least a millisecond from `now`, so a
    /// sleep already due still suspends and is resumed by the scanner).
    pub fn suspension(&self, now: DateTime<Utc>) -> (Suspension, Duration) {
        let remaining = (self.wake_at - now).to_std().unwrap_or_default();
        (
            Suspension::new(ResumeCondition::Timer, TimeoutBehavior::AutoResume),
            remaining.max(Duration::from_millis(1)),
        )
    }
}

/// A schedule to create, first due at `next_fire_at`, refused once the
/// tenant has `max_schedules`.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleCreate<'a> {
    pub spec: &'a NewSchedule,
    pub next_fire_at: DateTime<Utc>,
    pub max_schedules: u32,
}

/// Pausing a schedule keeps its next fire time; resuming sets a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseChange {
    Pause,
    ResumeAt(DateTime<Utc>),
}

impl PauseChange {
    pub fn pauses(self) -> bool {
        self == Self::Pause
    }

    /// The next fire time a resume sets; `None` for a pause.
    pub fn resume_at(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Pause => None,
            Self::ResumeAt(at) => Some(at),
        }
    }
}

/// A change to a budget's usage, refused once the budget has kept
/// `max_adjustments`.
#[derive(Clone, Copy, Debug)]
pub struct UsageAdjust<'a> {
    pub budget: BudgetId,
    pub adjustment: &'a UsageAdjustment,
    pub max_adjustments: u32,
}

/// A child the lease's execution spawns under `key`, within `limits`.
#[derive(Clone, Copy, Debug)]
pub struct ChildSpawn<'a> {
    pub child: &'a NewExecution,
    pub key: ChildKey<'a>,
    pub limits: SpawnLimits,
}

/// Members and edges to add to a flow; with `max_queued`, refused whole if
/// they would take the tenant's backlog over it.
#[derive(Clone, Copy, Debug)]
pub struct GraphWrite<'a> {
    pub change: &'a GraphChange,
    pub max_queued: Option<u32>,
}

/// Which of a flow's edges to read: those out of the member keyed `from`
/// and into the member keyed `to`, when given.
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgeFilter<'a> {
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
}

/// How far a scanner pass reaches: at most `limit` due rows a tenant, over
/// every tenant, or only `tenant`'s (a pass that failed is run again one
/// tenant at a time, so that one tenant's row that breaks it does not stop
/// the others').
#[derive(Clone, Copy, Debug)]
pub struct Sweep {
    pub limit: u32,
    pub tenant: Option<TenantId>,
}

impl Sweep {
    /// Every tenant, at most `limit` rows each.
    pub fn every_tenant(limit: u32) -> Self {
        Self {
            limit,
            tenant: None,
        }
    }
}

/// Which of a flow's members to cancel, and why.
#[derive(Clone, Copy, Debug)]
pub struct FlowCancel<'a> {
    pub flow: FlowId,
    pub policy: FlowCancelPolicy,
    pub reason: &'a str,
}
