//! The lease history's rule: which lease event a change of an execution's
//! row makes (acquired, renewed, released, expired, revoked, reclaimed), the
//! Postgres trigger (`postgres/sql/functions/flowfabric_lease_events.sql`)
//! as Rust. Every save of a row whose lease may have moved passes the lease
//! as it was before.

use super::record::Exec;
use super::time::Millis;
use super::writes::Writes;
use super::Effects;
use crate::model::{AttemptPhase, Ownership, TerminalOutcome};
use uuid::Uuid;

/// What a lease event compares: the row's lease before a change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LeaseBefore {
    pub(super) lease_id: Option<Uuid>,
    lease_expires_at: Option<Millis>,
    attempt_state_interrupted: bool,
    reclaim_count: i32,
}

impl Exec {
    /// The row's lease now, to compare with after a change.
    pub fn lease_before(&self) -> LeaseBefore {
        LeaseBefore {
            lease_id: self.lease_id,
            lease_expires_at: self.lease_expires_at,
            attempt_state_interrupted: self.attempt_state == AttemptPhase::AttemptInterrupted,
            reclaim_count: self.reclaim_count,
        }
    }

    /// The lease event this change from `before` makes, if any.
    pub(super) fn write_lease_event<'q>(
        &'q self,
        before: LeaseBefore,
        w: &mut Writes<'q>,
        effects: &mut Effects,
    ) {
        if before.lease_id == self.lease_id && before.lease_expires_at == self.lease_expires_at {
            return;
        }
        let kind = if before.lease_id.is_none() && before.attempt_state_interrupted {
            "reclaimed"
        } else if before.lease_id.is_none() {
            "acquired"
        } else if self.lease_id.is_some() {
            "renewed"
        } else if self.reclaim_count > before.reclaim_count {
            "expired"
        } else if self.ownership_state == Ownership::LeaseRevoked
            || matches!(
                self.terminal_outcome,
                Some(
                    TerminalOutcome::Cancelled
                        | TerminalOutcome::Expired
                        | TerminalOutcome::Skipped
                )
            )
        {
            "revoked"
        } else {
            "released"
        };
        w.statement(
            "INSERT INTO lease_events (tenant_id, execution_id, attempt_index, lease_epoch, kind, \
             lease_expires_at, phase, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(self.tenant_id)
        .bind(self.execution_id)
        .bind(self.attempt_index)
        .bind(self.lease_epoch)
        .bind(kind)
        .bind(self.lease_expires_at)
        .bind(self.lifecycle_phase)
        .bind(self.updated_at);
        effects.event_tenants.insert(self.tenant_id);
    }
}
