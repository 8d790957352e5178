//! Write FlowFabric tasks in Rust.
//!
//! ```ignore
//! struct Echo;
//! impl flowfabric_guest::Task for Echo {
//!     fn run(input: Vec<u8>) -> Result<Vec<u8>, flowfabric_guest::TaskError> {
//!         flowfabric_guest::progress(50, "echoing");
//!         Ok(input)
//!     }
//! }
//! flowfabric_guest::export_task!(Echo);
//! ```
//!
//! The functions here call the host imports of the `claimed-task` interface; the
//! raw bindings stay available in [`bindings`]. Side effects that must
//! happen once per execution go in [`step`]s, and [`sleep`] waits durably
//! (see [`steps`]). What a component's grant allows beyond that is in
//! [`http`] (outbound requests), [`config`] (config values and secrets).

pub mod config;
pub mod http;
pub mod steps;

pub use steps::{sleep, step, step_bytes};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "task",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_task_world",
        default_bindings_module: "flowfabric_guest::bindings",
    });
}

pub use bindings::flowfabric::task::claimed_task as host;
pub use bindings::flowfabric::task::types::{
    AttemptType, Child, FailureClass, HostError, LogLevel, ResumeCondition, Signal, StepOutcome,
    StepStart, StoredFrame, StreamMode, TaskError, TaskInfo, TimeoutBehavior, UsageResult,
    Waitpoint,
};
/// Implement this for your task type, then call [`export_task!`].
pub use bindings::Guest as Task;

/// Export a type implementing [`Task`] as this component's `run`.
#[macro_export]
macro_rules! export_task {
    ($ty:ident) => {
        $crate::bindings::export_task_world!($ty);
    };
}

impl TaskError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Transient,
            message: message.into(),
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: FailureClass::Permanent,
            message: message.into(),
        }
    }
}

impl From<HostError> for TaskError {
    fn from(e: HostError) -> Self {
        let class = match e {
            HostError::Invalid(_) | HostError::Unsupported(_) => FailureClass::Permanent,
            _ => FailureClass::Transient,
        };
        let message = match e {
            HostError::LeaseLost => "lease lost".to_string(),
            HostError::Invalid(m) => format!("invalid: {m}"),
            HostError::LimitExceeded(m) => format!("limit exceeded: {m}"),
            HostError::Unsupported(m) => format!("unsupported: {m}"),
            HostError::Unavailable(m) => format!("unavailable: {m}"),
        };
        Self { class, message }
    }
}

/// The running execution.
pub fn info() -> TaskInfo {
    host::info()
}

/// Report progress; errors (a lost lease) are returned for callers that care.
pub fn progress(percent: u8, message: &str) -> Result<(), HostError> {
    host::progress(percent, message)
}

/// Append a durable frame to this attempt's stream; returns its sequence number.
pub fn frame(frame_type: &str, payload: &[u8]) -> Result<u64, HostError> {
    host::append_frame(frame_type, payload, StreamMode::Durable)
}

/// Merge `patch` (a JSON object, RFC 7396) into the attempt's summary document.
pub fn summary(frame_type: &str, patch_json: &str) -> Result<u64, HostError> {
    host::append_frame(frame_type, patch_json.as_bytes(), StreamMode::Summary)
}

/// A frame for live readers only: the host keeps a window of the newest.
pub fn live_frame(frame_type: &str, payload: &[u8]) -> Result<u64, HostError> {
    host::append_frame(frame_type, payload, StreamMode::BestEffort)
}

pub fn log(level: LogLevel, message: &str) {
    host::log(level, message)
}

/// False once the lease is lost, or after three renewals failed in a row:
/// check it before a side effect that must not happen twice.
pub fn lease_healthy() -> bool {
    host::lease_healthy()
}

/// Renewals of the lease that failed in a row since the last success.
pub fn renewal_failures() -> u32 {
    host::renewal_failures()
}

/// Park this execution for `duration` (1 ms to 30 days), for example after
/// an upstream's `Retry-After`. Does not return when it succeeds: the run
/// stops here, and a new attempt (type `delayed`) starts `run` from the top
/// at that time, with the steps recorded so far kept. Not counted as a retry.
pub fn delay(duration: std::time::Duration) -> Result<(), HostError> {
    host::delay(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// End this execution for good as `cancelled`, with `reason`. Does not
/// return when it succeeds.
pub fn cancel(reason: &str) -> Result<(), HostError> {
    host::cancel(reason)
}

/// Report usage of one dimension against the budgets covering this
/// execution; a repeat with the same `dedup_key` is not applied twice.
pub fn report_usage(
    dimension: &str,
    delta: u64,
    dedup_key: Option<&str>,
) -> Result<UsageResult, HostError> {
    host::report_usage(dimension, delta, dedup_key)
}

/// One report over several dimensions (1 to 16, each once), applied all
/// together or not at all.
pub fn report_usage_many(
    report: &[(String, u64)],
    dedup_key: Option<&str>,
) -> Result<UsageResult, HostError> {
    host::report_usage_many(report, dedup_key)
}

/// Create (or get back) a waitpoint; hand its token to whoever should signal.
pub fn waitpoint(key: &str, timeout_ms: Option<u64>) -> Result<Waitpoint, HostError> {
    host::create_waitpoint(key, timeout_ms)
}

/// Suspend until `condition` holds. Returns only if signals already buffered
/// satisfy it; otherwise the run stops here and, once resumed, `run` starts
/// again from the top with [`resume_signals`] saying what woke it.
pub fn suspend(
    condition: &ResumeCondition,
    timeout_ms: Option<u64>,
    on_timeout: TimeoutBehavior,
) -> Result<Vec<Signal>, HostError> {
    host::suspend(condition, timeout_ms, on_timeout)
}

/// [`suspend`], saying why (`reason`, a short code such as
/// `waiting_for_approval`, shown to operators) and which signal names count
/// toward the condition (all when `signal_names` is empty).
pub fn suspend_with(
    condition: &ResumeCondition,
    reason: Option<&str>,
    signal_names: &[String],
    timeout_ms: Option<u64>,
    on_timeout: TimeoutBehavior,
) -> Result<Vec<Signal>, HostError> {
    host::suspend_with(condition, reason, signal_names, timeout_ms, on_timeout)
}

/// Frames this execution appended in `attempt` (0: the current one) after
/// sequence `after`, at most `limit` (1 to 100). A run started again after
/// a suspension is the same attempt, so it reads what it wrote before.
pub fn read_frames(attempt: u32, after: u64, limit: u32) -> Result<Vec<StoredFrame>, HostError> {
    host::read_frames(attempt, after, limit)
}

/// The summary document (JSON) of `attempt` (0: the current one), if any.
pub fn read_summary(attempt: u32) -> Result<Option<Vec<u8>>, HostError> {
    host::read_summary(attempt)
}

/// The signals that resumed this run (empty on a first run).
pub fn resume_signals() -> Vec<Signal> {
    host::resume_signals()
}

/// Start a child execution of `kind` in this execution's flow; returns its id.
/// Without a `key`, the nth call of a run is `child-N`: a run that spawns the
/// same children in the same order after a resume gets the same ones back.
pub fn spawn_child(kind: &str, input: &[u8], key: Option<&str>) -> Result<String, HostError> {
    host::spawn_child(kind, input, key)
}

/// Every child this execution spawned, once all have ended. If some have
/// not, the run stops here and starts again from the top when the last one
/// ends; this call then returns them.
pub fn wait_children(
    timeout_ms: Option<u64>,
    on_timeout: TimeoutBehavior,
) -> Result<Vec<Child>, HostError> {
    host::wait_children(timeout_ms, on_timeout)
}
