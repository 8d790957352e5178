//! Rows read on the writer's handle, decoded as sqlx decodes them.
//!
//! A write transaction run whole on the locked handle ([`super::super::tx`])
//! reads its rows there too: an execution's row, a tenant's limits, a count.
//! sqlx's decoders take a value only sqlx can make, so each column type the
//! backend reads has its decoding here, written to give exactly what sqlx's
//! gives for the same stored value (NULL for `Option`, integers checked into
//! their width, text as UTF-8, UUIDs as their 16 bytes, JSON parsed from
//! text). A test reads the same rows both ways and compares them.

use std::ffi::c_int;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::str::FromStr;

use libsqlite3_sys as ffi;
use serde::de::DeserializeOwned;
use sqlx::error::BoxDynError;
use sqlx::sqlite::SqliteArgumentValue;
use sqlx::types::Json;
use uuid::Uuid;

use super::{last_error, misuse, Cache, Locked, Statement};
use crate::model::{
    AttemptPhase, Eligibility, ExecutionId, FlowId, LifecyclePhase, Ownership, TenantId,
    TerminalOutcome,
};

/// The current row of a statement being stepped.
pub(in crate::backend::sqlite) struct Row<'s> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    columns: c_int,
    _statement: PhantomData<&'s Statement>,
}

impl Row<'_> {
    /// Column `index` (from 0), decoded as `T`.
    pub fn get<T: Column>(&self, index: usize) -> Result<T, BoxDynError> {
        let at = c_int::try_from(index).ok().filter(|i| *i < self.columns);
        let Some(at) = at else {
            return Err(format!("no column {index} of {}", self.columns).into());
        };
        T::read(self, at).map_err(|e| format!("column {index}: {e}").into())
    }

    fn is_null(&self, at: c_int) -> bool {
        // SAFETY: a statement on a row (the caller stepped it to
        // `SQLITE_ROW`), a column index checked against its count.
        unsafe { ffi::sqlite3_column_type(self.stmt.as_ptr(), at) == ffi::SQLITE_NULL }
    }

    fn int64(&self, at: c_int) -> i64 {
        // SAFETY: as in `is_null`.
        unsafe { ffi::sqlite3_column_int64(self.stmt.as_ptr(), at) }
    }

    /// The column's bytes as SQLite holds them for `text` (converted to
    /// text first) or as a blob.
    fn bytes(&self, at: c_int, text: bool) -> &[u8] {
        let stmt = self.stmt.as_ptr();
        // SAFETY: as in `is_null`. The pointer is fetched before the length,
        // as SQLite asks, and stays valid until the statement is stepped,
        // reset or finalised, all of which need `&mut` of the statement this
        // row borrows; a NULL pointer (an empty value) reads as empty.
        unsafe {
            let data = if text {
                ffi::sqlite3_column_text(stmt, at).cast::<u8>()
            } else {
                ffi::sqlite3_column_blob(stmt, at).cast::<u8>()
            };
            let len = usize::try_from(ffi::sqlite3_column_bytes(stmt, at)).unwrap_or(0);
            if data.is_null() || len == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(data, len)
            }
        }
    }

    fn text(&self, at: c_int) -> Result<&str, BoxDynError> {
        Ok(std::str::from_utf8(self.bytes(at, true))?)
    }
}

/// A column type read from a raw row.
pub(in crate::backend::sqlite) trait Column: Sized {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError>;
}

/// A row type read from a raw row.
pub(in crate::backend::sqlite) trait FromRaw: Sized {
    fn from_raw(row: &Row<'_>) -> Result<Self, BoxDynError>;
}

impl Column for i64 {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        Ok(row.int64(at))
    }
}

macro_rules! narrow_integer {
    ($($t:ty),+) => {$(
        impl Column for $t {
            fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
                Ok(<$t>::try_from(row.int64(at))?)
            }
        }
    )+};
}
narrow_integer!(i32, i16);

impl Column for bool {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        Ok(row.int64(at) != 0)
    }
}

impl Column for String {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        row.text(at).map(str::to_owned)
    }
}

impl Column for Vec<u8> {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        Ok(row.bytes(at, false).to_vec())
    }
}

impl Column for Uuid {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        Ok(Uuid::from_slice(row.bytes(at, false))?)
    }
}

impl<T: Column> Column for Option<T> {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        if row.is_null(at) {
            Ok(None)
        } else {
            T::read(row, at).map(Some)
        }
    }
}

impl<T: DeserializeOwned> Column for Json<T> {
    fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
        Ok(Json(serde_json::from_str(row.text(at)?)?))
    }
}

macro_rules! id_column {
    ($($t:ident),+) => {$(
        impl Column for $t {
            fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
                Uuid::read(row, at).map($t)
            }
        }
    )+};
}
id_column!(TenantId, ExecutionId, FlowId);

macro_rules! text_column {
    ($($t:ty),+) => {$(
        impl Column for $t {
            fn read(row: &Row<'_>, at: c_int) -> Result<Self, BoxDynError> {
                Ok(<$t>::from_str(row.text(at)?)?)
            }
        }
    )+};
}
text_column!(
    LifecyclePhase,
    Ownership,
    Eligibility,
    TerminalOutcome,
    AttemptPhase
);

macro_rules! tuple_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: Column),+> FromRaw for ($($t,)+) {
            fn from_raw(row: &Row<'_>) -> Result<Self, BoxDynError> {
                Ok(($(row.get::<$t>($i)?,)+))
            }
        }
    };
}
tuple_row!(A 0);
tuple_row!(A 0, B 1);
tuple_row!(A 0, B 1, C 2);
tuple_row!(A 0, B 1, C 2, D 3, E 4);

/// Run one statement (`?` parameters only) with `values` bound in order, and
/// decode every row it returns.
pub(in crate::backend::sqlite) fn query<T: FromRaw>(
    handle: &mut dyn Locked,
    sql: &str,
    values: &[SqliteArgumentValue<'_>],
) -> Result<Vec<T>, sqlx::Error> {
    let db = handle.db();
    let mut this_call = Cache::default();
    let cache = handle.cache().unwrap_or(&mut this_call);
    let statement = cache.statement(db, sql)?;
    if statement.parameter_count() != values.len() {
        return Err(misuse(format!(
            "{} parameters for {} values",
            statement.parameter_count(),
            values.len()
        )));
    }
    let rows = read_rows(db, statement, values);
    statement.reset();
    rows
}

/// Bind `values` to `statement` and decode every row it returns.
fn read_rows<T: FromRaw>(
    db: NonNull<ffi::sqlite3>,
    statement: &mut Statement,
    values: &[SqliteArgumentValue<'_>],
) -> Result<Vec<T>, sqlx::Error> {
    for (index, value) in values.iter().enumerate() {
        statement.bind(db, index + 1, value)?;
    }
    let stmt = statement.0;
    // SAFETY: a live prepared statement.
    let columns = unsafe { ffi::sqlite3_column_count(stmt.as_ptr()) };
    let mut rows = Vec::new();
    loop {
        // SAFETY: a live statement whose parameters are all bound.
        match unsafe { ffi::sqlite3_step(stmt.as_ptr()) } {
            ffi::SQLITE_ROW => {
                let row = Row {
                    stmt,
                    columns,
                    _statement: PhantomData,
                };
                rows.push(T::from_raw(&row).map_err(sqlx::Error::Decode)?);
            }
            ffi::SQLITE_DONE => return Ok(rows),
            _ => return Err(last_error(db)),
        }
    }
}
