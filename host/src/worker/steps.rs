//! Durable steps and timers on the worker's side: this run's place in the
//! execution's journal.
//!
//! The journal is read once, at the run's first step, and kept for the run:
//! only this lease writes to it while the run lasts, so what it read stays
//! true. Positions are handed out in the order the guest begins its steps;
//! the determinism rule (see [`crate::model::JournalEntry`]) is checked
//! against what was read, and a divergence or a refused record ends the
//! attempt from inside the host call.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;

use super::claimed::ClaimedTask;
use crate::engine::wake_time;
use crate::error::EngineError;
use crate::model::{
    self, AttemptType, FailureClass, JournalEntry, JournalMismatch, NewStep, StepLookup,
    StepOutcome, SLEEP_STEP,
};
use crate::runtime::{GuestStepOutcome, HostError, HostReply, StepStart};

/// This run's steps: the next position, and those begun but not recorded.
#[derive(Default)]
pub(super) struct StepCursor {
    next: u32,
    open: HashMap<u32, (String, Instant)>,
}

impl StepCursor {
    fn take_position(&mut self) -> u32 {
        let position = self.next;
        self.next = self.next.saturating_add(1);
        position
    }
}

impl ClaimedTask {
    /// The execution's journal, read once per run.
    async fn journal(&self) -> Result<&[JournalEntry], HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        // The first run of a new execution has nothing recorded before it:
        // every other kind of attempt (a retry, a reclaim, a resume, a
        // delayed or replayed one) follows a run that may have recorded.
        let fresh = self.claimed.attempt_type == AttemptType::Initial;
        self.journal
            .get_or_try_init(|| async {
                match fresh {
                    true => Ok(Vec::new()),
                    false => self.engine.journal(self.lease()).await,
                }
            })
            .await
            .map(Vec::as_slice)
            .map_err(|e| self.host_error(e))
    }

    /// A step write the journal refused for good ends the attempt: the
    /// step's effect happened, and running it again would repeat it.
    fn step_refused<T>(&self, e: EngineError) -> Result<HostReply<T>, HostError> {
        match e {
            EngineError::LimitExceeded { .. }
            | EngineError::QuotaExceeded { .. }
            | EngineError::PayloadTooLarge { .. } => Ok(HostReply::Stop(model::Failure::new(
                FailureClass::LimitExceeded,
                format!("the step could not be recorded: {e}"),
            ))),
            other => Err(self.host_error(other)),
        }
    }

    pub(super) async fn begin_step(&self, name: String) -> Result<HostReply<StepStart>, HostError> {
        model::check_step_name(&name).map_err(|e| HostError::Invalid(e.to_string()))?;
        let journal = self.journal().await?;
        let position = self.steps.lock().expect("steps lock").take_position();
        let recorded = match model::lookup_step(journal, position, &name) {
            Err(mismatch) => return Ok(diverged(&mismatch)),
            Ok(StepLookup::Recorded(outcome)) => outcome,
            Ok(StepLookup::Pending) => {
                let mut steps = self.steps.lock().expect("steps lock");
                steps.open.insert(position, (name, Instant::now()));
                return Ok(HostReply::Continue(StepStart::Run(position)));
            }
        };
        Ok(match recorded {
            StepOutcome::Completed(output) => {
                HostReply::Continue(StepStart::Completed(output.clone()))
            }
            StepOutcome::Failed(message) => HostReply::Continue(StepStart::Failed(message.clone())),
            StepOutcome::Sleep { .. } => diverged(&JournalMismatch {
                position,
                asked: name,
                recorded: format!("{SLEEP_STEP} (a durable sleep)"),
            }),
        })
    }

    pub(super) async fn record_step(
        &self,
        position: u32,
        outcome: GuestStepOutcome,
    ) -> Result<HostReply<()>, HostError> {
        if self.is_lease_lost() {
            return Err(HostError::LeaseLost);
        }
        let open = self
            .steps
            .lock()
            .expect("steps lock")
            .open
            .remove(&position);
        let Some((name, started)) = open else {
            return Err(HostError::Invalid(format!(
                "no step is open at position {position}: begin it with step-begin, and record \
                 it once"
            )));
        };
        let step = NewStep {
            position,
            name,
            outcome: match outcome {
                GuestStepOutcome::Completed(output) => StepOutcome::Completed(output),
                GuestStepOutcome::Failed(message) => StepOutcome::Failed(message),
            },
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        match self.engine.record_step(self.lease(), step).await {
            Ok(()) => Ok(HostReply::Continue(())),
            Err(e) => self.step_refused(e),
        }
    }

    pub(super) async fn sleep_until_due(
        &self,
        duration_ms: u64,
    ) -> Result<HostReply<()>, HostError> {
        let wake_at = wake_time(duration_ms).map_err(|e| HostError::Invalid(e.to_string()))?;
        let journal = self.journal().await?;
        let position = self.steps.lock().expect("steps lock").take_position();
        let recorded = match model::lookup_step(journal, position, SLEEP_STEP) {
            Err(mismatch) => return Ok(diverged(&mismatch)),
            Ok(StepLookup::Recorded(outcome)) => Some(outcome),
            Ok(StepLookup::Pending) => None,
        };
        let lease = self.lease();
        let written = match recorded {
            Some(StepOutcome::Sleep { wake_at }) if *wake_at <= Utc::now() => {
                return Ok(HostReply::Continue(()))
            }
            // Woken early (an operator's resume): sleep on until the time.
            Some(StepOutcome::Sleep { wake_at }) => self.engine.sleep(lease, None, *wake_at).await,
            Some(_) => {
                return Ok(diverged(&JournalMismatch {
                    position,
                    asked: SLEEP_STEP.into(),
                    recorded: format!("{SLEEP_STEP} (a step of that name, not a durable sleep)"),
                }))
            }
            None => {
                let step = NewStep {
                    position,
                    name: SLEEP_STEP.into(),
                    outcome: StepOutcome::Sleep { wake_at },
                    duration_ms: 0,
                };
                if duration_ms == 0 {
                    return match self.engine.record_step(lease, step).await {
                        Ok(()) => Ok(HostReply::Continue(())),
                        Err(e) => self.step_refused(e),
                    };
                }
                self.engine.sleep(lease, Some(step), wake_at).await
            }
        };
        match written {
            Ok(()) => Ok(self.suspended()),
            Err(e) => self.step_refused(e),
        }
    }
}

/// The run asked for steps its journal did not record: end the attempt.
fn diverged<T>(mismatch: &JournalMismatch) -> HostReply<T> {
    HostReply::Stop(model::Failure::new(
        FailureClass::JournalMismatch,
        mismatch.to_string(),
    ))
}
