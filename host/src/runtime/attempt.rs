//! One attempt: a fresh store and instance (or, when its grant allows, one
//! kept from an earlier attempt of its kind; see `warm`), one call of
//! `run`, and an outcome that says how it ended and where its time went.
//!
//! Everything a guest can do wrong ends here as a classified [`RunResult`]:
//! a trap, a timeout (epoch or fuel), a memory limit, a release by a host
//! call. The runtime never lets an error from inside the sandbox escape as
//! anything else, so a hostile guest cannot crash or confuse its worker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Engine, Store};

use super::bindings::{FailureClass as GuestFailureClass, Task};
use super::imports::Release;
use super::outbound::HttpLog;
use super::placement::{Placement, Ran};
use super::sandbox::{self, CancelFlag, SandboxLimits, StopReason, StoreState};
use super::warm::{WarmInstance, MAX_USES};
use super::Prepared;
use crate::model::{Failure, FailureClass};

/// How one run ended.
#[derive(Debug)]
pub enum RunResult {
    /// `run` returned `ok`.
    Completed(Vec<u8>),
    /// `run` returned `err`, or the sandbox stopped it (trap, timeout, memory).
    Failed(Failure),
    /// The worker cancelled it (lease lost or execution cancelled).
    Cancelled,
    /// The guest suspended, delayed or cancelled the execution; its lease is
    /// already released.
    Released(Release),
}

#[derive(Debug)]
pub struct RunOutcome {
    pub result: RunResult,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The HTTP requests the guest made.
    pub http: HttpLog,
    /// Time in the sandbox: from the fresh wasmtime store (once the attempt
    /// has a turn) to the outcome. Building the attempt's host state before
    /// that, and dropping the store after, are not in it.
    pub elapsed: Duration,
    /// The part of `elapsed` before `run` was called: the store and the
    /// instance (zero when no instance was made). The rest is the guest's
    /// `run` and its host calls.
    pub instantiation: Duration,
    /// Before `elapsed`, on the caller's thread: the attempt's host state
    /// (WASI context, output pipes, HTTP hooks, scratch directory).
    pub setup: Duration,
    /// After `elapsed`: dropping the store, which returns the instance's
    /// memory and tables to the pool.
    pub teardown: Duration,
    /// Whether it ran on the caller's thread, the guest threads or both
    /// (see `placement`).
    pub ran: Ran,
}

/// The outcome of a run that failed before or outside the guest.
pub(super) fn ended_early(failure: Failure, started: Instant) -> RunOutcome {
    RunOutcome {
        result: RunResult::Failed(failure),
        stdout: Vec::new(),
        stderr: Vec::new(),
        http: HttpLog::default(),
        elapsed: started.elapsed(),
        instantiation: Duration::ZERO,
        setup: Duration::ZERO,
        teardown: Duration::ZERO,
        ran: Ran::OnCaller,
    }
}

/// Where an attempt runs.
pub(super) enum Start {
    /// A fresh store, for a fresh instance.
    Fresh(Box<StoreState>),
    /// A store and instance kept from an earlier attempt, already made this
    /// attempt's (`StoreState::retarget`).
    Kept(WarmInstance),
}

impl Start {
    /// Where the attempt runs, as its epoch callback sees it.
    pub(super) fn placement(&self) -> Arc<Placement> {
        let cpu = match self {
            Self::Fresh(state) => &state.cpu,
            Self::Kept(warm) => &warm.store.data().cpu,
        };
        cpu.placement.clone()
    }
}

/// What one attempt calls, and under which limits.
pub(super) struct Call {
    pub engine: Engine,
    pub component: Prepared,
    pub input: Vec<u8>,
    pub limits: SandboxLimits,
    pub cancel: CancelFlag,
    /// Whether the engine meters fuel.
    pub fuel: bool,
}

/// One attempt, once it has a turn (on the caller's thread first, see
/// `placement`); with `keep`, the instance is handed back for a later
/// attempt if the run returned.
pub(super) async fn run_in_store(
    call: Call,
    start: Start,
    keep: bool,
) -> (RunOutcome, Option<WarmInstance>) {
    let (mut store, kept, uses) = match start {
        Start::Fresh(state) => {
            state.cpu.take_turn().await;
            (Store::new(&call.engine, *state), None, 0)
        }
        Start::Kept(warm) => {
            warm.store.data().cpu.take_turn().await;
            (warm.store, Some(warm.task), warm.uses)
        }
    };
    let started = Instant::now();
    let (result, instantiation, task) = call_run(&mut store, started, &call, kept).await;
    let mut outcome = outcome(&store, result, started, instantiation);
    match task {
        Some(task)
            if keep
                && uses + 1 < MAX_USES
                && store.data().stopped.is_none()
                && !store.data().memory.hit =>
        {
            // Its turn on the guest threads goes back now, not when the store
            // is dropped: a kept store must not hold a turn while it waits.
            store.data().cpu.give_up();
            let uses = uses + 1;
            (outcome, Some(WarmInstance { store, task, uses }))
        }
        _ => {
            let dropping = Instant::now();
            drop(store);
            outcome.teardown = dropping.elapsed();
            (outcome, None)
        }
    }
}

/// Set the store's limits, instantiate (unless the instance was kept), call
/// `run`: the result, how long the store and instance took to make (from
/// `started`), and the instance if the call returned (it may serve again).
async fn call_run(
    store: &mut Store<StoreState>,
    started: Instant,
    call: &Call,
    kept: Option<Task>,
) -> (RunResult, Duration, Option<Task>) {
    let limits = &call.limits;
    store.limiter(|s| &mut s.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(sandbox::epoch_callback(
        started + limits.timeout,
        call.cancel.clone(),
    ));
    if let (true, Some(fuel)) = (call.fuel, limits.fuel) {
        if let Err(e) = store.set_fuel(fuel) {
            return (RunResult::Failed(internal_failure(e)), Duration::ZERO, None);
        }
    }
    let mut instantiation = Duration::ZERO;
    let mut returned = None;
    let called = async {
        let task = match kept {
            Some(task) => task,
            None => call.component.0.instantiate_async(&mut *store).await?,
        };
        instantiation = started.elapsed();
        let answer = task.call_run(&mut *store, &call.input).await?;
        returned = Some(task);
        Ok::<_, wasmtime::Error>(answer)
    }
    .await;
    let result = match called {
        Ok(Ok(output)) => RunResult::Completed(output),
        Ok(Err(e)) => RunResult::Failed(Failure::new(guest_class(e.class), e.message)),
        Err(e) => classify_error(store, &e, limits),
    };
    (result, instantiation, returned)
}

fn classify_error(
    store: &Store<StoreState>,
    e: &wasmtime::Error,
    limits: &SandboxLimits,
) -> RunResult {
    let state = store.data();
    match &state.stopped {
        Some(StopReason::Cancelled) => return RunResult::Cancelled,
        Some(StopReason::Released(release)) => return RunResult::Released(*release),
        Some(StopReason::Failed(failure)) => return RunResult::Failed(failure.clone()),
        Some(StopReason::Timeout) => {
            return RunResult::Failed(Failure::new(
                FailureClass::Timeout,
                format!(
                    "the run exceeded its timeout of {} ms",
                    limits.timeout.as_millis()
                ),
            ))
        }
        None => {}
    }
    if state.memory.hit {
        return RunResult::Failed(Failure::new(
            FailureClass::OutOfMemory,
            format!(
                "the guest needed more than its memory limit of {} bytes",
                limits.memory_bytes
            ),
        ));
    }
    let trap = e.downcast_ref::<wasmtime::Trap>();
    if trap == Some(&wasmtime::Trap::OutOfFuel) {
        return RunResult::Failed(Failure::new(
            FailureClass::Timeout,
            "the run used up its fuel",
        ));
    }
    let class = if trap.is_some() {
        FailureClass::Trap
    } else {
        FailureClass::Internal
    };
    RunResult::Failed(Failure::new(class, format!("{e:#}")))
}

fn guest_class(class: GuestFailureClass) -> FailureClass {
    match class {
        GuestFailureClass::Transient => FailureClass::Transient,
        GuestFailureClass::Permanent => FailureClass::Permanent,
    }
}

fn outcome(
    store: &Store<StoreState>,
    result: RunResult,
    started: Instant,
    instantiation: Duration,
) -> RunOutcome {
    let state = store.data();
    RunOutcome {
        result,
        // Handed over: the captures are empty (and closed) until a next
        // attempt in the same store gives them room again.
        stdout: state.stdout.take(0),
        stderr: state.stderr.take(0),
        http: state.outbound.take_log(),
        elapsed: started.elapsed(),
        instantiation,
        setup: Duration::ZERO,
        teardown: Duration::ZERO,
        ran: Ran::OnCaller,
    }
}

pub(super) fn internal_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(FailureClass::Internal, e.to_string())
}
