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

/// What one spawn may add to: the tenant's backlog, the parent's children
/// and the flow's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpawnLimits {
    pub max_queued: Option<u32>,
    pub max_children: u32,
    pub max_flow_members: u32,
    /// The longest flow key (a default key of a deeply nested child).
    pub max_key_len: usize,
}

/// How a spawned child is named in its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKey<'a> {
    /// The key the guest gave.
    Named(&'a str),
    /// The guest gave none: this is its nth spawn in the run (from 1).
    Nth(u32),
}

/// The flow key of a parent's nth unnamed child: `child-N` under the flow's
/// root (or a parent with no flow yet), `PARENT/child-N` under any other
/// member, so that children spawning children never collide with their
/// siblings' children. Refused once nesting makes it longer than `max_len`.
pub fn default_child_key(
    parent_key: Option<&str>,
    n: u32,
    max_len: usize,
) -> Result<String, crate::error::EngineError> {
    let key = match parent_key {
        None | Some(ROOT_KEY) => format!("child-{n}"),
        Some(parent) => format!("{parent}/child-{n}"),
    };
    if key.len() > max_len {
        return Err(crate::error::EngineError::invalid(
            "key",
            format!(
                "the default key `{key}` is longer than {max_len} characters: \
                 children this deep need keys of their own"
            ),
        ));
    }
    Ok(key)
}

/// The key a spawning parent has in the flow created for it.
pub const ROOT_KEY: &str = "root";

impl<'a> From<&'a str> for ChildKey<'a> {
    fn from(key: &'a str) -> Self {
        Self::Named(key)
    }
}

impl ChildKey<'_> {
    /// The key in the flow, given the parent's own.
    pub fn resolve(
        self,
        parent_key: Option<&str>,
        max_len: usize,
    ) -> Result<String, crate::error::EngineError> {
        match self {
            Self::Named(key) => Ok(key.to_owned()),
            Self::Nth(n) => default_child_key(parent_key, n, max_len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_keys_nest_under_their_parent() {
        assert_eq!(default_child_key(None, 1, 128).unwrap(), "child-1");
        assert_eq!(default_child_key(Some("root"), 2, 128).unwrap(), "child-2");
        assert_eq!(
            default_child_key(Some("child-1"), 1, 128).unwrap(),
            "child-1/child-1"
        );
        assert!(default_child_key(Some(&"x".repeat(125)), 1, 128).is_err());
    }
}
