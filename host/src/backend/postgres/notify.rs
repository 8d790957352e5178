//! LISTEN-based wake-ups with one connection per backend.
//!
//! The listener task bumps a `watch` counter on every notification; waiters use
//! `changed()` with a timeout, so a lost connection or a dropped notification
//! only costs one polling interval, never a stuck worker.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, OnceCell};

use super::WORK_CHANNEL;
use crate::error::{EngineError, Result};

pub(super) struct WorkSignal {
    pool: PgPool,
    sender: OnceCell<(watch::Sender<u64>, tokio::task::AbortHandle)>,
}

/// The listener lives as long as the backend that started it.
impl Drop for WorkSignal {
    fn drop(&mut self) {
        if let Some((_, listener)) = self.sender.get() {
            listener.abort();
        }
    }
}

impl WorkSignal {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            sender: OnceCell::new(),
        }
    }

    pub(super) async fn subscribe(&self) -> Result<watch::Receiver<u64>> {
        let sender = self
            .sender
            .get_or_try_init(|| async {
                let mut listener = PgListener::connect_with(&self.pool)
                    .await
                    .map_err(EngineError::storage("listen"))?;
                listener
                    .listen(WORK_CHANNEL)
                    .await
                    .map_err(EngineError::storage("listen"))?;
                let (tx, _) = watch::channel(0u64);
                let task = tokio::spawn(forward(listener, tx.clone()));
                Ok::<_, EngineError>((tx, task.abort_handle()))
            })
            .await?;
        Ok(sender.0.subscribe())
    }
}

async fn forward(mut listener: PgListener, tx: watch::Sender<u64>) {
    loop {
        // `recv` reconnects (and re-LISTENs) by itself after a lost connection.
        match listener.recv().await {
            Ok(_) => {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
            Err(e) => {
                tracing::warn!(error = %e, "work listener failed; retrying");
                // Wake everyone once: work may have arrived while we were deaf.
                tx.send_modify(|n| *n = n.wrapping_add(1));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
