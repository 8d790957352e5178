//! LISTEN-based notifications over one connection per backend.
//!
//! Two channels: `flowfabric_work` (new work may be claimable; the listener bumps
//! a `watch` counter, and waiters pair `changed()` with a polling timeout, so a
//! lost connection or notification costs one polling interval, never a stuck
//! worker) and `flowfabric_revoked` (an execution's lease was revoked by an
//! operator cancel or its deadline; broadcast so a worker can stop the guest at
//! once instead of at its next lease renewal, which remains the fallback).

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch, OnceCell};

use super::{REVOKED_CHANNEL, WORK_CHANNEL};
use crate::error::{EngineError, Result};
use crate::model::ExecutionId;

pub(super) struct Notifications {
    pool: PgPool,
    listening: OnceCell<Listening>,
}

struct Listening {
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    task: tokio::task::AbortHandle,
}

/// The listener lives as long as the backend that started it.
impl Drop for Notifications {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.get() {
            listening.task.abort();
        }
    }
}

impl Notifications {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            listening: OnceCell::new(),
        }
    }

    async fn listening(&self) -> Result<&Listening> {
        self.listening
            .get_or_try_init(|| async {
                let mut listener = PgListener::connect_with(&self.pool)
                    .await
                    .map_err(EngineError::storage("listen"))?;
                listener
                    .listen_all([WORK_CHANNEL, REVOKED_CHANNEL])
                    .await
                    .map_err(EngineError::storage("listen"))?;
                let (work, _) = watch::channel(0u64);
                let (revoked, _) = broadcast::channel(1024);
                let task = tokio::spawn(forward(listener, work.clone(), revoked.clone()));
                Ok::<_, EngineError>(Listening {
                    work,
                    revoked,
                    task: task.abort_handle(),
                })
            })
            .await
    }

    pub(super) async fn work(&self) -> Result<watch::Receiver<u64>> {
        Ok(self.listening().await?.work.subscribe())
    }

    pub(super) async fn revoked(&self) -> Result<broadcast::Receiver<ExecutionId>> {
        Ok(self.listening().await?.revoked.subscribe())
    }
}

async fn forward(
    mut listener: PgListener,
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
) {
    loop {
        // `recv` reconnects (and re-LISTENs) by itself after a lost connection.
        match listener.recv().await {
            Ok(n) if n.channel() == REVOKED_CHANNEL => {
                if let Ok(id) = n.payload().parse() {
                    // No receivers is fine: no worker here runs anything.
                    let _ = revoked.send(id);
                }
            }
            Ok(_) => {
                work.send_modify(|n| *n = n.wrapping_add(1));
            }
            Err(e) => {
                tracing::warn!(error = %e, "listener failed; retrying");
                // Wake everyone once: work may have arrived while we were deaf.
                work.send_modify(|n| *n = n.wrapping_add(1));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
