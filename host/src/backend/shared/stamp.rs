//! A stored instant that both drivers read and write.
//!
//! Postgres keeps instants as `timestamptz`; SQLite as integer milliseconds
//! since the Unix epoch (see `sqlite/time.rs` for why). A row or a bind that
//! names its times [`Stamp`] encodes and decodes on either driver, so a
//! statement whose SQL is the same on both is written once (in `shared`)
//! even when it carries times.

use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(pub DateTime<Utc>);

impl From<Stamp> for DateTime<Utc> {
    fn from(stamp: Stamp) -> Self {
        stamp.0
    }
}

impl Stamp {
    /// `ms` milliseconds after `from`; the latest instant past chrono's
    /// range (a deadline that far is never due).
    pub(crate) fn after(from: DateTime<Utc>, ms: u64) -> Stamp {
        let later = chrono::TimeDelta::try_milliseconds(crate::backend::stored_i64(ms))
            .and_then(|delta| from.checked_add_signed(delta));
        Stamp(later.unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    /// The instant SQLite stores as `millis` since the epoch. Past chrono's
    /// range only if the file was written by hand; the latest instant keeps
    /// such a row readable (and never due).
    pub(crate) fn from_millis(millis: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(millis).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl Type<Postgres> for Stamp {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }

    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Postgres> for Stamp {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<Postgres>>::decode(value).map(Self)
    }
}

impl Encode<'_, Postgres> for Stamp {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl Type<Sqlite> for Stamp {
    fn type_info() -> SqliteTypeInfo {
        <i64 as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <i64 as Type<Sqlite>>::compatible(ty)
    }
}

impl<'r> Decode<'r, Sqlite> for Stamp {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let millis = <i64 as Decode<Sqlite>>::decode(value)?;
        Ok(Self(Self::from_millis(millis)))
    }
}

impl<'q> Encode<'q, Sqlite> for Stamp {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        buf.push(SqliteArgumentValue::Int64(self.0.timestamp_millis()));
        Ok(IsNull::No)
    }
}
