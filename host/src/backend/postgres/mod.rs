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
mod explain;
mod flow_cancel;
mod flow_revive;
mod flows;
mod grants;
mod insights;
mod leases;
mod outbox;
mod output;
mod retention;
mod rows;
mod scanners;
mod schedules;
pub mod schema;
mod steps;
mod suspension;
mod suspension_timeouts;
mod tenancy;
mod usage;
mod waitpoint_keys;
mod wakeups;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgConnectOptions;

/// The backend's connections (see [`crate::backend::pool`]).
pub type Connections = super::pool::Connections<sqlx::Postgres>;

use super::{migration_failed, pending, Backend, APPLIED_MIGRATIONS};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::ClaimRequest;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Channel that carries "new work may be claimable" (empty payload, coalesced).
const WORK_CHANNEL: &str = "flowfabric_work";
/// Channel that carries the id of an execution whose lease was revoked.
const REVOKED_CHANNEL: &str = "flowfabric_revoked";
/// Channel that carries `<tenant>:<execution>` when a frame is appended to
/// an execution a live stream follows.
const UPDATES_CHANNEL: &str = "flowfabric_updates";

/// A statement's column that notifies [`UPDATES_CHANNEL`] for the execution
/// `$1` (tenant) and `$2` (execution) name, if a live stream follows it
/// (`followed_executions`; `wakeups.rs` keeps those rows); NULL otherwise.
/// Its value is never read.
fn notify_followers() -> String {
    format!(
        "(SELECT pg_notify('{UPDATES_CHANNEL}', $1::text || ':' || $2::text) \
         FROM followed_executions f \
         WHERE f.tenant_id = $1 AND f.execution_id = $2 AND f.until > now())"
    )
}
/// Channel that says the completion outbox has new events (the payload, the
/// newest event id, is informational: the dispatcher reads by cursor).
const COMPLETION_CHANNEL: &str = "flowfabric_completion";
/// Channel that carries `<stream>:<tenant>` when the lease or signal outbox of
/// a tenant has new events.
const EVENTS_CHANNEL: &str = "flowfabric_events";

/// A write by a lease holder, once the lease is checked and its execution's
/// row locked ([`PgBackend::write_held`]): what the write works on.
struct Held<'a> {
    tx: &'a mut sqlx::PgConnection,
    lease: &'a crate::model::LeaseHandle,
    /// How many times the execution has suspended so far.
    suspensions: i32,
    /// For explaining a refusal outside the transaction.
    pool: &'a Connections,
    op: &'static str,
}

pub struct PgBackend {
    pool: Connections,
    /// The claim's own connections, which plan for no values (`claim.rs`).
    claims: Connections,
    notifications: wakeups::Notifications,
    claim_shape: claim::KnownShape,
    held_cursors: crate::backend::held_keys::HeldCursors,
}

impl PgBackend {
    /// Run `body` on a pooled connection, outside a transaction: for an
    /// operation written once for both drivers (`backend::shared`), as
    /// SQLite's `read` runs it. The connection goes straight back to the
    /// pool when `body` succeeds (it awaited every statement it sent); after
    /// an error it is pinged first, as the pool does for any unsettled one.
    pub(super) async fn read<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T>,
    ) -> Result<T> {
        self.pool.read(op, body).await
    }

    /// Run `body` as one transaction: for a write written once for both
    /// drivers, as SQLite's `quiet_write` runs it. (Postgres's wake-ups come
    /// from its triggers, so there is nothing else to announce.)
    pub(super) async fn quiet_write<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T>,
    ) -> Result<T> {
        self.pool.transaction(op, None, body).await
    }

    /// One transaction under a lease: the lease's execution row is locked
    /// first, fenced by the lease's epoch (a stale lease changes nothing and
    /// is refused with the reason); then `body` runs on the [`Held`] row.
    async fn write_held<T>(
        &self,
        op: &'static str,
        lease: &crate::model::LeaseHandle,
        body: impl AsyncFnOnce(Held<'_>) -> Result<T>,
    ) -> Result<T> {
        let pool = &self.pool;
        self.pool
            .transaction(op, None, async |tx| {
                let suspensions = suspension::lock_leased(pool, tx, lease, op).await?;
                body(Held {
                    tx,
                    lease,
                    suspensions,
                    pool,
                    op,
                })
                .await
            })
            .await
    }

    /// A backend of at most `max_connections` to `url` (at least three; see
    /// [`Self::with_options`]), which must answer: one connection is opened
    /// (and kept) before this returns.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let backend = Self::with_options(Self::connect_options(url)?, max_connections);
        backend
            .pool
            .acquire()
            .await
            .map_err(EngineError::storage("connect"))?
            .settle();
        Ok(backend)
    }

    /// How the engine connects to `url`.
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

    /// A backend whose connections open as they are first needed, at most
    /// `max_connections` of them: one for the notification listener (when
    /// something listens), an eighth of the rest for claims, the others for
    /// the other statements. Fewer than three still open up to three.
    pub fn with_options(options: PgConnectOptions, max_connections: u32) -> Self {
        let statements = max_connections.saturating_sub(1).max(2);
        let claimers = claim::claim_connections(statements);
        let wait = Duration::from_secs(10);
        let pool = Connections::new(options.clone(), statements - claimers, wait);
        let claims = Connections::new(
            claim::claim_connect_options(options.clone()),
            claimers,
            wait,
        );
        Self {
            notifications: wakeups::Notifications::new(pool.clone(), options),
            pool,
            claims,
            claim_shape: claim::KnownShape::default(),
            held_cursors: Default::default(),
        }
    }

    /// The backend's connections, for statements of callers' own (a
    /// benchmark's baseline, a test's inspection); `&Connections` is an
    /// executor.
    pub fn pool(&self) -> &Connections {
        &self.pool
    }

    /// The claim's own connections, for a test's inspection of their session
    /// (the claim's prepared statement and its plans).
    pub fn claim_connections(&self) -> &Connections {
        &self.claims
    }

    /// The query plan of the claim statement for `request` (nothing is claimed).
    pub async fn explain_claim(&self, request: &ClaimRequest) -> Result<String> {
        claim::explain_claim(&self.claims, request).await
    }

    /// The generic plan of the execution list for `filter` (nothing is
    /// read), for tests that pin its indexes.
    pub async fn explain_list(&self, filter: &crate::model::ExecutionFilter) -> Result<String> {
        executions::explain_list(&self.pool, filter).await
    }

    /// The generic plan of an execution's lease history read (nothing is
    /// read), for tests that pin its index.
    pub async fn explain_lease_history(&self) -> Result<String> {
        explain::generic_plan(&self.pool, &outbox::lease_history_sql(), 3).await
    }

    /// The plan of the held-keys pass over every tenant, from the start of
    /// each tenant's held groups (for tests that pin its indexes).
    pub async fn explain_held_keys_pass(&self, per_tenant: u32) -> Result<String> {
        concurrency::explain_release_held(&self.pool, per_tenant).await
    }
}

#[async_trait]
impl Backend for PgBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<()> {
        self.pool.migrate(&MIGRATOR).await.map_err(migration_failed)
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> = sqlx::query_scalar(APPLIED_MIGRATIONS)
            .all(&self.pool, "read migrations")
            .await?;
        Ok(pending(&MIGRATOR, &applied))
    }
}
