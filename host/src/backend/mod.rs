//! The storage boundary.
//!
//! [`Backend`] is everything the engine needs from durable storage: one trait
//! per concept ([`Tenancy`], [`Executions`], [`Leases`], [`Output`], [`Events`],
//! [`Components`], [`Suspensions`], [`Budgets`], [`Children`], [`Flows`],
//! [`Steps`], [`Wakeups`], [`Scanners`], [`Grants`], [`ConfigValues`], [`Schedules`],
//! [`ConcurrencyLimits`], [`Insights`]), one method per atomic operation. Each state
//! change happens in one transaction, and every worker write is fenced by the
//! [`LeaseHandle`] it carries. Callers above these traits never see SQL;
//! implementations never see HTTP or wasm.
//!
//! Inputs arrive validated (see [`crate::engine`]); a backend enforces only what
//! needs the stored state: fencing, transitions, idempotency. How to add an
//! operation is in `docs/development.md`.

mod addressed_wakeups;
mod background;
mod configuration;
mod coordination;
mod fetch;
mod held_keys;
mod insights;
mod params;
pub mod pool;
pub mod postgres;
mod refusals;
mod shared;
pub mod sqlite;
mod stored;
mod traits;

pub use background::{Scanners, Wakeups};
pub use configuration::{
    Budgets, ConcurrencyLimits, ConfigValues, Grants, Schedules, WaitpointKeys,
};
pub use coordination::{Children, Flows, Steps, Suspensions};
pub(crate) use fetch::{Fetch, Op, Run};
pub use insights::Insights;
pub use params::{
    ChildSpawn, EdgeFilter, FlowCancel, FrameBatch, GraphWrite, NewApiKey, NewComponent, NewFrame,
    NewWaitpoint, PauseChange, ScheduleCreate, SignalDelivery, SleepRequest, StepRecord,
    SuspendRequest, Sweep, UsageAdjust,
};
pub(crate) use stored::{stored_i32, stored_i64, stored_millis};
pub use traits::{Components, Events, Executions, Leases, Output, Tenancy};

/// The storage traits by method only (`use crate::backend::prelude::*`), for
/// callers that hold a [`Backend`] and call its operations.
pub mod prelude {
    pub use super::background::{Scanners as _, Wakeups as _};
    pub use super::configuration::{
        Budgets as _, ConcurrencyLimits as _, ConfigValues as _, Grants as _, Schedules as _,
        WaitpointKeys as _,
    };
    pub use super::coordination::{Children as _, Flows as _, Steps as _, Suspensions as _};
    pub use super::insights::Insights as _;
    pub use super::traits::{
        Components as _, Events as _, Executions as _, Leases as _, Output as _, Tenancy as _,
    };
}

use async_trait::async_trait;

use crate::error::{EngineError, Result};
use crate::model::{AttemptState, LaneCounts, LeaseHandle, PublicState};

/// Why a fenced write by a lease changed nothing, read after the fact.
pub(crate) enum LeaseMiss {
    /// The same handle already ended its attempt this way: a replayed call.
    Replayed {
        state: PublicState,
        attempt_is_current: bool,
    },
    Rejected(EngineError),
}

/// What a backend reads to explain a lease that no longer holds: the
/// execution's state, attempt and epoch, and the attempt the handle names
/// (its lease id, epoch and state) if that attempt exists.
pub(crate) struct LeaseLookup {
    pub state: PublicState,
    pub current_attempt: i32,
    pub current_epoch: i64,
    pub attempt: Option<(uuid::Uuid, i64, AttemptState)>,
}

impl LeaseLookup {
    /// Classify a fenced write that found no live lease. `replay_as` is the
    /// attempt state the operation itself would have written, which makes a
    /// retry by the same caller recognisable (the reference's replay
    /// reconciliation). Both backends answer through this one function.
    pub(crate) fn explain(&self, lease: &LeaseHandle, replay_as: AttemptState) -> LeaseMiss {
        let same_lease = self
            .attempt
            .is_some_and(|(id, epoch, _)| id == lease.lease_id && epoch == lease.lease_epoch);
        let attempt_state = self.attempt.map(|(_, _, state)| state);
        if same_lease && attempt_state == Some(replay_as) {
            return LeaseMiss::Replayed {
                state: self.state,
                attempt_is_current: self.current_attempt == lease.attempt_index,
            };
        }
        if self.state.is_terminal() {
            return LeaseMiss::Rejected(refusals::not_active(lease.execution_id, self.state));
        }
        let reason = if self.current_epoch > lease.lease_epoch {
            "a newer lease holds the execution"
        } else if attempt_state == Some(AttemptState::LeaseExpired) {
            "the lease expired and the execution was reclaimed"
        } else if attempt_state == Some(AttemptState::Revoked) {
            "an operator revoked the lease"
        } else if !same_lease {
            "the handle does not match the attempt's lease"
        } else {
            NOT_HELD
        };
        LeaseMiss::Rejected(stale_lease(lease, reason))
    }
}

/// Why a lease that matches its attempt still does not hold.
pub(crate) const NOT_HELD: &str = "the lease is no longer held";

pub(crate) fn stale_lease(lease: &LeaseHandle, reason: &'static str) -> EngineError {
    EngineError::StaleLease {
        execution_id: lease.execution_id,
        attempt_index: lease.attempt_index,
        lease_epoch: lease.lease_epoch,
        reason,
    }
}

/// Everything the engine needs from durable storage: every concept's trait,
/// and the schema they share.
#[async_trait]
pub trait Backend:
    Tenancy
    + Executions
    + Leases
    + Output
    + Events
    + Components
    + Suspensions
    + Budgets
    + Children
    + Flows
    + Wakeups
    + Scanners
    + Grants
    + ConfigValues
    + Steps
    + Schedules
    + ConcurrencyLimits
    + WaitpointKeys
    + Insights
    + 'static
{
    /// Which store this is (`postgres` or `sqlite`), for logs and metrics.
    fn name(&self) -> &'static str;

    /// Apply pending schema migrations.
    async fn migrate(&self) -> Result<()>;

    /// The versions of this build's migrations the database has not applied
    /// (empty when it is current). Fails when the database is unreachable.
    async fn pending_migrations(&self) -> Result<Vec<i64>>;
}

/// A lane's row of counts as both backends' `lane_counts` read it: lane,
/// queued, running, suspended.
pub(crate) fn lane_counts(
    (lane, queued, running, suspended): (String, i64, i64, i64),
) -> LaneCounts {
    LaneCounts {
        lane,
        queued: queued as u64,
        running: running as u64,
        suspended: suspended as u64,
    }
}

/// How a listing pages: the comparison that keeps the cursor's side, and
/// the id order (`ExecutionFilter::newest_first`).
pub(crate) fn list_order(filter: &crate::model::ExecutionFilter) -> (&'static str, &'static str) {
    if filter.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    }
}

/// The versions a database has applied, from the table sqlx's migrator keeps
/// (same name and columns on both backends).
pub(crate) const APPLIED_MIGRATIONS: &str = "SELECT version FROM _sqlx_migrations WHERE success";

/// A migration that failed, as either backend reports it.
pub(crate) fn migration_failed(e: sqlx::migrate::MigrateError) -> EngineError {
    EngineError::Storage {
        op: "migrate",
        cause: e.into(),
    }
}

/// Of `migrator`'s migrations, the versions not among `applied`.
pub(crate) fn pending(migrator: &sqlx::migrate::Migrator, applied: &[i64]) -> Vec<i64> {
    migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect()
}
