//! LISTEN-based notifications over one connection per backend.
//!
//! Three channels: `flowfabric_work` (new work may be claimable; the listener bumps
//! a `watch` counter, and waiters pair `changed()` with a polling timeout, so a
//! lost connection or notification costs one polling interval, never a stuck
//! worker) and `flowfabric_revoked` (an execution's lease was revoked by an
//! operator cancel or its deadline; broadcast so a worker can stop the guest at
//! once instead of at its next lease renewal, which remains the fallback) and
//! the update channels (`flowfabric_updates` for a new frame, whose payload
//! names the execution, and `flowfabric_completion`, whose payload is the newest
//! outbox id: the listener reads the new outbox rows, once for the whole process,
//! and broadcasts each execution). Tailers and waiters subscribe to that
//! broadcast, so none of them holds a pool connection while it waits. Updates
//! are wake-ups, not data: a subscriber re-reads what it shows, and polls
//! slowly too, because a notification lost with a connection is not replayed.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch, OnceCell};

use super::{COMPLETION_CHANNEL, REVOKED_CHANNEL, UPDATES_CHANNEL, WORK_CHANNEL};
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, ExecutionUpdate};

pub(super) struct Notifications {
    pool: PgPool,
    listening: OnceCell<Listening>,
}

struct Listening {
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: broadcast::Sender<ExecutionUpdate>,
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
                    .listen_all([
                        WORK_CHANNEL,
                        REVOKED_CHANNEL,
                        UPDATES_CHANNEL,
                        COMPLETION_CHANNEL,
                    ])
                    .await
                    .map_err(EngineError::storage("listen"))?;
                let cursor = outbox_head(&self.pool).await?;
                let (work, _) = watch::channel(0u64);
                let (revoked, _) = broadcast::channel(1024);
                let (updates, _) = broadcast::channel(4096);
                let senders = Senders {
                    work: work.clone(),
                    revoked: revoked.clone(),
                    updates: updates.clone(),
                };
                let task = tokio::spawn(forward(listener, self.pool.clone(), senders, cursor));
                Ok::<_, EngineError>(Listening {
                    work,
                    revoked,
                    updates,
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

    pub(super) async fn updates(&self) -> Result<broadcast::Receiver<ExecutionUpdate>> {
        Ok(self.listening().await?.updates.subscribe())
    }
}

struct Senders {
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: broadcast::Sender<ExecutionUpdate>,
}

async fn outbox_head(pool: &PgPool) -> Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(event_id), 0) FROM completion_events")
        .fetch_one(pool)
        .await
        .map_err(EngineError::storage("read outbox head"))
}

/// Broadcast the executions of outbox events after `cursor` (served by
/// `completion_events_id_idx`); returns the new cursor.
async fn dispatch_completions(
    pool: &PgPool,
    updates: &broadcast::Sender<ExecutionUpdate>,
    mut cursor: i64,
    newest: i64,
) -> i64 {
    if updates.receiver_count() == 0 {
        return cursor.max(newest);
    }
    while cursor < newest {
        let rows: Vec<(i64, uuid::Uuid, uuid::Uuid)> = match sqlx::query_as(
            "SELECT event_id, tenant_id, execution_id FROM completion_events \
             WHERE event_id > $1 AND event_id <= $2 ORDER BY event_id LIMIT 1000",
        )
        .bind(cursor)
        .bind(newest)
        .fetch_all(pool)
        .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "reading completion events for subscribers");
                return newest;
            }
        };
        let Some(&(last, _, _)) = rows.last() else {
            break;
        };
        for (_, tenant_id, execution_id) in rows {
            let _ = updates.send(ExecutionUpdate {
                tenant_id,
                execution_id,
            });
        }
        cursor = last;
    }
    cursor.max(newest)
}

async fn forward(mut listener: PgListener, pool: PgPool, senders: Senders, mut cursor: i64) {
    loop {
        // `recv` reconnects (and re-LISTENs) by itself after a lost connection.
        match listener.recv().await {
            Ok(n) => match n.channel() {
                REVOKED_CHANNEL => {
                    if let Ok(id) = n.payload().parse() {
                        // No receivers is fine: no worker here runs anything.
                        let _ = senders.revoked.send(id);
                    }
                }
                UPDATES_CHANNEL => {
                    if let Some(update) = parse_update(n.payload()) {
                        let _ = senders.updates.send(update);
                    }
                }
                COMPLETION_CHANNEL => {
                    if let Ok(newest) = n.payload().parse() {
                        cursor =
                            dispatch_completions(&pool, &senders.updates, cursor, newest).await;
                    }
                }
                _ => senders.work.send_modify(|n| *n = n.wrapping_add(1)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "listener failed; retrying");
                // Wake everyone once: work may have arrived while we were deaf.
                senders.work.send_modify(|n| *n = n.wrapping_add(1));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// `<tenant id>:<execution id>`.
fn parse_update(payload: &str) -> Option<ExecutionUpdate> {
    let (tenant, execution) = payload.split_once(':')?;
    Some(ExecutionUpdate {
        tenant_id: tenant.parse().ok()?,
        execution_id: execution.parse().ok()?,
    })
}
