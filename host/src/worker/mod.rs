//! The worker pool: claims executions and runs each as a sandboxed component.
//!
//! One claim loop feeds `slots` concurrent runs. It claims only as many
//! executions as it has free slots (never holding leases it cannot serve), sleeps
//! on the engine's work signal (LISTEN/NOTIFY) with polling as the fallback, and
//! for each run keeps the lease alive at a third of its TTL. A lost lease (expired
//! and reclaimed, or the execution cancelled) stops the guest at its next epoch
//! tick; nothing it does afterwards reaches storage, because every write is
//! fenced. Results are group-committed: runs that end while a completion write
//! is in flight are completed together by the next one (see `complete`).
//!
//! Shutdown drains: claiming stops, in-flight runs get `drain_timeout` to finish,
//! and the rest are stopped and released back to the queue (made runnable again
//! at once, without counting a retry). Dropping the pool instead aborts
//! everything, as a crash would: leases then expire and the scanners reclaim.

mod claimed;
mod complete;

use claimed::ClaimedTask;
use complete::Completer;
mod resolve;
mod run;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::engine::Engine;
use crate::model::{ClaimRequest, ExecutionId, DEFAULT_LANE};
use crate::runtime::{CancelFlag, Runtime, SandboxLimits};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Stable name of this worker (host name, deployment).
    pub worker_id: String,
    /// Concurrent executions.
    pub slots: usize,
    pub lanes: Vec<String>,
    pub capabilities: Vec<String>,
    pub lease_ttl: Duration,
    /// Claim again after this long even without a wake-up.
    pub poll_interval: Duration,
    /// Most executions taken in one claim.
    pub claim_batch: u32,
    pub sandbox: SandboxLimits,
    pub drain_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: "flowfabric-worker".into(),
            slots: 16,
            lanes: vec![DEFAULT_LANE.into()],
            capabilities: Vec::new(),
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            claim_batch: 64,
            sandbox: SandboxLimits::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Completion writes in flight at once; completions that arrive meanwhile are
/// written together by the next (see `complete`).
const COMPLETION_WRITERS: usize = 2;

/// How long, under a backlog, the claim loop waits for more slots to free
/// before claiming for the ones it has.
const CLAIM_LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// Runs that are in flight, so shutdown and revocations can stop them.
type Running = Arc<Mutex<HashMap<ExecutionId, Arc<ClaimedTask>>>>;

pub struct WorkerPool {
    stop: watch::Sender<bool>,
    claim_loop: tokio::task::JoinHandle<JoinSet<()>>,
    running: Running,
    drain_timeout: Duration,
}

impl WorkerPool {
    pub fn start(engine: Engine, runtime: Arc<Runtime>, config: WorkerConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let running: Running = Arc::default();
        let drain_timeout = config.drain_timeout;
        let claim_loop = tokio::spawn(claim_loop(
            engine,
            runtime,
            config,
            stopped,
            running.clone(),
        ));
        Self {
            stop,
            claim_loop,
            running,
            drain_timeout,
        }
    }

    /// Stop claiming, let in-flight runs finish within the drain timeout, then
    /// stop and release the rest.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let mut runs = match (&mut self.claim_loop).await {
            Ok(runs) => runs,
            Err(e) => {
                tracing::error!(error = %e, "claim loop failed");
                return;
            }
        };
        let drained = tokio::time::timeout(self.drain_timeout, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let tasks: Vec<Arc<ClaimedTask>> = self
                .running
                .lock()
                .expect("running lock")
                .values()
                .cloned()
                .collect();
            tracing::info!(
                count = tasks.len(),
                "drain timeout: releasing in-flight executions"
            );
            for task in tasks {
                task.cancel.cancel();
            }
            while runs.join_next().await.is_some() {}
        }
    }
}

/// Stop running guests whose lease was revoked as soon as the notification
/// arrives; lease renewal still catches whatever a lost notification misses.
async fn watch_revocations(engine: &Engine, running: Running) -> Option<AbortOnDrop> {
    let mut revoked = match engine.revocations().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no revocation notifications; relying on lease renewal");
            return None;
        }
    };
    let task = tokio::spawn(async move {
        loop {
            match revoked.recv().await {
                Ok(id) => {
                    let task = running.lock().expect("running lock").get(&id).cloned();
                    if let Some(task) = task {
                        tracing::info!(execution = %id, "lease revoked; stopping the guest");
                        task.mark_lease_lost();
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Some(AbortOnDrop(task))
}

/// A background task that must not outlive its owner.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Dropping the pool without `shutdown` stops everything at once, like a crash:
/// no outcome is recorded and the leases expire.
impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.claim_loop.abort();
    }
}

async fn claim_loop(
    engine: Engine,
    runtime: Arc<Runtime>,
    config: WorkerConfig,
    mut stopped: watch::Receiver<bool>,
    running: Running,
) -> JoinSet<()> {
    let config = Arc::new(config);
    let slots = Arc::new(Semaphore::new(config.slots.max(1)));
    let mut runs = JoinSet::new();
    let resolver = Arc::new(resolve::Resolver::default());
    let completer = Completer::start(engine.clone(), COMPLETION_WRITERS);
    let instance = Uuid::now_v7().to_string();
    let _revocations = watch_revocations(&engine, running.clone()).await;
    let mut work = match engine.work_signal().await {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "no work notifications; polling only");
            None
        }
    };
    let mut backlogged = false;
    loop {
        // Reap finished runs so the set does not grow without bound.
        while runs.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closes"),
            _ = stopped.wait_for(|s| *s) => return runs,
        };
        let mut permits = vec![first];
        // Under a backlog, a slot frees as each run's completion commits, so
        // claiming the moment one is free would claim one at a time. Wait a
        // moment for more to free, to claim them in one statement; with no
        // backlog, claim at once (latency matters more than batching then).
        let linger = tokio::time::Instant::now() + CLAIM_LINGER;
        while permits.len() < config.claim_batch as usize {
            match slots.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) if backlogged => {
                    match tokio::time::timeout_at(linger, slots.clone().acquire_owned()).await {
                        Ok(p) => permits.push(p.expect("semaphore never closes")),
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        if let Some(w) = work.as_mut() {
            w.borrow_and_update();
        }
        let request = ClaimRequest {
            worker_id: config.worker_id.clone(),
            worker_instance: instance.clone(),
            lanes: config.lanes.clone(),
            capabilities: config.capabilities.clone(),
            limit: permits.len() as u32,
            lease_ttl: config.lease_ttl,
        };
        let wanted = permits.len();
        let claimed = match engine.claim(&request).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "claim failed; backing off");
                Vec::new()
            }
        };
        let got = claimed.len();
        backlogged = got == wanted;
        metrics::counter!("flowfabric_claims_total").increment(1);
        metrics::counter!("flowfabric_claimed_executions_total").increment(got as u64);
        for (claimed, permit) in claimed.into_iter().zip(permits.drain(..)) {
            let id = claimed.lease.execution_id;
            let task = Arc::new(ClaimedTask::new(
                engine.clone(),
                claimed,
                CancelFlag::default(),
            ));
            running
                .lock()
                .expect("running lock")
                .insert(id, task.clone());
            let job = run::Job {
                engine: engine.clone(),
                runtime: runtime.clone(),
                resolver: resolver.clone(),
                config: config.clone(),
                task,
                completer: completer.clone(),
            };
            let running = running.clone();
            runs.spawn(async move {
                job.run().await;
                running.lock().expect("running lock").remove(&id);
                drop(permit);
            });
        }
        drop(permits);
        if got < wanted {
            // Nothing more to claim right now: sleep until notified or polled.
            let notified = async {
                match work.as_mut() {
                    Some(w) => {
                        let _ = w.changed().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(config.poll_interval) => {}
                _ = stopped.wait_for(|s| *s) => return runs,
            }
        }
    }
}
