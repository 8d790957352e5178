//! A write connection of the backend's own, beside sqlx's writer.
//!
//! Borrowing sqlx's handle ([`LockedSqliteHandle`]) is itself a hand-off:
//! sqlx's thread is woken to let go of the handle and the caller waits for
//! it, ~50 µs on a small machine, as much as a small write's own work. A
//! connection opened here belongs to no thread: the hot writes of
//! `super::super::tx` run on it on the calling thread, with nothing to wake.
//!
//! It is used only by a task that holds sqlx's writer (the pool of one
//! connection every write waits for), so the two connections never contend
//! for SQLite's write lock: one writer at a time, as before, whichever
//! connection it writes through. It is opened with the settings that hold
//! per connection as sqlx's writer has them (foreign keys on, `synchronous`
//! `NORMAL`, the busy timeout, the checkpoint interval); the journal mode is
//! the file's, set when sqlx's writer opened it.
//!
//! [`LockedSqliteHandle`]: sqlx::sqlite::LockedSqliteHandle

use std::ffi::{c_int, CString};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::time::Duration;

use libsqlite3_sys as ffi;

use super::{execute_text, last_error, misuse, Cache, Locked};

/// An open connection to a database file, closed on drop.
pub(in crate::backend::sqlite) struct Owned {
    db: NonNull<ffi::sqlite3>,
    /// Its statements, kept prepared across transactions.
    cache: Cache,
}

// SAFETY: the connection is opened with `SQLITE_OPEN_NOMUTEX`: SQLite lets
// it move between threads as long as two never use it at once, which
// `&mut self` on every use guarantees.
unsafe impl Send for Owned {}

impl Owned {
    /// Open the existing database file at `path` for writing, with
    /// `busy_timeout` and a checkpoint every `checkpoint_pages`.
    pub fn open(
        path: &Path,
        busy_timeout: Duration,
        checkpoint_pages: u32,
    ) -> Result<Self, sqlx::Error> {
        let name = path
            .to_str()
            .and_then(|p| CString::new(p).ok())
            .ok_or_else(|| misuse(format!("not a file name SQLite takes: {path:?}")))?;
        let mut db = ptr::null_mut();
        // Not created if missing: sqlx's writer made the file, and a file
        // gone since is an error rather than a new empty database.
        let flags = ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_NOMUTEX;
        // SAFETY: `name` is NUL-terminated and outlives the call; `db` is a
        // local out-pointer. On failure SQLite may still hand back a handle
        // (to read the error from), which is closed below.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, ptr::null()) };
        let Some(db) = NonNull::new(db) else {
            return Err(misuse(format!(
                "SQLite could not open {path:?} (code {rc})"
            )));
        };
        let mut owned = Self {
            db,
            cache: Cache::default(),
        };
        if rc != ffi::SQLITE_OK {
            return Err(last_error(db));
        }
        let busy_ms = c_int::try_from(busy_timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: an open handle only this function holds.
        unsafe { ffi::sqlite3_busy_timeout(db.as_ptr(), busy_ms) };
        for pragma in [
            "PRAGMA foreign_keys = ON".to_owned(),
            "PRAGMA synchronous = NORMAL".to_owned(),
            format!("PRAGMA wal_autocheckpoint = {checkpoint_pages}"),
        ] {
            execute_text(&mut owned, &pragma)?;
        }
        Ok(owned)
    }
}

impl Locked for Owned {
    fn db(&mut self) -> NonNull<ffi::sqlite3> {
        self.db
    }

    fn cache(&mut self) -> Option<&mut Cache> {
        Some(&mut self.cache)
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // Its kept statements first: a connection closes only once every
        // statement prepared on it is finalised.
        self.cache.clear();
        // SAFETY: the handle is open and closed once, every statement
        // prepared on it finalised (those of a call when it returned, the
        // kept ones just now).
        let rc = unsafe { ffi::sqlite3_close(self.db.as_ptr()) };
        if rc != ffi::SQLITE_OK {
            tracing::warn!(rc, "SQLite: the backend's write connection did not close");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqliteArgumentValue;

    #[tokio::test]
    async fn opens_the_file_with_the_writers_settings_and_no_other() {
        let dir = std::env::temp_dir().join(format!("ff-owned-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("db.sqlite");
        let missing = Owned::open(&file, Duration::from_secs(1), 10).err();
        assert!(missing.is_some(), "a missing file is not created");
        std::fs::write(&file, b"").unwrap();
        let mut owned = Owned::open(&file, Duration::from_secs(1), 10).unwrap();
        for (pragma, set) in [("synchronous", 1), ("wal_autocheckpoint", 10)] {
            let read: Vec<(i64,)> =
                super::super::query(&mut owned, &format!("PRAGMA {pragma}"), &[]).unwrap();
            assert_eq!(read, [(set,)], "{pragma}");
        }
        execute_text(&mut owned, "CREATE TABLE p (id INTEGER PRIMARY KEY)").unwrap();
        execute_text(
            &mut owned,
            "CREATE TABLE c (p INTEGER NOT NULL REFERENCES p (id))",
        )
        .unwrap();
        let refused = execute_text(&mut owned, "INSERT INTO c (p) VALUES (1)").unwrap_err();
        let refused = refused.as_database_error().map(|e| e.kind());
        assert!(
            matches!(refused, Some(sqlx::error::ErrorKind::ForeignKeyViolation)),
            "foreign keys are enforced: {refused:?}"
        );
        // Statements are kept by text, and a kept one follows the schema.
        let insert = "INSERT INTO p (id) VALUES (?)";
        super::super::execute(
            &mut owned,
            [insert].into_iter(),
            &[SqliteArgumentValue::Int64(1)],
        )
        .unwrap();
        let kept = owned.cache.0.len();
        execute_text(&mut owned, "ALTER TABLE p ADD COLUMN note TEXT DEFAULT 'n'").unwrap();
        super::super::execute(
            &mut owned,
            [insert].into_iter(),
            &[SqliteArgumentValue::Int64(2)],
        )
        .unwrap();
        assert_eq!(owned.cache.0.len(), kept + 1, "only the ALTER was new");
        let notes: Vec<(String,)> =
            super::super::query(&mut owned, "SELECT note FROM p ORDER BY id", &[]).unwrap();
        assert_eq!(notes, [("n".to_owned(),), ("n".to_owned(),)]);
        drop(owned);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
