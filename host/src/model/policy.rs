//! Execution policy: retry, backoff and timeouts, frozen when an execution is created.
//!
//! The policy is stored with the execution (as JSON) and never re-read from the
//! submitter, so a retry decision made hours later follows the rules the execution
//! was created under. Validation happens once, at creation, so a malformed policy
//! is rejected before anything is written.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Why an attempt failed. The guest chooses `transient` or `permanent`; the host
/// maps traps, timeouts, memory exhaustion and lost leases to the other classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    Transient,
    Permanent,
    Timeout,
    OutOfMemory,
    Trap,
    LeaseExpired,
    /// A report crossed a budget's hard limit; never retried.
    BudgetExceeded,
    /// The guest went past a limit of its tenant or the installation (a
    /// result too large to record, say); never retried.
    LimitExceeded,
    /// A run asked for steps its journal did not record in that order or
    /// under those names; never retried (the same code would diverge again).
    JournalMismatch,
    Internal,
}

impl FailureClass {
    /// Classes that no retry policy can retry: the same run would fail the
    /// same way.
    pub fn is_never_retried(self) -> bool {
        matches!(
            self,
            Self::Permanent | Self::LimitExceeded | Self::BudgetExceeded | Self::JournalMismatch
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
            Self::Timeout => "timeout",
            Self::OutOfMemory => "out_of_memory",
            Self::Trap => "trap",
            Self::LeaseExpired => "lease_expired",
            Self::BudgetExceeded => "budget_exceeded",
            Self::LimitExceeded => "limit_exceeded",
            Self::JournalMismatch => "journal_mismatch",
            Self::Internal => "internal",
        }
    }
}

/// How long to wait before the next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Backoff {
    Fixed {
        delay_ms: u64,
    },
    /// `min(initial * multiplier^retry, max)`; with `jitter`, a uniform draw from
    /// the upper half of that delay ("equal jitter"), so retries of many executions
    /// that failed together spread out but none retries early.
    Exponential {
        initial_delay_ms: u64,
        max_delay_ms: u64,
        multiplier: f64,
        jitter: bool,
    },
}

impl Default for Backoff {
    fn default() -> Self {
        Self::Exponential {
            initial_delay_ms: 1_000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (0 for the first retry).
    pub fn delay(&self, retry: u32) -> Duration {
        match *self {
            Self::Fixed { delay_ms } => Duration::from_millis(delay_ms),
            Self::Exponential {
                initial_delay_ms,
                max_delay_ms,
                multiplier,
                jitter,
            } => {
                let raw = initial_delay_ms as f64 * multiplier.powi(retry.min(64) as i32);
                let capped = raw.min(max_delay_ms as f64);
                let ms = if jitter && capped >= 2.0 {
                    rand::rng().random_range(capped / 2.0..=capped)
                } else {
                    capped
                };
                Duration::from_millis(ms as u64)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt; 0 means fail on the first failure.
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Failure classes that may be retried. `permanent` never is.
    pub retryable: Vec<FailureClass>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            backoff: Backoff::default(),
            retryable: vec![
                FailureClass::Transient,
                FailureClass::Timeout,
                FailureClass::Trap,
                FailureClass::LeaseExpired,
                FailureClass::Internal,
            ],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutPolicy {
    /// Longest one attempt may hold its lease in total (renewals included).
    pub attempt_timeout_ms: Option<u64>,
    /// Time from creation after which a non-terminal execution expires.
    pub execution_deadline_ms: Option<u64>,
    /// Lease expiries tolerated before the execution fails for good.
    pub max_reclaim_count: u32,
}

impl Default for TimeoutPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout_ms: None,
            execution_deadline_ms: None,
            max_reclaim_count: 100,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionPolicy {
    pub retry: RetryPolicy,
    pub timeouts: TimeoutPolicy,
    /// How long an idempotency key keeps mapping to this execution.
    pub dedup_window_ms: Option<u64>,
    /// How often an operator may replay the execution once it ended
    /// (default [`DEFAULT_MAX_REPLAYS`]).
    pub max_replays: Option<u32>,
}

/// Replays allowed when the policy does not say.
pub const DEFAULT_MAX_REPLAYS: u32 = 10;

/// Upper bounds that keep a policy from meaning "forever" by accident, and
/// keep every duration one that both stores can add to a timestamp.
const MAX_RETRIES: u32 = 1_000;
const MAX_DELAY_MS: u64 = 7 * 24 * 3600 * 1000;
const MAX_DEDUP_WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;
/// The longest one attempt may run.
pub const MAX_ATTEMPT_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// The longest an execution may live before its deadline.
pub const MAX_EXECUTION_DEADLINE_MS: u64 = 366 * 24 * 3600 * 1000;
const MAX_RECLAIMS: u32 = 1_000;

/// The default dedup window for idempotency keys: 24 hours.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 24 * 3600 * 1000;

impl ExecutionPolicy {
    pub fn validate(&self) -> Result<(), EngineError> {
        let invalid = |field: &str, reason: String| {
            Err(EngineError::invalid(format!("policy.{field}"), reason))
        };
        let retry = &self.retry;
        if retry.max_retries > MAX_RETRIES {
            return invalid(
                "retry.max_retries",
                format!("must be at most {MAX_RETRIES}"),
            );
        }
        if let Some(class) = retry
            .retryable
            .iter()
            .find(|c| matches!(c, FailureClass::Permanent | FailureClass::LimitExceeded))
        {
            return invalid(
                "retry.retryable",
                format!("`{}` failures are never retried", class.as_str()),
            );
        }
        match retry.backoff {
            Backoff::Fixed { delay_ms } if delay_ms > MAX_DELAY_MS => {
                return invalid(
                    "retry.backoff.delay_ms",
                    format!("must be at most {MAX_DELAY_MS}"),
                );
            }
            Backoff::Exponential {
                initial_delay_ms,
                max_delay_ms,
                multiplier,
                ..
            } => {
                if !(1.0..=100.0).contains(&multiplier) {
                    return invalid(
                        "retry.backoff.multiplier",
                        "must be between 1 and 100".into(),
                    );
                }
                if initial_delay_ms > max_delay_ms {
                    return invalid(
                        "retry.backoff.initial_delay_ms",
                        "must not exceed max_delay_ms".into(),
                    );
                }
                if max_delay_ms > MAX_DELAY_MS {
                    return invalid(
                        "retry.backoff.max_delay_ms",
                        format!("must be at most {MAX_DELAY_MS}"),
                    );
                }
            }
            Backoff::Fixed { .. } => {}
        }
        if self.max_replays.is_some_and(|n| n > MAX_RETRIES) {
            return invalid("max_replays", format!("must be at most {MAX_RETRIES}"));
        }
        let t = &self.timeouts;
        for (field, value, max) in [
            (
                "timeouts.attempt_timeout_ms",
                t.attempt_timeout_ms,
                MAX_ATTEMPT_TIMEOUT_MS,
            ),
            (
                "timeouts.execution_deadline_ms",
                t.execution_deadline_ms,
                MAX_EXECUTION_DEADLINE_MS,
            ),
        ] {
            if value.is_some_and(|v| v == 0 || v > max) {
                return invalid(field, format!("must be between 1 and {max} when set"));
            }
        }
        if t.max_reclaim_count > MAX_RECLAIMS {
            return invalid(
                "timeouts.max_reclaim_count",
                format!("must be at most {MAX_RECLAIMS}"),
            );
        }
        if let Some(w) = self.dedup_window_ms {
            if w == 0 || w > MAX_DEDUP_WINDOW_MS {
                return invalid(
                    "dedup_window_ms",
                    format!("must be between 1 and {MAX_DEDUP_WINDOW_MS}"),
                );
            }
        }
        Ok(())
    }

    /// What happens after attempt failure number `retry_count + 1` of class `class`.
    pub fn retry_decision(&self, class: FailureClass, retry_count: u32) -> RetryDecision {
        let retryable = !class.is_never_retried() && self.retry.retryable.contains(&class);
        if retryable && retry_count < self.retry.max_retries {
            RetryDecision::RetryAfter(self.retry.backoff.delay(retry_count))
        } else {
            RetryDecision::Terminal
        }
    }

    /// The policy as a store keeps it: each part (`retry`, `timeouts`, …)
    /// that is at its default is left out, and reads back as the default
    /// (every part is `#[serde(default)]`). Most executions take the
    /// default policy, about 430 bytes as JSON, which every version of the
    /// execution's row carried. Leaving defaults out makes the defaults part
    /// of what is stored: changing one changes the policy of every stored
    /// execution that did not set it, so a test pins them.
    pub fn stored(&self) -> serde_json::Value {
        let to_value =
            |p: &ExecutionPolicy| serde_json::to_value(p).expect("a policy always serializes");
        let (mut parts, defaults) = match (to_value(self), to_value(&Self::default())) {
            (serde_json::Value::Object(p), serde_json::Value::Object(d)) => (p, d),
            (whole, _) => return whole,
        };
        parts.retain(|name, part| defaults.get(name) != Some(part));
        serde_json::Value::Object(parts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    Terminal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_policy_leaves_out_its_defaults_and_reads_back_whole() {
        assert_eq!(ExecutionPolicy::default().stored(), serde_json::json!({}));
        let custom = ExecutionPolicy {
            timeouts: TimeoutPolicy {
                attempt_timeout_ms: Some(5_000),
                ..TimeoutPolicy::default()
            },
            max_replays: Some(2),
            ..ExecutionPolicy::default()
        };
        let stored = custom.stored();
        let parts: Vec<&String> = stored.as_object().unwrap().keys().collect();
        assert_eq!(parts, ["max_replays", "timeouts"]);
        assert_eq!(
            stored["timeouts"]["max_reclaim_count"], 100,
            "a part is kept whole"
        );
        for policy in [ExecutionPolicy::default(), custom] {
            let back: ExecutionPolicy = serde_json::from_value(policy.stored()).unwrap();
            assert_eq!(back, policy);
        }
    }

    /// Stored policies leave their defaults out (`ExecutionPolicy::stored`),
    /// and the Postgres statements fall back to the same values (`coalesce`
    /// of `max_reclaim_count` to 100): a changed default changes every stored
    /// execution that did not set it. Change this test only with a
    /// migration that writes the old defaults into those rows.
    #[test]
    fn the_defaults_that_stored_policies_rely_on_are_pinned() {
        assert_eq!(
            serde_json::to_value(ExecutionPolicy::default()).unwrap(),
            serde_json::json!({
                "retry": {
                    "backoff": {"type": "exponential", "jitter": true, "multiplier": 2.0,
                                "max_delay_ms": 60000, "initial_delay_ms": 1000},
                    "retryable": ["transient", "timeout", "trap", "lease_expired", "internal"],
                    "max_retries": 3
                },
                "timeouts": {"max_reclaim_count": 100, "attempt_timeout_ms": null,
                             "execution_deadline_ms": null},
                "max_replays": null,
                "dedup_window_ms": null
            })
        );
    }

    #[test]
    fn exponential_backoff_grows_and_caps() {
        let b = Backoff::Exponential {
            initial_delay_ms: 100,
            max_delay_ms: 1_000,
            multiplier: 2.0,
            jitter: false,
        };
        let ms: Vec<u128> = (0..6).map(|r| b.delay(r).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_in_upper_half() {
        let b = Backoff::Exponential {
            initial_delay_ms: 1_000,
            max_delay_ms: 60_000,
            multiplier: 2.0,
            jitter: true,
        };
        for _ in 0..200 {
            let d = b.delay(2).as_millis();
            assert!((2_000..=4_000).contains(&d), "{d}");
        }
    }

    #[test]
    fn permanent_is_never_retried_and_retries_run_out() {
        let p = ExecutionPolicy::default();
        assert_eq!(
            p.retry_decision(FailureClass::Permanent, 0),
            RetryDecision::Terminal
        );
        assert!(matches!(
            p.retry_decision(FailureClass::Transient, 2),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            p.retry_decision(FailureClass::Transient, 3),
            RetryDecision::Terminal
        );
        assert_eq!(
            p.retry_decision(FailureClass::OutOfMemory, 0),
            RetryDecision::Terminal
        );
    }

    #[test]
    fn malformed_policies_are_rejected_with_the_field() {
        let mut p = ExecutionPolicy::default();
        p.retry.backoff = Backoff::Exponential {
            initial_delay_ms: 10,
            max_delay_ms: 5,
            multiplier: 2.0,
            jitter: false,
        };
        let err = p.validate().unwrap_err().to_string();
        assert!(
            err.contains("policy.retry.backoff.initial_delay_ms"),
            "{err}"
        );

        let mut p = ExecutionPolicy::default();
        p.retry.retryable.push(FailureClass::Permanent);
        assert!(p.validate().is_err());

        let unknown = serde_json::from_str::<ExecutionPolicy>(r#"{"retry":{"max_retires":3}}"#);
        assert!(
            unknown.is_err(),
            "a misspelt field must not be silently ignored"
        );
    }
}
