//! Typed ids: a tenant's id cannot be passed where an execution's is meant.
//!
//! Every id is a UUID (time-ordered v7 when the engine makes it) and reads,
//! prints, serialises and stores exactly as one, so the types change nothing
//! on the wire or in the database; they only stop
//! `deliver_signal(tenant, execution, waitpoint, …)` from taking its three
//! arguments in any order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The all-zero id, for "none" in a column that cannot be null.
            pub const fn nil() -> Self {
                Self(Uuid::nil())
            }

            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// The id as 32 hex digits, without hyphens.
            pub fn simple(&self) -> uuid::fmt::Simple {
                self.0.simple()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::from_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

id_type!(
    /// A tenant: the unit of isolation, quota and fairness.
    TenantId
);
id_type!(
    /// An execution, unique across tenants.
    ExecutionId
);
id_type!(
    /// A flow of executions.
    FlowId
);
id_type!(
    /// A budget.
    BudgetId
);
id_type!(
    /// A waitpoint of a suspended or suspending execution.
    WaitpointId
);
id_type!(
    /// An API key (the part of the key before its secret).
    ApiKeyId
);
id_type!(
    /// A schedule of recurring executions.
    ScheduleId
);

/// One attempt of an execution: the execution and the attempt's index
/// (from 1), as frames and summaries are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AttemptRef {
    pub execution: ExecutionId,
    pub index: i32,
}

impl fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.execution, self.index)
    }
}

/// One waitpoint of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitpointRef {
    pub execution: ExecutionId,
    pub waitpoint: WaitpointId,
}
