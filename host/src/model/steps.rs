//! Durable steps: an execution's journal of side effects already done.
//!
//! A guest that suspends, or whose attempt is retried or reclaimed, runs
//! again from the top. Whatever it wraps in a step runs once: the first run
//! records the step's result (or its permanent failure) at the step's
//! position, and every later run of the same execution is handed that record
//! instead of running the step again. A durable sleep is a step too: its
//! record is the time to wake.
//!
//! **The determinism rule.** A run's steps are numbered in the order it
//! begins them (0, 1, 2, …). The step a run begins at position `n` must have
//! the name of the record at `n`, if there is one. A run that asks for a
//! different name there (steps reordered, renamed, inserted) has diverged
//! from its journal: its recorded results no longer mean what the code
//! expects, so the attempt fails permanently with class `journal_mismatch`
//! instead of handing the guest another step's data. Replaying the
//! execution starts a fresh journal (unless told to keep it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;

/// Longest step name, in bytes.
pub const MAX_STEP_NAME_BYTES: usize = 128;

/// Longest recorded failure message, in bytes (longer ones are clipped).
pub const MAX_STEP_ERROR_BYTES: usize = 4_096;

/// The name a durable sleep is recorded under.
pub const SLEEP_STEP: &str = "sleep";

/// What a recorded step holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// The step ran to completion and returned these bytes.
    Completed(Vec<u8>),
    /// The step failed permanently with this message; later runs get the
    /// same failure back.
    Failed(String),
    /// A durable sleep: the run resumes at this time.
    Sleep { wake_at: DateTime<Utc> },
}

impl StepOutcome {
    /// How a step is kept, as storage and the API name it.
    pub fn kind(&self) -> StepKind {
        match self {
            Self::Completed(_) => StepKind::Completed,
            Self::Failed(_) => StepKind::Failed,
            Self::Sleep { .. } => StepKind::Sleep,
        }
    }

    /// Bytes the record counts against the journal's cap.
    pub fn size(&self) -> usize {
        match self {
            Self::Completed(output) => output.len(),
            Self::Failed(message) => message.len(),
            Self::Sleep { .. } => 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Completed,
    Failed,
    Sleep,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Sleep => "sleep",
        }
    }
}

impl std::str::FromStr for StepKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            "sleep" => Ok(Self::Sleep),
            other => Err(format!("unknown step kind `{other}`")),
        }
    }
}

/// A step to record, at the position the run gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewStep {
    pub position: u32,
    pub name: String,
    pub outcome: StepOutcome,
    /// How long the step ran before it was recorded.
    pub duration_ms: u64,
}

/// A step of an execution's journal, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub position: u32,
    pub name: String,
    pub outcome: StepOutcome,
    /// The attempt that recorded it.
    pub attempt_index: i32,
    pub duration_ms: u64,
    pub recorded_at: DateTime<Utc>,
}

impl JournalEntry {
    /// What the API shows of it: everything but the result's bytes.
    pub fn summary(&self) -> StepSummary {
        StepSummary {
            position: self.position,
            name: self.name.clone(),
            kind: self.outcome.kind(),
            attempt_index: self.attempt_index,
            duration_ms: self.duration_ms,
            size: self.outcome.size() as u64,
            error: match &self.outcome {
                StepOutcome::Failed(message) => Some(message.clone()),
                _ => None,
            },
            wake_at: match self.outcome {
                StepOutcome::Sleep { wake_at } => Some(wake_at),
                _ => None,
            },
            recorded_at: self.recorded_at,
        }
    }
}

/// A recorded step as listed over the API and CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepSummary {
    pub position: u32,
    pub name: String,
    pub kind: StepKind,
    /// The attempt whose run recorded it.
    pub attempt_index: i32,
    pub duration_ms: u64,
    /// Bytes of its result (or failure message).
    pub size: u64,
    /// The failure message of a failed step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a sleep step wakes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

/// What one execution's journal may grow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    pub max_steps: u32,
    /// Result and failure bytes of all its steps.
    pub max_bytes: u64,
}

/// Refuse a step name that is empty, too long or holds control characters.
pub fn check_step_name(name: &str) -> Result<(), EngineError> {
    if name.is_empty() || name.len() > MAX_STEP_NAME_BYTES || name.chars().any(char::is_control) {
        return Err(EngineError::invalid(
            "step name",
            format!("must be 1 to {MAX_STEP_NAME_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

/// Where a run's step stands against the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepLookup<'a> {
    /// Nothing is recorded at this position: run it.
    Pending,
    /// Recorded by an earlier run under the same name.
    Recorded(&'a StepOutcome),
}

/// The run diverged from its journal (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "journal mismatch at step {position}: this run asked for `{asked}` but the journal \
     recorded `{recorded}` there (steps must be begun in the same order, under the same \
     names, on every run of an execution; replay it to start a fresh journal)"
)]
pub struct JournalMismatch {
    pub position: u32,
    pub asked: String,
    pub recorded: String,
}

/// Look up the step a run begins at `position` under `name`.
pub fn lookup<'a>(
    journal: &'a [JournalEntry],
    position: u32,
    name: &str,
) -> Result<StepLookup<'a>, JournalMismatch> {
    let Ok(i) = journal.binary_search_by_key(&position, |e| e.position) else {
        return Ok(StepLookup::Pending);
    };
    let entry = &journal[i];
    if entry.name != name {
        return Err(JournalMismatch {
            position,
            asked: name.to_owned(),
            recorded: entry.name.clone(),
        });
    }
    Ok(StepLookup::Recorded(&entry.outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(position: u32, name: &str) -> JournalEntry {
        JournalEntry {
            position,
            name: name.into(),
            outcome: StepOutcome::Completed(name.as_bytes().to_vec()),
            attempt_index: 1,
            duration_ms: 0,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn a_recorded_step_is_found_by_position_and_name() {
        let journal = [entry(0, "a"), entry(2, "c")];
        assert_eq!(
            lookup(&journal, 0, "a"),
            Ok(StepLookup::Recorded(&StepOutcome::Completed(b"a".to_vec())))
        );
        assert_eq!(lookup(&journal, 1, "b"), Ok(StepLookup::Pending));
        assert_eq!(lookup(&journal, 3, "d"), Ok(StepLookup::Pending));
    }

    #[test]
    fn another_name_at_a_recorded_position_is_a_mismatch() {
        let journal = [entry(0, "charge")];
        let e = lookup(&journal, 0, "refund").unwrap_err();
        assert_eq!(e.recorded, "charge");
        assert!(e.to_string().contains("journal mismatch at step 0"), "{e}");
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(check_step_name("charge card").is_ok());
        assert!(check_step_name("").is_err());
        assert!(check_step_name("a\nb").is_err());
        assert!(check_step_name(&"x".repeat(129)).is_err());
    }
}
