//! Running an ended execution again, and with it, optionally, the flow
//! members its failure skipped.
//!
//! When a flow member fails, the dependents whose joins can no longer be
//! satisfied end `skipped`, and their dependents after them. Replaying the
//! member alone runs it again but leaves those skipped. With
//! `revive_dependents`, the same transaction re-opens the member's failed
//! edges, recounts each dependent's join from its edges, and brings a
//! skipped dependent back to waiting if the join can be satisfied again,
//! then does the same for the dependents of each member it brought back.

use serde::Serialize;

use super::ExecutionId;

/// How to replay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replay {
    /// Keep the journal of durable steps (the new run skips recorded steps).
    pub keep_steps: bool,
    /// Bring back the flow members skipped because this one failed.
    pub revive_dependents: bool,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReplayOutcome {
    /// Times the execution has now been replayed.
    pub replay_count: i32,
    /// Flow members brought back from `skipped`, in the order they were.
    pub revived: Vec<ExecutionId>,
}
