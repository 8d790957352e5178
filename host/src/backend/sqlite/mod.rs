//! [`Backend`] on SQLite: the embedded default, for a single host with no
//! database server.
//!
//! Layout: each storage trait of [`crate::backend`] is implemented in the
//! module of the same name (`tenancy`, `executions`, `leases`, `output`,
//! `events`, `components`, `suspension`, `budgets`, `children`, `flows`,
//! `steps`, `wakeups`, `scanners`, `grants`, `config_values`,
//! `waitpoint_keys`), exactly as in the Postgres backend. The modules
//! they lean on: `record` (the execution row, its derived columns and lease
//! events), `resolve` (what follows a member's end in a flow),
//! `flow_cancel`, `flow_revive` and `suspension_timeouts`, `time` (stored
//! instants).
//!
//! Where Postgres needs care for concurrency, SQLite has none to give: it
//! allows one writer at a time. So every write runs in a transaction on one
//! dedicated connection, and reads use a pool of their own (WAL mode lets them
//! run alongside the writer). That serialisation is what makes the simple
//! read-change-write transitions here atomic and fenced: nothing else can
//! write between the fence check and the write. Wake-ups (new work, revoked
//! leases, execution updates, event streams) are in-process channels, fired
//! after the transaction commits.
//!
//! Every operation is supported; the differences from Postgres are in
//! `docs/storage.md`.

mod batch;
mod budget_adjustments;
mod budget_admission;
mod budgets;
mod children;
mod claim;
mod components;
mod concurrency;
mod config_values;
mod events;
mod executions;
mod flow_cancel;
mod flow_revive;
mod flows;
mod grants;
mod insights;
mod lease_history;
mod leases;
mod output;
#[cfg(test)]
mod plans;
mod raw;
mod record;
mod resolve;
mod retention;
mod scanners;
mod schedules;
pub mod schema;
mod steps;
mod stored_policy;
mod suspension;
mod suspension_timeouts;
mod tenancy;
mod time;
mod tx;
mod waitpoint_keys;
mod wakeups;
mod writes;

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Sqlite, SqliteConnection};

use super::pool::Connections;
use tokio::sync::{broadcast, watch};

use super::{migration_failed, pending, Backend, APPLIED_MIGRATIONS};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};
use crate::model::{ExecutionId, ExecutionUpdate, LeaseHandle, TenantId};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Readers run alongside the writer; more than a few buys nothing on a file.
const READERS: u32 = 4;

/// How long a statement waits for a lock another process holds on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a caller waits for the writer or a reader.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The write-ahead log's length, in pages, past which a commit copies it
/// back into the database file (SQLite's default is 1,000: 4 MiB).
///
/// The copy runs in the committing connection, and here that is the one
/// writer every write waits for. Pages written again and again (the queue
/// index's, the tail of the history tables) are copied once a checkpoint
/// however often they were logged, so a longer log means less copying as
/// well as fewer pauses; the log file grows to about this many pages
/// (4 KiB each) before it is reused.
const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

pub struct SqliteBackend {
    /// One connection: every write transaction, in turn.
    writer: Connections<Sqlite>,
    reader: Connections<Sqlite>,
    work: watch::Sender<u64>,
    revoked: broadcast::Sender<ExecutionId>,
    updates: crate::backend::addressed_wakeups::ExecutionWakeups,
    events: crate::backend::addressed_wakeups::TenantWakeups,
    held_cursors: crate::backend::held_keys::HeldCursors,
    /// The writer's handle locks since sqlx's thread last answered a
    /// statement ([`tx::LOCKS_PER_PING`]).
    locks_since_ping: std::sync::atomic::AtomicU32,
    /// The database file, for the backend's own write connection (`None`
    /// for an in-memory database, which a second connection would not see).
    file: Option<std::path::PathBuf>,
    /// The backend's own write connection ([`raw::Owned`]), used only by
    /// the task holding `writer`; opened on first use.
    own: std::sync::Mutex<Option<raw::Owned>>,
    /// Opening it failed once: the hot writes borrow sqlx's handle instead.
    own_failed: std::sync::atomic::AtomicBool,
    /// Writes run through sqlx ([`SqliteBackend::write`]; a hot write that
    /// ran again that way included): what tests read to see a hot path
    /// stay on the locked handle.
    #[cfg(test)]
    sqlx_writes: std::sync::atomic::AtomicU64,
}

/// A write by a lease holder, inside the writer's transaction once the
/// lease is checked ([`SqliteBackend::write_held`]): what the write works on.
struct Held<'a, 'c> {
    /// The write's transaction. Writes that run only through sqlx take the
    /// connection from it ([`tx::Tx::conn`]); under
    /// [`SqliteBackend::write_held`] that is always there.
    tx: &'a mut tx::Tx<'c>,
    lease: &'a LeaseHandle,
    /// The lease's execution, as read under the lease.
    row: record::Exec,
    effects: &'a mut Effects,
}

/// What a committed write tells the rest of the process.
#[derive(Default)]
pub(super) struct Effects {
    /// Work may be claimable.
    pub work: bool,
    pub revoked: Vec<ExecutionId>,
    pub updates: Vec<ExecutionUpdate>,
    /// Tenants whose lease or signal stream has new events.
    pub event_tenants: HashSet<TenantId>,
    /// Executions that ended in this transaction and what may wait on them,
    /// still to settle.
    pub finished: Vec<Finished>,
}

/// An execution that ended, as [`settle`] needs it: its outcome, and whether
/// a parent or flow edges may be waiting on it (known from the row that
/// ended, so settling reads nothing for executions nothing waits on).
pub(super) struct Finished {
    pub tenant: TenantId,
    pub id: ExecutionId,
    pub outcome: String,
    pub parent: Option<ExecutionId>,
    pub in_flow: bool,
}

impl Finished {
    fn of(row: &record::Exec, outcome: &str) -> Self {
        Self {
            tenant: row.tenant_id,
            id: row.execution_id,
            outcome: outcome.to_owned(),
            parent: row.parent_id,
            in_flow: row.flow_id.is_some(),
        }
    }

    /// Whether a parent or flow edges may be waiting on it.
    fn awaited(&self) -> bool {
        self.parent.is_some() || self.in_flow
    }
}

impl SqliteBackend {
    /// Open (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::with_options(options).await
    }

    /// Open a `sqlite:` URL (`sqlite:///var/lib/flowfabric.db`, `sqlite:ff.db`).
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url).map_err(EngineError::storage("open"))?;
        Self::with_options(options).await
    }

    /// The query plans of the held-keys pass's reads (for tests that pin
    /// its indexes), one line a step.
    pub async fn explain_held_keys_pass(&self) -> Result<String> {
        self.read("explain release held keys", async |conn| {
            concurrency::explain_held_pass(conn).await
        })
        .await
    }

    async fn with_options(options: SqliteConnectOptions) -> Result<Self> {
        raw::configure_process();
        if let Some(parent) = options.get_filename().parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| EngineError::Storage {
                    op: "open",
                    cause: e.into(),
                })?;
            }
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL: a power loss may lose the last commits, never
            // corrupt the file; a process crash loses nothing.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection of each opened now: the file is created, and a
        // path that cannot be opened fails here.
        // Writers queue for the one connection: a long write (a large batch)
        // may keep the others waiting a while.
        let writer = Connections::<Sqlite>::new(
            options
                .clone()
                .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string()),
            1,
            ACQUIRE_TIMEOUT,
        );
        writer
            .acquire()
            .await
            .map_err(EngineError::storage("open"))?
            .settle();
        // A file on disk once the writer opened it; an in-memory database
        // has a name and no file.
        let file = std::fs::canonicalize(options.get_filename())
            .ok()
            .filter(|path| path.is_file());
        let reader = Connections::<Sqlite>::new(options.read_only(true), READERS, ACQUIRE_TIMEOUT);
        reader
            .acquire()
            .await
            .map_err(EngineError::storage("open"))?
            .settle();
        Ok(Self {
            writer,
            reader,
            work: watch::channel(0).0,
            revoked: broadcast::channel(1024).0,
            updates: Default::default(),
            events: Default::default(),
            held_cursors: Default::default(),
            locks_since_ping: Default::default(),
            file,
            own: Default::default(),
            own_failed: Default::default(),
            #[cfg(test)]
            sqlx_writes: Default::default(),
        })
    }

    /// Run `body` as one write transaction; its effects are announced after
    /// it commits. An error rolls everything back.
    ///
    /// What the Postgres completion trigger does happens here ([`settle`]),
    /// before the commit, so no path that ends an execution can leave its
    /// dependants waiting.
    pub(super) async fn write<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut SqliteConnection, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        // IMMEDIATE takes the write lock up front: another process on the
        // same file then waits (busy timeout) instead of failing when its
        // read would have to become a write.
        #[cfg(test)]
        self.sqlx_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut effects = Effects::default();
        let value = self
            .writer
            .transaction(op, Some("BEGIN IMMEDIATE"), async |tx| {
                let value = body(tx, &mut effects).await?;
                settle(&mut tx::Tx::Sqlx(tx), &mut effects).await?;
                Ok(value)
            })
            .await?;
        self.announce(effects);
        Ok(value)
    }

    /// [`Self::write`] under a lease: `body` gets the lease's execution row,
    /// read inside the transaction and fenced by the lease's epoch, so a
    /// stale lease changes nothing (see [`leases::held`]).
    async fn write_held<T>(
        &self,
        op: &'static str,
        lease: &LeaseHandle,
        body: impl AsyncFnOnce(Held<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        self.write(op, async |conn, effects| {
            let tx = &mut tx::Tx::Sqlx(conn);
            let row = leases::held(tx, lease).await?;
            body(Held {
                tx,
                lease,
                row,
                effects,
            })
            .await
        })
        .await
    }

    /// [`Self::write_held`] for a lease holder's frequent writes (frames,
    /// progress, steps, renewals): in one hand-off to the writer
    /// ([`Self::write_tx`]), `body` given `input`.
    async fn write_held_tx<T, C, B>(
        &self,
        op: &'static str,
        lease: &LeaseHandle,
        input: &C,
        body: B,
    ) -> Result<T>
    where
        C: Sync,
        B: for<'t, 'c> Fn(Held<'t, 'c>, &'t C) -> tx::TxFuture<'t, T> + Sync,
    {
        self.write_tx(op, &(lease, input, &body), |tx, effects, args| {
            let (lease, input, body) = *args;
            Box::pin(async move {
                let row = leases::held(tx, lease).await?;
                let held = Held {
                    tx,
                    lease,
                    row,
                    effects,
                };
                body(held, input).await
            })
        })
        .await
    }

    /// [`Self::write`] on one execution: `body` gets its row, read inside
    /// the transaction (`not_found` when the tenant has no such execution).
    async fn write_row<T>(
        &self,
        op: &'static str,
        tenant: TenantId,
        id: ExecutionId,
        body: impl AsyncFnOnce(&mut SqliteConnection, record::Exec, &mut Effects) -> Result<T>,
    ) -> Result<T> {
        self.write(op, async |conn, effects| {
            let row = record::Exec::get(conn, tenant, id).await?;
            body(conn, row, effects).await
        })
        .await
    }

    /// [`Self::write`] for a write that wakes nobody (it adds no work and
    /// delivers no signal): the form a write written once for both drivers
    /// takes.
    pub(super) async fn quiet_write<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>,
    ) -> Result<T> {
        self.write(op, async |conn, _| body(conn).await).await
    }

    /// The readers, as an executor: each statement takes a reader for its
    /// run and hands it straight back (see [`crate::backend::pool`]).
    pub(super) fn reader(&self) -> &Connections<Sqlite> {
        &self.reader
    }

    /// Reads of several statements on one connection, with no transaction:
    /// `body` runs on a reader, which goes straight back to the pool when it
    /// returns `Ok` (and is checked first otherwise).
    pub(super) async fn read<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T>,
    ) -> Result<T> {
        self.reader.read(op, body).await
    }

    fn announce(&self, effects: Effects) {
        if effects.work {
            self.work.send_modify(|n| *n = n.wrapping_add(1));
        }
        // Nobody listening is fine: these are wake-ups, not the record.
        for id in effects.revoked {
            let _ = self.revoked.send(id);
        }
        for update in effects.updates {
            self.updates.wake(update);
        }
        for tenant in effects.event_tenants {
            self.events.wake(tenant);
        }
    }
}

/// Everything that waits on the executions this transaction ended: parents
/// waiting for their last child resume, flow edges resolve. That may end more
/// executions (skips, sibling cancels), settled in turn until nothing more ends.
/// Executions nothing waits on need no statement.
async fn settle(tx: &mut tx::Tx<'_>, effects: &mut Effects) -> Result<()> {
    while !effects.finished.is_empty() {
        let finished = std::mem::take(&mut effects.finished);
        if !finished.iter().any(Finished::awaited) {
            continue;
        }
        let conn = tx.conn()?;
        children::wake_parents(conn, &finished, effects).await?;
        resolve::resolve(conn, &finished, effects).await?;
    }
    Ok(())
}

#[async_trait]
impl Backend for SqliteBackend {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        self.writer
            .migrate(&MIGRATOR)
            .await
            .map_err(migration_failed)
    }

    async fn pending_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> = sqlx::query_scalar(APPLIED_MIGRATIONS)
            .all(self.reader(), "read migrations")
            .await?;
        Ok(pending(&MIGRATOR, &applied))
    }
}

#[cfg(test)]
mod tests {
    use super::plans::Scratch;
    use super::WAL_AUTOCHECKPOINT_PAGES;

    /// The writer copies the log back only past the longer threshold, not
    /// SQLite's default of 1,000 pages.
    #[tokio::test]
    async fn the_writer_checkpoints_past_the_longer_log() {
        let scratch = Scratch::new().await;
        let mut writer = scratch.db.writer.acquire().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *writer)
            .await
            .unwrap();
        assert_eq!(pages, i64::from(WAL_AUTOCHECKPOINT_PAGES));
        assert!(pages > 1_000);
    }
}
