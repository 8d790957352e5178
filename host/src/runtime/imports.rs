//! The guest's `claimed-task` imports, forwarded to a [`TaskImports`] object.
//!
//! The runtime knows nothing of storage: the worker implements [`TaskImports`]
//! for the execution it claimed, fencing every call with its lease. One span per
//! host call makes a slow or failing import visible in traces.

use async_trait::async_trait;
use tracing::Instrument;

use super::bindings::flowfabric::task::{claimed_task, types};
use super::bindings::{
    Child, HostError, LogLevel, ResumeCondition, Signal, StepOutcome, StepStart, StoredFrame,
    StreamMode, TaskInfo, TimeoutBehavior, UsageResult, Waitpoint,
};
use super::outbound::Outbound;
use super::sandbox::{StopReason, StoreState};
use crate::model::Failure;

/// The answer to a call that may end the run instead of returning
/// (`suspend`, `wait-children`, the steps, `sleep`, `delay` and `cancel`).
#[derive(Debug)]
pub enum HostReply<T> {
    /// The guest carries on with this.
    Continue(T),
    /// The execution left this run's hands (its lease is already released):
    /// the runtime stops the guest.
    Released(Release),
    /// The attempt must end with this failure (its journal diverged, or a
    /// step could not be recorded): the runtime stops the guest.
    Stop(Failure),
}

/// How a guest's own call let go of its execution before `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Waiting for signals, children or a wake time.
    Suspended,
    /// Parked until a time the guest chose (`delay`).
    Delayed,
    /// Ended for good by the guest (`cancel`).
    Cancelled,
}

impl Release {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Suspended => "suspended",
            Self::Delayed => "delayed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What a running guest may do to the execution it was started for.
#[async_trait]
pub trait TaskImports: Send + Sync + 'static {
    fn info(&self) -> TaskInfo;
    async fn progress(&self, percent: u8, message: String) -> Result<(), HostError>;
    async fn append_frame(
        &self,
        frame_type: String,
        payload: Vec<u8>,
        mode: StreamMode,
    ) -> Result<u64, HostError>;
    async fn report_usage(
        &self,
        dimension: String,
        delta: u64,
        dedup_key: Option<String>,
    ) -> Result<UsageResult, HostError>;
    async fn report_usage_many(
        &self,
        report: Vec<(String, u64)>,
        dedup_key: Option<String>,
    ) -> Result<UsageResult, HostError>;
    /// Whether a budget may limit `dimension` for this execution: the host
    /// must then report each use as it happens; otherwise it may add its
    /// uses up and report them when the attempt ends.
    async fn usage_limited(&self, dimension: &str) -> Result<bool, HostError>;
    async fn create_waitpoint(
        &self,
        key: String,
        timeout_ms: Option<u64>,
    ) -> Result<Waitpoint, HostError>;
    async fn suspend(
        &self,
        condition: ResumeCondition,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError>;
    async fn suspend_with(
        &self,
        condition: ResumeCondition,
        reason: Option<String>,
        signal_names: Vec<String>,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Signal>>, HostError>;
    async fn spawn_child(
        &self,
        kind: String,
        input: Vec<u8>,
        key: Option<String>,
    ) -> Result<String, HostError>;
    async fn wait_children(
        &self,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> Result<HostReply<Vec<Child>>, HostError>;
    async fn step_begin(&self, name: String) -> Result<HostReply<StepStart>, HostError>;
    async fn step_record(
        &self,
        position: u32,
        outcome: StepOutcome,
    ) -> Result<HostReply<()>, HostError>;
    async fn sleep(&self, duration_ms: u64) -> Result<HostReply<()>, HostError>;
    async fn delay(&self, duration_ms: u64) -> Result<HostReply<()>, HostError>;
    async fn cancel(&self, reason: String) -> Result<HostReply<()>, HostError>;
    async fn read_frames(
        &self,
        attempt: u32,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredFrame>, HostError>;
    async fn read_summary(&self, attempt: u32) -> Result<Option<Vec<u8>>, HostError>;
    fn resume_signals(&self) -> Vec<Signal>;
    fn lease_healthy(&self) -> bool;
    fn renewal_failures(&self) -> u32;
    async fn log(&self, level: LogLevel, message: String);
}

impl types::Host for StoreState {}

impl StoreState {
    /// Pass a reply through to the guest, unless the run must end: when the
    /// execution suspended (the suspension is recorded and the lease
    /// released; `run` starts again from the top when it resumes), or the
    /// host ended the attempt. Either way, unwind the guest.
    fn unless_stopped<T>(
        &mut self,
        reply: wasmtime::Result<Result<HostReply<T>, HostError>>,
    ) -> wasmtime::Result<Result<T, HostError>> {
        match reply? {
            Ok(HostReply::Continue(value)) => Ok(Ok(value)),
            Err(e) => Ok(Err(e)),
            Ok(HostReply::Released(release)) => {
                self.stopped = Some(StopReason::Released(release));
                Err(wasmtime::Error::msg(format!(
                    "the execution was {}",
                    release.as_str()
                )))
            }
            Ok(HostReply::Stop(failure)) => {
                let message = failure.message.clone();
                self.stopped = Some(StopReason::Failed(failure));
                Err(wasmtime::Error::msg(message))
            }
        }
    }
}

/// `call`, a call that may let go of the lease, after the attempt's HTTP
/// usage counted so far is reported: a report needs the lease.
async fn settled<T>(outbound: &Outbound, call: impl std::future::Future<Output = T>) -> T {
    outbound.settle_usage().await;
    call.await
}

/// One host call: counted, traced, and made without holding a turn on the
/// guest threads (it waits on the host, not the CPU; see `fair`).
macro_rules! host_call {
    ($cpu:expr, $name:literal, $body:expr) => {{
        metrics::counter!("flowfabric_host_calls_total", "function" => $name).increment(1);
        $cpu.give_up();
        let reply = $body
            .instrument(tracing::debug_span!("host_call", name = $name))
            .await;
        $cpu.take_turn().await;
        Ok(reply)
    }};
}

impl claimed_task::Host for StoreState {
    async fn info(&mut self) -> wasmtime::Result<TaskInfo> {
        Ok(self.imports.info())
    }

    async fn progress(
        &mut self,
        percent: u8,
        message: String,
    ) -> wasmtime::Result<Result<(), HostError>> {
        host_call!(
            self.cpu,
            "progress",
            self.imports.progress(percent, message)
        )
    }

    async fn append_frame(
        &mut self,
        frame_type: String,
        payload: Vec<u8>,
        mode: StreamMode,
    ) -> wasmtime::Result<Result<u64, HostError>> {
        host_call!(
            self.cpu,
            "append_frame",
            self.imports.append_frame(frame_type, payload, mode)
        )
    }

    async fn report_usage(
        &mut self,
        dimension: String,
        delta: u64,
        dedup_key: Option<String>,
    ) -> wasmtime::Result<Result<UsageResult, HostError>> {
        host_call!(
            self.cpu,
            "report_usage",
            self.imports.report_usage(dimension, delta, dedup_key)
        )
    }

    async fn report_usage_many(
        &mut self,
        report: Vec<(String, u64)>,
        dedup_key: Option<String>,
    ) -> wasmtime::Result<Result<UsageResult, HostError>> {
        host_call!(
            self.cpu,
            "report_usage_many",
            self.imports.report_usage_many(report, dedup_key)
        )
    }

    async fn create_waitpoint(
        &mut self,
        key: String,
        timeout_ms: Option<u64>,
    ) -> wasmtime::Result<Result<Waitpoint, HostError>> {
        host_call!(
            self.cpu,
            "create_waitpoint",
            self.imports.create_waitpoint(key, timeout_ms)
        )
    }

    async fn suspend(
        &mut self,
        condition: ResumeCondition,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> wasmtime::Result<Result<Vec<Signal>, HostError>> {
        let reply = host_call!(
            self.cpu,
            "suspend",
            settled(
                &self.outbound,
                self.imports.suspend(condition, timeout_ms, on_timeout)
            )
        );
        self.unless_stopped(reply)
    }

    async fn suspend_with(
        &mut self,
        condition: ResumeCondition,
        reason: Option<String>,
        signal_names: Vec<String>,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> wasmtime::Result<Result<Vec<Signal>, HostError>> {
        let reply = host_call!(
            self.cpu,
            "suspend_with",
            settled(
                &self.outbound,
                self.imports
                    .suspend_with(condition, reason, signal_names, timeout_ms, on_timeout)
            )
        );
        self.unless_stopped(reply)
    }

    async fn spawn_child(
        &mut self,
        kind: String,
        input: Vec<u8>,
        key: Option<String>,
    ) -> wasmtime::Result<Result<String, HostError>> {
        host_call!(
            self.cpu,
            "spawn_child",
            self.imports.spawn_child(kind, input, key)
        )
    }

    async fn wait_children(
        &mut self,
        timeout_ms: Option<u64>,
        on_timeout: TimeoutBehavior,
    ) -> wasmtime::Result<Result<Vec<Child>, HostError>> {
        let reply = host_call!(
            self.cpu,
            "wait_children",
            settled(
                &self.outbound,
                self.imports.wait_children(timeout_ms, on_timeout)
            )
        );
        self.unless_stopped(reply)
    }

    async fn step_begin(&mut self, name: String) -> wasmtime::Result<Result<StepStart, HostError>> {
        let reply = host_call!(self.cpu, "step_begin", self.imports.step_begin(name));
        self.unless_stopped(reply)
    }

    async fn step_record(
        &mut self,
        position: u32,
        outcome: StepOutcome,
    ) -> wasmtime::Result<Result<(), HostError>> {
        let reply = host_call!(
            self.cpu,
            "step_record",
            self.imports.step_record(position, outcome)
        );
        self.unless_stopped(reply)
    }

    async fn sleep(&mut self, duration_ms: u64) -> wasmtime::Result<Result<(), HostError>> {
        let reply = host_call!(
            self.cpu,
            "sleep",
            settled(&self.outbound, self.imports.sleep(duration_ms))
        );
        self.unless_stopped(reply)
    }

    async fn delay(&mut self, duration_ms: u64) -> wasmtime::Result<Result<(), HostError>> {
        let reply = host_call!(
            self.cpu,
            "delay",
            settled(&self.outbound, self.imports.delay(duration_ms))
        );
        self.unless_stopped(reply)
    }

    async fn cancel(&mut self, reason: String) -> wasmtime::Result<Result<(), HostError>> {
        let reply = host_call!(
            self.cpu,
            "cancel",
            settled(&self.outbound, self.imports.cancel(reason))
        );
        self.unless_stopped(reply)
    }

    async fn read_frames(
        &mut self,
        attempt: u32,
        after: u64,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<StoredFrame>, HostError>> {
        host_call!(
            self.cpu,
            "read_frames",
            self.imports.read_frames(attempt, after, limit)
        )
    }

    async fn read_summary(
        &mut self,
        attempt: u32,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        host_call!(self.cpu, "read_summary", self.imports.read_summary(attempt))
    }

    async fn resume_signals(&mut self) -> wasmtime::Result<Vec<Signal>> {
        Ok(self.imports.resume_signals())
    }

    async fn lease_healthy(&mut self) -> wasmtime::Result<bool> {
        Ok(self.imports.lease_healthy())
    }

    async fn renewal_failures(&mut self) -> wasmtime::Result<u32> {
        Ok(self.imports.renewal_failures())
    }

    async fn log(&mut self, level: LogLevel, message: String) -> wasmtime::Result<()> {
        host_call!(self.cpu, "log", self.imports.log(level, message))
    }
}
