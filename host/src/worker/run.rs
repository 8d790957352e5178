//! One claimed execution, start to finish: component, lease renewal, sandboxed
//! run, captured output, and the result mapped onto complete or fail.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::claimed::ClaimedTask;
use super::complete::Completer;
use super::feed::Pace;
use super::progress::Report;
use super::resolve::Resolver;
use super::share::Slot;
use super::WorkerConfig;
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::{
    AttemptCapabilities, ClaimedExecution, Completion, Failure, FailureClass, TenantId,
};
use crate::runtime::{
    AbortOnDrop, Guest, HttpLog, Prepared, RunResult, Runtime, SandboxLimits, TaskImports,
};

pub(super) struct Job {
    pub engine: Engine,
    pub runtime: Arc<Runtime>,
    pub resolver: Arc<Resolver>,
    pub config: Arc<WorkerConfig>,
    pub task: Arc<ClaimedTask>,
    pub completer: Completer,
    pub pace: Arc<Pace>,
    /// The pool slot this run holds, until its result is handed over.
    pub slot: Slot,
}

/// Storage errors on the final write are retried this often; the terminal
/// operations are idempotent for the same lease, so a retry after a lost reply
/// is safe.
const FINISH_ATTEMPTS: u32 = 5;

impl Job {
    pub(super) async fn run(self) {
        let lease = &self.task.claimed.lease;
        let span = tracing::info_span!(
            "execution",
            execution = %lease.execution_id,
            attempt = lease.attempt_index,
            kind = %self.task.claimed.kind,
        );
        self.run_inner().instrument(span).await
    }

    async fn run_inner(self) {
        let Job {
            engine,
            runtime,
            resolver,
            config,
            task,
            completer,
            pace,
            slot,
        } = self;
        let started = std::time::Instant::now();
        let limits = sandbox_limits(&config.sandbox, &task.claimed);
        let renewer = AbortOnDrop(tokio::spawn(renew_until_lost(
            engine.clone(),
            task.clone(),
            config.lease_ttl,
        )));

        let prepared = match task.load_resume_signals().await {
            Ok(()) => prepare(&engine, &runtime, &resolver, &task).await,
            Err(e) => Err(Failure::new(
                FailureClass::Transient,
                format!("loading the signals that resumed this attempt: {e}"),
            )),
        };
        let outcome = match prepared {
            Ok((component, capabilities)) => {
                let guest = Guest {
                    imports: task.clone(),
                    owner: task.lease().tenant_id.as_uuid(),
                    capabilities,
                    kind: Arc::from(task.claimed.kind.as_str()),
                };
                let outcome = runtime
                    .run(
                        &component,
                        guest,
                        &task.claimed.input,
                        &limits,
                        task.cancel.clone(),
                    )
                    .await;
                tracing::debug!(
                    elapsed_us = outcome.elapsed.as_micros() as u64,
                    instantiation_us = outcome.instantiation.as_micros() as u64,
                    setup_us = outcome.setup.as_micros() as u64,
                    teardown_us = outcome.teardown.as_micros() as u64,
                    "guest returned"
                );
                metrics::histogram!("flowfabric_guest_run_seconds")
                    .record(outcome.elapsed.as_secs_f64());
                save_output(&task, "stdout", &outcome.stdout).await;
                save_output(&task, "stderr", &outcome.stderr).await;
                record_http(&task, &outcome.http).await;
                outcome.result
            }
            Err(failure) => RunResult::Failed(failure),
        };
        drop(renewer);
        // A completion carries the progress left to write; any other end
        // writes it first.
        let progress = match &outcome {
            RunResult::Completed(_) => task.progress.take(),
            _ => {
                task.flush_progress().await;
                None
            }
        };
        // How long the slot was busy, not the guest alone: what sets how
        // fast the slots get through what is claimed ahead.
        pace.record(started.elapsed());
        finish(&engine, &completer, &task, outcome, progress, slot).await;
    }
}

/// The worker's sandbox limits, tightened by the execution's attempt timeout
/// and its tenant's ceilings: the smallest of each applies.
fn sandbox_limits(base: &SandboxLimits, claimed: &ClaimedExecution) -> SandboxLimits {
    let mut limits = base.clone();
    if let Some(ms) = claimed.policy.timeouts.attempt_timeout_ms {
        limits.timeout = limits.timeout.min(Duration::from_millis(ms));
    }
    if let Some(timeout) = claimed.ceilings.timeout {
        limits.timeout = limits.timeout.min(timeout);
    }
    if let Some(memory) = claimed.ceilings.memory_bytes {
        limits.memory_bytes = limits.memory_bytes.min(memory);
    }
    limits
}

/// The component to run and what it may use.
async fn prepare(
    engine: &Engine,
    runtime: &Runtime,
    resolver: &Resolver,
    task: &ClaimedTask,
) -> Result<(Prepared, Arc<AttemptCapabilities>), Failure> {
    let component = component(engine, runtime, resolver, task).await?;
    let capabilities = resolver
        .capabilities(engine, task.lease().tenant_id, &task.claimed.kind)
        .await
        .map_err(|e| {
            Failure::new(
                FailureClass::Internal,
                format!("reading the component's grant: {e}"),
            )
        })?;
    Ok((component, capabilities))
}

async fn component(
    engine: &Engine,
    runtime: &Runtime,
    resolver: &Resolver,
    task: &ClaimedTask,
) -> Result<Prepared, Failure> {
    let tenant = task.lease().tenant_id;
    let kind = &task.claimed.kind;
    let version = resolver
        .latest(engine, tenant, kind)
        .await
        .map_err(|e| Failure::new(FailureClass::Internal, format!("looking up component: {e}")))?
        .ok_or_else(|| {
            Failure::new(
                FailureClass::Permanent,
                format!("no component is registered for kind `{kind}`"),
            )
        })?;
    runtime
        .prepare(&version.digest, || {
            engine.backend().component_wasm(tenant, &version.digest)
        })
        .await
        .map_err(|e| Failure::new(FailureClass::Internal, format!("preparing component: {e}")))
}

async fn save_output(task: &ClaimedTask, stream: &str, bytes: &[u8]) {
    if bytes.is_empty() || task.is_lease_lost() {
        return;
    }
    if let Err(e) = task.frame(stream, bytes).await {
        tracing::debug!(stream, error = ?e, "captured output not saved");
    }
}

/// The guest's HTTP requests, into the attempt's log (one `http` frame
/// each: method, origin, status, bytes, duration, whether a kept connection
/// carried it; never paths, headers or bodies), and what they used and was
/// not reported yet into the budgets, in one report (see the runtime's
/// `http_usage`).
async fn record_http(task: &ClaimedTask, log: &HttpLog) {
    if task.is_lease_lost() {
        return;
    }
    let mut frames: Vec<Vec<u8>> = log
        .exchanges
        .iter()
        .map(|e| {
            serde_json::json!({
                "method": e.method,
                "origin": e.origin,
                "status": e.status,
                "bytes_out": e.bytes_out,
                "bytes_in": e.bytes_in,
                "duration_ms": e.duration.as_millis() as u64,
                "error": e.error,
                "reused_connection": e.reused_connection,
            })
            .to_string()
            .into_bytes()
        })
        .collect();
    if log.unlisted > 0 {
        let note = serde_json::json!({ "unlisted_requests": log.unlisted });
        frames.push(note.to_string().into_bytes());
    }
    // One write for the whole log, not one a request.
    if !frames.is_empty() {
        if let Err(err) = task.frames("http", &frames).await {
            tracing::debug!(error = ?err, "http log not saved");
        }
    }
    if !log.usage.is_empty() {
        if let Err(err) = task.report_usage_many(log.usage.clone(), None).await {
            tracing::debug!(error = ?err, "http usage not reported");
        }
    }
}

/// A result over the tenant's (or the installation's) limit, or that its
/// storage quota has no room for, cannot be recorded: it ends the attempt as
/// a `limit_exceeded` failure (never retried) instead. If the tenant's limits
/// cannot be read, the installation's still applies here.
async fn refuse_oversized(engine: &Engine, tenant: TenantId, result: RunResult) -> RunResult {
    match result {
        RunResult::Completed(output) => match engine.check_tenant_result(tenant, &output).await {
            Ok(()) => RunResult::Completed(output),
            Err(e) if !is_refusal(&e) => {
                tracing::warn!(error = %e, "reading the tenant's result limit failed");
                match engine.check_result(&output) {
                    Ok(()) => RunResult::Completed(output),
                    Err(e) => unrecordable(e),
                }
            }
            Err(e) => unrecordable(e),
        },
        other => other,
    }
}

fn unrecordable(e: EngineError) -> RunResult {
    tracing::info!(error = %e, "result refused; failing the attempt");
    RunResult::Failed(Failure::new(FailureClass::LimitExceeded, e.to_string()))
}

/// Whether storage refused what was written (rather than failing to write
/// it, or the lease being gone): writing it again cannot succeed.
fn is_refusal(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::PayloadTooLarge { .. }
            | EngineError::LimitExceeded { .. }
            | EngineError::QuotaExceeded { .. }
            | EngineError::InvalidInput { .. }
    )
}

fn record_failed_write(written: crate::error::Result<()>) {
    let outcome = match &written {
        Ok(()) => "failed",
        Err(e) => {
            tracing::warn!(error = %e, "outcome not recorded");
            return;
        }
    };
    metrics::counter!("flowfabric_attempts_finished_total", "outcome" => outcome).increment(1);
}

async fn renew_until_lost(engine: Engine, task: Arc<ClaimedTask>, ttl: Duration) {
    let every = ttl / 3;
    // The lease counts from the claim, which may have been a moment before
    // the run (claimed ahead).
    let mut next = tokio::time::Instant::from_std(task.claimed_at) + every;
    loop {
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + every;
        match engine.renew(task.lease(), ttl).await {
            Ok(_) => task.renewal_outcome(true),
            Err(
                e @ (EngineError::StaleLease { .. }
                | EngineError::NotActive { .. }
                | EngineError::NotFound { .. }),
            ) => {
                tracing::info!(reason = %e, "lease lost; stopping the guest");
                task.mark_lease_lost();
                return;
            }
            Err(e) => {
                task.renewal_outcome(false);
                tracing::warn!(error = %e, "lease renewal failed; retrying");
            }
        }
    }
}

/// Record the run's outcome. A result is handed to the completer, and the
/// slot freed, before the write commits; other outcomes keep the slot until
/// they are written.
async fn finish(
    engine: &Engine,
    completer: &Completer,
    task: &ClaimedTask,
    result: RunResult,
    progress: Option<Report>,
    slot: Slot,
) {
    let lease = task.lease();
    let mut slot = Some(slot);
    let result = refuse_oversized(engine, lease.tenant_id, result).await;
    if let RunResult::Released(release) = result {
        tracing::debug!(
            outcome = release.as_str(),
            "the guest let go of its execution"
        );
        metrics::counter!("flowfabric_attempts_finished_total", "outcome" => release.as_str())
            .increment(1);
        return;
    }
    if task.is_lease_lost() {
        tracing::info!("lease lost before the run ended; nothing recorded");
        metrics::counter!("flowfabric_attempts_finished_total", "outcome" => "lease_lost")
            .increment(1);
        return;
    }
    let progress = progress.as_ref().map(Report::as_progress);
    for attempt in 1..=FINISH_ATTEMPTS {
        let written = match &result {
            RunResult::Completed(output) if attempt == 1 => {
                let completion = Completion {
                    lease,
                    result: output,
                    progress,
                };
                let queued = completer.queue(&completion).await;
                drop(slot.take());
                completer
                    .written(queued, &completion)
                    .await
                    .map(|()| "completed")
            }
            RunResult::Completed(output) => engine
                .complete_with(&Completion {
                    lease,
                    result: output,
                    progress,
                })
                .await
                .map(|()| "completed"),
            RunResult::Failed(failure) => {
                engine.fail(lease, failure.clone()).await.map(|_| "failed")
            }
            // Stopped by the pool while the lease was healthy: shutting down.
            RunResult::Released(_) => unreachable!("handled above"),
            RunResult::Cancelled => super::release(engine, lease).await.map(|()| "released"),
        };
        match written {
            Ok(what) => {
                tracing::debug!(outcome = what, "execution attempt recorded");
                metrics::counter!("flowfabric_attempts_finished_total", "outcome" => what)
                    .increment(1);
                return;
            }
            // Storage refused the result itself (too large, over a limit):
            // the same write would be refused again, so the attempt fails
            // for good, at once, rather than leave its lease to expire and
            // be run again.
            Err(e) if is_refusal(&e) && matches!(result, RunResult::Completed(_)) => {
                tracing::info!(error = %e, "result refused; failing the attempt");
                let failure = Failure::new(FailureClass::LimitExceeded, e.to_string());
                let failed = engine.fail(lease, failure).await;
                record_failed_write(failed.map(|_| ()));
                return;
            }
            Err(e) if e.is_retryable() && attempt < FINISH_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "recording the outcome failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "outcome not recorded");
                return;
            }
        }
    }
}
