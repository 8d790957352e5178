//! The public state of an execution, as users and operators see it.
//!
//! Internally an execution carries the upstream state vector (lifecycle phase,
//! ownership, eligibility, attempt state, terminal outcome); the public state is
//! derived from it by the storage layer (a generated column on Postgres), so it can
//! never disagree with the vector it summarises.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PublicState {
    Waiting,
    Delayed,
    RateLimited,
    WaitingChildren,
    Active,
    Suspended,
    Completed,
    Failed,
    Cancelled,
    Expired,
    Skipped,
}

impl PublicState {
    pub const ALL: [PublicState; 11] = [
        Self::Waiting,
        Self::Delayed,
        Self::RateLimited,
        Self::WaitingChildren,
        Self::Active,
        Self::Suspended,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::RateLimited => "rate_limited",
            Self::WaitingChildren => "waiting_children",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Skipped => "skipped",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired | Self::Skipped
        )
    }
}

impl fmt::Display for PublicState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PublicState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown execution state `{s}`"))
    }
}

/// Why the attempt that holds a lease exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptType {
    Initial,
    Retry,
    Reclaim,
    Replay,
    Delayed,
    /// The same attempt, continued after a suspension (a new lease epoch).
    Resume,
}

impl FromStr for AttemptType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "initial" => Self::Initial,
            "retry" => Self::Retry,
            "reclaim" => Self::Reclaim,
            "replay" => Self::Replay,
            "delayed" => Self::Delayed,
            "resume" => Self::Resume,
            other => return Err(format!("unknown attempt type `{other}`")),
        })
    }
}

/// How one attempt ended (or that it is still running).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    Running,
    Suspended,
    Succeeded,
    Failed,
    Cancelled,
    Delayed,
    LeaseExpired,
    Expired,
    /// An operator took the lease away (`revoke_lease`).
    Revoked,
}

impl FromStr for AttemptState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "running" => Self::Running,
            "suspended" => Self::Suspended,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "delayed" => Self::Delayed,
            "lease_expired" => Self::LeaseExpired,
            "expired" => Self::Expired,
            "revoked" => Self::Revoked,
            other => return Err(format!("unknown attempt state `{other}`")),
        })
    }
}
