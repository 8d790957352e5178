//! A write transaction run whole on the writer's connection, in one go.
//!
//! sqlx runs an SQLite connection on a thread of its own: every statement
//! sent through it is a hand-off to that thread and back, tens of
//! microseconds of waking threads on a small machine, while the one writer
//! is held. A claim was five of them (`BEGIN`, the tenants, the candidates,
//! the rows' writes, `COMMIT`) and a completion batch four, more than the
//! work SQLite did for a few rows.
//!
//! So the hot writes run whole on a handle locked for them: `BEGIN
//! IMMEDIATE`, the reads, the writes and `COMMIT`, on the calling thread, in
//! one go. The handle is the backend's own write connection
//! ([`raw::Owned`]), used only by the task that holds sqlx's writer, so with
//! nothing to hand off at all; where there is none (an in-memory database),
//! sqlx's writer's own handle, which sqlx lends out
//! ([`sqlx::sqlite::LockedSqliteHandle`]) for the cost of one hand-off.
//! Their bodies take a [`Tx`] and are written once for both ways: through
//! sqlx (the general path) and on the locked handle. What only the general
//! path does (a key's admission, a budget's, what waits on an ending) asks
//! for the connection itself ([`Tx::conn`]); on the locked handle that
//! request rolls the attempt back and the write runs again through sqlx, so
//! the rare cases cost a wasted attempt and never a second implementation.
//!
//! Each borrowing of sqlx's handle leaves sqlx's thread a message to work
//! through, and sqlx 0.8 deadlocks once 50 are queued (its command buffer:
//! the locking task waits to queue one more while holding the lock the
//! thread waits for). A statement through sqlx, which waits for its answer,
//! empties the queue; so after [`LOCKS_PER_PING`] borrowings with no
//! statement between, the writer is pinged.
//!
//! A body on the locked handle never waits: nothing it calls suspends (sqlx
//! is refused), so it is polled once, and a body that did suspend is rolled
//! back and run through sqlx. So no task can be cancelled half way through
//! such a transaction: its future is dropped before `BEGIN` or not at all.
//! The calling thread, a runtime worker, is busy meanwhile, as sqlx's thread
//! was: a few milliseconds at most (a claim is at most 1,000 rows, a worker
//! pool's completion batch at most 256).

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, SqliteConnection};

use super::raw::{self, FromRaw, Locked};
use super::writes::Writes;
use super::{Effects, SqliteBackend, BUSY_TIMEOUT};
use crate::backend::Fetch;
use crate::error::{EngineError, Result};

/// Locks of the writer's handle, at most, before sqlx's thread is made to
/// work through the messages they left (well under its buffer of 50).
pub(super) const LOCKS_PER_PING: u32 = 16;

/// What a body given to [`SqliteBackend::write_tx`] returns: boxed, so that
/// one body can be run both ways and still be sent between threads.
pub(super) type TxFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 't>>;

/// Where a write transaction's statements go.
pub(super) enum Tx<'a> {
    /// Through sqlx: a hand-off a statement.
    Sqlx(&'a mut SqliteConnection),
    /// On the writer's handle, locked for the whole transaction. `wants_sqlx`
    /// records that the body asked for what only sqlx runs.
    Locked {
        handle: &'a mut dyn Locked,
        wants_sqlx: &'a mut bool,
    },
}

impl Tx<'_> {
    /// The rows of one statement (`?` parameters, bound by `bind`).
    pub async fn fetch<'q, T>(
        &mut self,
        op: &'static str,
        sql: &str,
        bind: impl FnOnce(&mut Writes<'q>),
    ) -> Result<Vec<T>>
    where
        T: FromRaw + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        let mut statement = Writes::default();
        statement.statement(sql);
        bind(&mut statement);
        match self {
            Tx::Sqlx(conn) => {
                let (sql, arguments) = statement.into_query(op)?;
                sqlx::query_as_with(&sql, arguments)
                    .all(&mut **conn, op)
                    .await
            }
            Tx::Locked { handle, .. } => statement.fetch_locked(&mut **handle, op),
        }
    }

    /// The first row of one statement, if it returns any.
    pub async fn optional<'q, T>(
        &mut self,
        op: &'static str,
        sql: &str,
        bind: impl FnOnce(&mut Writes<'q>),
    ) -> Result<Option<T>>
    where
        T: FromRaw + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        Ok(self.fetch(op, sql, bind).await?.into_iter().next())
    }

    /// The row of a statement that always returns one (an aggregate).
    pub async fn one<'q, T>(
        &mut self,
        op: &'static str,
        sql: &str,
        bind: impl FnOnce(&mut Writes<'q>),
    ) -> Result<T>
    where
        T: FromRaw + for<'r> FromRow<'r, SqliteRow> + Send + Unpin,
    {
        self.optional(op, sql, bind)
            .await?
            .ok_or_else(|| EngineError::storage(op)(sqlx::Error::RowNotFound))
    }

    /// Run the statements, in order.
    pub async fn run(&mut self, writes: Writes<'_>, op: &'static str) -> Result<()> {
        match self {
            Tx::Sqlx(conn) => writes.run(conn, op).await,
            Tx::Locked { handle, .. } => writes.run_locked(&mut **handle, op),
        }
    }

    /// Say that the rest of this write runs only through sqlx: on the locked
    /// handle, the write is rolled back and run again through sqlx.
    pub fn require_sqlx(&mut self) -> Result<()> {
        self.conn().map(|_| ())
    }

    /// The connection, for what runs only through sqlx. On the locked handle
    /// this refuses, and the write is run again through sqlx.
    pub fn conn(&mut self) -> Result<&mut SqliteConnection> {
        match self {
            Tx::Sqlx(conn) => Ok(conn),
            Tx::Locked { wants_sqlx, .. } => {
                **wants_sqlx = true;
                Err(EngineError::storage("write on the locked handle")(
                    sqlx::Error::Protocol("this write runs through sqlx".into()),
                ))
            }
        }
    }
}

impl SqliteBackend {
    /// [`SqliteBackend::write`] for a hot write: on the locked handle in one
    /// hand-off, or through sqlx when `body` asks for what only sqlx runs.
    pub(super) async fn write_tx<T, C, B>(&self, op: &'static str, input: &C, body: B) -> Result<T>
    where
        C: Sync + ?Sized,
        B: for<'t, 'c> Fn(&'t mut Tx<'c>, &'t mut Effects, &'t C) -> TxFuture<'t, T> + Send,
    {
        let body = match self.write_locked(op, input, body).await? {
            Ok(value) => return Ok(value),
            Err(body) => body,
        };
        metrics::counter!("flowfabric_sqlite_writes_rerun_total", "op" => op).increment(1);
        self.write(op, async move |conn, effects| {
            body(&mut Tx::Sqlx(conn), effects, input).await
        })
        .await
    }

    /// `body` as one transaction on a handle locked for it (the backend's
    /// own write connection, else sqlx's writer's handle); `body` back when
    /// it asked for sqlx (nothing written).
    async fn write_locked<T, C, B>(
        &self,
        op: &'static str,
        input: &C,
        body: B,
    ) -> Result<Result<T, B>>
    where
        C: Sync + ?Sized,
        B: for<'t, 'c> Fn(&'t mut Tx<'c>, &'t mut Effects, &'t C) -> TxFuture<'t, T> + Send,
    {
        // Holding sqlx's writer is what makes this the one write running.
        let mut conn = self
            .writer
            .acquire()
            .await
            .map_err(EngineError::storage(op))?;
        let mut effects = Effects::default();
        let run = |handle: &mut dyn Locked, effects: &mut Effects| {
            transaction(op, handle, input, &body, effects)
        };
        let ended = match self.on_own_connection(op, |handle| run(handle, &mut effects)) {
            Some(ended) => {
                conn.settle();
                ended
            }
            None => {
                let mut handle = conn.lock_handle().await.map_err(EngineError::storage(op))?;
                let ended = run(&mut handle, &mut effects);
                drop(handle);
                if ended.unended.is_some() {
                    // Its transaction could not be ended: closed, not reused.
                    conn.discard();
                } else if self.ping_after_locks(&mut conn).await {
                    conn.settle();
                }
                ended
            }
        };
        if let Some(e) = ended.unended {
            return Err(EngineError::storage(op)(e));
        }
        ended.committed.map_err(EngineError::storage(op))?;
        match ended.outcome {
            Some(Ok(value)) => {
                self.announce(effects);
                Ok(Ok(value))
            }
            Some(Err(e)) => Err(e),
            None => Ok(Err(body)),
        }
    }

    /// `run` on the backend's own write connection, opened on first use;
    /// `None` when there is none (an in-memory database, or one that could
    /// not be opened: the writes then borrow sqlx's handle). A connection
    /// whose transaction could not be ended is closed, to be opened again.
    fn on_own_connection<T>(
        &self,
        op: &'static str,
        run: impl FnOnce(&mut dyn Locked) -> Ended<T>,
    ) -> Option<Ended<T>> {
        let file = self.file.as_deref()?;
        let mut own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        if own.is_none() && !self.own_failed.load(std::sync::atomic::Ordering::Relaxed) {
            match raw::Owned::open(file, BUSY_TIMEOUT, super::WAL_AUTOCHECKPOINT_PAGES) {
                Ok(opened) => *own = Some(opened),
                Err(e) => {
                    tracing::warn!(op, error = %e, "SQLite: no write connection of our own; \
                        writes borrow sqlx's");
                    self.own_failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        let ended = run(own.as_mut()?);
        if ended.unended.is_some() {
            *own = None;
        }
        Some(ended)
    }
}

/// How a transaction run whole on a locked handle ended.
struct Ended<T> {
    /// The body's result; `None` when it runs again through sqlx (it asked
    /// for sqlx, or another process held the file's write lock).
    outcome: Option<Result<T>>,
    /// The commit's result (`Ok` when nothing was to commit).
    committed: std::result::Result<(), sqlx::Error>,
    /// Why the transaction could not be ended, when it could not.
    unended: Option<sqlx::Error>,
}

/// `body` as one transaction on `handle`: `BEGIN IMMEDIATE`, the body polled
/// once, `COMMIT`, and whatever did not commit rolled back.
fn transaction<T, C, B>(
    op: &'static str,
    handle: &mut dyn Locked,
    input: &C,
    body: &B,
    effects: &mut Effects,
) -> Ended<T>
where
    C: Sync + ?Sized,
    B: for<'t, 'c> Fn(&'t mut Tx<'c>, &'t mut Effects, &'t C) -> TxFuture<'t, T> + Send,
{
    let mut wants_sqlx = false;
    let outcome = match begin(handle) {
        Ok(true) => poll_once(async {
            let mut tx = Tx::Locked {
                handle: &mut *handle,
                wants_sqlx: &mut wants_sqlx,
            };
            let value = body(&mut tx, effects, input).await?;
            super::settle(&mut tx, effects).await?;
            Ok(value)
        }),
        // Another process holds the file's write lock: wait for it
        // through sqlx, on sqlx's thread, not on this one.
        Ok(false) => None,
        Err(e) => Some(Err(EngineError::storage(op)(e))),
    };
    // A body that asked for sqlx runs through sqlx, whatever it returned
    // (one that went on without what it asked for is not committed); a
    // body that waited for something (`None`) too.
    let outcome = if wants_sqlx { None } else { outcome };
    let committed = match &outcome {
        Some(Ok(_)) => raw::execute_text(handle, "COMMIT"),
        _ => Ok(()),
    };
    // Whatever did not commit is rolled back.
    let unended = rollback_open(handle).err();
    Ended {
        outcome,
        committed,
        unended,
    }
}

impl SqliteBackend {
    /// Writes so far that ran through sqlx: the general ones, and hot ones
    /// that ran again that way (they asked for it, or another process held
    /// the file's write lock).
    #[cfg(test)]
    pub(super) fn sqlx_writes(&self) -> u64 {
        self.sqlx_writes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Count a lock of the writer's handle; every [`LOCKS_PER_PING`], ping
    /// the connection, which returns once sqlx's thread has worked through
    /// every message queued before it. A failed ping leaves the connection
    /// to the pool's own check (`false`).
    async fn ping_after_locks(&self, conn: &mut SqliteConnection) -> bool {
        use std::sync::atomic::Ordering;
        if self.locks_since_ping.fetch_add(1, Ordering::Relaxed) + 1 < LOCKS_PER_PING {
            return true;
        }
        self.locks_since_ping.store(0, Ordering::Relaxed);
        ping(conn).await
    }
}

/// Ping the connection: `true` once sqlx's thread has answered, so has
/// worked through every message queued before.
pub(super) async fn ping(conn: &mut SqliteConnection) -> bool {
    use sqlx::Connection;
    match conn.ping().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "an SQLite connection did not answer a ping");
            false
        }
    }
}

/// `BEGIN IMMEDIATE` without waiting: `false` when another process holds
/// the file's write lock. (This process's writes all go through its one
/// writer connection, so only another process's can.) Once it has begun,
/// nothing in the transaction waits for a lock: in WAL mode readers never
/// block the writer, and the commit's checkpoint skips what readers use.
fn begin(handle: &mut dyn Locked) -> std::result::Result<bool, sqlx::Error> {
    rollback_open(handle)?;
    raw::without_busy_wait(handle, BUSY_TIMEOUT, |handle| {
        match raw::execute_text(handle, "BEGIN IMMEDIATE") {
            Ok(()) => Ok(true),
            Err(e) if raw::is_busy(&e) => Ok(false),
            Err(e) => Err(e),
        }
    })
}

/// Roll back the connection's transaction, if one is open (a failed
/// `COMMIT`, a body that failed or asked for sqlx).
fn rollback_open(handle: &mut dyn Locked) -> std::result::Result<(), sqlx::Error> {
    if raw::in_transaction(handle) {
        raw::execute_text(handle, "ROLLBACK")?;
    }
    Ok(())
}

/// Poll `future` once: its output if it finished without waiting.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::backend::sqlite::plans::{claim_request, Scratch};
    use crate::backend::sqlite::record::Exec;
    use crate::backend::{Executions, Leases, Tenancy};
    use crate::model::{Completion, ExecutionPolicy, Failure, FailureClass, NewExecution};

    async fn marks(db: &SqliteBackend) -> Vec<i64> {
        sqlx::query_scalar("SELECT n FROM marks ORDER BY n")
            .fetch_all(db.reader())
            .await
            .unwrap()
    }

    fn mark(n: i64) -> Writes<'static> {
        let mut w = Writes::default();
        w.statement("INSERT INTO marks (n) VALUES (?)").bind(n);
        w
    }

    /// A hot write runs whole on the locked handle; one that asks for sqlx
    /// half way is rolled back there and runs once through sqlx; one that
    /// fails writes nothing, and the writer goes on.
    #[tokio::test]
    async fn a_write_runs_on_the_locked_handle_or_once_through_sqlx() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        db.quiet_write("table", async |conn| {
            sqlx::query("CREATE TABLE marks (n INTEGER PRIMARY KEY)")
                .execute(conn)
                .await
                .map_err(EngineError::storage("table"))?;
            Ok(())
        })
        .await
        .unwrap();
        let locked = db
            .write_tx("one", &(), |tx, _, _| {
                Box::pin(async move {
                    tx.run(mark(1), "one").await?;
                    Ok(matches!(tx, Tx::Locked { .. }))
                })
            })
            .await
            .unwrap();
        assert!(locked, "a write that needs no sqlx runs on the handle");
        assert!(
            db.own.lock().unwrap().is_some(),
            "on the backend's own connection, not sqlx's borrowed handle"
        );
        let locked = db
            .write_tx("two", &(), |tx, _, _| {
                Box::pin(async move {
                    tx.run(mark(2), "two").await?;
                    tx.require_sqlx()?;
                    Ok(matches!(tx, Tx::Locked { .. }))
                })
            })
            .await
            .unwrap();
        assert!(!locked, "asking for sqlx runs the write through sqlx");
        assert_eq!(marks(db).await, [1, 2], "the locked attempt was undone");
        let failed = db
            .write_tx("three", &(), |tx, _, _| {
                Box::pin(async move {
                    tx.run(mark(3), "three").await?;
                    tx.run(mark(1), "three").await
                })
            })
            .await
            .unwrap_err();
        assert!(failed.to_string().contains("UNIQUE"), "{failed}");
        assert_eq!(marks(db).await, [1, 2], "a failed write is rolled back");
        db.write_tx("four", &(), |tx, _, _| {
            Box::pin(async move { tx.run(mark(4), "four").await })
        })
        .await
        .unwrap();
        assert_eq!(marks(db).await, [1, 2, 4]);
        // A body that goes on past the refusal is still not committed.
        let locked = db
            .write_tx("five", &(), |tx, _, _| {
                Box::pin(async move {
                    tx.run(mark(5), "five").await?;
                    let _refused = tx.conn().is_err();
                    Ok(matches!(tx, Tx::Locked { .. }))
                })
            })
            .await
            .unwrap();
        assert!(!locked);
        assert_eq!(marks(db).await, [1, 2, 4, 5]);
    }

    /// While another process holds the file's write lock, a hot write does
    /// not wait for it on the calling thread (here the runtime's only one,
    /// which the other connection needs to commit): it waits through sqlx.
    #[tokio::test]
    async fn a_write_waits_for_another_process_through_sqlx() {
        use sqlx::Connection;
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        let mut other = SqliteConnection::connect(&format!("sqlite:{}", scratch.file().display()))
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut other)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let write = db.write_tx("wait", &(), |tx, _, _| {
            Box::pin(async move { Ok(matches!(tx, Tx::Locked { .. })) })
        });
        let release = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        };
        let (locked, ()) = tokio::join!(write, release);
        assert!(!locked.unwrap(), "it waited through sqlx");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// Hot writes back to back on sqlx's borrowed handle (as where the
    /// backend has no connection of its own), with no statement through
    /// sqlx between them, never fill sqlx's command buffer with their locks'
    /// messages (sqlx 0.8.6 then deadlocks: without the pings this stalled
    /// until its 60 s timeout).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_writes_back_to_back_never_stall_the_writer() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        db.own_failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let writes = async {
            for _ in 0..3_000 {
                db.write_tx("empty", &(), |_, _, _| Box::pin(async { Ok(()) }))
                    .await
                    .unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(60), writes)
            .await
            .expect("the writer stalled");
        assert!(
            db.own.lock().unwrap().is_none(),
            "sqlx's handle was borrowed"
        );
    }

    /// Rows read on the locked handle are the rows sqlx reads: every column
    /// of executions in each state a claim and a completion batch read.
    #[tokio::test]
    async fn rows_read_on_the_handle_are_the_rows_sqlx_reads() {
        let scratch = Scratch::new().await;
        let db = &scratch.db;
        let tenant = db.create_tenant("decode").await.unwrap().tenant_id;
        let plain = NewExecution::new("plain", Vec::new());
        let full = NewExecution {
            kind: "full".into(),
            lane: "lane-ü".into(),
            input: vec![0, 159, 255],
            priority: -3,
            required_capabilities: vec!["net".into()],
            tags: BTreeMap::from([("k".into(), "v \"quoted\"".into())]),
            policy: ExecutionPolicy {
                max_replays: Some(2),
                ..ExecutionPolicy::default()
            },
            idempotency_key: Some("idem".into()),
            concurrency_key: None,
            delay_until: None,
        };
        db.create_executions(tenant, &[plain.clone(), full, plain.clone(), plain], None)
            .await
            .unwrap();
        let claimed = db
            .claim(&claim_request(&["default", "lane-ü"], &["net"], 3))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3);
        db.complete(&Completion::new(&claimed[0].lease, b"done"))
            .await
            .unwrap();
        db.fail(
            &claimed[1].lease,
            &Failure::new(FailureClass::Permanent, "broke"),
        )
        .await
        .unwrap();
        let sql = Exec::select_sql("tenant_id = ? ORDER BY execution_id");
        let mut conn = db.writer.acquire().await.unwrap();
        let by_sqlx: Vec<Exec> = sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        let mut read = Writes::default();
        read.statement(&sql).bind(tenant);
        let raw: Vec<Exec> = read.fetch_locked(&mut handle, "read").unwrap();
        drop(handle);
        conn.settle();
        assert_eq!(by_sqlx.len(), 4);
        let rows = format!("{by_sqlx:#?}");
        for read in [
            "result: Some",
            "last_failure: Some",
            "lease_id: Some",
            "lease_id: None",
        ] {
            assert!(rows.contains(read), "{read}: {rows}");
        }
        assert_eq!(format!("{raw:#?}"), rows);
    }
}
