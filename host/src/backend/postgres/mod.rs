//! [`Backend`] on Postgres.
//!
//! Layout: each storage trait of [`crate::backend`] is implemented in the
//! module of the same name (`tenancy`, `executions`, `leases`, `output`,
//! `events`, `components`, `suspension`, `budgets`, `children`, `flows`,
//! `steps`, `wakeups`, `scanners`, `grants`, `config_values`,
//! `waitpoint_keys`), exactly as in the SQLite backend. The modules they
//! lean on: `claim` (the claim statement), `flow_cancel`, `flow_revive` and
//! `suspension_timeouts` (the passes those concepts need), `outbox` (the event
//! tables), `rows` (row decoding and transactions), `bench` (scratch
//! databases and the raw-SQL baseline). All SQL of the crate for Postgres
//! lives below this module.
//!
//! Design rules, each an improvement on the upstream Postgres backend:
//! * **One claim statement.** A `FOR UPDATE SKIP LOCKED` probe per (tenant, lane)
//!   in a `LATERAL` join, ranked round-robin across tenants, then one `UPDATE` and
//!   one `INSERT` in the same statement: no partition walk and no per-tenant
//!   starvation. Each probe is an ordered scan of `executions_claim_idx`.
//! * **One lock point.** The live lease is mirrored on the execution row; every
//!   fenced write starts by updating that row with the fence in its `WHERE`
//!   clause, then touches the attempt and the outbox. Everything that changes an
//!   execution locks it first, so lease ops, operator ops and scanners never
//!   deadlock on lock order.
//! * **Tenant-first indexes.** Scanners walk tenants laterally too, so one tenant's
//!   backlog of expiries cannot delay another's.

mod budget_adjustments;
mod budgets;
mod children;
mod claim;
mod claim_keys;
mod components;
mod concurrency;
mod config_values;
mod counters;
mod events;
mod executions;
mod flow_cancel;
mod flow_edges;
mod flow_revive;
mod flows;
mod grants;
mod insights;
mod leases;
mod outbox;
mod output;
mod rows;
mod scanners;
mod schedules;
pub mod schema;
mod steps;
mod suspension;
mod suspension_timeouts;
mod tenancy;
mod waitpoint_keys;
mod wakeups;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{migration_failed, pending, Backend, APPLIED_MIGRATIONS};
use crate::error::{EngineError, Result};
use crate::model::ClaimRequest;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Channel that carries "new work may be claimable" (empty payload, coalesced).
const WORK_CHANNEL: &str = "flowfabric_work";
/// Channel that carries the id of an execution whose lease was revoked.
const REVOKED_CHANNEL: &str = "flowfabric_revoked";
/// Channel that carries `<tenant>:<execution>` when a frame is appended.
const UPDATES_CHANNEL: &str = "flowfabric_updates";
/// Channel that says the completion outbox has new events (the payload, the
/// newest event id, is informational: the dispatcher reads by cursor).
const COMPLETION_CHANNEL: &str = "flowfabric_completion";
/// Channel that carries `<stream>:<tenant>` when the lease or signal outbox of
/// a tenant has new events.
const EVENTS_CHANNEL: &str = "flowfabric_events";

/// How long a pooled connection may sit idle and still be used without a
/// ping first (see [`PgBackend::pool_options`]).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub struct PgBackend {
    pool: PgPool,
    notifications: wakeups::Notifications,
    claim_shape: claim::KnownShape,
}

impl PgBackend {
    /// A connection from the pool, for an operation written once for both
    /// drivers (`backend::shared`) that needs no transaction of its own.
    pub(super) async fn connection(
        &self,
        op: &'static str,
    ) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await.map_err(EngineError::storage(op))
    }

    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = Self::pool_options(max_connections)
            .connect_with(Self::connect_options(url)?)
            .await
            .map_err(EngineError::storage("connect"))?;
        Ok(Self::from_pool(pool))
    }

    /// The engine's connection pool; for callers that build their own pool
    /// for [`PgBackend::from_pool`].
    ///
    /// sqlx pings a connection (one round trip) when it goes back to the
    /// pool, and by default again when it is taken out. The second ping
    /// doubled the round trips of every statement, as many again as the
    /// statements themselves, for a connection that answered a moment ago.
    /// So a connection is pinged on the way out only after it has been idle
    /// for [`PING_IF_IDLE_FOR`]: long enough for a server restart or a
    /// dropped link to go unnoticed. One that fails the ping is closed, and
    /// the pool opens a new one in its place.
    pub fn pool_options(max_connections: u32) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }

    /// How the engine connects to `url`; for callers that build their own pool
    /// for [`PgBackend::from_pool`].
    ///
    /// JIT compilation is off. Its thresholds are planner costs, and the claim's
    /// estimates run high whatever its real work (a `LIMIT` taken from a lateral
    /// row is estimated at a tenth of the backlog), so with JIT on every claim
    /// spent about two seconds compiling LLVM code for a query that runs in a
    /// fraction of a millisecond. No statement here is long enough to win it back.
    pub fn connect_options(url: &str) -> Result<PgConnectOptions> {
        let mut options: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| EngineError::invalid("database url", e.to_string()))?;
        // Named in `pg_stat_activity`, unless the URL already names it.
        if options.get_application_name().is_none() {
            options = options.application_name("flowfabric");
        }
        Ok(options.options([("jit", "off")]))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            notifications: wakeups::Notifications::new(pool.clone()),
            pool,
            claim_shape: claim::KnownShape::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The query plan of the claim statement for `request` (nothing is claimed).
    pub async fn explain_claim(&self, request: &ClaimRequest) -> Result<String> {
        claim::explain_claim(&self.pool, request).await
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await.map_err(migration_failed)
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> = sqlx::query_scalar(APPLIED_MIGRATIONS)
            .fetch_all(&self.pool)
            .await
            .map_err(EngineError::storage("read migrations"))?;
        Ok(pending(&MIGRATOR, &applied))
    }
}
