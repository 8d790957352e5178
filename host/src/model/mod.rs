//! The engine's vocabulary: what an execution is, what a lease handle proves, and
//! what each lifecycle operation takes and returns. Pure data, no I/O, shared by
//! every storage backend, the worker pool and the API.

mod budget;
mod children;
mod concurrency;
mod config_values;
mod events;
mod flow;
mod grants;
mod ids;
mod insights;
mod origins;
mod page;
mod policy;
mod replay;
mod rules;
mod schedules;
mod state;
mod steps;
mod suspension;
mod tenancy;
mod waitpoint_keys;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use budget::{
    Breach, Budget, BudgetId, BudgetScope, DimensionLimit, DimensionUsage, HardLimitAction,
    NewBudget, UsageAdjustment, UsageEntry, UsageOutcome, MAX_REPORT_DIMENSIONS,
};
pub use budget::{BudgetAdjustment, MAX_ADJUSTMENTS_PER_BUDGET, MAX_BUDGETS_PER_TENANT};
pub use children::{
    default_child_key, ChildKey, ChildOutcome, ChildrenOutcome, SpawnLimits, SpawnedChild, ROOT_KEY,
};
pub use concurrency::{
    check_concurrency_key, ConcurrencyLimit, ConcurrencyScope, KeyLimit,
    BLOCKED_BY_CONCURRENCY_KEY, MAX_CONCURRENCY_KEY_BYTES, MAX_CONCURRENCY_LIMITS_PER_TENANT,
};
pub use config_values::{
    ConfigEntry, SealedConfig, MAX_CONFIG_VALUES_PER_TENANT, MAX_CONFIG_VALUE_BYTES,
};
pub use events::{
    CompletionEvent, EventBatch, EventCursor, EventFilter, ExecutionOrigin, LeaseEvent,
    SignalEvent, StreamEvent,
};
pub use flow::{
    find_cycle, EdgeState, FlowCancelPolicy, FlowEdge, FlowEdgeDetail, FlowEdgeView, FlowId,
    FlowMember, FlowMemberView, FlowSnapshot, FlowState, FlowSummary, GraphApplied, GraphChange,
    JoinPolicy, JoinState, NewFlow, OnSatisfied,
};
pub use grants::{
    check_config_name, AttemptCapabilities, CapabilityCeiling, ComponentGrant, ComponentImport,
    EffectiveGrant, GrantError, StoredGrant,
};
pub use origins::{is_public, OriginPattern};
pub use policy::{
    Backoff, ExecutionPolicy, FailureClass, RetryDecision, RetryPolicy, TimeoutPolicy,
    DEFAULT_DEDUP_WINDOW_MS, DEFAULT_MAX_REPLAYS,
};
pub use rules::{
    public_state, runnable_blocking_reason, AttemptPhase, Eligibility, LifecyclePhase, Ownership,
    TerminalOutcome,
};
pub use schedules::{
    Cadence, FirePlan, MissedPolicy, NewSchedule, OverlapAction, OverlapPolicy, Schedule,
    ScheduledExecution, FIRE_TIME_TAG, MAX_BACKFILL, MAX_JITTER_MS, MAX_SCHEDULES_PER_TENANT,
    SCHEDULE_TAG, SUPERSEDED,
};
pub use state::{AttemptState, AttemptType, PublicState};
pub use steps::{
    check_step_name, lookup as lookup_step, JournalEntry, JournalLimits, JournalMismatch, NewStep,
    StepKind, StepLookup, StepOutcome, StepSummary, MAX_STEP_ERROR_BYTES, MAX_STEP_NAME_BYTES,
    SLEEP_STEP,
};
pub use suspension::{
    NewSignal, ResumeCondition, Signal, SignalOutcome, SuspendOutcome, SuspendedExecution,
    Suspension, TimeoutBehavior, Waitpoint, MAX_SIGNAL_NAMES, TIMEOUT_SIGNAL,
};
pub use tenancy::{
    ApiKey, StoredApiKey, TaskCeilings, Tenant, TenantLimits, TenantUsage, DEFAULT_START_WINDOW_MS,
    STORED_RECORD_BYTES,
};

pub use ids::{ApiKeyId, AttemptRef, ExecutionId, ScheduleId, TenantId, WaitpointId, WaitpointRef};
pub use insights::{
    AttemptRecord, KindFailures, MinuteOutcomes, Overview, StateCount, MAX_ATTEMPT_PAGE,
    MAX_FAILING_KINDS, MAX_LEASE_HISTORY, MAX_STATE_COUNT,
};
pub use page::Page;
pub use replay::{Replay, ReplayOutcome};
pub use waitpoint_keys::{
    SealedBytes, SeedOutcome, StoredWaitpointKey, WaitpointKeyInfo, WaitpointKeyState,
};

pub const DEFAULT_LANE: &str = "default";

/// A request to create one execution. Validated by the engine before any write.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewExecution {
    /// Which component runs it.
    pub kind: String,
    #[serde(default = "default_lane")]
    pub lane: String,
    #[serde(default)]
    pub input: Vec<u8>,
    /// Higher runs first, within a tenant and lane.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub required_capabilities: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: ExecutionPolicy,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Limits per key (a customer id, say) apply to it: see
    /// `ConcurrencyLimit`.
    #[serde(default)]
    pub concurrency_key: Option<String>,
    /// Not runnable before this time.
    #[serde(default)]
    pub delay_until: Option<DateTime<Utc>>,
}

fn default_lane() -> String {
    DEFAULT_LANE.to_owned()
}

impl NewExecution {
    pub fn new(kind: impl Into<String>, input: impl Into<Vec<u8>>) -> Self {
        Self {
            kind: kind.into(),
            lane: default_lane(),
            input: input.into(),
            priority: 0,
            required_capabilities: Vec::new(),
            tags: BTreeMap::new(),
            policy: ExecutionPolicy::default(),
            idempotency_key: None,
            concurrency_key: None,
            delay_until: None,
        }
    }
}

/// What `create` did: made a new execution, or found the one an idempotency key
/// already maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Created {
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    pub created: bool,
}

/// A stored execution as read back.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Execution {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    pub kind: String,
    pub lane: String,
    pub priority: i32,
    pub required_capabilities: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub policy: ExecutionPolicy,
    pub idempotency_key: Option<String>,
    pub concurrency_key: Option<String>,
    pub state: PublicState,
    /// Why it is not running yet, while it waits (`waiting_for_worker`,
    /// `blocked_by_concurrency_key`, …) or is suspended.
    pub blocking_reason: Option<String>,
    pub attempt_index: i32,
    pub lease_epoch: i64,
    pub retry_count: i32,
    pub reclaim_count: i32,
    /// Times an operator replayed it after it ended.
    pub replay_count: i32,
    pub eligible_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub input: Vec<u8>,
    #[serde(skip)]
    pub result: Option<Vec<u8>>,
    pub last_failure: Option<Failure>,
    pub cancellation_reason: Option<String>,
    /// Latest progress reported by the current attempt.
    pub progress_percent: Option<i16>,
    pub progress_message: Option<String>,
    /// The flow this execution is a member of, and its key there.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub flow_id: Option<FlowId>,
    pub flow_key: Option<String>,
    /// The execution that spawned this one (`spawn-child`), if one did.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub parent_id: Option<ExecutionId>,
    /// While suspended: what resumes it, the guest's reason, and which
    /// signal names count.
    pub suspension: Option<Suspension>,
    /// While suspended: when its timeout acts, if it has one.
    pub suspension_timeout_at: Option<DateTime<Utc>>,
}

/// A lane of the tenant's executions that have not ended, and how many of
/// them are in each live phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LaneCounts {
    pub lane: String,
    /// Waiting to run: runnable now, delayed, held by a budget or quota, or
    /// blocked by a flow's dependencies.
    pub queued: u64,
    /// Running under a lease.
    pub running: u64,
    /// Suspended until a signal, their children or a budget reset.
    pub suspended: u64,
}

/// The most lanes one page of [`LaneCounts`] holds.
pub const MAX_LANE_PAGE: u32 = 1000;

/// Where an execution stands, without its payloads: what watchers poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutionState {
    pub state: PublicState,
    /// The current (or last) attempt; 0 before the first claim.
    pub attempt_index: i32,
}

/// Why an attempt failed, as recorded on the attempt and the execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }
}

/// Proof of a held lease. Every worker write carries it; storage rejects it unless
/// it names the execution's current attempt, lease id and epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHandle {
    pub tenant_id: TenantId,
    pub execution_id: ExecutionId,
    pub attempt_index: i32,
    pub lease_id: Uuid,
    pub lease_epoch: i64,
}

/// Progress an attempt reported: a percentage (0 to 100) and a short message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    pub percent: u8,
    pub message: &'a str,
}

/// A successful attempt's end: its result and, when the attempt reported
/// progress that is not written yet, that progress. The host writes
/// progress a few times a second at most, so what a short run reported
/// last is written with its result, in the same write.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub lease: &'a LeaseHandle,
    pub result: &'a [u8],
    pub progress: Option<Progress<'a>>,
}

impl<'a> Completion<'a> {
    /// The end of an attempt that has no progress left to write.
    pub fn new(lease: &'a LeaseHandle, result: &'a [u8]) -> Self {
        Self {
            lease,
            result,
            progress: None,
        }
    }
}

/// Who is claiming, what it can run, and how much.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub worker_instance: String,
    pub lanes: Vec<String>,
    pub capabilities: Vec<String>,
    pub limit: u32,
    pub lease_ttl: Duration,
    /// Tenants to pass over: a worker pool names those that already hold
    /// their share of its slots, so the rest of its slots go to others.
    pub exclude_tenants: Vec<TenantId>,
}

/// One execution handed to a worker, with everything needed to run it.
#[derive(Debug, Clone)]
pub struct ClaimedExecution {
    pub lease: LeaseHandle,
    pub kind: String,
    pub lane: String,
    pub input: Vec<u8>,
    pub priority: i32,
    pub tags: BTreeMap<String, String>,
    pub policy: ExecutionPolicy,
    pub attempt_type: AttemptType,
    pub retry_count: i32,
    pub lease_expires_at: DateTime<Utc>,
    /// The tenant's sandbox ceilings, applied on top of the worker's own.
    pub ceilings: TaskCeilings,
    /// Set when this claim resumes a suspension (the same attempt, a new
    /// epoch): the number of the suspension whose signals woke it.
    pub resumed_from: Option<i32>,
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Another attempt will run; `retry_at` is `None` when reconstructed on replay.
    RetryScheduled {
        retry_at: Option<DateTime<Utc>>,
    },
    TerminalFailed,
}

/// Filters and keyset cursor for listing a tenant's executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub state: Option<PublicState>,
    pub kind: Option<String>,
    pub lane: Option<String>,
    /// Only executions carrying this tag (key, value).
    pub tag: Option<(String, String)>,
    /// Only executions whose id sorts after this one (ids are time-ordered
    /// v7), or before it when `newest_first`.
    pub after: Option<ExecutionId>,
    pub limit: u32,
    /// Newest first (descending ids) instead of oldest first.
    pub newest_first: bool,
}

/// Something about this execution changed (a frame, or it ended): a wake-up
/// for whoever watches it, who then reads what changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExecutionUpdate {
    pub tenant_id: TenantId,
    pub execution_id: ExecutionId,
}

/// One stored version of a component kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentVersion {
    pub kind: String,
    pub version: i32,
    /// sha256 of the wasm bytes, lowercase hex.
    pub digest: String,
    pub size_bytes: i32,
    pub deprecated: bool,
    pub created_at: DateTime<Utc>,
    /// The interfaces it imports (`wasi:http/outgoing-handler@0.2.4`, …),
    /// recorded at upload; absent for a version stored before they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imports: Option<Vec<String>>,
}

impl ComponentVersion {
    /// Why this version may not be purged, given the newest version number
    /// of its kind; `None` when it may. Only a deprecated version goes (no
    /// new attempt runs it), and never its kind's newest: the next upload is
    /// numbered after the newest stored, so a number is never given twice.
    pub fn purge_refusal(&self, newest_of_kind: i32) -> Option<String> {
        let (kind, number) = (&self.kind, self.version);
        if !self.deprecated {
            Some(format!(
                "version {number} of `{kind}` is not deprecated: deprecate it first"
            ))
        } else if number == newest_of_kind {
            Some(format!(
                "version {number} is the newest of `{kind}` and stays (the next upload is \
                 numbered after it)"
            ))
        } else {
            None
        }
    }
}

/// How a frame is kept (see `stream-mode` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    Durable,
    Summary,
    BestEffort,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Durable => "durable",
            Self::Summary => "summary",
            Self::BestEffort => "best_effort",
        }
    }
}

impl std::str::FromStr for StreamMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "durable" => Self::Durable,
            "summary" => Self::Summary,
            "best_effort" => Self::BestEffort,
            other => return Err(format!("unknown stream mode `{other}`")),
        })
    }
}

/// Best-effort frames further back than this many frames of their attempt
/// are trimmed when the next best-effort frame is appended.
pub const BEST_EFFORT_WINDOW: i64 = 256;

/// An attempt's rolling summary: every `summary` frame merged, in order, as a
/// JSON merge patch (RFC 7396; the string `"__ff_null__"` sets a literal null).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StreamSummary {
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// 1 after the first patch, +1 per patch.
    pub version: i64,
    pub first_applied_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Apply a summary frame's patch to an attempt's summary document: JSON merge
/// patch (RFC 7396), where the string `"__ff_null__"` sets a literal null.
/// The Postgres backend does the same in SQL (`flowfabric_merge_patch`).
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::String(s) if s == "__ff_null__" => *target = Value::Null,
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            let merged = target.as_object_mut().expect("made an object above");
            for (key, value) in fields {
                if value.is_null() {
                    merged.remove(key);
                } else {
                    merge_patch(merged.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// One frame of an attempt's output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub seq: i64,
    pub frame_type: String,
    pub mode: StreamMode,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::merge_patch;

    #[test]
    fn merge_patch_follows_rfc_7396_with_a_null_sentinel() {
        let mut doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]});
        merge_patch(
            &mut doc,
            &json!({"a": null, "b": {"c": "__ff_null__", "x": 4}, "e": {"f": 5}}),
        );
        assert_eq!(
            doc,
            json!({"b": {"c": null, "d": 3, "x": 4}, "e": {"f": 5}})
        );
        merge_patch(&mut doc, &json!(["whole"]));
        assert_eq!(doc, json!(["whole"]));
        merge_patch(&mut doc, &json!("__ff_null__"));
        assert_eq!(doc, json!(null));
    }
}
