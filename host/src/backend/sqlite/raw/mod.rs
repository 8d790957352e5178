//! A batch of writes run on the writer's SQLite handle itself.
//!
//! sqlx runs each SQLite connection on a thread of its own and hands every
//! statement's result back through a channel, waking the waiting task once
//! a statement. A claim or a completion batch writes hundreds of small
//! statements (a row, its lease event, its attempt, its outbox row) and reads
//! nothing back, so with one writer those hand-offs, not SQLite, bounded the
//! embedded backend: profiled, the writer's thread spent about half its time
//! outside SQLite's own work.
//!
//! sqlx lends the handle out for such work ([`LockedSqliteHandle`]: while it
//! is held, sqlx's thread makes no call on the connection). Here the batch's
//! statements run on it in order, in the caller's transaction, each distinct
//! text prepared once and stepped for every row that uses it. Parameters are
//! encoded by sqlx's own `Encode` implementations ([`SqliteArgumentValue`]),
//! so a value is stored exactly as when sqlx binds it.
//!
//! The statements run on the calling task's thread, which waits meanwhile
//! as it would have for sqlx's: through sqlx, a batch is at most one chunk
//! of rows (`batch::MAX_CHUNK`), a millisecond or two of SQLite's work; a
//! transaction run whole on the handle is bounded in `super::tx`.
//!
//! The process's SQLite settings are made here too, before the first
//! connection ([`configure_process`]).
//!
//! Rows are read here too ([`row`]), for a transaction run whole on the
//! handle ([`super::tx`]), which runs on the backend's own write connection
//! when it has one ([`owned`]) rather than on sqlx's borrowed handle.
//!
//! This module and [`row`] are the only ones of the crate that call SQLite
//! directly; every `unsafe` block says what makes it sound.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::sqlite::{LockedSqliteHandle, SqliteArgumentValue};

mod owned;
mod row;

pub(super) use owned::Owned;
pub(super) use row::{query, Column, FromRaw, Row};

/// A connection's handle, locked for the caller: while it is held, sqlx's
/// thread makes no call on the connection.
pub(super) trait Locked: Send {
    fn db(&mut self) -> NonNull<ffi::sqlite3>;

    /// The statements kept prepared on the connection, if it keeps any: a
    /// connection of the backend's own ([`Owned`]) does; on sqlx's borrowed
    /// handle every statement is prepared for its call and finalised after.
    fn cache(&mut self) -> Option<&mut Cache> {
        None
    }
}

/// Statements prepared once and kept, by text, for the next call that runs
/// the same text. Preparing is SQLite parsing and planning the text: under
/// the worker pool it took about two thirds as long as running the
/// statements. Bounded: past [`CACHED_STATEMENTS`] texts the cache starts
/// over (the backend's hot writes use a few dozen).
#[derive(Default)]
pub(super) struct Cache(HashMap<Box<str>, Statement>);

/// The most statements a [`Cache`] keeps.
const CACHED_STATEMENTS: usize = 256;

impl Cache {
    /// The statement for `sql`, prepared now if it is not kept yet.
    fn statement(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        sql: &str,
    ) -> Result<&mut Statement, sqlx::Error> {
        if !self.0.contains_key(sql) {
            if self.0.len() >= CACHED_STATEMENTS {
                self.0.clear();
            }
            let prepared = Statement::prepare(db, sql)?;
            self.0.insert(sql.into(), prepared);
        }
        Ok(self.0.get_mut(sql).expect("kept above"))
    }

    /// Finalise every kept statement (before the connection closes).
    fn clear(&mut self) {
        self.0.clear();
    }
}

impl Locked for LockedSqliteHandle<'_> {
    fn db(&mut self) -> NonNull<ffi::sqlite3> {
        self.as_raw_handle()
    }
}

/// SQLite's process-wide settings, made before this crate opens its first
/// connection: memory statistics off.
///
/// With them on (SQLite's default), every allocation and every free SQLite
/// makes takes a process-wide mutex to count bytes. Profiled under the
/// worker pool, lock and unlock were about as much of the writer thread's
/// time as executing its statements (`sqlite3VdbeExec`); with statistics
/// off, about two fifths of it. Nothing here reads the statistics (they
/// serve `sqlite3_memory_used` and a soft heap limit, which this crate does
/// not set).
///
/// SQLite takes these settings only before it initialises: called later
/// (another library in the process opened a database first), it refuses
/// with `SQLITE_MISUSE` and changes nothing, and SQLite runs as it would
/// have.
pub(super) fn configure_process() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` must not run while another thread is in
        // SQLite. Every connection this crate opens is opened after this
        // call returns (`Once` makes the others wait for it); a call after
        // SQLite initialised only reads its state and refuses. The variadic
        // argument is the `int` that `SQLITE_CONFIG_MEMSTATUS` takes.
        let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
        if rc != ffi::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was initialised already: memory statistics stay on"
            );
        }
    });
}

/// Run `statements` (one SQL statement each, `?` parameters only) in order,
/// binding `values` to their parameters statement by statement. Every value
/// must be used: too few or too many is an error, before anything runs.
pub(super) fn execute<'s>(
    handle: &mut dyn Locked,
    statements: impl Iterator<Item = &'s str>,
    values: &[SqliteArgumentValue<'_>],
) -> Result<(), sqlx::Error> {
    let db = handle.db();
    let mut this_call = Cache::default();
    let cache = handle.cache().unwrap_or(&mut this_call);
    let mut plan = Vec::new();
    let mut bound = 0;
    for sql in statements {
        let count = cache.statement(db, sql)?.parameter_count();
        plan.push((sql, bound..bound + count));
        bound += count;
    }
    if bound != values.len() {
        return Err(misuse(format!(
            "{} parameters for {} values",
            bound,
            values.len()
        )));
    }
    for (sql, range) in plan {
        let statement = cache.statement(db, sql)?;
        for (index, value) in values[range].iter().enumerate() {
            statement.bind(db, index + 1, value)?;
        }
        statement.run(db)?;
    }
    Ok(())
}

/// Run one statement that takes no parameters (`BEGIN IMMEDIATE`, `COMMIT`).
pub(super) fn execute_text(handle: &mut dyn Locked, sql: &str) -> Result<(), sqlx::Error> {
    execute(handle, std::iter::once(sql), &[])
}

/// Whether the connection is inside a transaction.
pub(super) fn in_transaction(handle: &mut dyn Locked) -> bool {
    // SAFETY: a locked, open handle; the call only reads its state.
    unsafe { ffi::sqlite3_get_autocommit(handle.db().as_ptr()) == 0 }
}

/// Run `f` with the connection's busy timeout at zero (a statement that
/// meets another connection's lock fails at once with `SQLITE_BUSY`), then
/// set it back to `restore`.
pub(super) fn without_busy_wait<T>(
    handle: &mut dyn Locked,
    restore: std::time::Duration,
    f: impl FnOnce(&mut dyn Locked) -> Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    let restore = c_int::try_from(restore.as_millis()).unwrap_or(c_int::MAX);
    let db = handle.db();
    // SAFETY: a locked, open handle; the call sets one of its settings.
    unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), 0) };
    let result = f(handle);
    // SAFETY: as above.
    unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), restore) };
    result
}

/// Whether `e` is SQLite's `SQLITE_BUSY` (another connection's lock).
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    let Some(db) = e.as_database_error() else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<c_int>().ok())
        .is_some_and(|code| code & 0xff == ffi::SQLITE_BUSY)
}

/// A prepared statement, finalised on drop.
struct Statement(NonNull<ffi::sqlite3_stmt>);

impl Statement {
    fn prepare(db: NonNull<ffi::sqlite3>, sql: &str) -> Result<Self, sqlx::Error> {
        let length = c_int::try_from(sql.len()).map_err(|_| misuse("statement too long".into()))?;
        let mut statement = ptr::null_mut();
        let mut tail: *const c_char = ptr::null();
        // SAFETY: the handle is locked out of sqlx's thread for the caller
        // (`LockedSqliteHandle`), `sql` outlives the call and its length is
        // given, and both out-pointers point at locals.
        let rc = unsafe {
            ffi::sqlite3_prepare_v3(
                db.as_ptr(),
                sql.as_ptr().cast(),
                length,
                0,
                &mut statement,
                &mut tail,
            )
        };
        if rc != ffi::SQLITE_OK {
            return Err(last_error(db));
        }
        let Some(statement) = NonNull::new(statement) else {
            return Err(misuse(format!("no statement in {sql:?}")));
        };
        let statement = Self(statement);
        // SAFETY: `tail` points into `sql` (SQLite sets it to the end of the
        // first statement), so the offset is within it.
        let used = usize::try_from(unsafe { tail.offset_from(sql.as_ptr().cast()) }).unwrap_or(0);
        if !sql.get(used..).unwrap_or_default().trim().is_empty() {
            return Err(misuse(format!("more than one statement in {sql:?}")));
        }
        Ok(statement)
    }

    fn parameter_count(&self) -> usize {
        // SAFETY: a live prepared statement.
        let count = unsafe { ffi::sqlite3_bind_parameter_count(self.0.as_ptr()) };
        usize::try_from(count).unwrap_or(0)
    }

    fn bind(
        &mut self,
        db: NonNull<ffi::sqlite3>,
        index: usize,
        value: &SqliteArgumentValue<'_>,
    ) -> Result<(), sqlx::Error> {
        let stmt = self.0.as_ptr();
        let index = c_int::try_from(index).map_err(|_| misuse("too many parameters".into()))?;
        // SAFETY: a live statement and an index within its parameters. Text
        // and blobs are bound TRANSIENT: SQLite copies them before returning,
        // so nothing here needs to outlive the call.
        let rc = unsafe {
            match value {
                SqliteArgumentValue::Null => ffi::sqlite3_bind_null(stmt, index),
                SqliteArgumentValue::Text(text) => ffi::sqlite3_bind_text64(
                    stmt,
                    index,
                    text.as_ptr().cast(),
                    text.len() as u64,
                    ffi::SQLITE_TRANSIENT(),
                    ffi::SQLITE_UTF8 as u8,
                ),
                SqliteArgumentValue::Blob(blob) => ffi::sqlite3_bind_blob64(
                    stmt,
                    index,
                    blob.as_ptr().cast(),
                    blob.len() as u64,
                    ffi::SQLITE_TRANSIENT(),
                ),
                SqliteArgumentValue::Double(v) => ffi::sqlite3_bind_double(stmt, index, *v),
                SqliteArgumentValue::Int(v) => ffi::sqlite3_bind_int(stmt, index, *v),
                SqliteArgumentValue::Int64(v) => ffi::sqlite3_bind_int64(stmt, index, *v),
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(()),
            _ => Err(last_error(db)),
        }
    }

    /// Step the statement to its end, then reset it for the next binding.
    fn run(&mut self, db: NonNull<ffi::sqlite3>) -> Result<(), sqlx::Error> {
        let stmt = self.0.as_ptr();
        let outcome = loop {
            // SAFETY: a live statement whose parameters are all bound.
            match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_ROW => continue,
                ffi::SQLITE_DONE => break Ok(()),
                _ => break Err(last_error(db)),
            }
        };
        self.reset();
        outcome
    }

    /// Reset the statement for its next run, and let go of the values bound
    /// to it (copies, which a kept statement would otherwise hold on to).
    /// Read any error of the last step first: a reset returns it again.
    fn reset(&mut self) {
        // SAFETY: a live statement.
        unsafe {
            ffi::sqlite3_reset(self.0.as_ptr());
            ffi::sqlite3_clear_bindings(self.0.as_ptr());
        }
    }
}

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: the statement was prepared on a handle still locked for us,
        // and is finalised once.
        unsafe { ffi::sqlite3_finalize(self.0.as_ptr()) };
    }
}

/// The connection's last error, as sqlx reports a database error.
fn last_error(db: NonNull<ffi::sqlite3>) -> sqlx::Error {
    // SAFETY: a locked, open handle; `sqlite3_errmsg` returns a
    // NUL-terminated string valid until the next call on the handle, copied
    // here at once.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db.as_ptr());
        let message = CStr::from_ptr(ffi::sqlite3_errmsg(db.as_ptr()));
        (code, message.to_string_lossy().into_owned())
    };
    sqlx::Error::Database(Box::new(SqliteFailure { code, message }))
}

fn misuse(message: String) -> sqlx::Error {
    sqlx::Error::Database(Box::new(SqliteFailure {
        code: ffi::SQLITE_MISUSE,
        message,
    }))
}

/// An error SQLite returned, with its extended result code; classified as
/// sqlx classifies its own, so `is_unique_violation` and the rest hold.
#[derive(Debug)]
struct SqliteFailure {
    code: c_int,
    message: String,
}

impl fmt::Display for SqliteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(code: {}) {}", self.code, self.message)
    }
}

impl std::error::Error for SqliteFailure {}

impl DatabaseError for SqliteFailure {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// A connection to a fresh in-memory database for the backend's unit tests,
/// opened as the backend opens its own: after [`configure_process`].
#[cfg(test)]
/// `setup` runs on it first, one statement after another.
pub(super) async fn memory_connection(setup: &[&str]) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    configure_process();
    let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
        .await
        .expect("an in-memory SQLite database");
    for statement in setup {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .expect(statement);
    }
    conn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_counts_no_allocations_once_the_process_is_configured() {
        // A row big enough that SQLite's own allocator would count it,
        // on a connection still open when the counter is read.
        let _conn = memory_connection(&[
            "CREATE TABLE t (v TEXT NOT NULL)",
            "INSERT INTO t VALUES (hex(randomblob(4096)))",
        ])
        .await;
        // SAFETY: reads one of SQLite's counters; no pointer is involved.
        let counted = unsafe { ffi::sqlite3_memory_used() };
        assert_eq!(counted, 0, "SQLite counted {counted} bytes in use");
    }
}
