//! Durable steps and timers: side effects that happen once per execution,
//! however often the task runs again (after a suspension, a retry or a
//! reclaim by another worker).
//!
//! ```ignore
//! let receipt: Receipt = step("charge", || charge_card(&order))?;
//! sleep(Duration::from_secs(3600))?;
//! step("send-receipt", || send_email(&receipt))?;
//! ```
//!
//! The first run records what each step returned; a later run of the same
//! execution gets the recorded value back without running the closure. A
//! run must begin its steps in the same order under the same names each
//! time (it may add new ones after the last recorded one): a run that asks
//! for a different name where the journal recorded another fails at once
//! with the permanent class `journal_mismatch`.
//!
//! A step that fails transiently is not recorded: the run fails, and the
//! retry runs the step again. A permanent failure is recorded, and later
//! runs get the same failure back.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::host;
use crate::{FailureClass, StepOutcome, StepStart, TaskError};

/// Run `f` as the durable step `name`, its result kept as JSON.
pub fn step<T, F>(name: &str, f: F) -> Result<T, TaskError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, TaskError>,
{
    let bytes = step_bytes(name, || {
        let value = f()?;
        serde_json::to_vec(&value).map_err(|e| {
            TaskError::permanent(format!(
                "step `{name}` returned a value JSON cannot hold: {e}"
            ))
        })
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        TaskError::permanent(format!(
            "step `{name}`: the recorded result does not decode as the type asked for: {e}"
        ))
    })
}

/// Run `f` as the durable step `name`, its result kept as raw bytes.
pub fn step_bytes<F>(name: &str, f: F) -> Result<Vec<u8>, TaskError>
where
    F: FnOnce() -> Result<Vec<u8>, TaskError>,
{
    let position = match host::step_begin(name)? {
        StepStart::Completed(output) => return Ok(output),
        StepStart::Failed(message) => return Err(TaskError::permanent(message)),
        StepStart::Run(position) => position,
    };
    match f() {
        Ok(output) => {
            host::step_record(position, &StepOutcome::Completed(output.clone()))?;
            Ok(output)
        }
        Err(e) if matches!(e.class, FailureClass::Permanent) => {
            host::step_record(position, &StepOutcome::Failed(e.message.clone()))?;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// Sleep durably: the execution suspends with no instance held, and its
/// run starts again from the top at the wake time, when this same call
/// returns at once. Recorded as a step named `sleep`.
pub fn sleep(duration: Duration) -> Result<(), TaskError> {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    host::sleep(ms)?;
    Ok(())
}
