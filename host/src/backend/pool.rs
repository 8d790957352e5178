//! Both backends' connections: a pool that hands a connection back without
//! a round trip when its last statement finished.
//!
//! sqlx's own pool pings every connection on its way back (on Postgres a
//! `Sync` and a wait for `ReadyForQuery`; on SQLite a hand-off to the
//! connection's thread and back), because a caller may have dropped a query
//! or a transaction half way and left the connection mid-protocol. That is
//! right for a connection nobody knows the state of, and one round trip too
//! many for the engine's statements, which run to their end: Postgres did
//! the work twice over for every claim, step or frame (`bench steps`
//! measured a guest's end-to-end latency 0.27 ms lower without it), and
//! SQLite's single writer waited for the ping before the next write.
//!
//! So a [`Connection`] says whether it is *settled*: the statements sent
//! through [`Connections`] as an executor, and the engine's transactions that
//! committed or rolled back, settle the connection they used, which goes back
//! to the pool as it is. Anything else (a caller that took a connection and
//! let go of it without settling it, a query future dropped mid-way, a
//! statement that failed for another reason than the database refusing it)
//! is pinged first, as sqlx does, in a task of its own; a connection that
//! fails the ping is closed instead of going back.
//!
//! A connection taken after sitting idle for `PING_IF_IDLE_FOR` is pinged
//! before use: long enough for a server restart or a dropped link to have
//! happened unseen. As in sqlx's pool, a connection is replaced after 30
//! minutes and closed after 10 unused ([`Lifetimes`]).

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::{ConnectOptions, Connection as _, Database, Either, Execute, Executor};

/// A database's connection type, and the options that open one.
type Conn<DB> = <DB as Database>::Connection;
type Options<DB> = <Conn<DB> as sqlx::Connection>::Options;

/// How long a pooled connection may sit idle and still be used without a
/// ping first.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a ping may take before its connection is given up.
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connections live. The defaults are sqlx's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long a connection serves before it is replaced (30 minutes): the
    /// server process behind it lets go of what it cached, and connections
    /// spread again over a server that failed over or was scaled.
    pub max_lifetime: Duration,
    /// How long a connection may sit unused before it is closed (10 minutes).
    pub idle_timeout: Duration,
    /// How often idle connections are looked at (every minute).
    pub idle_check_every: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            max_lifetime: Duration::from_secs(30 * 60),
            idle_timeout: Duration::from_secs(10 * 60),
            idle_check_every: Duration::from_secs(60),
        }
    }
}

/// Opens connections with the backend's options, and checks idle ones.
pub struct Manager<DB: Database> {
    options: Options<DB>,
    max_lifetime: Duration,
}

impl<DB: Database> managed::Manager for Manager<DB> {
    type Type = Conn<DB>;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Conn<DB>, sqlx::Error> {
        self.options.connect().await
    }

    async fn recycle(&self, conn: &mut Conn<DB>, metrics: &Metrics) -> RecycleResult<sqlx::Error> {
        if metrics.age() >= self.max_lifetime {
            return Err(RecycleError::message("past its lifetime"));
        }
        if metrics.last_used() < PING_IF_IDLE_FOR {
            return Ok(());
        }
        match tokio::time::timeout(PING_TIMEOUT, conn.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RecycleError::Backend(e)),
            Err(_) => Err(RecycleError::message("ping timed out")),
        }
    }
}

/// The pool: cheap to clone, shared by everything in one backend.
pub struct Connections<DB: Database> {
    pool: managed::Pool<Manager<DB>>,
}

impl<DB: Database> Clone for Connections<DB> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
        }
    }
}

impl<DB: Database> fmt::Debug for Connections<DB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl<DB: Database> Connections<DB> {
    /// A pool of at most `max_connections`, opened as they are first needed;
    /// a caller waits up to `acquire_timeout` for a free connection, or for
    /// a new one to open.
    pub fn new(options: Options<DB>, max_connections: u32, acquire_timeout: Duration) -> Self {
        Self::with_lifetimes(
            options,
            max_connections,
            acquire_timeout,
            Lifetimes::default(),
        )
    }

    /// As [`Connections::new`], with connections living as `lifetimes` says.
    pub fn with_lifetimes(
        options: Options<DB>,
        max_connections: u32,
        acquire_timeout: Duration,
        lifetimes: Lifetimes,
    ) -> Self {
        let manager = Manager {
            options,
            max_lifetime: lifetimes.max_lifetime,
        };
        let pool = managed::Pool::builder(manager)
            .max_size(max_connections.max(1) as usize)
            // The connection used last is the one taken next: it has this
            // backend's statements prepared and their plans cached.
            .queue_mode(managed::QueueMode::Lifo)
            .wait_timeout(Some(acquire_timeout))
            .create_timeout(Some(acquire_timeout))
            .recycle_timeout(Some(PING_TIMEOUT))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a runtime and a nonzero size are given");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close_idle(pool.weak(), lifetimes));
        }
        Self { pool }
    }

    /// Run `body` on a connection of the pool, outside a transaction. The
    /// connection goes straight back when `body` succeeds (it awaited every
    /// statement it sent); after an error it is pinged first.
    pub async fn read<T>(
        &self,
        op: &'static str,
        body: impl AsyncFnOnce(&mut Conn<DB>) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        let mut conn = self.acquire_for(op).await?;
        let result = body(&mut conn).await;
        conn.settle_on_ok(result)
    }

    /// Run `body` in one transaction on a connection of the pool (see
    /// [`Connection::transaction`]).
    pub async fn transaction<T>(
        &self,
        op: &'static str,
        begin: Option<&'static str>,
        body: impl AsyncFnOnce(&mut Conn<DB>) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        let mut conn = self.acquire_for(op).await?;
        conn.transaction(op, begin, body).await
    }

    /// [`Self::acquire`], a failure being a storage error of `op`.
    async fn acquire_for(&self, op: &'static str) -> crate::error::Result<Connection<DB>> {
        self.acquire()
            .await
            .map_err(crate::error::EngineError::storage(op))
    }

    /// A connection, unsettled until its user says otherwise.
    pub async fn acquire(&self) -> Result<Connection<DB>, sqlx::Error> {
        let object = self.pool.get().await.map_err(pool_error)?;
        Ok(Connection {
            object: Some(object),
            settled: false,
        })
    }

    /// Refuse new acquisitions and close the idle connections, telling the
    /// server (connections in use close as they come back).
    pub async fn close(&self) {
        let idle = self.pool.retain(|_, _| false).removed;
        self.pool.close();
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

impl<DB: Database> Connections<DB>
where
    Conn<DB>: Migrate,
{
    /// Apply `migrator`'s pending migrations, on one connection.
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), MigrateError> {
        let mut conn = self.acquire().await?;
        migrator.run_direct(&mut *conn).await?;
        conn.settle();
        Ok(())
    }
}

/// Close the connections unused for the idle timeout, until the pool is gone.
async fn close_idle<DB: Database>(pool: managed::WeakPool<Manager<DB>>, lifetimes: Lifetimes) {
    loop {
        tokio::time::sleep(lifetimes.idle_check_every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let idle = pool
            .retain(|_, metrics| metrics.last_used() < lifetimes.idle_timeout)
            .removed;
        drop(pool);
        for conn in idle {
            let _ = conn.close().await;
        }
    }
}

/// sqlx's own error for a pool failure, so callers classify it as before.
fn pool_error(e: PoolError<sqlx::Error>) -> sqlx::Error {
    match e {
        PoolError::Backend(e) => e,
        PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        PoolError::Closed => sqlx::Error::PoolClosed,
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            sqlx::Error::Protocol(e.to_string())
        }
    }
}

/// A connection out of the pool. Dropped settled, it goes straight back;
/// dropped unsettled, it is pinged (see the module docs).
pub struct Connection<DB: Database> {
    object: Option<Object<Manager<DB>>>,
    settled: bool,
}

impl<DB: Database> Connection<DB> {
    /// The connection's last statement or transaction ran to its end: it
    /// is between statements and outside a transaction.
    pub fn settle(&mut self) {
        self.settled = true;
    }

    /// Close the connection instead of returning it: its state is unknown
    /// (a transaction begun outside sqlx that could not be ended).
    pub fn discard(mut self) {
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
        }
    }

    /// Settle the connection when `result` is `Ok`, for work that opens no
    /// transaction: returning normally, it awaited every statement it sent.
    pub fn settle_on_ok<T, E>(&mut self, result: Result<T, E>) -> Result<T, E> {
        if result.is_ok() {
            self.settle();
        }
        result
    }

    /// Run `body` in one transaction on this connection, begun with
    /// `begin` (the driver's plain `BEGIN` when `None`): commit what
    /// succeeded, and roll back what failed before returning. Dropping an
    /// open sqlx transaction only queues its ROLLBACK until the connection is
    /// next used; until then the rows it locked stay locked. The connection
    /// is settled once the commit or the rollback went through.
    pub async fn transaction<T>(
        &mut self,
        op: &'static str,
        begin: Option<&'static str>,
        body: impl AsyncFnOnce(&mut Conn<DB>) -> crate::error::Result<T>,
    ) -> crate::error::Result<T> {
        use crate::error::EngineError;
        let conn: &mut Conn<DB> = self;
        let mut tx = match begin {
            None => conn.begin().await,
            Some(statement) => conn.begin_with(statement).await,
        }
        .map_err(EngineError::storage(op))?;
        match body(&mut tx).await {
            Ok(value) => {
                tx.commit().await.map_err(EngineError::storage(op))?;
                self.settle();
                Ok(value)
            }
            Err(e) => {
                match tx.rollback().await {
                    Ok(()) => self.settle(),
                    Err(rollback) => {
                        tracing::warn!(error = %rollback, op, "rolling back after an error")
                    }
                }
                Err(e)
            }
        }
    }

    /// Settle after a statement that ended with `error`: a refusal by the
    /// database leaves the connection usable, anything else (I/O, protocol,
    /// decoding half way) may not, so such a connection is pinged on return.
    fn settle_unless(&mut self, error: Option<&sqlx::Error>) {
        self.settled = matches!(error, None | Some(sqlx::Error::Database(_)));
    }
}

impl<DB: Database> Deref for Connection<DB> {
    type Target = Conn<DB>;

    fn deref(&self) -> &Conn<DB> {
        self.object.as_ref().expect("present until dropped")
    }
}

impl<DB: Database> DerefMut for Connection<DB> {
    fn deref_mut(&mut self) -> &mut Conn<DB> {
        self.object.as_mut().expect("present until dropped")
    }
}

impl<DB: Database> Drop for Connection<DB> {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        if self.settled {
            return drop(object);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(ping_then_return(object));
            }
            Err(_) => drop(Object::take(object)),
        }
    }
}

/// Bring an unsettled connection back to `ReadyForQuery` (sending what a
/// dropped transaction queued, such as its `ROLLBACK`), or close it. One
/// still inside a transaction after that is closed too: a `begin` dropped
/// after the database began but before sqlx made its `Transaction` (on
/// SQLite, while a custom `BEGIN IMMEDIATE` is checked) leaves one that
/// nothing will end, and the connection's next user would write into it
/// and never commit.
async fn ping_then_return<DB: Database>(mut object: Object<Manager<DB>>) {
    let answered = tokio::time::timeout(PING_TIMEOUT, object.ping()).await;
    if !matches!(answered, Ok(Ok(()))) {
        tracing::info!("closing a connection that did not answer its release ping");
        drop(Object::take(object));
    } else if object.is_in_transaction() {
        tracing::info!("closing a connection left inside a transaction nothing will end");
        drop(Object::take(object));
    }
}

/// Statements sent through the pool itself take a connection for the
/// statement and settle it when the statement ends.
impl<'p, DB: Database> Executor<'p> for &'p Connections<DB>
where
    for<'c> &'c mut Conn<DB>: Executor<'c, Database = DB>,
{
    type Database = DB;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<DB::QueryResult, DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        // The rows are gathered before they are handed on, so that the
        // connection is back in the pool however the caller reads them.
        // Every caller here reads all rows of a bounded statement.
        let gathered = async move {
            let mut conn = self.acquire().await?;
            let results: Vec<_> = (&mut *conn).fetch_many(query).collect().await;
            conn.settle_unless(results.iter().find_map(|r| r.as_ref().err()));
            Ok::<_, sqlx::Error>(results)
        };
        Box::pin(stream::once(gathered).flat_map(|gathered| match gathered {
            Ok(results) => stream::iter(results).left_stream(),
            Err(e) => stream::iter(vec![Err(e)]).right_stream(),
        }))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<DB::Row>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, DB>,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let row = (&mut *conn).fetch_optional(query).await;
            conn.settle_unless(row.as_ref().err());
            row
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [DB::TypeInfo],
    ) -> BoxFuture<'e, Result<DB::Statement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let statement = (&mut *conn).prepare_with(sql, parameters).await;
            conn.settle_unless(statement.as_ref().err());
            statement
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<sqlx::Describe<DB>, sqlx::Error>>
    where
        'p: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let described = (&mut *conn).describe(sql).await;
            conn.settle_unless(described.as_ref().err());
            described
        })
    }
}
