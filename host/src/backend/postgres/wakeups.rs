//! LISTEN-based notifications over one connection per backend.
//!
//! Channels: `flowfabric_work` (new work may be claimable; the listener bumps
//! a `watch` counter, and waiters pair `changed()` with a polling timeout, so a
//! lost connection or notification costs one polling interval, never a stuck
//! worker), `flowfabric_revoked` (an execution's lease was revoked by an
//! operator cancel or its deadline; broadcast so a worker can stop the guest at
//! once instead of at its next lease renewal, which remains the fallback),
//! `flowfabric_updates` (a new frame; the payload names the execution; sent
//! only for executions a live stream follows, which this process keeps
//! marked in `followed_executions` while it has followers, see
//! [`renew_follows`]),
//! `flowfabric_completion` (the completion outbox has new events: a dispatcher
//! task reads them by cursor, once for the whole process, and broadcasts each
//! execution as an update) and `flowfabric_events` (a tenant's lease or signal
//! stream has new events). Tailers and waiters subscribe to those broadcasts,
//! so none of them holds a pool connection while it waits. Updates are
//! wake-ups, not data: a subscriber re-reads what it shows, and polls slowly
//! too, because a notification lost with a connection is not replayed.

use std::sync::Arc;
use std::time::Duration;

use super::Connections;
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{broadcast, watch, OnceCell};

use super::outbox;
use super::PgBackend;
use super::{COMPLETION_CHANNEL, EVENTS_CHANNEL, REVOKED_CHANNEL, UPDATES_CHANNEL, WORK_CHANNEL};
use crate::backend::addressed_wakeups::{ExecutionWakeups, TenantWakeups};
use crate::backend::{Run, Wakeups};
use crate::error::{EngineError, Result};
use crate::model::{EventCursor, ExecutionId, ExecutionUpdate, TenantId};

#[async_trait]
impl Wakeups for PgBackend {
    async fn work_signal(&self) -> Result<watch::Receiver<u64>> {
        self.notifications.work().await
    }

    async fn revocations(&self) -> Result<broadcast::Receiver<ExecutionId>> {
        self.notifications.revoked().await
    }

    async fn updates(&self, watched: ExecutionUpdate) -> Result<broadcast::Receiver<()>> {
        self.notifications.updates(watched).await
    }

    async fn event_wakeups(&self, tenant: TenantId) -> Result<broadcast::Receiver<()>> {
        self.notifications.events(tenant).await
    }
}

pub(super) struct Notifications {
    pool: Connections,
    /// `PgListener` keeps a connection of a sqlx pool of one, opened with
    /// the backend's options, for as long as it listens (see
    /// [`PgBackend::with_options`]).
    listener_options: PgConnectOptions,
    listening: OnceCell<Listening>,
}

struct Listening {
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: Arc<ExecutionWakeups>,
    events: Arc<TenantWakeups>,
    tasks: [tokio::task::AbortHandle; 3],
}

/// The listener lives as long as the backend that started it.
impl Drop for Notifications {
    fn drop(&mut self) {
        if let Some(listening) = self.listening.get() {
            listening.tasks.iter().for_each(|task| task.abort());
        }
    }
}

impl Notifications {
    pub(super) fn new(pool: Connections, listener_options: PgConnectOptions) -> Self {
        Self {
            pool,
            listener_options,
            listening: OnceCell::new(),
        }
    }

    async fn listening(&self) -> Result<&Listening> {
        self.listening
            .get_or_try_init(|| async {
                let listener_pool = PgPoolOptions::new()
                    .max_connections(1)
                    .connect_lazy_with(self.listener_options.clone());
                let mut listener = PgListener::connect_with(&listener_pool)
                    .await
                    .map_err(EngineError::storage("listen"))?;
                listener
                    .listen_all([
                        WORK_CHANNEL,
                        REVOKED_CHANNEL,
                        UPDATES_CHANNEL,
                        COMPLETION_CHANNEL,
                        EVENTS_CHANNEL,
                    ])
                    .await
                    .map_err(EngineError::storage("listen"))?;
                let cursor = outbox::completions_head(&self.pool).await?;
                let (work, _) = watch::channel(0u64);
                let (revoked, _) = broadcast::channel(1024);
                let updates = Arc::new(ExecutionWakeups::default());
                let events = Arc::new(TenantWakeups::default());
                let (completions, completed) = watch::channel(0u64);
                let senders = Senders {
                    work: work.clone(),
                    revoked: revoked.clone(),
                    updates: updates.clone(),
                    events: events.clone(),
                    completions,
                };
                let listen = tokio::spawn(forward(listener, senders));
                let dispatch = tokio::spawn(dispatch_completions(
                    self.pool.clone(),
                    Woken {
                        updates: updates.clone(),
                        tenants: events.clone(),
                    },
                    completed,
                    cursor,
                ));
                let renew = tokio::spawn(renew_follows(self.pool.clone(), updates.clone()));
                Ok::<_, EngineError>(Listening {
                    work,
                    revoked,
                    updates,
                    events,
                    tasks: [
                        listen.abort_handle(),
                        dispatch.abort_handle(),
                        renew.abort_handle(),
                    ],
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

    /// Follow `watched`: its frames notify from the moment this returns
    /// (the follow is marked, and committed, before it does).
    pub(super) async fn updates(
        &self,
        watched: ExecutionUpdate,
    ) -> Result<broadcast::Receiver<()>> {
        let receiver = self.listening().await?.updates.subscribe(watched);
        mark_followed(&self.pool, &[watched]).await?;
        Ok(receiver)
    }

    pub(super) async fn events(&self, tenant: TenantId) -> Result<broadcast::Receiver<()>> {
        Ok(self.listening().await?.events.subscribe(tenant))
    }
}

struct Senders {
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: Arc<ExecutionWakeups>,
    events: Arc<TenantWakeups>,
    /// Bumped for every completion notification; the dispatcher watches it.
    completions: watch::Sender<u64>,
}

/// How soon the dispatcher reads again while the horizon withholds events.
const PENDING_RETRY: Duration = Duration::from_millis(20);
/// How often it reads without a notification (one lost with a connection).
const DISPATCH_POLL: Duration = Duration::from_secs(2);

/// Who the completion dispatcher wakes: watchers of each execution that
/// ended, and followers of each tenant's completion stream.
struct Woken {
    updates: Arc<ExecutionWakeups>,
    tenants: Arc<TenantWakeups>,
}

/// Broadcast every completion event, in cursor order, to whoever waits: one
/// outbox read per wake-up for the whole process.
async fn dispatch_completions(
    pool: Connections,
    woken: Woken,
    mut notified: watch::Receiver<u64>,
    mut cursor: EventCursor,
) {
    let mut pending = false;
    // Nobody was listening for a while: wake-ups for the events missed then
    // are of no use to subscribers that arrive later (they read state first).
    let mut stale = false;
    loop {
        let wait = if pending {
            PENDING_RETRY
        } else {
            DISPATCH_POLL
        };
        if let Ok(Err(_)) = tokio::time::timeout(wait, notified.changed()).await {
            return; // The listener is gone.
        }
        if !woken.updates.followed() && !woken.tenants.followed() {
            (stale, pending) = (true, false);
            continue;
        }
        if stale {
            match outbox::completions_head(&pool).await {
                Ok(head) => (cursor, stale) = (head, false),
                Err(e) => tracing::warn!(error = %e, "reading the completion outbox head"),
            }
        }
        loop {
            match outbox::all_completions(&pool, cursor, 1000).await {
                Ok((ended, next, more)) => {
                    let full = ended.len() == 1000;
                    let mut tenants = std::collections::BTreeSet::new();
                    for (tenant_id, execution_id) in ended {
                        woken.updates.wake(ExecutionUpdate {
                            tenant_id,
                            execution_id,
                        });
                        tenants.insert(tenant_id);
                    }
                    for tenant in tenants {
                        woken.tenants.wake(tenant);
                    }
                    cursor = next;
                    pending = more;
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading completion events for subscribers");
                    break;
                }
            }
        }
    }
}

/// How long a follow is marked for; renewed at a third of it while the
/// follower lasts.
const FOLLOW_FOR: Duration = Duration::from_secs(60);
/// Most expired follows one statement deletes, and most such statements a
/// renewal pass runs.
const EXPIRED_PER_PASS: i64 = 1_000;
const EXPIRED_STATEMENTS: usize = 10;

/// Mark `watched` as followed for [`FOLLOW_FOR`] from now.
async fn mark_followed(pool: &Connections, watched: &[ExecutionUpdate]) -> Result<()> {
    if watched.is_empty() {
        return Ok(());
    }
    let tenants: Vec<uuid::Uuid> = watched.iter().map(|w| w.tenant_id.as_uuid()).collect();
    let executions: Vec<uuid::Uuid> = watched.iter().map(|w| w.execution_id.as_uuid()).collect();
    sqlx::query(
        "INSERT INTO followed_executions (tenant_id, execution_id, until) \
         SELECT t, e, now() + $3 * interval '1 millisecond' FROM unnest($1::uuid[], $2::uuid[]) AS w(t, e) \
         ORDER BY t, e \
         ON CONFLICT (tenant_id, execution_id) DO UPDATE SET until = excluded.until",
    )
    .bind(&tenants)
    .bind(&executions)
    .bind(FOLLOW_FOR.as_millis() as i64)
    .run(pool, "follow")
    .await?;
    Ok(())
}

/// While this process has followers, keep their executions marked
/// followed, and delete follows that expired (a follower's process that
/// stopped); a follow that lapses costs its stream wake-ups until the
/// next pass, never its frames (streams poll too).
async fn renew_follows(pool: Connections, updates: Arc<ExecutionWakeups>) {
    let mut every = tokio::time::interval(FOLLOW_FOR / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(e) = mark_followed(&pool, &updates.followed_addresses()).await {
            tracing::warn!(error = %e, "renewing followed executions");
        }
        forget_expired_follows(&pool).await;
    }
}

/// Delete expired follows, [`EXPIRED_PER_PASS`] a statement, until a
/// statement finds fewer or [`EXPIRED_STATEMENTS`] have run.
async fn forget_expired_follows(pool: &Connections) {
    for _ in 0..EXPIRED_STATEMENTS {
        let expired = sqlx::query(
            "DELETE FROM followed_executions WHERE (tenant_id, execution_id) IN \
                 (SELECT tenant_id, execution_id FROM followed_executions \
                  WHERE until < now() ORDER BY tenant_id, execution_id LIMIT $1 \
                  FOR UPDATE SKIP LOCKED)",
        )
        .bind(EXPIRED_PER_PASS)
        .run(pool, "forget follows")
        .await;
        match expired {
            Ok(done) if done.rows_affected() == EXPIRED_PER_PASS as u64 => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "deleting expired follows");
                return;
            }
        }
    }
}

async fn forward(mut listener: PgListener, senders: Senders) {
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
                        senders.updates.wake(update);
                    }
                }
                COMPLETION_CHANNEL => senders.completions.send_modify(|n| *n = n.wrapping_add(1)),
                EVENTS_CHANNEL => {
                    if let Some(tenant) = n
                        .payload()
                        .split_once(':')
                        .and_then(|(_, t)| t.parse().ok())
                    {
                        senders.events.wake(tenant);
                    }
                }
                _ => senders.work.send_modify(|n| *n = n.wrapping_add(1)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "listener failed; retrying");
                // Wake everyone once: work may have arrived while we were deaf.
                senders.work.send_modify(|n| *n = n.wrapping_add(1));
                senders.completions.send_modify(|n| *n = n.wrapping_add(1));
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
