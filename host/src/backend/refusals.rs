//! What both backends refuse, worded once.
//!
//! A graph change, a child, a signal or a replay that storage will not make
//! gets the same typed error, kind and message from Postgres and SQLite:
//! clients and the conformance suite see one answer, and the wording cannot
//! drift between the two.

use crate::error::EngineError;
use crate::model::{ExecutionId, FlowId, PublicState};

pub(crate) fn flow_not_found(flow_id: FlowId) -> EngineError {
    EngineError::NotFound {
        what: "flow",
        id: flow_id.to_string(),
    }
}

/// A cancelled flow takes nothing new (`what`: "new members or edges", …).
pub(crate) fn flow_cancelled(flow_id: FlowId, what: &str) -> EngineError {
    EngineError::graph(
        "flow_cancelled",
        format!("flow {flow_id} was cancelled: it takes no {what}"),
    )
}

pub(crate) fn revision_conflict(flow_id: FlowId, revision: i32, expected: i32) -> EngineError {
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

pub(crate) fn takes_no_signals(id: ExecutionId, state: PublicState) -> EngineError {
    EngineError::Conflict(format!(
        "execution {id} is {state}: it takes no more signals"
    ))
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
