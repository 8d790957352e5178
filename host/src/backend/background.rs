//! The background side of storage: in-process wake-ups that let waiters react
//! at once, and the scanner passes that repair what no transaction could
//! finish at the time (expired leases, due timers, locked rows).
//!
//! Both are safe to lose: a wake-up only shortens a wait that polling would
//! end anyway, and a scanner pass is idempotent and safe to run on several
//! hosts at once.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::shared::storage_methods;
use super::Sweep;
use tokio::sync::{broadcast, watch};

use crate::error::Result;
use crate::model::{ExecutionId, ExecutionUpdate, TenantId};

/// Best-effort in-process wake-ups; the record is always the database.
#[async_trait]
pub trait Wakeups: Send + Sync {
    /// A signal that changes whenever new work may be claimable.
    async fn work_signal(&self) -> Result<watch::Receiver<u64>>;

    /// Ids of executions whose lease an operator or a deadline revoked, so a
    /// worker running one can stop it at once. Best effort: lease renewal
    /// remains the guarantee.
    async fn revocations(&self) -> Result<broadcast::Receiver<ExecutionId>>;

    /// Wake-ups for `watched`'s followers: a frame was appended or it
    /// ended. Only that execution's (see `addressed_wakeups`). Best effort,
    /// like revocations: watchers poll slowly as well.
    async fn updates(&self, watched: ExecutionUpdate) -> Result<broadcast::Receiver<()>>;

    /// Wake-ups for `tenant`'s followers of its lease, signal and
    /// completion streams: its streams have new events. Only that tenant's
    /// (see `addressed_wakeups`). Best effort like `updates`.
    async fn event_wakeups(&self, tenant: TenantId) -> Result<broadcast::Receiver<()>>;
}

/// Scanner passes. Each handles at most `limit` rows per tenant and returns how
/// many it changed; all are safe to run concurrently on several hosts. Those
/// that take a [`Sweep`] can be narrowed to one tenant.
#[async_trait]
pub trait Scanners: Send + Sync {
    async fn reclaim_expired_leases(&self, sweep: Sweep) -> Result<u64>;

    async fn promote_delayed(&self, sweep: Sweep) -> Result<u64>;

    async fn fail_timed_out_attempts(&self, sweep: Sweep) -> Result<u64>;

    async fn expire_past_deadline(&self, sweep: Sweep) -> Result<u64>;

    async fn time_out_suspensions(&self, sweep: Sweep) -> Result<u64>;

    /// Cancel upstreams a satisfied `cancel_remaining` join could not cancel
    /// at once (their rows were locked at the time).
    async fn cancel_pending_siblings(&self, sweep: Sweep) -> Result<u64>;

    /// Resume parents whose children have all ended but that no child's
    /// transaction could resume (their row was locked at the time).
    async fn wake_waiting_parents(&self, sweep: Sweep) -> Result<u64>;

    /// Reset budgets whose interval has passed.
    async fn reset_due_budgets(&self, sweep: Sweep) -> Result<u64>;

    /// Delete events older than `retention` from every event stream.
    async fn prune_events(&self, retention: std::time::Duration, limit: u32) -> Result<u64>;

    /// Delete the tenant's executions ended before `cutoff`, with everything
    /// recorded of them, at most `limit` executions and `limit` flows (see
    /// `shared::retention` for what is kept longer). Returns how many
    /// executions went.
    async fn prune_executions(
        &self,
        tenant: TenantId,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<u64>;
}

// Every pass is the backend's own.
storage_methods! { $ implement_scanners: impl Scanners in scanners {
    read {}
    write {}
    own {
        reclaim_expired_leases(sweep: Sweep) -> u64;
        promote_delayed(sweep: Sweep) -> u64;
        fail_timed_out_attempts(sweep: Sweep) -> u64;
        expire_past_deadline(sweep: Sweep) -> u64;
        time_out_suspensions(sweep: Sweep) -> u64;
        cancel_pending_siblings(sweep: Sweep) -> u64;
        wake_waiting_parents(sweep: Sweep) -> u64;
        reset_due_budgets(sweep: Sweep) -> u64;
        prune_events(retention: std::time::Duration, limit: u32) -> u64;
        prune_executions(tenant: TenantId, cutoff: DateTime<Utc>, limit: u32) -> u64;
    }
} }
