//! The rulebook: the execution's state vector as types, and the rules that
//! derive from it, written once.
//!
//! An execution's row carries the state vector (lifecycle phase, ownership,
//! eligibility, attempt phase, terminal outcome); users see one
//! [`PublicState`] and, while it waits, a blocking reason. Postgres derives
//! the public state in a generated column, SQLite in Rust before it writes a
//! row; both must agree, so the Rust form lives here and a test feeds every
//! combination of the vector through the Postgres column and through
//! [`public_state`] and compares them. Each enum's `as_str` is the spelling
//! the CHECK constraints allow (another test reads them from the schema).

use std::fmt;
use std::str::FromStr;

use super::{AttemptType, PublicState};

macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
        #[sqlx(type_name = "text", rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(concat!("unknown ", stringify!($name), " `{}`"), other)),
                }
            }
        }
    };
}

state_enum!(
    /// Where an execution is in its life.
    LifecyclePhase {
        Submitted = "submitted",
        Runnable = "runnable",
        Active = "active",
        Suspended = "suspended",
        Terminal = "terminal",
    }
);

state_enum!(
    /// Whether a runnable execution may be claimed now, and if not, why.
    Eligibility {
        EligibleNow = "eligible_now",
        NotEligibleUntilTime = "not_eligible_until_time",
        BlockedByDependencies = "blocked_by_dependencies",
        BlockedByBudget = "blocked_by_budget",
        BlockedByQuota = "blocked_by_quota",
        BlockedByOperator = "blocked_by_operator",
        BlockedByConcurrencyKey = "blocked_by_concurrency_key",
        NotApplicable = "not_applicable",
    }
);

state_enum!(
    /// Who holds the execution.
    Ownership {
        Unowned = "unowned",
        Leased = "leased",
        LeaseExpiredReclaimable = "lease_expired_reclaimable",
        LeaseRevoked = "lease_revoked",
    }
);

state_enum!(
    /// The execution's current attempt, from the execution's side.
    AttemptPhase {
        PendingFirstAttempt = "pending_first_attempt",
        RunningAttempt = "running_attempt",
        AttemptInterrupted = "attempt_interrupted",
        PendingRetryAttempt = "pending_retry_attempt",
        PendingReplayAttempt = "pending_replay_attempt",
        PendingDelayedAttempt = "pending_delayed_attempt",
        AttemptSuspended = "attempt_suspended",
        PendingResumeAttempt = "pending_resume_attempt",
        AttemptTerminal = "attempt_terminal",
    }
);

state_enum!(
    /// How a terminal execution ended.
    TerminalOutcome {
        Success = "success",
        Failed = "failed",
        Cancelled = "cancelled",
        Expired = "expired",
        Skipped = "skipped",
    }
);

impl AttemptPhase {
    /// What the next claim of an execution in this phase starts.
    pub fn next_attempt_type(self) -> AttemptType {
        match self {
            Self::PendingResumeAttempt => AttemptType::Resume,
            Self::PendingRetryAttempt => AttemptType::Retry,
            Self::AttemptInterrupted => AttemptType::Reclaim,
            Self::PendingReplayAttempt => AttemptType::Replay,
            Self::PendingDelayedAttempt => AttemptType::Delayed,
            _ => AttemptType::Initial,
        }
    }
}

/// The public state of a state vector. A terminal row without an outcome
/// (which no write produces) reads as failed.
pub fn public_state(
    phase: LifecyclePhase,
    eligibility: Eligibility,
    outcome: Option<TerminalOutcome>,
) -> PublicState {
    match phase {
        LifecyclePhase::Terminal => match outcome {
            Some(TerminalOutcome::Success) => PublicState::Completed,
            Some(TerminalOutcome::Cancelled) => PublicState::Cancelled,
            Some(TerminalOutcome::Expired) => PublicState::Expired,
            Some(TerminalOutcome::Skipped) => PublicState::Skipped,
            Some(TerminalOutcome::Failed) | None => PublicState::Failed,
        },
        LifecyclePhase::Active => PublicState::Active,
        LifecyclePhase::Suspended => PublicState::Suspended,
        LifecyclePhase::Submitted | LifecyclePhase::Runnable => match eligibility {
            Eligibility::NotEligibleUntilTime => PublicState::Delayed,
            Eligibility::BlockedByDependencies => PublicState::WaitingChildren,
            Eligibility::BlockedByBudget | Eligibility::BlockedByQuota => PublicState::RateLimited,
            _ => PublicState::Waiting,
        },
    }
}

/// Why a runnable execution is not running: what users read as its
/// `blocking_reason`. (An active or terminal execution has none; a
/// suspended one keeps the reason it suspended with.)
pub fn runnable_blocking_reason(eligibility: Eligibility, attempt: AttemptPhase) -> &'static str {
    match eligibility {
        Eligibility::NotEligibleUntilTime if attempt == AttemptPhase::PendingRetryAttempt => {
            "waiting_for_retry_backoff"
        }
        Eligibility::NotEligibleUntilTime => "waiting_for_delay",
        Eligibility::BlockedByDependencies => "waiting_for_dependencies",
        Eligibility::BlockedByBudget => "waiting_for_budget",
        Eligibility::BlockedByConcurrencyKey => super::BLOCKED_BY_CONCURRENCY_KEY,
        _ => "waiting_for_worker",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back() {
        for p in LifecyclePhase::ALL {
            assert_eq!(p.as_str().parse::<LifecyclePhase>(), Ok(*p));
        }
        for e in Eligibility::ALL {
            assert_eq!(e.as_str().parse::<Eligibility>(), Ok(*e));
        }
        for a in AttemptPhase::ALL {
            assert_eq!(a.as_str().parse::<AttemptPhase>(), Ok(*a));
        }
        for o in TerminalOutcome::ALL {
            assert_eq!(o.as_str().parse::<TerminalOutcome>(), Ok(*o));
        }
        assert!("running".parse::<LifecyclePhase>().is_err());
    }

    #[test]
    fn terminal_outcomes_name_terminal_public_states() {
        for o in TerminalOutcome::ALL {
            let state = public_state(
                LifecyclePhase::Terminal,
                Eligibility::NotApplicable,
                Some(*o),
            );
            assert!(state.is_terminal(), "{o} reads as {state}");
        }
    }
}
