//! Suspension and signals: an execution waits on named waitpoints, signals
//! delivered to them are kept, and a resume condition over those signals makes
//! it runnable again (same attempt, new lease epoch).

use super::ids::WaitpointId;
use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EngineError;

/// When a suspended execution becomes runnable again, over waitpoint keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResumeCondition {
    /// Any signal on this waitpoint.
    Waitpoint { key: String },
    /// Signals on at least `n` distinct waitpoints among `keys`.
    Count { n: u32, keys: Vec<String> },
    /// A signal on every waitpoint among `keys`.
    AllOf { keys: Vec<String> },
    /// Only an operator resumes it.
    OperatorOnly,
    /// Only its timeout ends it.
    TimeoutOnly,
    /// Every child it spawned has ended (`wait-children`; never from signals).
    Children,
    /// A durable sleep: only its timeout (the wake time) resumes it, with
    /// no signal (never from signals; an operator may wake it early, and
    /// it then sleeps on for the rest).
    Timer,
    /// The budget whose hard limit it hit is reset (never from signals).
    Budget {
        #[schema(value_type = uuid::Uuid)]
        budget_id: super::ids::BudgetId,
    },
}

impl ResumeCondition {
    /// The waitpoints the condition reads.
    pub fn keys(&self) -> Vec<&str> {
        match self {
            Self::Waitpoint { key } => vec![key.as_str()],
            Self::Count { keys, .. } | Self::AllOf { keys } => {
                let unique: BTreeSet<&str> = keys.iter().map(String::as_str).collect();
                unique.into_iter().collect()
            }
            Self::OperatorOnly
            | Self::TimeoutOnly
            | Self::Timer
            | Self::Children
            | Self::Budget { .. } => Vec::new(),
        }
    }

    /// Its wire name and waitpoints in one phrase (`waitpoint approval`,
    /// `all_of a, b`, `operator_only`), for people.
    pub fn summary(&self) -> String {
        let name = match self {
            Self::Waitpoint { .. } => "waitpoint",
            Self::Count { .. } => "count",
            Self::AllOf { .. } => "all_of",
            Self::OperatorOnly => "operator_only",
            Self::TimeoutOnly => "timeout_only",
            Self::Children => "children",
            Self::Timer => "timer",
            Self::Budget { .. } => "budget",
        };
        let keys = self.keys();
        if keys.is_empty() {
            return name.to_owned();
        }
        format!("{name} {}", keys.join(", "))
    }

    /// Whether signals on the waitpoints named by `signalled` satisfy it.
    pub fn is_satisfied<'a>(&self, signalled: impl IntoIterator<Item = &'a str>) -> bool {
        let signalled: BTreeSet<&str> = signalled.into_iter().collect();
        let hits = self
            .keys()
            .iter()
            .filter(|k| signalled.contains(*k))
            .count();
        match self {
            Self::Waitpoint { .. } => hits >= 1,
            Self::Count { n, .. } => hits >= *n as usize,
            Self::AllOf { keys } => !keys.is_empty() && hits == self.keys().len(),
            Self::OperatorOnly
            | Self::TimeoutOnly
            | Self::Timer
            | Self::Children
            | Self::Budget { .. } => false,
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        let count = match self {
            Self::Count { n, keys } => {
                if *n == 0 || *n as usize > keys.len() {
                    return Err(EngineError::invalid(
                        "condition.n",
                        format!("must be 1 to the number of keys ({})", keys.len()),
                    ));
                }
                keys.len()
            }
            Self::AllOf { keys } if keys.is_empty() => {
                return Err(EngineError::invalid("condition.keys", "name at least one"))
            }
            other => other.keys().len(),
        };
        if count > 64 {
            return Err(EngineError::invalid("condition.keys", "at most 64"));
        }
        Ok(())
    }
}

/// What happens when a suspension's timeout passes before it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutBehavior {
    /// Fail the execution (class `timeout`; not retried).
    Fail,
    Cancel,
    Expire,
    /// Resume it with a synthetic signal named `timeout`.
    AutoResume,
}

/// A suspension as recorded on the execution while it waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Suspension {
    pub condition: ResumeCondition,
    pub on_timeout: TimeoutBehavior,
    /// Why it waits, in the guest's own words: a short code for operators
    /// (`waiting_for_approval`, say). The engine's own account is the
    /// execution's `blocking_reason`, which a guest cannot set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When not empty, only signals with one of these names count toward
    /// the condition; others are kept (buffered) but wake nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signal_names: Vec<String>,
}

/// Signal names one suspension may match on, at most.
pub const MAX_SIGNAL_NAMES: usize = 16;

impl Suspension {
    pub fn new(condition: ResumeCondition, on_timeout: TimeoutBehavior) -> Self {
        Self {
            condition,
            on_timeout,
            reason: None,
            signal_names: Vec::new(),
        }
    }

    /// The execution's `blocking_reason` while it waits on this. The
    /// scanners that wake parents and reset budgets find their executions by
    /// it, so it follows from the condition alone, never from the guest.
    pub fn blocking_reason(&self) -> &'static str {
        match &self.condition {
            ResumeCondition::Waitpoint { .. }
            | ResumeCondition::Count { .. }
            | ResumeCondition::AllOf { .. }
            | ResumeCondition::OperatorOnly
            | ResumeCondition::TimeoutOnly => "waiting_for_signal",
            ResumeCondition::Children => "waiting_for_children",
            ResumeCondition::Timer => "waiting_for_timer",
            ResumeCondition::Budget { .. } => "waiting_for_budget",
        }
    }

    /// Whether these buffered signals satisfy it: those on the condition's
    /// waitpoints, with one of `signal_names` when it names any.
    pub fn is_satisfied_by(&self, buffered: &[Signal]) -> bool {
        let counts =
            |s: &&Signal| self.signal_names.is_empty() || self.signal_names.contains(&s.name);
        self.condition.is_satisfied(
            buffered
                .iter()
                .filter(counts)
                .map(|s| s.waitpoint_key.as_str()),
        )
    }
}

/// Name of the synthetic signal an `auto_resume` timeout delivers.
pub const TIMEOUT_SIGNAL: &str = "timeout";

/// A waitpoint of an execution. `token` is the bearer credential for
/// delivering a signal to it; it is derived, never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Waitpoint {
    pub waitpoint_id: WaitpointId,
    pub key: String,
    /// `pending` (created, not yet waited on), `active` or `closed`.
    pub state: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A suspended execution with its waitpoints, as operators list them. The
/// waitpoints come without tokens: a listing is no place for credentials.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SuspendedExecution {
    #[serde(flatten)]
    pub execution: super::Execution,
    /// Its waitpoints, oldest first (at most 64).
    pub waitpoints: Vec<Waitpoint>,
}

/// A delivered signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Signal {
    pub signal_id: Uuid,
    pub waitpoint_key: String,
    pub name: String,
    #[serde(skip)]
    pub payload: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

/// A signal to deliver.
#[derive(Debug, Clone)]
pub struct NewSignal {
    pub name: String,
    pub payload: Vec<u8>,
    /// Delivering twice with one key returns the first signal.
    pub idempotency_key: Option<String>,
}

/// What `suspend` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuspendOutcome {
    /// The execution now waits; its lease is released.
    Suspended,
    /// Signals already buffered satisfy the condition: they are consumed and
    /// the execution carries on under its lease.
    AlreadySatisfied(Vec<Signal>),
}

/// What delivering a signal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SignalOutcome {
    /// Stored; `resumed` says whether it completed the resume condition.
    Accepted { signal_id: Uuid, resumed: bool },
    /// The idempotency key was used before: nothing new was stored.
    Duplicate { signal_id: Uuid },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn conditions_count_distinct_waitpoints() {
        let any = ResumeCondition::Waitpoint { key: "a".into() };
        assert!(any.is_satisfied(["a"]));
        assert!(!any.is_satisfied(["b"]));
        let two = ResumeCondition::Count {
            n: 2,
            keys: keys(&["a", "b", "c"]),
        };
        assert!(!two.is_satisfied(["a", "a"]));
        assert!(two.is_satisfied(["a", "c"]));
        let all = ResumeCondition::AllOf {
            keys: keys(&["a", "b", "b"]),
        };
        assert!(!all.is_satisfied(["a"]));
        assert!(all.is_satisfied(["b", "a", "x"]));
        assert!(!ResumeCondition::OperatorOnly.is_satisfied(["a"]));
        assert!(ResumeCondition::Count {
            n: 0,
            keys: keys(&["a"])
        }
        .validate()
        .is_err());
        assert!(ResumeCondition::Count {
            n: 2,
            keys: keys(&["a"])
        }
        .validate()
        .is_err());
        assert!(ResumeCondition::AllOf { keys: vec![] }.validate().is_err());
    }
}
