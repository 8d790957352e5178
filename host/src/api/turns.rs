//! Requests in flight, per tenant: a tenant's requests past its share wait
//! for one of its own to finish.
//!
//! Why: the API's requests share one pool of database connections. A
//! tenant sending requests as fast as it can would otherwise hold every
//! connection, and every other tenant's request would queue behind its
//! flood. With a share per tenant smaller than the pool, a flood waits on
//! its own tenant's turns and leaves connections for the others. A request
//! holds its turn while its handler runs; a stream a handler returns (the
//! Server-Sent Events) does not keep it. A request that waits longer than
//! [`MAX_WAIT`] is refused with `429 quota_exceeded` (retryable), and so,
//! at once, is one that finds [`WAITING_PER_TURN`] requests already waiting
//! for each turn: a flood holds a bounded number of tasks and connections
//! while it waits, not one per request it sent.
//!
//! Streams have turns of their own: each open stream holds one for as long
//! as it is open (its task reads again at every wake-up and every couple of
//! seconds), and one past the tenant's share is refused at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::EngineError;
use crate::model::TenantId;

/// The longest a request waits for its tenant's turn.
pub const MAX_WAIT: Duration = Duration::from_secs(10);

/// Requests that may wait for each of a tenant's turns.
pub const WAITING_PER_TURN: usize = 4;

/// Each tenant's turns at one thing (`what`: requests in flight, open
/// streams).
#[derive(Debug)]
pub(super) struct TenantTurns {
    what: &'static str,
    per_tenant: usize,
    gates: Mutex<HashMap<TenantId, Gate>>,
}

/// One tenant's turns, and the places of the requests that hold or wait
/// for one.
#[derive(Debug, Clone)]
struct Gate {
    turns: Arc<Semaphore>,
    places: Arc<Semaphore>,
}

/// A request's turn, given back when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _turn: OwnedSemaphorePermit,
    _place: OwnedSemaphorePermit,
}

impl TenantTurns {
    pub(super) fn new(what: &'static str, per_tenant: usize) -> Self {
        Self {
            what,
            per_tenant: per_tenant.max(1),
            gates: Mutex::default(),
        }
    }

    fn gate(&self, tenant: TenantId) -> Gate {
        let places = self.per_tenant * (1 + WAITING_PER_TURN);
        self.gates
            .lock()
            .expect("turns lock")
            .entry(tenant)
            .or_insert_with(|| Gate {
                turns: Arc::new(Semaphore::new(self.per_tenant)),
                places: Arc::new(Semaphore::new(places)),
            })
            .clone()
    }

    fn refused(&self) -> EngineError {
        EngineError::QuotaExceeded {
            what: self.what,
            limit: self.per_tenant as u64,
        }
    }

    /// Wait (at most [`MAX_WAIT`]) for one of the tenant's turns.
    /// Refused at once if every place to wait is taken.
    pub(super) async fn take(&self, tenant: TenantId) -> Result<Turn, EngineError> {
        let gate = self.gate(tenant);
        let place = gate
            .places
            .try_acquire_owned()
            .map_err(|_| self.refused())?;
        match tokio::time::timeout(MAX_WAIT, gate.turns.acquire_owned()).await {
            Ok(Ok(turn)) => Ok(Turn {
                _turn: turn,
                _place: place,
            }),
            _ => Err(self.refused()),
        }
    }

    /// One of the tenant's turns if one is free now, without waiting.
    pub(super) fn take_now(&self, tenant: TenantId) -> Result<Turn, EngineError> {
        let gate = self.gate(tenant);
        match (
            gate.places.try_acquire_owned(),
            gate.turns.try_acquire_owned(),
        ) {
            (Ok(place), Ok(turn)) => Ok(Turn {
                _turn: turn,
                _place: place,
            }),
            _ => Err(self.refused()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the turn held and every place to wait taken, the next request
    /// is refused at once; the waiting ones get the turn in order once it
    /// frees, and another tenant is not affected.
    #[tokio::test]
    async fn waiting_is_bounded_and_refused_at_once_past_it() {
        let turns = Arc::new(TenantTurns::new("requests in flight", 1));
        let (tenant, other) = (TenantId::new(), TenantId::new());
        let held = turns.take(tenant).await.expect("a free turn");
        let waiting: Vec<_> = (0..WAITING_PER_TURN)
            .map(|_| {
                let turns = turns.clone();
                tokio::spawn(async move { turns.take(tenant).await.map(drop) })
            })
            .collect();
        for _ in 0..WAITING_PER_TURN * 4 {
            tokio::task::yield_now().await;
        }
        let started = std::time::Instant::now();
        let refused = turns.take(tenant).await.unwrap_err();
        assert_eq!(refused.kind(), "quota_exceeded", "{refused}");
        assert!(started.elapsed() < MAX_WAIT / 2, "refused without waiting");
        turns.take(other).await.expect("another tenant's turn");

        drop(held);
        for waited in waiting {
            waited.await.unwrap().expect("the turn, in order");
        }
    }
}
