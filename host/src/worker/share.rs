//! Each tenant's share of a pool's slots.
//!
//! Claims go round-robin across tenants, but a claim only fills slots that
//! are free: a tenant whose runs are long (guests that spin until their
//! timeout) takes every slot that frees, one at a time, and soon holds them
//! all; another tenant's work then waits for the first of those runs to end,
//! whatever its priority. So no tenant may run more than `slots` at once in
//! a pool, and the pool has `reserved` slots more: while one tenant runs its
//! `slots`, the reserve (and every slot that frees) runs other tenants' work
//! at once. A pool serving one tenant runs exactly as many at once as it
//! did without the reserve.
//!
//! A claimed-ahead execution of a tenant at its share waits in the ready
//! queue for one of that tenant's runs to end. That is what claiming ahead
//! is for when runs are short, but with long runs it would only hold leases
//! other pools could use, so claims pass over a tenant that is at its share
//! *and* whose recent runs were not short: its work stays in the queue.
//! Each tenant's pace is its own, so one tenant's long runs do not change
//! how another's short ones are claimed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;

use crate::model::TenantId;

/// Runs this short on average keep their tenant claimable at its share: its
/// claimed-ahead work starts within moments.
const SHORT_RUN: Duration = Duration::from_millis(20);

/// Tenants whose pace a pool remembers; past it, it starts over.
const MAX_PACES: usize = 10_000;

/// Slots kept for other tenants when `reserved` is not set: a quarter of the
/// slots, at least one.
pub fn default_reserve(slots: usize) -> usize {
    (slots / 4).max(1)
}

/// How many each tenant runs in the pool's slots, and how long its runs take.
#[derive(Clone)]
pub(super) struct Shares {
    /// The most one tenant may run at once.
    pub(super) per_tenant: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    running: HashMap<TenantId, usize>,
    /// Mean run time per tenant, in microseconds (an exponentially weighted
    /// mean, as the pool's own pace).
    pace_us: HashMap<TenantId, u64>,
}

/// A slot held by one tenant's run; dropping it frees the slot and the
/// tenant's share of it.
pub(super) struct Slot {
    _permit: OwnedSemaphorePermit,
    tenant: TenantId,
    held_at: Instant,
    shares: Shares,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let us = u64::try_from(self.held_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut state = self.shares.state.lock().expect("shares lock");
        if let Some(n) = state.running.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                state.running.remove(&self.tenant);
            }
        }
        if state.pace_us.len() >= MAX_PACES {
            state.pace_us.clear();
        }
        let mean = state.pace_us.entry(self.tenant).or_insert(0);
        *mean = if *mean == 0 {
            us.max(1)
        } else {
            *mean - *mean / 8 + us / 8
        };
    }
}

impl Shares {
    pub(super) fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            state: Arc::default(),
        }
    }

    /// Runs of `tenant` now.
    pub(super) fn running(&self, tenant: TenantId) -> usize {
        let state = self.state.lock().expect("shares lock");
        state.running.get(&tenant).copied().unwrap_or(0)
    }

    /// Whether `tenant` may start another run.
    pub(super) fn may_start(&self, tenant: TenantId) -> bool {
        self.running(tenant) < self.per_tenant
    }

    /// A free slot, now held by a run of `tenant`.
    pub(super) fn hold(&self, permit: OwnedSemaphorePermit, tenant: TenantId) -> Slot {
        *self
            .state
            .lock()
            .expect("shares lock")
            .running
            .entry(tenant)
            .or_default() += 1;
        Slot {
            _permit: permit,
            tenant,
            held_at: Instant::now(),
            shares: self.clone(),
        }
    }

    /// Tenants the next claim passes over: at their share, with runs that
    /// were not short (or none ended yet).
    pub(super) fn full(&self) -> Vec<TenantId> {
        let state = self.state.lock().expect("shares lock");
        state
            .running
            .iter()
            .filter(|(tenant, &n)| {
                let pace = state.pace_us.get(tenant).copied().unwrap_or(0);
                n >= self.per_tenant && (pace == 0 || pace >= SHORT_RUN.as_micros() as u64)
            })
            .map(|(tenant, _)| *tenant)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::Semaphore;

    #[test]
    fn a_tenant_runs_at_most_its_share_and_frees_it_with_the_slot() {
        let shares = Shares::new(2);
        let permits = Arc::new(Semaphore::new(3));
        let (a, b) = (
            TenantId(uuid::Uuid::from_u128(1)),
            TenantId(uuid::Uuid::from_u128(2)),
        );
        let permit = || permits.clone().try_acquire_owned().unwrap();
        let first = shares.hold(permit(), a);
        assert!(shares.may_start(a));
        let second = shares.hold(permit(), a);
        assert!(!shares.may_start(a), "two is A's share");
        assert!(shares.may_start(b), "the third slot is for B");
        assert_eq!(shares.full(), vec![a], "no run of A has ended: not short");
        drop(first);
        assert!(shares.may_start(a));
        assert!(shares.full().is_empty());
        drop(second);
        assert_eq!(shares.running(a), 0);
        assert_eq!(permits.available_permits(), 3);
    }

    #[test]
    fn a_tenant_with_short_runs_stays_claimable_at_its_share() {
        let shares = Shares::new(1);
        let permits = Arc::new(Semaphore::new(2));
        let permit = || permits.clone().try_acquire_owned().unwrap();
        let (quick, slow) = (
            TenantId(uuid::Uuid::from_u128(1)),
            TenantId(uuid::Uuid::from_u128(2)),
        );
        drop(shares.hold(permit(), quick));
        let _running = shares.hold(permit(), quick);
        assert!(shares.full().is_empty(), "its runs take microseconds");
        let long = shares.hold(permit(), slow);
        std::thread::sleep(SHORT_RUN);
        drop(long);
        let _running_too = shares.hold(permit(), slow);
        assert_eq!(shares.full(), vec![slow]);
    }

    #[test]
    fn the_reserve_is_a_quarter_of_the_slots_and_at_least_one() {
        assert_eq!(default_reserve(1), 1);
        assert_eq!(default_reserve(4), 1);
        assert_eq!(default_reserve(16), 4);
    }
}
