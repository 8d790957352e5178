//! Flows: executions joined by dependency edges into a graph.
//!
//! A member is an ordinary execution that also has a key within its flow.
//! Edges run between keys; a member with incoming edges waits
//! (`waiting_children`) until its join policy is satisfied, and is skipped once
//! it can no longer be. Members and edges can be added while the flow runs, as
//! long as an edge never points at a member that has already started.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ExecutionId, NewExecution, PublicState};

pub use super::ids::FlowId;

/// What a satisfied `any_of` or `quorum` join does to the upstreams still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnSatisfied {
    #[default]
    CancelRemaining,
    LetRun,
}

impl OnSatisfied {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CancelRemaining => "cancel_remaining",
            Self::LetRun => "let_run",
        }
    }
}

/// How many of a member's upstreams must succeed before it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum JoinPolicy {
    /// Every upstream (the default).
    #[default]
    AllOf,
    /// One upstream.
    AnyOf {
        #[serde(default)]
        on_satisfied: OnSatisfied,
    },
    /// `k` upstreams.
    Quorum {
        k: u32,
        #[serde(default)]
        on_satisfied: OnSatisfied,
    },
}

impl JoinPolicy {
    pub fn name(self) -> &'static str {
        match self {
            Self::AllOf => "all_of",
            Self::AnyOf { .. } => "any_of",
            Self::Quorum { .. } => "quorum",
        }
    }

    /// Upstreams that must succeed; `None` means all of them.
    pub fn k(self) -> Option<u32> {
        match self {
            Self::AllOf => None,
            Self::AnyOf { .. } => Some(1),
            Self::Quorum { k, .. } => Some(k),
        }
    }

    pub fn on_satisfied(self) -> OnSatisfied {
        match self {
            // Nothing is left running once every upstream has succeeded.
            Self::AllOf => OnSatisfied::LetRun,
            Self::AnyOf { on_satisfied } | Self::Quorum { on_satisfied, .. } => on_satisfied,
        }
    }

    /// Rebuild from stored columns.
    pub fn from_parts(name: &str, k: Option<i32>, on_satisfied: &str) -> Result<Self, String> {
        let on_satisfied = match on_satisfied {
            "cancel_remaining" => OnSatisfied::CancelRemaining,
            "let_run" => OnSatisfied::LetRun,
            other => return Err(format!("unknown on_satisfied `{other}`")),
        };
        Ok(match (name, k) {
            ("all_of", _) => Self::AllOf,
            ("any_of", _) => Self::AnyOf { on_satisfied },
            ("quorum", Some(k)) => Self::Quorum {
                k: u32::try_from(k).map_err(|_| format!("quorum k {k}"))?,
                on_satisfied,
            },
            (other, _) => return Err(format!("unknown join policy `{other}`")),
        })
    }
}

/// A new member of a flow.
#[derive(Debug, Clone)]
pub struct FlowMember {
    /// Unique within the flow; edges name members by key.
    pub key: String,
    pub execution: NewExecution,
    /// Applies to this member's incoming edges.
    pub join: JoinPolicy,
}

/// `from` must end before `to` can run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowEdge {
    pub from: String,
    pub to: String,
    /// When `to` runs, its input is `from`'s result.
    #[serde(default)]
    pub pass_result: bool,
}

/// Members and edges to add to a flow, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct GraphChange {
    /// Refuse the change unless the flow is still at this revision.
    pub expected_revision: Option<i32>,
    pub members: Vec<FlowMember>,
    pub edges: Vec<FlowEdge>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NewFlow {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

/// The flow's revision after a change, and the ids of the members it added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GraphApplied {
    #[schema(value_type = uuid::Uuid)]
    pub flow_id: FlowId,
    pub revision: i32,
    #[schema(value_type = BTreeMap<String, uuid::Uuid>)]
    pub members: BTreeMap<String, ExecutionId>,
}

/// A flow as a whole, derived from its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowState {
    /// Some member has not ended (or there are no members yet).
    Running,
    /// Every member ended and none failed or expired.
    Completed,
    /// Every member ended and at least one failed or expired.
    Failed,
    /// The flow was cancelled and every member ended.
    Cancelled,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn derive(cancelled: bool, members: i64, unfinished: i64, failed: i64) -> Self {
        if unfinished > 0 || (members == 0 && !cancelled) {
            Self::Running
        } else if cancelled {
            Self::Cancelled
        } else if failed > 0 {
            Self::Failed
        } else {
            Self::Completed
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowSummary {
    #[schema(value_type = uuid::Uuid)]
    pub flow_id: FlowId,
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub revision: i32,
    pub state: FlowState,
    /// How many members the flow has. (`member_count` on the wire: a flow's
    /// snapshot lists the `members` themselves.)
    #[serde(rename = "member_count")]
    pub members: i64,
    /// Members not yet ended.
    pub unfinished: i64,
    /// Members that failed or expired.
    pub failed: i64,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Where a member's join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JoinState {
    Pending,
    Satisfied,
    Impossible,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowMemberView {
    pub key: String,
    #[schema(value_type = uuid::Uuid)]
    pub execution_id: ExecutionId,
    pub kind: String,
    pub state: PublicState,
    /// Absent for a member without incoming edges.
    pub join: Option<JoinPolicy>,
    pub join_state: Option<JoinState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// The upstream has not ended.
    Pending,
    /// The upstream succeeded.
    Satisfied,
    /// The upstream ended without success.
    Unsatisfied,
}

impl EdgeState {
    /// The state as stored (the schema allows only these three).
    pub fn from_stored(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "satisfied" => Self::Satisfied,
            _ => Self::Unsatisfied,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Satisfied => "satisfied",
            Self::Unsatisfied => "unsatisfied",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowEdgeView {
    pub from: String,
    pub to: String,
    pub pass_result: bool,
    pub state: EdgeState,
}

/// One edge read on its own: its two ends, by member key and execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowEdgeDetail {
    /// The upstream member's key.
    pub from: String,
    /// The downstream member's key.
    pub to: String,
    #[schema(value_type = uuid::Uuid)]
    pub from_execution_id: ExecutionId,
    #[schema(value_type = uuid::Uuid)]
    pub to_execution_id: ExecutionId,
    /// The upstream's result becomes the downstream's input.
    pub pass_result: bool,
    pub state: EdgeState,
    pub created_at: DateTime<Utc>,
}

/// A flow with its whole graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FlowSnapshot {
    #[serde(flatten)]
    pub summary: FlowSummary,
    pub members: Vec<FlowMemberView>,
    pub edges: Vec<FlowEdgeView>,
}

/// Which members a flow cancel ends. Every policy also closes the flow to new
/// members.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlowCancelPolicy {
    /// Every member that has not ended.
    #[default]
    CancelAll,
    /// Members that have not started; running and suspended ones finish.
    CancelPending,
    /// None: the flow only stops accepting members.
    FlowOnly,
}

impl FlowCancelPolicy {
    /// The lifecycle phases of the members this cancel ends.
    pub fn phases(self) -> &'static [&'static str] {
        match self {
            Self::CancelAll => &["runnable", "active", "suspended"],
            Self::CancelPending => &["runnable"],
            Self::FlowOnly => &[],
        }
    }
}

/// A cycle among `edges`, as the keys along it (first key repeated at the
/// end), or `None` when the graph is acyclic.
pub fn find_cycle<K: Clone + Eq + std::hash::Hash + Ord>(edges: &[(K, K)]) -> Option<Vec<K>> {
    let mut out: HashMap<&K, Vec<&K>> = HashMap::new();
    for (from, to) in edges {
        out.entry(from).or_default().push(to);
    }
    for targets in out.values_mut() {
        targets.sort();
    }
    // Iterative three-colour depth-first search, so a long chain cannot
    // overflow the stack.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        Grey,
        Black,
    }
    let mut colour: HashMap<&K, Colour> = HashMap::new();
    let mut starts: Vec<&K> = out.keys().copied().collect();
    starts.sort();
    for start in starts {
        if colour.contains_key(start) {
            continue;
        }
        let mut path: Vec<(&K, usize)> = vec![(start, 0)];
        colour.insert(start, Colour::Grey);
        while let Some((node, next)) = path.last_mut() {
            let node = *node;
            let targets = out.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if let Some(&target) = targets.get(*next) {
                *next += 1;
                match colour.get(target) {
                    Some(Colour::Grey) => {
                        let from = path.iter().position(|(n, _)| *n == target).unwrap_or(0);
                        let mut cycle: Vec<K> =
                            path[from..].iter().map(|(n, _)| (*n).clone()).collect();
                        cycle.push(target.clone());
                        return Some(cycle);
                    }
                    Some(Colour::Black) => {}
                    None => {
                        colour.insert(target, Colour::Grey);
                        path.push((target, 0));
                    }
                }
            } else {
                colour.insert(node, Colour::Black);
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(a: &str, b: &str) -> (String, String) {
        (a.into(), b.into())
    }

    #[test]
    fn acyclic_graphs_have_no_cycle() {
        assert_eq!(find_cycle::<String>(&[]), None);
        let diamond = [e("a", "b"), e("a", "c"), e("b", "d"), e("c", "d")];
        assert_eq!(find_cycle(&diamond), None);
        let chain: Vec<_> = (0..10_000)
            .map(|i| (i.to_string(), (i + 1).to_string()))
            .collect();
        assert_eq!(find_cycle(&chain), None);
    }

    #[test]
    fn a_cycle_is_reported_along_its_path() {
        let graph = [e("a", "b"), e("b", "c"), e("c", "a"), e("x", "a")];
        let cycle = find_cycle(&graph).expect("cycle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4, "{cycle:?}");
    }

    #[test]
    fn flow_state_derivation() {
        assert_eq!(FlowState::derive(false, 0, 0, 0), FlowState::Running);
        assert_eq!(FlowState::derive(true, 0, 0, 0), FlowState::Cancelled);
        assert_eq!(FlowState::derive(false, 3, 1, 1), FlowState::Running);
        assert_eq!(FlowState::derive(false, 3, 0, 1), FlowState::Failed);
        assert_eq!(FlowState::derive(false, 3, 0, 0), FlowState::Completed);
        assert_eq!(FlowState::derive(true, 3, 0, 0), FlowState::Cancelled);
    }
}
