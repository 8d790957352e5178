//! The worker pool: claims executions and runs each as a sandboxed component.
//!
//! One claim loop feeds `slots` concurrent runs (see `feed`). It claims for
//! free slots, and under a backlog of short runs a few ahead of them; it sleeps
//! on the engine's work signal (LISTEN/NOTIFY) with polling as the fallback, and
//! for each run keeps the lease alive at a third of its TTL. A lost lease (expired
//! and reclaimed, or the execution cancelled) stops the guest at its next epoch
//! tick; nothing it does afterwards reaches storage, because every write is
//! fenced. Results are group-committed: runs that end while a completion write
//! is in flight are completed together by the next one (see `complete`), and
//! a run's slot frees once its result is queued for that write.
//!
//! Shutdown drains: claiming stops, in-flight runs get `drain_timeout` to finish,
//! and the rest are stopped and released back to the queue (made runnable again
//! at once, without counting a retry). Dropping the pool instead aborts
//! everything, as a crash would: leases then expire and the scanners reclaim.

mod claimed;
mod complete;
mod feed;
mod progress;
mod resolve;
mod run;
mod share;
mod steps;

pub use share::default_reserve;

use claimed::ClaimedTask;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::{Engine, Limits};
use crate::model::{ExecutionId, DEFAULT_LANE};
use crate::runtime::{AbortOnDrop, Runtime, SandboxLimits};

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
    /// Most executions taken in one claim (`None`: [`default_claim_batch`]
    /// for `slots`). Never more than the engine's `max_claim_batch`.
    pub claim_batch: Option<u32>,
    /// Under a backlog of short runs, the most executions kept claimed ahead
    /// of free slots (`None`: 64 per slot; 0: never). How many are kept
    /// follows the pace of recent runs, up to this; see `feed`.
    pub claim_ahead: Option<usize>,
    pub sandbox: SandboxLimits,
    pub drain_timeout: Duration,
    /// Slots beyond `slots` that only tenants other than one holding
    /// `slots` may use, so that one tenant's long runs never take every slot
    /// (`None`: [`default_reserve`], a quarter of `slots`; see `share`).
    pub reserved_slots: Option<usize>,
}

impl WorkerConfig {
    /// Most executions one claim asks for.
    pub fn claim_size(&self) -> usize {
        self.claim_batch
            .map_or_else(|| default_claim_batch(self.slots), |n| n.max(1) as usize)
    }

    /// Runs at once, across tenants: `slots` and the reserve.
    pub fn capacity(&self) -> usize {
        let slots = self.slots.max(1);
        slots
            + self
                .reserved_slots
                .unwrap_or_else(|| default_reserve(slots))
    }
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
            claim_batch: None,
            claim_ahead: None,
            sandbox: SandboxLimits::default(),
            drain_timeout: Duration::from_secs(30),
            reserved_slots: None,
        }
    }
}

/// The most executions a claim takes unless configured: 16 a slot, at least
/// 64 and at most the engine's default `max_claim_batch` (1,000).
///
/// Under a backlog of short runs the pool claims ahead (see `feed`), and a
/// claim's fixed cost (its round trip, statement triggers and commit) is
/// spread over the rows it takes. A fixed 64 left a 16-slot pool making claim
/// after claim of 64; sized to the pool, a 16-slot pool takes up to 256 a
/// claim and drained a backlog 11 % faster on Postgres and 22 % faster on
/// SQLite (`bench pool`, alternated builds). A pool of up to four slots
/// claims 64 as before: a fixed 256 did not help it.
pub fn default_claim_batch(slots: usize) -> usize {
    let most = Limits::default().max_claim_batch as usize;
    slots.saturating_mul(16).max(64).min(most)
}

/// Completion writes in flight at once; completions that arrive meanwhile are
/// written together by the next (see `complete`). One: each row of a batch
/// costs the database about a third of a single-row completion, and with two
/// writers the second mostly took one row at a time (`bench pool`, interleaved:
/// +4–11 % at 4 slots, +11–15 % at 16 with one).
const COMPLETION_WRITERS: usize = 1;

/// Runs that are in flight, so shutdown and revocations can stop them.
type Running = Arc<Mutex<HashMap<ExecutionId, Arc<ClaimedTask>>>>;

pub struct WorkerPool {
    stop: watch::Sender<bool>,
    claim_loop: tokio::task::JoinHandle<JoinSet<()>>,
    running: Running,
    drain_timeout: Duration,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

/// Clears the pool's liveness flag when the claim loop ends, however it ends
/// (shutdown, or a panic).
struct AliveWhileHeld(Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveWhileHeld {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

impl WorkerPool {
    pub fn start(engine: Engine, runtime: Arc<Runtime>, config: WorkerConfig) -> Self {
        let (stop, stopped) = watch::channel(false);
        let running: Running = Arc::default();
        let drain_timeout = config.drain_timeout;
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let held = AliveWhileHeld(alive.clone());
        let loop_running = running.clone();
        let claim_loop = tokio::spawn(async move {
            let _alive = held;
            feed::claim_loop(engine, runtime, config, stopped, loop_running).await
        });
        Self {
            stop,
            claim_loop,
            running,
            drain_timeout,
            alive,
        }
    }

    /// A probe that is true while the pool claims (for `/readyz`).
    pub fn liveness(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let alive = self.alive.clone();
        move || alive.load(std::sync::atomic::Ordering::Acquire)
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
async fn watch_revocations(engine: &Engine, running: Running) -> Option<AbortOnDrop<()>> {
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

/// Give an execution back to the queue unfinished, without counting a retry:
/// runnable at once by the database's clock. The time given is in the past,
/// so a worker whose clock runs ahead cannot turn the release into a delay.
async fn release(engine: &Engine, lease: &crate::model::LeaseHandle) -> crate::error::Result<()> {
    engine.delay(lease, chrono::DateTime::UNIX_EPOCH).await
}

/// Dropping the pool without `shutdown` stops everything at once, like a crash:
/// no outcome is recorded and the leases expire.
impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.claim_loop.abort();
    }
}
