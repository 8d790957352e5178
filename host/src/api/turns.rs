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
//! [`MAX_WAIT`] is refused with `429 quota_exceeded` (retryable).
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

/// Each tenant's turns at one thing (`what`: requests in flight, open
/// streams).
#[derive(Debug)]
pub(super) struct TenantTurns {
    what: &'static str,
    per_tenant: usize,
    gates: Mutex<HashMap<TenantId, Arc<Semaphore>>>,
}

/// A request's turn, given back when it is dropped.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl TenantTurns {
    pub(super) fn new(what: &'static str, per_tenant: usize) -> Self {
        Self {
            what,
            per_tenant: per_tenant.max(1),
            gates: Mutex::default(),
        }
    }

    fn gate(&self, tenant: TenantId) -> Arc<Semaphore> {
        self.gates
            .lock()
            .expect("turns lock")
            .entry(tenant)
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone()
    }

    fn refused(&self) -> EngineError {
        EngineError::QuotaExceeded {
            what: self.what,
            limit: self.per_tenant as u64,
        }
    }

    /// Wait (at most [`MAX_WAIT`]) for one of the tenant's turns.
    pub(super) async fn take(&self, tenant: TenantId) -> Result<Turn, EngineError> {
        match tokio::time::timeout(MAX_WAIT, self.gate(tenant).acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Turn { _permit: permit }),
            _ => Err(self.refused()),
        }
    }

    /// One of the tenant's turns if one is free now, without waiting.
    pub(super) fn take_now(&self, tenant: TenantId) -> Result<Turn, EngineError> {
        match self.gate(tenant).try_acquire_owned() {
            Ok(permit) => Ok(Turn { _permit: permit }),
            Err(_) => Err(self.refused()),
        }
    }
}
