//! What operators read back about work already done: each attempt of an
//! execution (one lease each, with the worker that held it and how it
//! ended), and a tenant's overview (how many executions are in each state,
//! and how the last hour's attempts ended, by minute and by kind).
//!
//! These are reads over rows the lifecycle writes anyway (`attempts`,
//! `executions`), each off an index that exists for other reasons; nothing
//! is recorded just for them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AttemptState, AttemptType, Failure, PublicState};

/// The most attempts one listing returns (newest first).
pub const MAX_ATTEMPT_PAGE: u32 = 200;
/// Lease events an execution's history shows: its newest ones.
pub const MAX_LEASE_HISTORY: u32 = 500;

/// One attempt of an execution: the lease it ran under and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    pub attempt_index: i32,
    pub attempt_type: AttemptType,
    /// The lease epoch it ran under; a resumed attempt keeps its index and
    /// takes a new epoch.
    pub lease_epoch: i64,
    pub worker_id: String,
    pub state: AttemptState,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub failure: Option<Failure>,
}

/// Where the overview stops counting the executions in one state: counting
/// reads one index entry per execution, so a tenant with a million finished
/// executions would otherwise pay for a million reads on every look.
pub const MAX_STATE_COUNT: u64 = 10_000;

/// Executions of a tenant in one public state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateCount {
    pub state: PublicState,
    /// Exact up to [`MAX_STATE_COUNT`], then that number with `more`.
    pub count: u64,
    /// There are more than `count` (counting stopped at the cap).
    #[serde(default)]
    pub more: bool,
}

/// Attempts that ended in one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MinuteOutcomes {
    /// The minute's first instant.
    pub minute: DateTime<Utc>,
    pub succeeded: u64,
    pub failed: u64,
}

/// A kind and how many of its attempts failed in the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KindFailures {
    pub kind: String,
    pub failed: u64,
}

/// A tenant at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Overview {
    /// Every state with at least one execution.
    pub states: Vec<StateCount>,
    /// Minutes of the window in which an attempt ended, oldest first.
    pub minutes: Vec<MinuteOutcomes>,
    /// The kinds with the most failed attempts in the window, most first
    /// (at most [`MAX_FAILING_KINDS`]).
    pub failing_kinds: Vec<KindFailures>,
}

/// How many kinds [`Overview::failing_kinds`] names.
pub const MAX_FAILING_KINDS: u32 = 5;
