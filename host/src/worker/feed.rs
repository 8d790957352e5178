//! The claim loop: keeps the pool's slots fed.
//!
//! A claim is one statement whose cost barely depends on how many rows it
//! takes. Under a backlog of short runs, a slot that frees and then waits for
//! a claim round trip spends more time waiting than running, and claiming for
//! each slot as it frees makes every claim a claim of one. So the loop *claims
//! ahead*: while the last claim came back full and recent runs were short, it
//! keeps executions leased and ready, refilled by one claim in flight while
//! the slots run, and a slot that frees takes the next at once. It refills
//! only once the ready queue is down to half, so each refill takes several
//! rows in one statement.
//!
//! How many it keeps ready is sized by the pace of recent runs: about
//! [`READY_WORK`] of work for the slots, at most `claim_ahead`. Runs of tens
//! of microseconds then get claims of dozens of rows, where a claim's fixed
//! cost is spread thin, while runs of milliseconds keep only a few waiting.
//! Nothing more is claimed ahead while the inputs of what is ready take
//! [`READY_MAX_BYTES`], since a deep queue of large inputs would be held in
//! memory.
//!
//! It claims ahead only then. A lease waiting behind a long run would keep
//! its execution from another pool's idle slot, so with long runs (or no
//! backlog) the loop claims only for free slots. Runs are short on average,
//! not each: when one long run after another takes every slot, what is ready
//! would wait behind them. So an execution that has been ready for
//! [`READY_MAX_WAIT`] goes back to the queue for another pool to take, and
//! the loop claims nothing ahead until one of its slots frees again. A ready
//! execution's lease and attempt timeout count from its claim; its lease
//! renewal is scheduled from the claim too (see `run`).
//!
//! Shutdown releases what is ready but not running back to the queue, as it
//! does for runs stopped by the drain timeout. A release is the attempt's end
//! (state `delayed`), and the next claim starts a new one.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::claimed::ClaimedTask;
use super::complete::Completer;
use super::share::Shares;
use super::{resolve, run, Running, WorkerConfig, COMPLETION_WRITERS};
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{ClaimRequest, ClaimedExecution, ExecutionId, TenantId};
use crate::runtime::{CancelFlag, Runtime};

/// Runs at least this short, on average, make claiming ahead worth its wait.
const SHORT_RUN: Duration = Duration::from_millis(20);

/// A claimed-ahead execution that has not started within this long goes back
/// to the queue.
const READY_MAX_WAIT: Duration = Duration::from_millis(250);

/// The work kept ready for the slots while claiming ahead: the ready queue's
/// depth is the number of recent runs the slots get through in this long.
/// Well under [`READY_MAX_WAIT`], so that what is ready is started in time
/// unless runs get much longer than they were.
const READY_WORK: Duration = Duration::from_millis(50);

/// The default most executions claimed ahead, per slot.
const CLAIM_AHEAD_PER_SLOT: usize = 64;

/// The pool claims nothing ahead while the inputs of what is ready take this
/// much memory (one claim may then still add its batch).
const READY_MAX_BYTES: usize = 64 << 20;

/// Completions queued for writing, per slot, before a run that ends must wait
/// to hand its result over (and keep its slot meanwhile). As many as may be
/// claimed ahead: the queue is the other side of the slots, and a flush writes
/// whatever has queued in one statement.
const QUEUED_COMPLETIONS_PER_SLOT: usize = CLAIM_AHEAD_PER_SLOT;

/// The recent length of a run: an exponentially weighted mean of the time a
/// run holds its slot (the guest, its captured output and progress), shared
/// by the runs that report it and the loop that reads it.
#[derive(Default)]
pub(super) struct Pace {
    /// Mean run time in microseconds; 0 until the first run reports.
    mean_us: AtomicU64,
}

impl Pace {
    pub(super) fn record(&self, run: Duration) {
        let us = u64::try_from(run.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.mean_us.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.mean_us.store(new, Ordering::Relaxed);
    }

    /// How many to keep claimed ahead for `slots` slots: the runs they get
    /// through in [`READY_WORK`], at most `max`; none while runs are not
    /// known to be short.
    fn ready_depth(&self, slots: usize, max: usize) -> usize {
        let us = self.mean_us.load(Ordering::Relaxed);
        if us == 0 || us >= SHORT_RUN.as_micros() as u64 {
            return 0;
        }
        let runs_per_slot = READY_WORK.as_micros() as u64 / us;
        (slots as u64).saturating_mul(runs_per_slot).min(max as u64) as usize
    }
}

/// Claimed executions waiting for a slot, oldest first, and their inputs' size.
#[derive(Default)]
struct Ready {
    tasks: VecDeque<Arc<ClaimedTask>>,
    input_bytes: usize,
}

impl Ready {
    fn push(&mut self, task: Arc<ClaimedTask>) {
        self.input_bytes += task.claimed.input.len();
        self.tasks.push_back(task);
    }

    fn pop(&mut self) -> Option<Arc<ClaimedTask>> {
        self.take(0)
    }

    /// The oldest whose tenant may start another run (see `share`).
    fn pop_startable(&mut self, shares: &Shares) -> Option<Arc<ClaimedTask>> {
        let at = self
            .tasks
            .iter()
            .position(|task| shares.may_start(task.lease().tenant_id))?;
        self.take(at)
    }

    fn take(&mut self, at: usize) -> Option<Arc<ClaimedTask>> {
        let task = self.tasks.remove(at)?;
        self.input_bytes -= task.claimed.input.len();
        Some(task)
    }

    fn oldest(&self) -> Option<&Arc<ClaimedTask>> {
        self.tasks.front()
    }

    /// How many more to claim for a ready queue `depth` deep.
    fn room(&self, depth: usize) -> usize {
        room_ahead(depth, self.tasks.len(), self.input_bytes)
    }
}

/// Room in a ready queue `depth` deep that holds `ready` executions with
/// `input_bytes` of input: none until it is down to half, so that each refill
/// takes several rows, and none while its inputs fill [`READY_MAX_BYTES`].
fn room_ahead(depth: usize, ready: usize, input_bytes: usize) -> usize {
    let room = depth.saturating_sub(ready);
    if input_bytes >= READY_MAX_BYTES || room == 0 || room * 2 < depth {
        return 0;
    }
    room
}

/// How many a claim asks for: the free slots and the room ahead, at most
/// `claim_size`. A free slot counts only while nothing is ready, or when new
/// work was announced (or the loop was woken) since the last claim. With
/// executions ready, a slot stays free only because their tenants are at
/// their share (the reserve, see `share`); claiming for it again and again
/// took one row a claim, for the tenant already at its share, at every turn
/// of the loop: under a single tenant's backlog of millisecond runs, a claim
/// of one or two for every execution.
fn claim_want(
    idle: usize,
    ahead: usize,
    nothing_ready: bool,
    news: bool,
    claim_size: usize,
) -> usize {
    let idle = if nothing_ready || news { idle } else { 0 };
    (idle + ahead).min(claim_size)
}

/// What the loop and its runs share.
struct Shared {
    engine: Engine,
    runtime: Arc<Runtime>,
    resolver: Arc<resolve::Resolver>,
    config: Arc<WorkerConfig>,
    completer: Completer,
    pace: Arc<Pace>,
    running: Running,
    shares: Shares,
}

type Claim = Pin<Box<dyn Future<Output = (usize, Result<Vec<ClaimedExecution>>)> + Send>>;

pub(super) async fn claim_loop(
    engine: Engine,
    runtime: Arc<Runtime>,
    config: WorkerConfig,
    mut stopped: watch::Receiver<bool>,
    running: Running,
) -> JoinSet<()> {
    // A tenant's share is `slots`; the reserve is there for the others.
    let slots = Arc::new(Semaphore::new(config.capacity()));
    let shares = Shares::new(config.slots);
    let claim_ahead = config
        .claim_ahead
        .unwrap_or(CLAIM_AHEAD_PER_SLOT * config.slots);
    // The engine refuses a claim of more than its `max_claim_batch`.
    let claim_size = config
        .claim_size()
        .min(engine.limits().max_claim_batch.max(1) as usize);
    let shared = Shared {
        completer: Completer::start(
            engine.clone(),
            COMPLETION_WRITERS,
            QUEUED_COMPLETIONS_PER_SLOT * config.slots.max(1),
        ),
        engine,
        runtime,
        resolver: Arc::default(),
        config: Arc::new(config),
        pace: Arc::default(),
        running,
        shares,
    };
    let instance = Uuid::now_v7().to_string();
    let _revocations = super::watch_revocations(&shared.engine, shared.running.clone()).await;
    let mut work = match shared.engine.work_signal().await {
        Ok(signal) => Some(signal),
        Err(e) => {
            tracing::warn!(error = %e, "no work notifications; polling only");
            None
        }
    };
    let mut runs = JoinSet::new();
    // Claimed, waiting for a slot (only while claiming ahead).
    let mut ready = Ready::default();
    // Free slots with nothing to run yet.
    let mut idle: Vec<OwnedSemaphorePermit> = Vec::new();
    let mut claim: Option<Claim> = None;
    let mut backlogged = false;
    // The last claim passed over a tenant at its share (see `share`).
    let mut passed_over = false;
    // Ready executions went back unstarted: claim nothing ahead until a slot frees.
    let mut stranded = false;
    // Claim at start; afterwards, after a short claim, only once woken or polled.
    let mut woken = true;
    let mut poll_at = tokio::time::Instant::now();
    loop {
        while runs.try_join_next().is_some() {}
        if claim.is_none() && (backlogged || woken) {
            let depth = match backlogged && !stranded {
                true => shared.pace.ready_depth(shared.config.slots, claim_ahead),
                false => 0,
            };
            let ahead = ready.room(depth);
            let announced = work
                .as_ref()
                .is_some_and(|w| w.has_changed().unwrap_or(false));
            let want = claim_want(
                idle.len(),
                ahead,
                ready.tasks.is_empty(),
                woken || announced,
                claim_size,
            );
            if want > 0 {
                if let Some(w) = work.as_mut() {
                    w.borrow_and_update();
                }
                woken = false;
                let full = shared.shares.full();
                passed_over = !full.is_empty();
                claim = Some(start_claim(&shared, &instance, want, full));
            }
        }
        let stale_at = ready
            .oldest()
            .map(|task| tokio::time::Instant::from_std(task.claimed_at) + READY_MAX_WAIT);
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            permit = slots.clone().acquire_owned() => {
                let permit = permit.expect("semaphore never closes");
                stranded = false;
                match ready.pop_startable(&shared.shares) {
                    Some(task) => spawn_run(&mut runs, &shared, task, permit),
                    None => {
                        idle.push(permit);
                        // The last claim passed over a tenant at its share,
                        // and a slot just freed (maybe one of its own):
                        // what it left in the queue may be claimable now.
                        woken |= passed_over;
                    }
                }
            }
            (asked, claimed) = async { claim.as_mut().expect("claim in flight").await },
                if claim.is_some() =>
            {
                claim = None;
                let claimed = claimed.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "claim failed; backing off");
                    Vec::new()
                });
                backlogged = claimed.len() == asked;
                if !backlogged {
                    poll_at = tokio::time::Instant::now() + shared.config.poll_interval;
                }
                for claimed in claimed {
                    let task = track(&shared, claimed);
                    let startable = shared.shares.may_start(task.lease().tenant_id);
                    match idle.pop() {
                        Some(permit) if startable => spawn_run(&mut runs, &shared, task, permit),
                        Some(permit) => {
                            idle.push(permit);
                            ready.push(task);
                        }
                        None => ready.push(task),
                    }
                }
            }
            _ = wake(work.as_mut(), poll_at), if claim.is_none() && !backlogged && !woken => {
                woken = true;
            }
            _ = tokio::time::sleep_until(stale_at.unwrap_or_else(tokio::time::Instant::now)),
                if stale_at.is_some() =>
            {
                let now = std::time::Instant::now();
                let mut released = 0;
                while let Some(task) = ready.oldest() {
                    if now.duration_since(task.claimed_at) < READY_MAX_WAIT {
                        break;
                    }
                    let task = ready.pop().expect("oldest exists");
                    spawn_release(&mut runs, &shared, task);
                    released += 1;
                }
                stranded = true;
                tracing::debug!(released, "claimed ahead but not started in time; released");
                metrics::counter!("flowfabric_claimed_ahead_released_total").increment(released);
            }
        }
    }
    // Stopping: what a claim in flight took, and what is ready, goes back.
    if let Some(in_flight) = claim {
        if let (_, Ok(claimed)) = in_flight.await {
            for claimed in claimed {
                ready.push(track(&shared, claimed));
            }
        }
    }
    while let Some(task) = ready.pop() {
        spawn_release(&mut runs, &shared, task);
    }
    runs
}

/// Give a claimed execution that never ran back to the queue: runnable again
/// at once, without counting a retry.
fn spawn_release(runs: &mut JoinSet<()>, shared: &Shared, task: Arc<ClaimedTask>) {
    let engine = shared.engine.clone();
    let running = shared.running.clone();
    runs.spawn(async move {
        let lease = task.lease();
        if let Err(e) = super::release(&engine, lease).await {
            tracing::warn!(execution = %lease.execution_id, error = %e,
                "releasing a claimed execution failed; its lease will expire");
        }
        untrack(&running, lease.execution_id);
    });
}

fn start_claim(shared: &Shared, instance: &str, want: usize, full: Vec<TenantId>) -> Claim {
    let engine = shared.engine.clone();
    let config = &shared.config;
    let request = ClaimRequest {
        worker_id: config.worker_id.clone(),
        worker_instance: instance.to_owned(),
        lanes: config.lanes.clone(),
        capabilities: config.capabilities.clone(),
        limit: want as u32,
        lease_ttl: config.lease_ttl,
        exclude_tenants: full,
    };
    Box::pin(async move {
        let claimed = engine.claim(&request).await;
        metrics::counter!("flowfabric_claims_total").increment(1);
        if let Ok(claimed) = &claimed {
            metrics::counter!("flowfabric_claimed_executions_total")
                .increment(claimed.len() as u64);
        }
        (want, claimed)
    })
}

/// A claimed execution, known to revocations from its claim on.
fn track(shared: &Shared, claimed: ClaimedExecution) -> Arc<ClaimedTask> {
    let id = claimed.lease.execution_id;
    let task = ClaimedTask::new(shared.engine.clone(), claimed, CancelFlag::default());
    shared
        .running
        .lock()
        .expect("running lock")
        .insert(id, task.clone());
    task
}

fn spawn_run(
    runs: &mut JoinSet<()>,
    shared: &Shared,
    task: Arc<ClaimedTask>,
    permit: OwnedSemaphorePermit,
) {
    let id = task.lease().execution_id;
    let slot = shared.shares.hold(permit, task.lease().tenant_id);
    let job = run::Job {
        engine: shared.engine.clone(),
        runtime: shared.runtime.clone(),
        resolver: shared.resolver.clone(),
        config: shared.config.clone(),
        task,
        completer: shared.completer.clone(),
        pace: shared.pace.clone(),
        slot,
    };
    let running = shared.running.clone();
    runs.spawn(async move {
        job.run().await;
        untrack(&running, id);
    });
}

/// Its run or release is over: revocations no longer concern it.
fn untrack(running: &Running, id: ExecutionId) {
    running.lock().expect("running lock").remove(&id);
}

/// Until a work notification arrives or the poll time comes.
async fn wake(work: Option<&mut watch::Receiver<u64>>, poll_at: tokio::time::Instant) {
    let notified = async {
        match work {
            Some(w) => {
                let _ = w.changed().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = notified => {}
        _ = tokio::time::sleep_until(poll_at) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace_of(run: Duration) -> Pace {
        let pace = Pace::default();
        pace.record(run);
        pace
    }

    #[test]
    fn the_ready_queue_holds_about_fifty_milliseconds_of_runs() {
        assert_eq!(Pace::default().ready_depth(4, 256), 0, "pace unknown");
        assert_eq!(
            pace_of(Duration::from_millis(10)).ready_depth(4, 256),
            4 * 5
        );
        assert_eq!(
            pace_of(Duration::from_millis(1)).ready_depth(4, 256),
            4 * 50
        );
        assert_eq!(
            pace_of(Duration::from_micros(100)).ready_depth(4, 256),
            256,
            "at most the most claimed ahead"
        );
        assert_eq!(pace_of(SHORT_RUN).ready_depth(4, 256), 0, "runs too long");
        assert_eq!(
            pace_of(Duration::from_millis(1)).ready_depth(4, 0),
            0,
            "turned off"
        );
    }

    #[test]
    fn a_free_slot_beside_ready_work_is_claimed_for_only_on_news() {
        // Nothing ready: every free slot is claimed for.
        assert_eq!(claim_want(3, 0, true, false, 64), 3);
        // Work ready, its tenants at their share: the reserve waits for news.
        assert_eq!(claim_want(1, 0, false, false, 64), 0);
        assert_eq!(claim_want(1, 0, false, true, 64), 1);
        // The room ahead is claimed either way, within the claim's size.
        assert_eq!(claim_want(1, 40, false, false, 64), 40);
        assert_eq!(claim_want(30, 40, true, false, 64), 64);
    }

    #[test]
    fn the_ready_queue_refills_from_half_and_not_past_its_bytes() {
        assert_eq!(room_ahead(100, 0, 0), 100);
        assert_eq!(room_ahead(100, 50, 0), 50, "down to half");
        assert_eq!(room_ahead(100, 51, 0), 0, "not yet down to half");
        assert_eq!(room_ahead(100, 120, 0), 0, "deeper than wanted");
        assert_eq!(room_ahead(0, 0, 0), 0, "not claiming ahead");
        assert_eq!(
            room_ahead(100, 10, READY_MAX_BYTES),
            0,
            "inputs fill the memory"
        );
        assert_eq!(room_ahead(100, 10, READY_MAX_BYTES - 1), 90);
    }
}
