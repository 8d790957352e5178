//! What both backends refuse, worded once.
//!
//! A graph change, a child, a signal or a replay that storage will not make
//! gets the same typed error, kind and message from Postgres and SQLite:
//! clients and the conformance suite see one answer, and the wording cannot
//! drift between the two.

use crate::error::EngineError;
use crate::model::{ExecutionId, FlowId, PublicState, TenantId};

pub(crate) fn unknown_tenant(id: TenantId) -> EngineError {
    EngineError::not_found("tenant", id)
}

/// A tenant's named things under a count cap (config values, concurrency
/// limits): the tenant must exist, and a name it does not have yet is refused
/// once it holds `max` of them. `probe` is what the caller read, under a lock
/// that keeps the count still: whether the tenant exists, whether the name
/// does, and how many the tenant holds.
pub(crate) fn check_named_cap(
    tenant: TenantId,
    (known, exists, held): (bool, bool, i64),
    max: u32,
    limit: &'static str,
    what: &str,
) -> Result<(), EngineError> {
    if !known {
        return Err(unknown_tenant(tenant));
    }
    if !exists && held >= i64::from(max) {
        return Err(EngineError::LimitExceeded {
            limit,
            value: held.max(0) as u64,
            detail: format!("a tenant keeps at most {max} {what}"),
        });
    }
    Ok(())
}

pub(crate) fn budget_not_found(id: crate::model::BudgetId) -> EngineError {
    EngineError::not_found("budget", id)
}

pub(crate) fn flow_not_found(flow_id: FlowId) -> EngineError {
    EngineError::not_found("flow", flow_id)
}

/// A cancelled flow takes nothing new (`what`: "new members or edges", …).
pub(crate) fn flow_cancelled(flow_id: FlowId, what: &str) -> EngineError {
    EngineError::graph(
        "flow_cancelled",
        format!("flow {flow_id} was cancelled: it takes no {what}"),
    )
}

/// Only a flow member has dependents to revive.
pub(crate) fn not_a_flow_member(id: ExecutionId) -> EngineError {
    EngineError::invalid(
        "revive_dependents",
        format!("execution {id} is not a member of a flow"),
    )
}

/// A graph change applies to a flow that is not cancelled, and, when it
/// names the revision it expects, only at that revision.
pub(crate) fn check_graph_change(
    flow_id: FlowId,
    (revision, cancelled): (i32, bool),
    expected: Option<i32>,
) -> Result<(), EngineError> {
    if cancelled {
        return Err(flow_cancelled(flow_id, "new members or edges"));
    }
    match expected {
        Some(expected) if expected != revision => {
            Err(revision_conflict(flow_id, revision, expected))
        }
        _ => Ok(()),
    }
}

fn revision_conflict(flow_id: FlowId, revision: i32, expected: i32) -> EngineError {
    EngineError::graph(
        "graph_revision_conflict",
        format!("flow {flow_id} is at revision {revision}, not {expected}: re-read it"),
    )
}

pub(crate) fn member_key_taken() -> EngineError {
    EngineError::graph(
        "member_exists",
        "a member with one of these keys is already in the flow",
    )
}

pub(crate) fn child_key_taken(key: &str) -> EngineError {
    EngineError::graph(
        "member_exists",
        format!("the flow already has a member `{key}` that this execution did not spawn"),
    )
}

pub(crate) fn member_started(key: &str) -> EngineError {
    EngineError::graph(
        "member_started",
        format!(
            "member `{key}` is not waiting on dependencies (it has started, ended or was \
             released): edges can only point at members that wait"
        ),
    )
}

pub(crate) fn dependency_exists() -> EngineError {
    EngineError::graph("dependency_exists", "one of these edges already exists")
}

pub(crate) fn second_input() -> EngineError {
    EngineError::invalid(
        "edges.pass_result",
        "a member takes its input from at most one upstream",
    )
}

pub(crate) fn cycle(keys: &[String]) -> EngineError {
    EngineError::graph(
        "cycle_detected",
        format!("these edges would form a cycle: {}", keys.join(" -> ")),
    )
}

pub(crate) fn waitpoint_closed(key: &str) -> EngineError {
    EngineError::Conflict(format!(
        "waitpoint `{key}` is closed: its suspension already resumed or it expired"
    ))
}

pub(crate) fn signals_exceeded(max: u32) -> EngineError {
    EngineError::limit(
        "max_signals_per_execution",
        u64::from(max),
        "the execution keeps as many signals as it may",
    )
}

pub(crate) fn takes_no_signals(id: ExecutionId, state: PublicState) -> EngineError {
    EngineError::Conflict(format!(
        "execution {id} is {state}: it takes no more signals"
    ))
}

/// An operation that needs the execution running (a lease to act on).
pub(crate) fn not_active(execution_id: ExecutionId, state: PublicState) -> EngineError {
    EngineError::NotActive {
        execution_id,
        state,
    }
}

/// An operation that needs the execution waiting to be claimed.
pub(crate) fn not_runnable(execution_id: ExecutionId, state: PublicState) -> EngineError {
    EngineError::NotRunnable {
        execution_id,
        state,
    }
}

pub(crate) fn not_suspended(id: ExecutionId, state: PublicState) -> EngineError {
    EngineError::Conflict(format!("execution {id} is {state}, not suspended"))
}

/// Why an execution cannot be replayed: it has not ended, or it was
/// replayed as often as its policy allows.
pub(crate) fn not_replayable(id: ExecutionId, state: PublicState, replays: i32) -> EngineError {
    EngineError::Conflict(if state.is_terminal() {
        format!("execution {id} was replayed {replays} times, its policy's limit")
    } else {
        format!("execution {id} is {state}: only an execution that ended can be replayed")
    })
}

/// A usage report that would push a counter (a budget's use, the attempt's
/// total) past what storage holds is refused, typed and for good: no SQL
/// error reaches the guest, and retrying cannot help. `counters` are the
/// current values the report would add to; `attempt_counter` is stored
/// text (a JSON number), parsed here so that no value can fail a cast.
pub(crate) fn check_usage_fits(
    dimension: &str,
    delta: i64,
    counters: impl IntoIterator<Item = i64>,
    attempt_counter: &str,
) -> Result<(), EngineError> {
    let attempt = attempt_counter.trim().parse::<i128>().unwrap_or(i128::MAX);
    let over = counters
        .into_iter()
        .map(i128::from)
        .chain([attempt])
        .any(|c| c + i128::from(delta) > i128::from(i64::MAX));
    if over {
        return Err(EngineError::limit(
            "usage counter",
            i64::MAX as u64,
            format!("a report of {delta} would push dimension `{dimension}` past it; it was not applied"),
        ));
    }
    Ok(())
}

/// An attempt's frames would pass their byte cap.
pub(crate) fn frame_bytes_exceeded(max: u64, used: u64, adding: usize) -> EngineError {
    EngineError::limit(
        "max_frame_bytes_per_attempt",
        max,
        format!("this attempt's frames hold {used} bytes and a frame of {adding} would pass it"),
    )
}

/// The bytes an attempt's frames hold once `adding` more are appended, given
/// the stored running total and sequence number (a first frame starts the
/// count again: `frame_seq` restarts at 0 for every new attempt).
pub(crate) fn frame_bytes_after(frame_seq: i64, stored: i64, adding: usize) -> u64 {
    let before = if frame_seq == 0 {
        0
    } else {
        stored.max(0) as u64
    };
    before.saturating_add(adding as u64)
}

/// An execution already has as many waitpoints as it may.
pub(crate) fn waitpoints_exceeded(max: u32) -> EngineError {
    EngineError::limit(
        "max_waitpoints_per_execution",
        u64::from(max),
        "this execution has that many waitpoints already",
    )
}

/// A spawn would pass the parent's children cap or the flow's member cap.
/// `children` and `members` are the counts before the spawn.
pub(crate) fn check_spawn(
    limits: &crate::model::SpawnLimits,
    children: i64,
    members: i64,
) -> Result<(), EngineError> {
    if children >= i64::from(limits.max_children) {
        return Err(EngineError::limit(
            "max_children_per_execution",
            u64::from(limits.max_children),
            "this execution has spawned that many children already",
        ));
    }
    if members >= i64::from(limits.max_flow_members) {
        return Err(EngineError::limit(
            "max_flow_members",
            u64::from(limits.max_flow_members),
            "the flow has that many members already",
        ));
    }
    Ok(())
}

/// A suspension names a waitpoint that expired before any signal reached it:
/// nothing could ever resume it through that waitpoint.
pub(crate) fn waitpoint_expired(key: &str) -> EngineError {
    EngineError::Refused {
        kind: "waitpoint_expired",
        message: format!(
            "waitpoint `{key}` expired before a signal reached it: create a new one (another \
             key) to wait on"
        ),
    }
}

/// What a step record finds at its position and in its execution's journal,
/// as either backend reads it before (SQLite) or after (Postgres) a write.
pub(crate) struct StepSlot<'a> {
    /// Steps recorded so far, and their bytes.
    pub count: i64,
    pub bytes: i64,
    /// The name, attempt and kind of the step already at the position.
    pub existing: Option<(&'a str, i32, &'a str)>,
}

/// Whether a step may be written at its position: `Ok(true)` to write,
/// `Ok(false)` when this attempt already recorded the same step there (a
/// replayed call), or the refusal both backends give.
pub(crate) fn step_admission(
    slot: &StepSlot<'_>,
    step: &crate::model::NewStep,
    attempt_index: i32,
    limits: crate::model::JournalLimits,
) -> Result<bool, EngineError> {
    if let Some((name, attempt, kind)) = slot.existing {
        if name == step.name && attempt == attempt_index && kind == step.outcome.kind().as_str() {
            return Ok(false);
        }
        return Err(EngineError::Conflict(format!(
            "step {} is already recorded (as `{name}`, by attempt {attempt})",
            step.position
        )));
    }
    if slot.count >= i64::from(limits.max_steps) {
        return Err(EngineError::limit(
            "max_steps_per_execution",
            u64::from(limits.max_steps),
            "this execution's journal is full: no further step can be recorded",
        ));
    }
    let size = step.outcome.size() as u64;
    let used = slot.bytes.max(0) as u64;
    if used.saturating_add(size) > limits.max_bytes {
        return Err(EngineError::limit(
            "max_journal_bytes_per_execution",
            limits.max_bytes,
            format!("the journal holds {used} bytes and a step of {size} would pass it"),
        ));
    }
    Ok(true)
}

pub(crate) fn schedule_not_found(id: crate::model::ScheduleId) -> EngineError {
    EngineError::not_found("schedule", id)
}

pub(crate) fn schedule_name_taken(name: &str) -> EngineError {
    EngineError::Conflict(format!("the tenant already has a schedule named `{name}`"))
}

pub(crate) fn schedules_exceeded(max: u32) -> EngineError {
    EngineError::limit(
        "max_schedules_per_tenant",
        u64::from(max),
        "the tenant has as many schedules as it may: delete one first",
    )
}

pub(crate) fn budgets_exceeded(max: u32) -> EngineError {
    EngineError::limit(
        "max_budgets_per_tenant",
        u64::from(max),
        "the tenant has as many budgets as it may: delete one first",
    )
}

pub(crate) fn budget_dimension_not_found(
    id: crate::model::BudgetId,
    dimension: &str,
) -> EngineError {
    EngineError::not_found("budget dimension", format!("{id}/{dimension}"))
}

/// A budget's audit trail of hand corrections is full.
pub(crate) fn adjustments_exceeded(max: u32) -> EngineError {
    EngineError::limit(
        "max_adjustments_per_budget",
        u64::from(max),
        format!("the budget keeps {max} adjustments; create a new budget to correct further"),
    )
}
