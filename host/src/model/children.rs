//! Child executions: a running guest spawns executions into its flow and waits
//! for them to end. A child is an ordinary flow member that records its parent,
//! so everything about flows (snapshots, cancel, tenancy) applies to it.

use serde::Serialize;

use super::{ExecutionId, PublicState};

/// A spawned child: its id, and whether this call created it (`false` when
/// the parent spawned that key before, e.g. in a run before a resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SpawnedChild {
    pub execution_id: ExecutionId,
    pub created: bool,
}

/// A child as its parent sees it once it has ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildOutcome {
    pub execution_id: ExecutionId,
    pub key: String,
    pub kind: String,
    pub state: PublicState,
    pub result: Option<Vec<u8>>,
    /// The failure message or cancellation reason, when it did not complete.
    pub error: Option<String>,
}

/// What `wait_children` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildrenOutcome {
    /// Every child had ended: here they are, in spawn order.
    Done(Vec<ChildOutcome>),
    /// Some had not: the parent is suspended until the last one ends.
    Suspended,
}
